"""decouple.*: weight decay is decoupled from the adaptive step (AdamW), not added to the gradient
(Adam+L2). Every expected value comes from the oracle; every allowance from the bound engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import mpmath
import numpy as np
import pytest
from adamw_conformance.adapters.base import GroupSetup, ParamState, Setup
from adamw_conformance.core import bits, calls, checks, replay, trajectory
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import Model, format_hyper
from adamw_conformance.core.strategies import (
    Regime,
    hyperparameters,
    nonzero_decay,
    regimes,
    representable,
    shapes,
    steps,
)
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.catalogue("decouple")

#: What a user reads when the decay went through the gradient instead of beside it.
COUPLED = ("weight decay reached the moments: this looks like Adam+L2 (coupled decay: "
           "weight_decay * theta added to the gradient, as torch.optim.Adam(weight_decay=...) "
           "does), not AdamW's decoupled decay")


@st.composite
def decaying(draw: st.DrawFn) -> dict[str, float]:
    """hyperparameters() with weight_decay > 0: a decay property says nothing at wd = 0."""
    hyper = draw(hyperparameters())
    if hyper["weight_decay"] == 0.0:
        hyper["weight_decay"] = draw(nonzero_decay())
    return hyper


def l2_model(cfg: Config) -> Model:
    """The spec's Adam+L2 under the same conventions: what a coupled implementation follows."""
    return Model("adam_l2", replace(cfg.model.convention, decay_coupling="lr",
                                    decay_target="previous"), cfg.model.maximize)


def closer_to_l2(cfg: Config, theta0: np.ndarray, grads: Sequence[np.ndarray],
                 hyper: dict[str, float], got: np.ndarray,
                 state0: dict[str, np.ndarray] | None = None, t0: int = 1) -> bool:
    """Whether `got` is nearer Adam+L2's exact trajectory than AdamW's on most of the elements
    where the two differ: a diagnosis for the message, never a verdict."""
    aw = cfg.model.oracle.trajectory(theta0, grads, hyper, state0, t0)[-1]["theta"]
    l2 = l2_model(cfg).oracle.trajectory(theta0, grads, hyper, state0, t0)[-1]["theta"]
    votes = []
    for idx in np.ndindex(np.shape(got)):
        x = np.asarray(got)[idx]
        if aw[idx] == l2[idx] or not np.isfinite(x):
            continue
        votes.append(abs(mpmath.mpf(x) - l2[idx]) < abs(mpmath.mpf(x) - aw[idx]))
    return bool(votes) and sum(votes) > len(votes) / 2


def _one_param(cfg: Config, theta0: np.ndarray, hyper: dict[str, float]) -> Setup:
    return Setup([GroupSetup([theta0], hyper)], cfg.dtype, cfg.device)


@given(hyper=decaying(), theta=regimes(-6, 6, zeros=False), shape=shapes,
       seed=st.integers(0, 2**32 - 1))
def test_decay_only(cfg, hyper, theta, shape, seed):
    """A zero gradient gives theta (1 - lr wd) and leaves m, v at zero.

    From fresh state, one step with an all-zero gradient: the parameters must be the oracle's
    (pure decay) within the derived bound, and the moments, where readable, exactly zero.
    """
    rng = np.random.default_rng(seed)
    theta0 = theta.sample(rng, shape, cfg.dtype)
    zero = np.zeros_like(theta0)
    judged = checks.with_schedule_base(cfg.model, hyper, hyper["lr"])
    run = calls.create(cfg, _one_param(cfg, theta0, hyper))
    outcome = checks.judge_step(cfg, run, [theta0], [ParamState(zero, zero, 0)], [zero], [judged])
    where = (f"  hyperparameters: {format_hyper(hyper)}; shape {shape}, seed {seed}\n"
             f"  reproduce: {checks.reproduction(cfg, 'decouple.decay_only')}")
    if outcome.states is not None:
        moved = {k: x for k, x in outcome.states[0].as_mapping().items() if np.any(x != 0)}
        if moved:
            checks.fail(
            f"decouple.decay_only: {cfg.adapter.name} ({cfg.dtype} on {cfg.device}): after one "
            f"step with an all-zero gradient from fresh state, "
            + ", ".join(f"{k} is not zero ({bits.difference(x, np.zeros_like(x))})"
                        for k, x in moved.items())
            + f".\n  {COUPLED}.\n{where}")
    if outcome.mismatches:
        got = outcome.params[0]
        if closer_to_l2(cfg, theta0, [zero], judged, got):
            note = COUPLED
        elif bits.same(got, theta0):
            note = ("the parameters did not move: the zero gradient was skipped like a missing "
                    "one, but a zero gradient is a real step and still decays")
        else:
            note = "the decay of a zero-gradient step is not theta * (1 - lr * weight_decay)"
        checks.fail(checks.failure("decouple.decay_only", cfg, outcome, [judged], 1, note=note,
                                   repro=checks.reproduction(cfg, "decouple.decay_only")))


