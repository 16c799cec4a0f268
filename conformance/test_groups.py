"""groups.*: parameter groups keep their own hyperparameters; a missing gradient means no step;
the order of parameters and groups does not matter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from adamw_conformance.adapters.base import NO_NONE_GRADS, GroupSetup, ParamState, Run, Setup
from adamw_conformance.core import bits, calls, checks, record, replay, stochastic, trajectory
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import compare, format_hyper
from adamw_conformance.core.layout import shared_counter
from adamw_conformance.core.strategies import (
    SizedShapes,
    first_step_creates_state,
    hyperparameters,
    nonzero_decay,
    regimes,
    sample_state,
    state_regimes,
    steps,
)
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.catalogue("groups")


@st.composite
def group_hypers(draw: st.DrawFn, n: int) -> list[dict[str, float]]:
    """n groups' hyperparameters, each group with its own lr and a weight_decay > 0."""
    out = []
    for _ in range(n):
        h = draw(hyperparameters())
        if h.get("weight_decay") == 0.0:
            h["weight_decay"] = draw(nonzero_decay())
        out.append(h)
    return out


def layout(shapes: Sequence[tuple[int, ...]], group_of: Sequence[int],
           params: Sequence[np.ndarray], hypers: Sequence[dict[str, float]], cfg: Config,
           options: dict | None = None) -> Setup:
    groups = [GroupSetup([p for p, g in zip(params, group_of, strict=True) if g == k], hypers[k])
              for k in range(len(hypers))]
    return Setup(groups, cfg.dtype, cfg.device, dict(options or {}))


def describe_groups(hypers: Sequence[dict[str, float]], group_of: Sequence[int]) -> str:
    return "; ".join(f"group {k}: parameters {[i for i, g in enumerate(group_of) if g == k]}, "
                     f"{format_hyper(h)}" for k, h in enumerate(hypers))


def whose_hyper(cfg: Config, i: int, k_own: int, hypers: Sequence[dict[str, float]],
                before: np.ndarray, g: np.ndarray, state: ParamState, got: np.ndarray,
                sdtype: str | None) -> str:
    """Which other group's hyperparameters (or part of them) explain parameter i's result, for
    the message: a diagnosis, never a verdict. The control: theta is outside the bound of the
    oracle under its own group's hyperparameters and within that under the candidate's, and the
    candidate differs from its own (a group with the same lr explains nothing)."""
    own = hypers[k_own]
    if _fits(cfg, own, before, g, state, got, sdtype):
        return ""  # theta is its own group's: what broke the bound was not a hyperparameter
    for k, h in enumerate(hypers):
        if k == k_own:
            continue
        candidates = [(f"group {k}'s lr", {**own, "lr": h["lr"]}),
                      (f"group {k}'s hyperparameters", h)]
        if "weight_decay" in h:
            candidates.insert(0, (f"group {k}'s weight_decay",
                                  {**own, "weight_decay": h["weight_decay"]}))
        for what, cand in candidates:
            if cand == own:
                continue
            if _fits(cfg, cand, before, g, state, got, sdtype):
                return (f"parameter {i} (group {k_own}) was stepped with {what} instead of its "
                        f"own group's: a group's hyperparameter leaked to another group (its "
                        f"theta is within the bound of the oracle under {what}, outside that "
                        "under its own)")
    return ""


def _fits(cfg: Config, hyper: dict[str, float], before: np.ndarray, g: np.ndarray,
          state: ParamState, got: np.ndarray, sdtype: str | None) -> bool:
    """Whether theta `got` is within the bound of the oracle step under `hyper`."""
    judged = checks.with_schedule_base(cfg.model, hyper, hyper["lr"])
    exact, bnd = cfg.model.expect(before, g, state.as_mapping(), judged, state.step + 1,
                                  cfg.precision(sdtype))
    with record.suspended():
        return compare("theta", got, exact["theta"], bnd["theta"], cfg.dtype) is None


# groups.no_decay: three groups of parameters of different shapes, 0-dim and empty included.
_ND_SHAPES = SizedShapes(((5,), (), (0,), (2, 3), (4,), (1,)))
_ND_GROUP_OF = (0, 0, 1, 1, 2, 2)


@given(hypers=group_hypers(3), plain=st.integers(0, 2), theta=regimes(-4, 4, zeros=False),
       g=regimes(-8, 4), m=regimes(-10, 8), v=regimes(-20, 16), t=steps,
       seed=st.integers(0, 2**32 - 1))
