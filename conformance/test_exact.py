"""exact.*: the implementation's numbers against the exact oracle, within the derived bound."""

from __future__ import annotations

import numpy as np
import pytest
from adamw_conformance.core.drive import (
    can_replay,
    create,
    failure,
    judge_step,
    prepare,
    reproduction,
    step,
    trajectory,
)
from adamw_conformance.core.judge import compare
from adamw_conformance.core.strategies import hyperparameters, regimes, step_cases
from adamw_conformance.core.variants import VARIANTS, variant_config
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.catalogue("exact")


@pytest.mark.parametrize("variant", VARIANTS)
@given(data=st.data())
def test_one_step(cfg, variant, data):
    """From a reachable state and gradient, theta', m', v' are within B of the oracle."""
    vcfg = variant_config(cfg, variant)
    fresh = None if can_replay(vcfg) else True
    case = data.draw(step_cases(vcfg.dtype, vcfg.device, vcfg.options(**variant_options(variant)),
                                fresh=fresh), label="case")
    params = [p for g in case.setup.groups for p in g.params]
    run = prepare(vcfg, case.setup, params, case.states)
    assert run is not None
    outcome = judge_step(vcfg, run, params, case.states, case.grads, [case.hyper])
    assert not outcome.mismatches, failure(
        "exact.one_step", vcfg, outcome, [case.hyper], case.states[0].step + 1,
        note=f"variant {variant}", repro=reproduction(vcfg, "exact.one_step"))


def variant_options(variant: str) -> dict:
    return {"amsgrad": True} if variant == "amsgrad" else (
        {"maximize": True} if variant == "maximize" else {})


@given(hyper=hyperparameters(), theta=regimes(-4, 4, zeros=False), g=regimes(-8, 4),
       steps=st.integers(2, 12), seed=st.integers(0, 2**32 - 1))
def test_trajectory(cfg, hyper, theta, g, steps, seed):
    """Over T steps from fresh state, theta_T is within the propagated bound."""
    from adamw_conformance.adapters.base import GroupSetup, Setup

    rng = np.random.default_rng(seed)
    theta0 = theta.sample(rng, (64,), cfg.dtype)
    grads = [g.sample(rng, (64,), cfg.dtype) for _ in range(steps)]
    run = create(cfg, Setup([GroupSetup([theta0], hyper)], cfg.dtype, cfg.device))
    for grad in grads:
        step(cfg, run, [grad])
    got = run.params()[0]
    exact, bnd = trajectory(cfg.model, cfg.precision(), theta0, grads, hyper)
    bad = compare("theta", got, exact["theta"], bnd, cfg.dtype)
    assert bad is None, (
        f"exact.trajectory: {cfg.adapter.name} after {steps} steps from fresh state: "
        f"{bad.describe()}\n  hyperparameters: {hyper}\n  reproduce: "
        f"{reproduction(cfg, 'exact.trajectory')}")