@given(hyper=hyperparameters(),
       other=st.sampled_from([0.0, 0.1, 1.0, 1e-2]) | st.floats(0.0, 1.0),
       theta=regimes(-4, 4, zeros=False), g=regimes(-8, 4), n_steps=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1))
def test_moments(cfg, hyper, other, theta, g, n_steps, seed):
    """m, v do not depend on wd.

    The same gradients are fed to two optimizers that differ only in weight_decay. Where the
    state is readable, m and v (and vmax, and the counters) must be bitwise identical after
    every step: AdamW's moments never see the decay. Where it is not, each run's parameters must
    follow its own exact trajectory within the propagated bound, so that the difference between
    the runs is the exact difference of the decays.
    """
    if other == hyper["weight_decay"]:
        other = 0.0 if other else 0.1
    hyper_b = {**hyper, "weight_decay": other}
    rng = np.random.default_rng(seed)
    theta0 = theta.sample(rng, (32,), cfg.dtype)
    grads = [g.sample(rng, (32,), cfg.dtype) for _ in range(n_steps)]
    runs = [calls.create(cfg, _one_param(cfg, theta0, h)) for h in (hyper, hyper_b)]
    wds = f"weight_decay={hyper['weight_decay']!r} vs {other!r}"
    where = (f"  hyperparameters: {format_hyper(hyper)} (other run: weight_decay={other!r}); "
             f"seed {seed}\n  reproduce: {checks.reproduction(cfg, 'decouple.moments')}")
    readable = True
    for k, grad in enumerate(grads):
        for run in runs:
            calls.step(cfg, run, [grad])
        sa, sb = replay.read_states(runs[0], 1), replay.read_states(runs[1], 1)
        if sa is None or sb is None:
            readable = False  # judged by behaviour below, after every step was taken
            continue
        a, b = sa[0], sb[0]
        diffs = [f"{name} ({_versus(x, y, hyper['weight_decay'], other)})" for name, x, y in
                 (("m", a.m, b.m), ("v", a.v, b.v), ("vmax", a.vmax, b.vmax))
                 if x is not None and y is not None and not bits.same(x, y)]
        if a.step != b.step:
            diffs.append(f"step counter ({a.step} vs {b.step})")
        if diffs:
            checks.fail(
            f"decouple.moments: {cfg.adapter.name} ({cfg.dtype} on {cfg.device}): the same "
            f"gradients with {wds} give different optimizer state after step t={k + 1}: "
            + "; ".join(diffs) + f".\n  {COUPLED}.\n{where}")
    if readable:
        return
    # Behaviour only: each run against its own exact trajectory, within the propagated bound.
    judged_runs = [checks.with_schedule_base(cfg.model, h, h["lr"]) for h in (hyper, hyper_b)]
    for run, h, judged in zip(runs, (hyper, hyper_b), judged_runs, strict=True):
        got = run.params()[0]
        bad = trajectory.mismatch(cfg, theta0, grads, judged, got)
        if bad is not None:
            note = (COUPLED if closer_to_l2(cfg, theta0, grads, judged, got) else
                    decay_difference(cfg, theta0, grads, judged_runs,
                                     [r.params()[0] for r in runs]))
            checks.fail(
                f"decouple.moments: {cfg.adapter.name} ({cfg.dtype} on {cfg.device}): its state "
                f"is not readable, so the two runs ({wds}) were judged by their parameters: "
                f"after {n_steps} steps the run with weight_decay={h['weight_decay']!r} is off "
                f"its exact trajectory: {bad.describe()}\n  {note}.\n{where}")