def test_no_decay(cfg, hypers, plain, theta, g, m, v, t, seed):
    """A weight_decay=0 group gets the plain Adam step; each group's lr, wd touch only its own
    parameters.

    Three groups with their own hyperparameters (one of them, at a drawn position, with
    weight_decay=0) and parameters of several shapes, 0-dim and empty included, take one step
    from a replayed state (fresh where the target's state is not writable). Every parameter must
    be within the bound of the oracle step under its own group's hyperparameters, so the
    weight_decay=0 group gets exactly Adam's step.
    """
    hypers = [dict(h) for h in hypers]
    if "weight_decay" in hypers[plain]:
        hypers[plain]["weight_decay"] = 0.0
    rng = np.random.default_rng(seed)
    params = [theta.sample(rng, s, cfg.dtype) for s in _ND_SHAPES]
    grads = [g.sample(rng, s, cfg.dtype) for s in _ND_SHAPES]
    if replay.can_replay(cfg):
        t = max(t, 2) if first_step_creates_state() else t
        states = [sample_state(state_regimes(m, v), rng, s, cfg.dtype, t - 1)
                  for s in _ND_SHAPES]
    else:
        states = [ParamState(np.zeros(s), np.zeros(s), 0) for s in _ND_SHAPES]
    setup = layout(_ND_SHAPES, _ND_GROUP_OF, params, hypers, cfg)
    run = replay.prepare(cfg, setup, params, states)
    assert run is not None, "can_replay() promised a writable state"
    per_param = [checks.with_schedule_base(cfg.model, hypers[k], hypers[k]["lr"])
                 for k in _ND_GROUP_OF]
    outcome = checks.judge_step(cfg, run, params, states, grads, per_param)
    if outcome.mismatches:
        i = outcome.mismatches[0][0]
        k = _ND_GROUP_OF[i]
        sdtype = outcome.states[i].dtype if outcome.states else None
        hint = whose_hyper(cfg, i, k, hypers, params[i], grads[i], states[i],
                           outcome.params[i], sdtype)
        failing = sorted({_ND_GROUP_OF[j] for j, _ in outcome.mismatches})
        if not hint and len(failing) > 1:
            # not one group's hyperparameters: the step (exact.one_step's property) is wrong
            hint = (f"parameters of groups {', '.join(map(str, failing))} are out of the bound, "
                    f"each under its own hyperparameters: the step is wrong whatever the group "
                    f"(exact.one_step judges the step)")
        if not hint and k == plain:
            hint = (f"parameter {i} is in group {k}, whose weight_decay is 0: it must get the "
                    f"plain Adam step")
        checks.fail(checks.failure(
            "groups.no_decay", cfg, outcome, per_param, states[0].step + 1,
            note=f"{hint + '; ' if hint else ''}groups: {describe_groups(hypers, _ND_GROUP_OF)}",
            repro=checks.reproduction(cfg, "groups.no_decay")))


# groups.none_grad: two groups, four parameters; each step some have no gradient, some a zero one.
_NG_SHAPES = SizedShapes(((6,), (2, 3), (), (5,)))
_NG_GROUP_OF = (0, 0, 1, 1)
KINDS = ("none", "zero", "grad")


@dataclass
class Schedule:
    """Per step, per parameter: no gradient (None), an all-zero gradient, or a drawn one."""

    kinds: list[list[str]]

    def __repr__(self) -> str:
        return "Schedule(" + " | ".join(" ".join(k) for k in self.kinds) + ")"


@st.composite
def schedules(draw: st.DrawFn, n: int) -> Schedule:
    n_steps = draw(st.integers(2, 4))
    kinds = [draw(st.lists(st.sampled_from(KINDS), min_size=n, max_size=n))
             for _ in range(n_steps)]
    # Every step has at least one parameter without gradient and one with a zero gradient.
    for k, row in enumerate(kinds):
        row[k % n], row[(k + 1) % n] = "none", "zero"
    return Schedule(kinds)


def _state_changes(a: ParamState | None, b: ParamState | None, counter: bool) -> list[str]:
    if a is None and b is None:
        return []
    if a is None or b is None:
        return ["its optimizer state was " + ("created" if a is None else "removed")]
    am, bm = a.as_mapping(), b.as_mapping()
    out = [f"{name} changed ({bits.difference(bm[name], am[name])})"
           for name in am if name in bm and not bits.same(am[name], bm[name])]
    if counter and a.step != b.step:
        out.append(f"its step counter moved from {a.step} to {b.step}")
    return out


