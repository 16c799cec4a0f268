"""The exact oracle (spec.oracle) and the exact-arithmetic helpers it rests on (spec.rounding).

- Rules without a square root are checked against an independent exact computation: the rule's
  own SymPy expression evaluated in `fractions.Fraction` (nothing re-typed, no mpmath).
- Rules with a square root are checked for self-consistency across precisions, and for honesty:
  `verify=True` passes on ordinary data and raises `PrecisionLossError` when the working precision
  is genuinely too small.
- Inputs are read exactly, results rounded correctly and ULP distances counted right:
  tests/test_rounding.py.
- `trajectory` is chained exact steps with nothing rounded in between.
"""

from __future__ import annotations

from dataclasses import fields
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import sympy as sp
import torch
from adamw_conformance.spec import registry
from adamw_conformance.spec.conventions import CHOICES, Convention
from adamw_conformance.spec.formats import FLOAT32
from adamw_conformance.spec.oracle import Oracle, PrecisionLossError

from tests.exact import (
    DTYPES,
    exact_step,
    frac,
    fraction_eval,
    hyperparameters,
    state_for,
    wide,
    within,
)

# --- the oracle against exact Fractions ----------------------------------------------------------

POLYNOMIAL_RULES = ("sgd", "sgd_decoupled", "momentum", "nesterov", "momentum_ema")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", POLYNOMIAL_RULES)
def test_oracle_matches_fractions(name, dtype):
    rule = registry.get(name)
    rng = np.random.default_rng(sum(map(ord, name + dtype)))
    oracle = Oracle(rule)
    n = 24
    for t in (1, 2, 9):
        params, grad = wide(rng, n, dtype), wide(rng, n, dtype)
        state, hyper = state_for(rule, rng, n, dtype), hyperparameters(rng)
        result = oracle.step(params, grad, state, hyper, t=t, verify=True)
        expected = exact_step(rule, params, grad, state, hyper, t)
        rounded = result.float64()
        for out in rule.outputs:
            for i, exact in enumerate(expected[out]):
                assert within(result[out][i], exact, oracle.prec - 16), (out, i, t)
                assert rounded[out][i] == float(exact), (out, i, t)


def test_fraction_evaluator_takes_the_first_step_branch():
    # momentum's buffer is a copy of the gradient at t = 1 (PyTorch), dampened afterwards.
    rule = registry.get("momentum")
    one = torch.tensor([1.0], dtype=torch.float64)
    hyper = {"lr": 0.5, "momentum": 0.5, "dampening": 0.5}
    state = {"buf": torch.tensor([4.0], dtype=torch.float64)}
    assert exact_step(rule, one, one, state, hyper, 1)["buf"] == [1]
    assert exact_step(rule, one, one, state, hyper, 2)["buf"] == [Fraction(5, 2)]
    assert Oracle(rule).step(one, one, state, hyper, t=2)["buf"][0] == mpmath.mpf(2.5)


def test_missing_hyperparameter_is_an_error():
    with pytest.raises(KeyError, match="momentum"):
        Oracle(registry.get("momentum")).step(np.zeros(2), np.zeros(2), hyper={"lr": 0.1})


# --- rules with a square root: precision consistency and certification ---------------------------

SQRT_RULES = [(n, Convention()) for n in ("adam", "adam_l2", "adamw", "adagrad", "rmsprop",
                                         "rmsprop_momentum", "rmsprop_centered",
                                         "rmsprop_centered_momentum")]
SQRT_RULES += [("adamw", Convention(**{f.name: c})) for f in fields(Convention)
               if f.name != "counter" for c in CHOICES[f.name] if c != f.default]


@pytest.mark.parametrize(("name", "convention"), SQRT_RULES,
                         ids=[f"{n}[{c.label()}]" for n, c in SQRT_RULES])