def decay_difference(cfg: Config, theta0: np.ndarray, grads: Sequence[np.ndarray],
                     hypers: Sequence[dict[str, float]], got: Sequence[np.ndarray]) -> str:
    """The measured difference of two runs that differ only in weight_decay, against the exact
    difference of their trajectories within the sum of their propagated bounds: what a failed
    decouple.moments judged by behaviour says, from evidence. Where the difference is the exact
    one, the decay is not what moved the run off its trajectory: a cause present at any
    weight_decay, which exact.trajectory judges."""
    (ea, ba), (eb, bb) = (trajectory.expect(cfg.model, cfg.precision(), theta0, grads, h)
                          for h in hypers)
    worst = None
    for idx in np.ndindex(np.shape(theta0)):
        if not (ba.in_domain[idx] and bb.in_domain[idx]):
            continue
        d = _exact_diff(np.asarray(got[0])[idx], np.asarray(got[1])[idx])[()]
        want = ea["theta"][idx] - eb["theta"][idx]
        allowed = mpmath.mpf(float(ba.value[idx])) + float(bb.value[idx])
        excess = mpmath.inf if d is None else abs(d - want) / allowed if allowed else (
            mpmath.inf if d != want else 0)
        if excess > 1 and (worst is None or excess > worst[0]):
            worst = (excess, idx, d, want, allowed)
    wds = " and ".join(f"weight_decay={h['weight_decay']!r}" for h in hypers)
    if worst is None:
        return (f"the runs with {wds} differ by the exact difference of their trajectories, "
                "within the sum of their bounds, on every element: the decay is AdamW's, and "
                "the run is off its trajectory at any weight_decay (exact.trajectory judges "
                "that cause)")
    _, idx, d, want, allowed = worst
    return (f"the runs with {wds} differ at element {list(idx)} by {_fmt(d)}; the exact "
            f"difference of their trajectories is {mpmath.nstr(want, 17)}, allowed error "
            f"{mpmath.nstr(allowed, 3)}: weight_decay changes more than the decay term (it "
            "reaches the rest of the step)")


def history(r: Regime, dtype: str, rng: np.random.Generator,
            shape: tuple[int, ...]) -> ParamState:
    """A state (m, v) left by a gradient history of magnitude regime `r`."""
    m = r.sample(rng, shape, dtype)
    v = np.abs(replace(r, signs="positive").sample(rng, shape, "float64"))
    v = representable(v * v, dtype)
    return ParamState(m, v, 0)


@st.composite
def apart(draw: st.DrawFn, lo: float, hi: float) -> tuple[Regime, Regime]:
    """Two magnitude regimes at least 3 decades apart: different gradient histories."""
    r = draw(regimes(lo, hi - 3))
    return r, replace(r, center=r.center + draw(st.floats(3, hi - r.center)),
                      signs=draw(st.sampled_from(["mixed", "positive", "negative"])))


@given(hyper=decaying(), theta=regimes(-4, 4, zeros=False), hist=apart(-10, 8),
       gs=apart(-8, 4), t=steps, seed=st.integers(0, 2**32 - 1))
