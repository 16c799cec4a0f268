"""bias.*: the bias corrections and the step counter t they are computed from."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from adamw_conformance.adapters.base import NO_NONE_GRADS, GroupSetup, ParamState, Setup
from adamw_conformance.core import calls, checks, layout, replay
from adamw_conformance.core.strategies import hyperparameters, log_uniform, regimes, step_cases
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.catalogue("bias")


@given(data=st.data())
def test_step_one(cfg, data):
    """At t=1: theta_1 = theta_0 (1-lr wd) - lr g/(abs(g)+eps) within B.

    State-free: a fresh optimizer, one step, judged against the oracle at t=1 (which is the
    statement's closed form under the default convention, and the declared convention's t=1 step
    otherwise). Moments are judged too where the target's state is readable.
    """
    case = data.draw(step_cases(cfg.dtype, cfg.device, fresh=True), label="case")
    params = [p for g in case.setup.groups for p in g.params]
    run = calls.create(cfg, case.setup)
    outcome = checks.judge_step(cfg, run, params, case.states, case.grads, [case.hyper])
    assert not outcome.mismatches, checks.failure(
        "bias.step_one", cfg, outcome, [case.hyper], 1, note="first step from a fresh state",
        repro=checks.reproduction(cfg, "bias.step_one"))


# --- bias.counter -----------------------------------------------------------------------------

# Each counter test drives a few steps; 32-64 elements keep the oracle cheap (~50 us/element).
_N = 32

# Powers of two where a counter held in a narrow float stops counting: bf16 (8 significand
# bits), fp16 (11), fp32 (24; torch keeps `step` as a float32 tensor).
_LIMITS = {"late-start": None, "past-256": 8, "past-2048": 11, "past-16777216": 24}
# Steps judged around 2^n: t = 2^n - 1, 2^n, 2^n + 1, 2^n + 2 (a stuck counter repeats 2^n).
_AROUND = 4


def _expected_first_t(convention: str, k: int) -> int:
    """The t of a parameter's first gradient step after k steps of its group without one
    (spec/conventions.py): its own count under 'parameter'; the group's or the optimizer's
    count of steps, which is k + 1 here (its group-mate has a gradient every step)."""
    return 1 if convention == "parameter" else k + 1


@pytest.mark.parametrize("part", list(_LIMITS))
@given(data=st.data())
def test_counter(cfg, part, data):
    """A parameter without gradient for k steps starts its own t at 1 (default convention);
    counters stay exact past 2^8, 2^11, 2^24.

    late-start: two parameters in one group; the second has no gradient for k steps. Its first
    gradient step is judged from its fresh state at the t of the declared counter convention
    (1 for the default per-parameter counter), which needs no state reading; its second step,
    and its group-mate, where the state is readable.

    past-2^n: state replay puts the stored counter at 2^n - 2, then four steps are judged at
    t = 2^n - 1 .. 2^n + 2 (the suite counts t itself; m and v are replayed from the target's
    own state each step). A counter is observable only through 1 - beta^t, which at such t is
    1 for ordinary betas: beta1 or beta2 is drawn as 1 - x 2^-n (x in 0.05..4), so beta^t is
    near e^-x and a t that is off by one moves the step by about 2^-n relative. That is far
    above the bound for a bf16 or fp16 counter at 2^8 or 2^11; at 2^24 it is visible in
    float64 but below float32's own rounding, so a float32 counter passes in float32. Skipped
    where the target's state cannot be written.
    """
    n = _LIMITS[part]
    if n is None:
        if not cfg.caps.none_grads:
            pytest.skip(f"{cfg.adapter.name} {NO_NONE_GRADS}")
        _late_start(cfg, data)
    else:
        if not replay.can_replay(cfg):
            pytest.skip(f"{cfg.adapter.name}: its state cannot be read and written, so the "
                        f"stored counter cannot be put near 2^{n}")
        _past(cfg, data, n)


def _late_start(cfg, data) -> None:
    hyper = data.draw(hyperparameters(), label="hyper")
    k = data.draw(st.integers(1, 5), label="steps without gradient")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rg = data.draw(regimes(-8, 4), label="g")
    rt = data.draw(regimes(-4, 4, zeros=False), label="theta")
    rng = np.random.default_rng(seed)
    theta = [rt.sample(rng, (_N,), cfg.dtype) for _ in range(2)]
    setup = Setup([GroupSetup(theta, hyper)], cfg.dtype, cfg.device)
    run = calls.create(cfg, setup)
    for _ in range(k):
        calls.step(cfg, run, [rg.sample(rng, (_N,), cfg.dtype), None])
    convention = cfg.model.convention.counter
    t_late = _expected_first_t(convention, k)
    first = replay.read_states(run, 1)  # parameter 0's state; None where the target hides it
    for j in range(2):
        before = run.params()
        if j == 0:
            late = ParamState(np.zeros(_N), np.zeros(_N), t_late - 1)
            # The group-mate's state is unknown where the target hides it: not judged then.
            mate = replace(first[0], step=k) if first is not None else None
        else:
            states = replay.read_states(run, 2)
            if states is None:
                break  # state unreadable: the first step, from a fresh state, was the check
            mate, late = replace(states[0], step=k + 1), replace(states[1], step=t_late)
        grads = [rg.sample(rng, (_N,), cfg.dtype) for _ in range(2)]
        outcome = checks.judge_step(cfg, run, before, [mate, late], grads, [hyper, hyper])
        assert not outcome.mismatches, checks.failure(
            "bias.counter", cfg, outcome, [hyper, hyper], t_late + j,
            note=f"parameter 1 had no gradient for the first {k} steps; this is its "
                 f"{'first' if j == 0 else 'second'} gradient step, at its t={t_late + j} under "
                 f"the '{convention}' counter convention (parameter 0 is at t={k + 1 + j})"
                 + (f"; {shared}" if (shared := layout.shared_counter(cfg)) else ""),
            repro=checks.reproduction(cfg, "bias.counter"))


def _past(cfg, data, n: int) -> None:
    hyper = data.draw(hyperparameters(), label="hyper")
    x = data.draw(log_uniform(0.05, 4.0), label="x")
    which = data.draw(st.sampled_from(["beta1", "beta2", "both"]), label="near one")
    close = float(1.0 - x * 2.0**-n)
    for name in ("beta1", "beta2") if which == "both" else (which,):
        hyper[name] = close
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    r = {name: data.draw(regimes(lo, hi), label=name)
         for name, lo, hi in (("g", -8, 4), ("m", -8, 4), ("v", -16, 8))}
    # theta near lr: the step is then not lost in theta's own rounding.
    lr_exp = float(np.log10(hyper["lr"]))
    r["theta"] = data.draw(regimes(lr_exp - 2, lr_exp + 2, zeros=False), label="theta")
    theta = r["theta"].sample(rng, (_N,), cfg.dtype)
    state = ParamState(r["m"].sample(rng, (_N,), cfg.dtype),
                       np.abs(r["v"].sample(rng, (_N,), cfg.dtype)), 2**n - 2)
    setup = Setup([GroupSetup([theta], hyper)], cfg.dtype, cfg.device)
    run = replay.prepare(cfg, setup, [theta], [state])
    assert run is not None
    before = [theta]
    for j in range(_AROUND):
        t = 2**n - 1 + j
        g = r["g"].sample(rng, (_N,), cfg.dtype)
        outcome = checks.judge_step(cfg, run, before, [state], [g], [hyper])
        stored = outcome.states[0].step if outcome.states else None
        assert not outcome.mismatches, checks.failure(
            "bias.counter", cfg, outcome, [hyper], t,
            note=f"the counter was put at {2**n - 2} and advanced {j + 1} time(s); the "
                 f"target's stored counter now reads {stored}, the spec's t is {t} "
                 f"({which} = 1 - {x:.3g} * 2^-{n} makes 1 - beta^t depend on t)",
            repro=checks.reproduction(cfg, "bias.counter"))
        before = outcome.params
        # Replay the target's own moments, but at the suite's count of t.
        state = replace(outcome.states[0], step=t)