def test_precisions_agree_for_sqrt_rules(name, convention):
    rule = registry.get(name, convention)
    rng = np.random.default_rng(7)
    n = 16
    for dtype, t in (("float32", 1), ("bfloat16", 4), ("float64", 30)):
        params, grad = wide(rng, n, dtype), wide(rng, n, dtype)
        state, hyper = state_for(rule, rng, n, dtype), hyperparameters(rng)
        coarse = Oracle(rule, prec=200).step(params, grad, state, hyper, t=t, verify=True)
        fine = Oracle(rule, prec=400).step(params, grad, state, hyper, t=t, verify=True)
        for out in rule.outputs:
            for i in range(n):
                exact = frac(fine[out][i])
                assert within(coarse[out][i], exact, 190), (out, i, dtype)
            assert np.array_equal(coarse.rounded(FLOAT32, out), fine.rounded(FLOAT32, out))


def test_precision_loss_is_detected_for_sgd():
    # lr = 1/3 as a double times g = 3 is 1 - 2^-54: at 30 bits it rounds to 1, theta - 1 is 0.
    args = (np.array([1.0]), np.array([3.0]))
    with pytest.raises(PrecisionLossError, match="not certified at 30 bits"):
        Oracle(registry.get("sgd"), prec=30).step(*args, hyper={"lr": 1 / 3}, verify=True)
    # Without verify the coarse oracle silently answers 0; at the default precision it is exact.
    assert Oracle(registry.get("sgd"), prec=30).step(*args, hyper={"lr": 1 / 3})["theta"][0] == 0
    good = Oracle(registry.get("sgd")).step(*args, hyper={"lr": 1 / 3}, verify=True)
    assert frac(good["theta"][0]) == 1 - 3 * Fraction(1 / 3)


def test_precision_loss_is_detected_for_adamw():
    # AdamW's step cancels the decayed parameter: at t = 1 from zero state, lr*g/(|g|+eps) with
    # eps tiny is lr*(1 - eps/|g|), and theta (1 - lr wd) = lr: the result is about lr*eps/|g|.
    rule = registry.get("adamw")
    hyper = {"lr": 0.25, "weight_decay": 0.0, "eps": 2.0**-60}
    theta, grad = np.array([0.25]), np.array([1.0])
    with pytest.raises(PrecisionLossError):
        Oracle(rule, prec=40).step(theta, grad, hyper=hyper, verify=True)
    result = Oracle(rule).step(theta, grad, hyper=hyper, verify=True)
    exact = Fraction(1, 4) * Fraction(2) ** -60 / (1 + Fraction(2) ** -60)
    assert within(result["theta"][0], exact, 200)


def test_certify_tolerates_only_what_prec_promises():
    oracle = Oracle(registry.get("sgd"), prec=256)
    one = mpmath.mpf(1)

    def certify(a, b):
        with mpmath.workprec(400):
            oracle._certify({"theta": np.array([a], dtype=object)},
                            {"theta": np.array([b], dtype=object)})

    with mpmath.workprec(400):
        certify(one, one + mpmath.mpf(2) ** -245)  # within 2^-(256 - 16)
        with pytest.raises(PrecisionLossError):
            certify(one, one + mpmath.mpf(2) ** -230)
    certify(mpmath.nan, mpmath.nan)
    certify(mpmath.inf, mpmath.inf)
    with pytest.raises(PrecisionLossError):
        certify(mpmath.inf, one)
    with pytest.raises(PrecisionLossError):
        certify(mpmath.inf, -mpmath.inf)
    with pytest.raises(PrecisionLossError):
        certify(mpmath.nan, one)


# --- trajectories --------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "t0"), [("adamw", 1), ("adamw", 5), ("momentum", 1),
                                          ("momentum", 3), ("rmsprop_centered_momentum", 2),
                                          ("adagrad", 1)])