def test_uniform(cfg, hyper, theta, hist, gs, t, seed):
    """The decay part is the same for parameters with different gradient histories; Adam+L2 fails
    this.

    Two parameters hold identical values but different states (gradient histories of different
    magnitudes, replayed where the target allows it; otherwise different first gradients from
    fresh state). Each is stepped once with weight_decay = wd and, in a second optimizer from the
    same state, with weight_decay = 0. The decay part, theta(wd) - theta(0), must be the oracle's
    difference for both parameters within the sum of the two runs' bounds: AdamW's decay does
    not depend on m or v, Adam+L2's goes through the adaptive denominator.
    """
    rng = np.random.default_rng(seed)
    shape = (32,)
    theta0 = theta.sample(rng, shape, cfg.dtype)
    grads = [r.sample(rng, shape, cfg.dtype) for r in gs]
    if replay.can_replay(cfg):
        states = [replace(history(r, cfg.dtype, rng, shape), step=t - 1) for r in hist]
        story = f"replayed states of gradient histories {hist[0]} and {hist[1]}, t={t}"
    else:
        zero = np.zeros(shape)
        states = [ParamState(zero, zero, 0), ParamState(zero, zero, 0)]
        story = f"fresh state, first gradients of regimes {gs[0]} and {gs[1]}"
    hyper0 = {**hyper, "weight_decay": 0.0}
    after, exact, bounds = [], [], []
    for h in (hyper, hyper0):
        setup = Setup([GroupSetup([theta0, theta0.copy()], h)], cfg.dtype, cfg.device)
        run = replay.prepare(cfg, setup, [theta0, theta0], states)
        assert run is not None, "can_replay() promised a writable state"
        calls.step(cfg, run, grads)
        after.append(run.params())
        judged = checks.with_schedule_base(cfg.model, h, h["lr"])
        sdtype = states_dtype(run)
        per = [cfg.model.expect(theta0, grads[i], states[i].as_mapping(), judged,
                                states[i].step + 1, cfg.precision(sdtype)) for i in range(2)]
        exact.append([e["theta"] for e, _ in per])
        bounds.append([b["theta"] for _, b in per])
    problems = []
    for i in range(2):
        d = _exact_diff(after[0][i], after[1][i])
        for idx in np.ndindex(shape):
            if not (bounds[0][i].in_domain[idx] and bounds[1][i].in_domain[idx]):
                continue
            want = exact[0][i][idx] - exact[1][i][idx]
            allowed = mpmath.mpf(float(bounds[0][i].value[idx])) + float(bounds[1][i].value[idx])
            if d[idx] is None or abs(d[idx] - want) > allowed:
                problems.append((i, idx, d[idx], want, allowed))
    if problems:
        i, idx, got, want, allowed = problems[0]
        other = 1 - i
        d_other = _exact_diff(after[0][other], after[1][other])[idx]
        state = states[i]
        judged = checks.with_schedule_base(cfg.model, hyper, hyper["lr"])
        l2 = closer_to_l2(cfg, theta0, [grads[i]], judged, after[0][i], state.as_mapping(),
                          state.step + 1)
        checks.fail(
            f"decouple.uniform: {cfg.adapter.name} ({cfg.dtype} on {cfg.device}): the decay part "
            f"of one step (theta with weight_decay={hyper['weight_decay']!r} minus theta with "
            f"weight_decay=0, same state and gradient) is not AdamW's.\n"
            f"  parameter {i}, element {list(idx)} (theta={theta0[idx]!r}, g={grads[i][idx]!r}, "
            f"m={state.m[idx]!r}, v={state.v[idx]!r}, t={state.step + 1}): decay part "
            f"{_fmt(got)}, oracle {mpmath.nstr(want, 17)}, allowed error "
            f"{mpmath.nstr(allowed, 3)}; {len(problems)} elements out of bound.\n"
            f"  The same element of parameter {other} (identical value, different history) has "
            f"decay part {_fmt(d_other)}: decoupled decay is the same for both.\n"
            + (f"  {COUPLED}.\n" if l2 else "")
            + f"  histories: {story}\n  hyperparameters: {format_hyper(hyper)}; seed {seed}\n"
            f"  reproduce: {checks.reproduction(cfg, 'decouple.uniform')}")


def states_dtype(run) -> str | None:
    states = replay.read_states(run, 2)
    return states[0].dtype if states else None


def _exact_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b without rounding (object array of mpf; None where either is not finite)."""
    out = np.empty(np.shape(a), dtype=object)
    for idx in np.ndindex(np.shape(a)):
        x, y = float(np.asarray(a)[idx]), float(np.asarray(b)[idx])
        out[idx] = (mpmath.fsub(mpmath.mpf(x), mpmath.mpf(y), exact=True)
                    if np.isfinite(x) and np.isfinite(y) else None)
    return out


def _versus(a: np.ndarray, b: np.ndarray, wd_a: float, wd_b: float) -> str:
    """Where two runs' state first differs, labelled by their weight_decay."""
    return bits.difference(a, b, f"{{a!r}} with weight_decay={wd_a!r}, "
                                 f"{{b!r}} with weight_decay={wd_b!r}")


def _fmt(x: mpmath.mpf | None) -> str:
    return "non-finite" if x is None else mpmath.nstr(x, 17)
