"""exact.*: the implementation's numbers against the exact oracle, within the derived bound."""

from __future__ import annotations

import numpy as np
import pytest
from adamw_conformance.core import calls, checks, replay, trajectory, variants
from adamw_conformance.core.strategies import hyperparameters, regimes, step_cases
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.catalogue("exact")


@pytest.mark.parametrize("variant", variants.VARIANTS)
@given(data=st.data())
def test_one_step(cfg, variant, data):
    """From a reachable state and gradient, theta', m', v' are within B of the oracle."""
    vcfg = variants.variant_config(cfg, variant)
    fresh = None if replay.can_replay(vcfg) else True
    case = data.draw(step_cases(vcfg.dtype, vcfg.device, vcfg.options(**variants.options(variant)),
                                fresh=fresh), label="case")
    params = [p for g in case.setup.groups for p in g.params]
    run = replay.prepare(vcfg, case.setup, params, case.states)
    assert run is not None
    outcome = checks.judge_step(vcfg, run, params, case.states, case.grads, [case.hyper])
    assert not outcome.mismatches, checks.failure(
        "exact.one_step", vcfg, outcome, [case.hyper], case.states[0].step + 1,
        note=f"variant {variant}", repro=checks.reproduction(vcfg, "exact.one_step"))


@given(hyper=hyperparameters(), theta=regimes(-4, 4, zeros=False), g=regimes(-8, 4),
       steps=st.integers(2, 12), seed=st.integers(0, 2**32 - 1))
def test_trajectory(cfg, hyper, theta, g, steps, seed):
    """Over T steps from fresh state, theta_T is within the propagated bound."""
    from adamw_conformance.adapters.base import GroupSetup, Setup

    rng = np.random.default_rng(seed)
    theta0 = theta.sample(rng, (64,), cfg.dtype)
    grads = [g.sample(rng, (64,), cfg.dtype) for _ in range(steps)]
    run = calls.create(cfg, Setup([GroupSetup([theta0], hyper)], cfg.dtype, cfg.device))
    for grad in grads:
        calls.step(cfg, run, [grad])
    got = run.params()[0]
    bad = trajectory.mismatch(cfg, theta0, grads, hyper, got)
    assert bad is None, (
        f"exact.trajectory: {cfg.adapter.name} after {steps} steps from fresh state: "
        f"{bad.describe()}\n  hyperparameters: {hyper}\n  reproduce: "
        f"{checks.reproduction(cfg, 'exact.trajectory')}")