def test_first_step_of_trajectory_is_step(name, t0):
    rule = registry.get(name)
    rng = np.random.default_rng(21)
    params, grad = wide(rng, 8, "float32"), wide(rng, 8, "float32")
    state, hyper = state_for(rule, rng, 8, "float32"), hyperparameters(rng)
    oracle = Oracle(rule)
    (first,) = oracle.trajectory(params, [grad], hyper, state, t0=t0)
    step = oracle.step(params, grad, state, hyper, t=t0)
    for out in rule.outputs:
        assert all(a == b for a, b in zip(first[out], step[out], strict=True)), out


@pytest.mark.parametrize("name", POLYNOMIAL_RULES)
def test_trajectory_is_chained_exact_steps(name):
    rule = registry.get(name)
    rng = np.random.default_rng(22)
    n, t0 = 6, 1
    params, state = wide(rng, n, "bfloat16"), state_for(rule, rng, n, "bfloat16")
    grads = [wide(rng, n, "bfloat16") for _ in range(4)]
    hyper = hyperparameters(rng)
    traj = Oracle(rule).trajectory(params, grads, hyper, state, t0=t0)
    # The same chain in Fractions: each step's exact outputs are the next step's inputs.
    h = dict(rule.defaults) | hyper
    for i in range(n):
        current = {"theta": Fraction(float(params[i]))}
        current |= {s.name: Fraction(float(state[s.name][i])) for s in rule.state}
        for k, grad in enumerate(grads):
            env = {sym: current[sym.name] for sym in (rule.inputs[0], *rule.state)}
            env |= {rule.inputs[1]: Fraction(float(grad[i])), rule.inputs[2]: Fraction(t0 + k)}
            env |= {sym: Fraction(float(h[sym.name])) for sym in rule.hyperparameters}
            current = {out: fraction_eval(rule.update[out], env) for out in rule.outputs}
            for out in rule.outputs:
                assert within(traj[k][out][i], current[out], 230), (i, k, out)


def test_adamw_trajectory_is_chained_exact_steps():
    # Chained in SymPy's own arbitrary-precision evaluation (evalf, 130 digits), not in mpmath's
    # lambdified code: outputs of each step are carried unrounded into the next.
    rule = registry.get("adamw")
    rng = np.random.default_rng(23)
    n, t0 = 3, 2
    params, state = wide(rng, n, "float32"), state_for(rule, rng, n, "float32")
    grads = [wide(rng, n, "float32") for _ in range(3)]
    hyper = hyperparameters(rng)
    traj = Oracle(rule).trajectory(params, grads, hyper, state, t0=t0)
    h = dict(rule.defaults) | hyper
    for i in range(n):
        current = {"theta": sp.Rational(float(params[i]))}
        current |= {s.name: sp.Rational(float(state[s.name][i])) for s in rule.state}
        for k, grad in enumerate(grads):
            env = {sym: current[sym.name] for sym in (rule.inputs[0], *rule.state)}
            env |= {rule.inputs[1]: sp.Rational(float(grad[i])), rule.inputs[2]: t0 + k}
            env |= {sym: sp.Rational(float(h[sym.name])) for sym in rule.hyperparameters}
            current = {out: rule.update[out].evalf(130, subs=env) for out in rule.outputs}
            for out in rule.outputs:
                exact = Fraction(*map(int, sp.Rational(current[out]).as_numer_denom()))
                assert within(traj[k][out][i], exact, 230), (i, k, out)


def test_trajectory_does_not_round_between_steps():
    # Decay only, in float64: the exact trajectory is theta (1 - lr wd)^k, which float64 steps
    # (rounded each time) miss.
    rule = registry.get("sgd_decoupled")
    hyper = {"lr": 0.1, "weight_decay": 0.1}
    traj = Oracle(rule).trajectory(np.array([1.0]), [np.array([0.0])] * 5, hyper)
    keep = 1 - Fraction(0.1) * Fraction(0.1)
    for k, res in enumerate(traj, start=1):
        assert within(res["theta"][0], keep**k, 240)
    # The value carried is not a double: nothing was rounded to float64 between steps.
    assert frac(traj[-1]["theta"][0]).denominator > 2**53