@given(hypers=group_hypers(2), sched=schedules(len(_NG_SHAPES)),
       theta=regimes(-4, 4, zeros=False), g=regimes(-8, 4), seed=st.integers(0, 2**32 - 1))
def test_none_grad(cfg, hypers, sched, theta, g, seed):
    """A parameter whose grad is None is untouched, bitwise; a zero grad is a real step.

    Over a few steps, each parameter has no gradient, an all-zero gradient, or a drawn one. One
    without gradient must keep its value and (where readable) its state bitwise, its counter
    too under the per-parameter counter convention. One with a zero gradient is judged like any
    other step: against the oracle from the state it had (read, or fresh before its first
    gradient), and its counter must advance; where the state is not readable, the parameters are
    judged at the end against their exact trajectories.
    """
    if not cfg.caps.none_grads:
        pytest.skip(f"{cfg.adapter.name} {NO_NONE_GRADS}")
    rng = np.random.default_rng(seed)
    n = len(_NG_SHAPES)
    params0 = [theta.sample(rng, s, cfg.dtype) for s in _NG_SHAPES]
    run = calls.create(cfg, layout(_NG_SHAPES, _NG_GROUP_OF, params0, hypers, cfg))
    per_param = [checks.with_schedule_base(cfg.model, hypers[k], hypers[k]["lr"])
                 for k in _NG_GROUP_OF]
    per_counter = cfg.model.convention.counter == "parameter"
    stepped = [False] * n
    history: list[list[np.ndarray]] = [[] for _ in range(n)]
    where = (f"  schedule: {sched!r}\n  groups: {describe_groups(hypers, _NG_GROUP_OF)}; seed "
             f"{seed}\n  reproduce: {checks.reproduction(cfg, 'groups.none_grad')}")
    for k, row in enumerate(sched.kinds):
        grads = [None if kind == "none" else
                 np.zeros(s) if kind == "zero" else g.sample(rng, s, cfg.dtype)
                 for kind, s in zip(row, _NG_SHAPES, strict=True)]
        before, bst = run.params(), replay.read_each_state(run, n)
        calls.step(cfg, run, grads)
        after, ast = run.params(), replay.read_each_state(run, n)
        for i, grad in enumerate(grads):
            if grad is not None:
                continue
            changes = ([] if bits.same(after[i], before[i]) else
                       [f"its value changed ({bits.difference(after[i], before[i])})"])
            changes += _state_changes(bst[i], ast[i], per_counter)
            if any("step counter" in c for c in changes) and (shared := shared_counter(cfg)):
                changes.append(shared)
            if changes:
                checks.fail(f"groups.none_grad: {cfg.adapter.name} ({cfg.dtype} on {cfg.device}): "
                            f"parameter {i} had no gradient (grad is None) at step {k + 1}, yet "
                            + "; ".join(changes) + ". A parameter without gradient must be left "
                            f"alone: no decay, no state update.\n{where}")
        known: list[ParamState | None] = []
        for i in range(n):
            if bst[i] is not None:
                known.append(bst[i])
            elif not stepped[i] and per_counter:
                known.append(ParamState(np.zeros(_NG_SHAPES[i]), np.zeros(_NG_SHAPES[i]), 0))
            else:
                known.append(None)
        outcome = checks.judge_values(cfg, after, ast, before, known, grads, per_param)
        if outcome.mismatches:
            i = outcome.mismatches[0][0]
            note = (f"parameter {i} had an all-zero gradient: a zero gradient is a real step "
                    f"(the moments decay, the counter advances, weight decay applies)"
                    if row[i] == "zero" else f"parameter {i} had a gradient")
            missed = any(r[i] == "none" for r in sched.kinds[:k])
            if missed and (shared := shared_counter(cfg)):
                note += f", after steps without one; {shared}"
            checks.fail(
                checks.failure("groups.none_grad", cfg, outcome, per_param, k + 1, note=note)
                + "\n" + where)
        for i, grad in enumerate(grads):
            if grad is None:
                continue
            if per_counter and known[i] is not None and ast[i] is not None \
                    and ast[i].step != known[i].step + 1:
                checks.fail(
                    f"groups.none_grad: {cfg.adapter.name}: parameter {i} had "
                    f"{'an all-zero' if row[i] == 'zero' else 'a'} gradient at step {k + 1} "
                    f"but its step counter went from {known[i].step} to {ast[i].step}, not "
                    f"{known[i].step + 1}: a zero gradient is a real step, not a missing one."
                    f"\n{where}")
            stepped[i] = True
            history[i].append(grad)
    if any(s is not None for s in replay.read_each_state(run, n)) or not per_counter:
        return
    # State not readable: each parameter against its own exact trajectory (its own steps only).
    final = run.params()
    for i in range(n):
        if not history[i]:
            continue
        bad = trajectory.mismatch(cfg, params0[i], history[i], per_param[i], final[i])
        if bad is not None:
            checks.fail(
                f"groups.none_grad: {cfg.adapter.name} ({cfg.dtype} on {cfg.device}): after "
                f"the schedule, parameter {i} is off the exact trajectory of its own "
                f"{len(history[i])} steps (zero gradients counted as steps, missing ones "
                f"not): {bad.describe()}\n{where}")


