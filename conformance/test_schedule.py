"""schedule.*: a learning rate changed between steps (as a scheduler does) takes effect at once,
in the adaptive step and in the decay; lr = 0 freezes the parameters exactly."""

from __future__ import annotations

import numpy as np
import pytest
from adamw_conformance.adapters.base import GroupSetup, ParamState, Setup, capability
from adamw_conformance.core import bits, calls, checks, record, replay
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import compare, format_hyper
from adamw_conformance.core.strategies import (
    SizedShapes,
    first_step_creates_state,
    hyperparameters,
    log_uniform,
    regimes,
    sample_state,
    state_regimes,
    steps,
)
from adamw_conformance.spec.symbols import lr as LR
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.catalogue("schedule")


_SHAPES = SizedShapes(((16,), (2, 3)))


@given(hyper=hyperparameters(), factor=st.sampled_from([0.1, 0.5, 2.0, 10.0])
       | log_uniform(1e-3, 1e3), theta=regimes(-4, 4, zeros=False), g=regimes(-8, 4),
       before=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_current_lr(cfg, hyper, factor, theta, g, before, seed):
    """After a change of group lr, both the step and the decay use the new lr.

    A few steps at the initial lr, then Run.set_lr(group, lr * factor), then one step judged by
    state replay against the oracle with the new lr (under decay_coupling=schedule the decay
    rate is new lr / initial lr * wd). Where the state is not readable, the lr is changed before
    the first step and that step is judged from fresh state. Skipped without set_lr.
    """
    probe = calls.create(cfg, Setup([GroupSetup([np.ones(2)], hyper)], cfg.dtype, cfg.device))
    if not capability(probe, "set_lr"):
        pytest.skip(f"{cfg.adapter.name}: the adapter cannot change a group's lr (no set_lr)")
    if hyper.get("weight_decay") == 0.0:
        hyper = {**hyper, "weight_decay": 0.1}
    rng = np.random.default_rng(seed)
    params = [theta.sample(rng, s, cfg.dtype) for s in _SHAPES]
    run = calls.create(cfg, Setup([GroupSetup(params, hyper)], cfg.dtype, cfg.device))
    replayed = replay.can_replay(cfg)
    for _ in range(before if replayed else 0):
        calls.step(cfg, run, [g.sample(rng, s, cfg.dtype) for s in _SHAPES])
    states = replay.read_states(run, len(params)) if replayed else None
    if states is None:
        states = [ParamState(np.zeros(s), np.zeros(s), 0) for s in _SHAPES]
    new_lr = float(hyper["lr"] * factor)
    calls.set_lr(cfg, run, 0, new_lr)
    now = {**hyper, "lr": new_lr}
    judged = checks.with_schedule_base(cfg.model, now, hyper["lr"])
    x = run.params()
    grads = [g.sample(rng, s, cfg.dtype) for s in _SHAPES]
    outcome = checks.judge_step(cfg, run, x, states, grads, [judged] * len(params))
    if outcome.mismatches:
        note = _diagnosis(cfg, outcome, x, states, grads, hyper, judged)
        checks.fail(checks.failure("schedule.current_lr", cfg, outcome, [judged] * len(params),
                                   states[0].step + 1, note=note,
                                   repro=checks.reproduction(cfg, "schedule.current_lr")))


def _diagnosis(cfg: Config, outcome: checks.StepOutcome, x: list[np.ndarray],
               states: list[ParamState], grads: list[np.ndarray], hyper: dict[str, float],
               judged: dict[str, float]) -> str:
    """What the failure says about the lr change, from evidence, never a guess.

    Two facts decide it. (1) Which outputs broke the bound, and whether the spec makes them
    depend on lr at all (AdamW's m and v do not: a mismatch there is an inaccurate step at any
    lr, what exact.one_step reports). (2) A control: a fresh optimizer created with the new lr,
    put at the same parameters and state (state replay) and given the same gradient. If its
    parameters are bitwise those of the run whose lr was changed, the change took effect, and
    the step is outside the bound for another reason. Only where theta broke the bound, is within
    the old lr's bound, and the control differs (or cannot be built) is the change "ignored".
    """
    new_lr = judged["lr"]
    head = f"lr changed from {hyper['lr']!r} to {new_lr!r} before this step"
    broken = sorted({mm.output for _, mm in outcome.mismatches})
    on_lr = [o for o in broken if o in cfg.model.rule.update
             and LR in cfg.model.rule.update[o].free_symbols]
    control = _control(cfg, x, states, grads, judged)
    if control is None:
        evidence = ""
        took_effect = None
    else:
        same = all(bits.same(a, b) for a, b in zip(outcome.params, control, strict=True))
        took_effect = same
        evidence = (f"a fresh optimizer created with lr={new_lr!r}, put at the same parameters "
                    f"and state and given the same gradient, gives "
                    + ("bitwise the same parameters: the change took effect" if same else
                       "other parameters (" + _first_difference(outcome.params, control) + ")"))
    if not on_lr:
        return (f"{head}; only {', '.join(broken)} broke the bound, which under rule "
                f"{cfg.model.rule.name} does not depend on lr: this step is outside the bound "
                "whatever the lr (exact.one_step judges that), not because of the change"
                + (f"; {evidence}" if evidence else ""))
    i = next(i for i, mm in outcome.mismatches if mm.output in on_lr)
    stale = checks.with_schedule_base(cfg.model, hyper, hyper["lr"])
    exact, bnd = cfg.model.expect(x[i], grads[i], states[i].as_mapping(), stale,
                                  states[i].step + 1, cfg.precision())
    with record.suspended():
        old = compare("theta", outcome.params[i], exact["theta"], bnd["theta"], cfg.dtype)
    if took_effect:
        return (f"{head}; {evidence}; the step is outside the bound "
                + ("at the new lr (it is within the old lr's bound too: at this point the two "
                   "lrs give results closer than the bound tells apart)" if old is None
                   else "at both the new and the old lr")
                + ", for a reason other than the change (exact.one_step judges the step)")
    verdict = ("the result matches the OLD lr: the change was ignored" if old is None
               else "the step or the decay did not use the new lr")
    return f"{head}; {verdict}" + (f"; {evidence}" if evidence else "")


def _control(cfg: Config, x: list[np.ndarray], states: list[ParamState],
             grads: list[np.ndarray], judged: dict[str, float]) -> list[np.ndarray] | None:
    """The parameters after one step of a fresh optimizer created with the judged lr, put at
    (x, states): None where the state cannot be written, or where the declared convention makes
    the decay depend on the lr an optimizer was created with (decay_coupling=schedule)."""
    if "initial_lr" in judged:
        return None
    hyper = {k: v for k, v in judged.items() if k != "initial_lr"}
    try:
        run = replay.prepare(cfg, Setup([GroupSetup([p.copy() for p in x], hyper)], cfg.dtype,
                                 cfg.device), x, states)
        if run is None:
            return None
        calls.step(cfg, run, grads)
        return run.params()
    except calls.ImplementationError:
        return None


def _first_difference(got: list[np.ndarray], want: list[np.ndarray]) -> str:
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if not bits.same(a, b):
            return f"parameter {i}: {bits.difference(a, b)}"
    return "bitwise equal"


@given(hyper=hyperparameters(), theta=regimes(-4, 4, zeros=True), g=regimes(-8, 4, zeros=True),
       m=regimes(-10, 8), v=regimes(-20, 16, zeros=True), t=steps,
       mode=st.sampled_from(["replay", "warm", "fresh"]), warm=st.integers(1, 3),
       after=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_lr_zero(cfg, hyper, theta, g, m, v, t, mode, warm, after, seed):
    """lr = 0 is an exact, finite no-op.

    From a replayed state, a state reached by a few steps at a positive lr
    followed by set_lr(0), or fresh state, steps at lr = 0 with gradients that include zeros
    must leave every parameter bitwise as it was, and finite. A zero may change its sign: at
    theta = -0.0 the spec's own theta (1 - 0 wd) - 0 u is +0.0 in IEEE arithmetic where u < 0
    (steps at a positive lr can reach -0.0), so the sign of a zero is not the spec's to demand.
    Every gradient (and replayed v) has an exact zero at its first element, so v = 0 occurs.
    Skipped where the declared convention decays by weight_decay alone (decay_coupling=
    independent), under which lr = 0 still decays.
    """
    if cfg.model.convention.decay_coupling == "independent":
        pytest.skip("decay_coupling=independent: the decay does not scale with lr")
    rng = np.random.default_rng(seed)

    def zero_first(x: np.ndarray) -> np.ndarray:
        # v = 0 (never a nonzero gradient) must occur: 0/0 is where folded kernels write NaN.
        x.reshape(-1)[0] = 0.0
        return x

    params = [theta.sample(rng, s, cfg.dtype) for s in _SHAPES]
    zero_lr = {**hyper, "lr": 0.0}
    probe = calls.create(cfg, Setup([GroupSetup([np.ones(2)], hyper)], cfg.dtype, cfg.device))
    settable = capability(probe, "set_lr")
    if mode == "replay" and not replay.can_replay(cfg):
        mode = "warm"
    if mode == "warm" and not settable:
        mode = "fresh"
    if mode == "fresh" and cfg.model.convention.decay_coupling == "schedule":
        pytest.skip("decay_coupling=schedule needs a positive initial lr and set_lr")
    if mode == "replay":
        t = max(t, 2) if first_step_creates_state() else t
        # v = 0 at the first element, and what must vanish with it (gavg^2 <= v)
        states = [sample_state(state_regimes(m, v), rng, s, cfg.dtype, t - 1).mapped(
                      lambda name, x: zero_first(x) if name in ("v", "accum", "gavg") else x)
                  for s in _SHAPES]
        run = replay.prepare(cfg, Setup([GroupSetup(params, hyper)], cfg.dtype, cfg.device), params,
                      states)
        assert run is not None, "can_replay() promised a writable state"
        if settable:
            calls.set_lr(cfg, run, 0, 0.0)
        else:
            run = replay.prepare(cfg, Setup([GroupSetup(params, zero_lr)], cfg.dtype, cfg.device),
                          params, states)
        story = f"replayed state (t={t})"
    elif mode == "warm":
        run = calls.create(cfg, Setup([GroupSetup(params, hyper)], cfg.dtype, cfg.device))
        for _ in range(warm):
            calls.step(cfg, run, [zero_first(g.sample(rng, s, cfg.dtype)) for s in _SHAPES])
        calls.set_lr(cfg, run, 0, 0.0)
        story = f"{warm} steps at lr={hyper['lr']!r}, then set_lr(0)"
    else:
        run = calls.create(cfg, Setup([GroupSetup(params, zero_lr)], cfg.dtype, cfg.device))
        story = "fresh state, created with lr=0"
    frozen = run.params()
    for k in range(after):
        calls.step(cfg, run, [zero_first(g.sample(rng, s, cfg.dtype)) for s in _SHAPES])
        for i, (now, was) in enumerate(zip(run.params(), frozen, strict=True)):
            if bits.same(_unsigned_zeros(now), _unsigned_zeros(was)):
                continue
            what = ("non-finite values appeared" if not np.all(np.isfinite(now))
                    else "the values changed")
            checks.fail(
                f"schedule.lr_zero: {cfg.adapter.name} ({cfg.dtype} on {cfg.device}): at lr=0 "
                f"parameter {i} must not move, but after {k + 1} step(s) {what}: "
                f"{bits.difference(now, was)}.\n  start: {story}\n  hyperparameters: "
                f"{format_hyper(zero_lr)}; seed {seed}\n"
                f"  reproduce: {checks.reproduction(cfg, 'schedule.lr_zero')}")


def _unsigned_zeros(x: np.ndarray) -> np.ndarray:
    """x with -0.0 read as +0.0 (every other bit pattern, NaN included, kept)."""
    x = np.asarray(x, np.float64)
    return np.where(x == 0, 0.0, x)
