"""schedule.*: a learning rate changed between steps (as a scheduler does) takes effect at once,
in the adaptive step and in the decay; lr = 0 freezes the parameters exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance import record
from conformance.adapters.base import GroupSetup, ParamState, Setup, capability
from conformance.drive import (
    bit_difference,
    can_replay,
    create,
    fail,
    failure,
    judge_step,
    prepare,
    read_states,
    reproduction,
    same_bits,
    step,
    with_schedule_base,
)
from conformance.judge import compare, format_hyper
from conformance.strategies import (
    first_step_creates_state,
    hyperparameters,
    log_uniform,
    regimes,
    sample_state,
    state_regimes,
    steps,
)

pytestmark = pytest.mark.catalogue("schedule")


_SHAPES = ((16,), (2, 3))


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
    probe = create(cfg, Setup([GroupSetup([np.ones(2)], hyper)], cfg.dtype, cfg.device))
    if not capability(probe, "set_lr"):
        pytest.skip(f"{cfg.adapter.name}: the adapter cannot change a group's lr (no set_lr)")
    if hyper.get("weight_decay") == 0.0:
        hyper = {**hyper, "weight_decay": 0.1}
    rng = np.random.default_rng(seed)
    params = [theta.sample(rng, s, cfg.dtype) for s in _SHAPES]
    run = create(cfg, Setup([GroupSetup(params, hyper)], cfg.dtype, cfg.device))
    replay = can_replay(cfg)
    for _ in range(before if replay else 0):
        step(cfg, run, [g.sample(rng, s, cfg.dtype) for s in _SHAPES])
    states = read_states(run, len(params)) if replay else None
    if states is None:
        states = [ParamState(np.zeros(s), np.zeros(s), 0) for s in _SHAPES]
    new_lr = float(hyper["lr"] * factor)
    run.set_lr(0, new_lr)
    now = {**hyper, "lr": new_lr}
    judged = with_schedule_base(cfg.model, now, hyper["lr"])
    x = run.params()
    grads = [g.sample(rng, s, cfg.dtype) for s in _SHAPES]
    outcome = judge_step(cfg, run, x, states, grads, [judged] * len(params))
    if outcome.mismatches:
        i = outcome.mismatches[0][0]
        stale = with_schedule_base(cfg.model, hyper, hyper["lr"])
        exact, bnd = cfg.model.expect(x[i], grads[i], states[i].as_mapping(), stale,
                                      states[i].step + 1, cfg.precision())
        with record.suspended():
            old = compare("theta", outcome.params[i], exact["theta"], bnd["theta"], cfg.dtype)
        note = (f"lr changed from {hyper['lr']!r} to {new_lr!r} before this step"
                + ("; the result matches the OLD lr: the change was ignored" if old is None
                   else "; the step or the decay did not use the new lr"))
        fail(failure("schedule.current_lr", cfg, outcome, [judged] * len(params),
                     states[0].step + 1, note=note,
                     repro=reproduction(cfg, "schedule.current_lr")))


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
    probe = create(cfg, Setup([GroupSetup([np.ones(2)], hyper)], cfg.dtype, cfg.device))
    settable = capability(probe, "set_lr")
    if mode == "replay" and not can_replay(cfg):
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
        run = prepare(cfg, Setup([GroupSetup(params, hyper)], cfg.dtype, cfg.device), params,
                      states)
        assert run is not None, "can_replay() promised a writable state"
        if settable:
            run.set_lr(0, 0.0)
        else:
            run = prepare(cfg, Setup([GroupSetup(params, zero_lr)], cfg.dtype, cfg.device),
                          params, states)
        story = f"replayed state (t={t})"
    elif mode == "warm":
        run = create(cfg, Setup([GroupSetup(params, hyper)], cfg.dtype, cfg.device))
        for _ in range(warm):
            step(cfg, run, [zero_first(g.sample(rng, s, cfg.dtype)) for s in _SHAPES])
        run.set_lr(0, 0.0)
        story = f"{warm} steps at lr={hyper['lr']!r}, then set_lr(0)"
    else:
        run = create(cfg, Setup([GroupSetup(params, zero_lr)], cfg.dtype, cfg.device))
        story = "fresh state, created with lr=0"
    frozen = run.params()
    for k in range(after):
        step(cfg, run, [zero_first(g.sample(rng, s, cfg.dtype)) for s in _SHAPES])
        for i, (now, was) in enumerate(zip(run.params(), frozen, strict=True)):
            if same_bits(_unsigned_zeros(now), _unsigned_zeros(was)):
                continue
            what = ("non-finite values appeared" if not np.all(np.isfinite(now))
                    else "the values changed")
            fail(f"schedule.lr_zero: {cfg.adapter.name} ({cfg.dtype} on {cfg.device}): at lr=0 "
                 f"parameter {i} must not move, but after {k + 1} step(s) {what}: "
                 f"{bit_difference(now, was)}.\n  start: {story}\n  hyperparameters: "
                 f"{format_hyper(zero_lr)}; seed {seed}\n"
                 f"  reproduce: {reproduction(cfg, 'schedule.lr_zero')}")


def _unsigned_zeros(x: np.ndarray) -> np.ndarray:
    """x with -0.0 read as +0.0 (every other bit pattern, NaN included, kept)."""
    x = np.asarray(x, np.float64)
    return np.where(x == 0, 0.0, x)