# groups.order: three groups; parameters and groups permuted between two runs.
_OR_SHAPES = SizedShapes(((4,), (2, 2), (3,), (), (5,)))
_OR_GROUP_OF = (0, 0, 1, 2, 2)


def _permuted(order: Sequence[int], inner: Sequence[Sequence[int]]) -> list[int]:
    """Creation order of the original parameters in the permuted run."""
    members = [[i for i, g in enumerate(_OR_GROUP_OF) if g == k] for k in range(3)]
    return [members[k][j] for k in order for j in inner[k]]


@given(hypers=st.lists(hyperparameters(), min_size=3, max_size=3),
       order=st.permutations(range(3)),
       inner=st.tuples(st.permutations(range(2)), st.permutations(range(1)),
                       st.permutations(range(2))),
       theta=regimes(-4, 4, zeros=False), g=regimes(-8, 4), n_steps=st.integers(1, 3),
       missing=st.lists(st.booleans(), min_size=5, max_size=5),
       seed=st.integers(0, 2**32 - 1))
def test_order(cfg, hypers, order, inner, theta, g, n_steps, missing, seed):
    """Permuting parameters or groups changes nothing.

    The same parameters, hyperparameters and gradients go to two optimizers, the second with its
    groups and the parameters inside each group in another order. After every step each
    parameter, and its state where readable, must be bitwise the same in both runs: the update
    is elementwise, so nothing may depend on where a parameter sits (PyTorch's loop, foreach and
    fused paths all are).
    """
    stochastic.defer(cfg, "groups.order")
    if not cfg.caps.none_grads:
        missing = [False] * len(missing)  # every parameter has a gradient
    rng = np.random.default_rng(seed)
    params = [theta.sample(rng, s, cfg.dtype) for s in _OR_SHAPES]
    perm = _permuted(order, inner)  # perm[j] = original index of the permuted run's parameter j
    run_a = calls.create(cfg, layout(_OR_SHAPES, _OR_GROUP_OF, params, hypers, cfg))
    groups_b = [GroupSetup([params[i] for i in perm if _OR_GROUP_OF[i] == k], hypers[k])
                for k in order]
    run_b = calls.create(cfg, Setup(groups_b, cfg.dtype, cfg.device))
    n = len(params)
    where = (f"  groups: {describe_groups(hypers, _OR_GROUP_OF)}\n  permuted run: groups in "
             f"order {list(order)}, parameters created in order {perm}; seed {seed}\n"
             f"  reproduce: {checks.reproduction(cfg, 'groups.order')}")
    for k in range(n_steps):
        grads = [None if (missing[i] and k == 0) else g.sample(rng, s, cfg.dtype)
                 for i, s in enumerate(_OR_SHAPES)]
        calls.step(cfg, run_a, grads)
        calls.step(cfg, run_b, [grads[i] for i in perm])
        _same(cfg, run_a, run_b, perm, n, k + 1, where)


def _same(cfg: Config, run_a: Run, run_b: Run, perm: Sequence[int], n: int, t: int,
          where: str) -> None:
    pa, pb = run_a.params(), run_b.params()
    sa, sb = replay.read_each_state(run_a, n), replay.read_each_state(run_b, n)
    for j, i in enumerate(perm):
        problems = ([] if bits.same(pb[j], pa[i]) else
                    [f"its value ({bits.difference(pb[j], pa[i])})"])
        problems += [p.replace("changed", "differs").replace("moved from", "is")
                     for p in _state_changes(sa[i], sb[j], True)]
        if problems:
            checks.fail(
                f"groups.order: {cfg.adapter.name} ({cfg.dtype} on {cfg.device}): after step "
                f"{t}, parameter {i} differs between the original run and the run with "
                f"permuted groups/parameters (where it is parameter {j}): "
                + "; ".join(problems) + " (permuted vs original). Where a parameter sits "
                f"must not change its update.\n{where}")
