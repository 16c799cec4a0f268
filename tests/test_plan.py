"""The compiled bound engine (spec.plan) against the interpreted reference, and the tiered verdict
against the plain one: no loss of soundness, no change of verdict.

- Every bound the compiled engine gives is bit-identical to `spec.bounds.reference_bound` (values,
  domain, sensitivities, centre), for every rule of spec/rules, AdamW's conventions, every precision
  profile, and hard inputs: zeros (where the unguarded sweep meets 0 * inf and the reference
  redoes the element), subnormals, values near overflow, beta2 = 1 - 2^-40, t = 2^40, chunked
  arrays.
- The filter's single pass gives the same float64 estimate as the reference engine, and its early
  acceptance bound is never above the reference bound of that order.
- `compare` through the tiered bound (one order first, the others only for what is left) gives the
  same verdict, count, worst element and oracle value as `compare` against the exact oracle and the
  full maximum over orders, on outputs placed just inside and just outside the bound.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
from adamw_conformance.core.judge import Model, compare
from adamw_conformance.spec.bounds import (
    Bound,
    LazyMaximum,
    Precision,
    bound,
    environment,
    reference_bound,
)
from adamw_conformance.spec.conventions import Convention
from adamw_conformance.spec.filter import FLOAT64_ARITHMETIC, SAFETY, Filter
from adamw_conformance.spec.formats import BFLOAT16
from adamw_conformance.spec.plan_runner import CHUNK
from adamw_conformance.spec.rounding import round_to

from tests.test_filter import _cases

HYPER = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2,
         "momentum": 0.9, "dampening": 0.1, "alpha": 0.99, "lr_decay": 0.01, "initial_lr": 1e-3}

MODELS = {
    "adamw": Model(),
    "adamw+maximize": Model(maximize=True),
    "adamw+amsgrad": Model(convention=Convention(amsgrad="raw_max")),
    "adam": Model("adam"),
    "adam_l2": Model("adam_l2"),
    "sgd": Model("sgd"),
    "nesterov": Model("nesterov"),
    "adagrad": Model("adagrad"),
    "rmsprop_centered_momentum": Model("rmsprop_centered_momentum"),
}

PROFILES = {
    "float32": Precision.of("float32"),
    "bfloat16": Precision.of("bfloat16"),
    "float16": Precision.of("float16"),
    "float64": Precision.of("float64"),
    "bf16-hyper": Precision.of("float32", hyper=BFLOAT16),
}

REGIMES = {
    "default": (HYPER, 7),
    "beta2_near_1": (dict(HYPER, beta2=1 - 2.0**-40), 2),
    "huge_t": (HYPER, 2**40),
    "small_beta1_no_decay": (dict(HYPER, beta1=0.3, weight_decay=0.0), 1),
}


def _inputs(kind: str, n: int, rng: np.random.Generator) -> tuple:
    x = rng.standard_normal(n) * np.exp(rng.uniform(-20, 20, n))
    if kind == "subnormal":
        x = np.ldexp(rng.standard_normal(n), -140)
    if kind == "near_overflow":
        x = np.ldexp(rng.standard_normal(n), 126)
    g = rng.permutation(x)
    state = {"m": x * 0.1, "v": x * x * 0.01, "vmax": x * x * 0.02, "buf": x * 0.3,
             "accum": np.abs(x), "gavg": g * 0.1}
    if kind == "zeros":
        x[::3], g[::4] = 0.0, 0.0
        for k in ("v", "vmax", "accum"):
            state[k][::2] = 0.0
    return x, g, state


def _assert_same(a: dict[str, Bound], b: dict[str, Bound], what: str) -> None:
    assert a.keys() == b.keys()
    for k in b:
        for attr in ("value", "in_domain", "center"):
            x, y = getattr(a[k], attr), getattr(b[k], attr)
            assert np.array_equal(np.broadcast_to(x, np.shape(y)), y, equal_nan=True), \
                (what, k, attr)
        assert a[k].sensitivity.keys() == b[k].sensitivity.keys()
        for s, y in b[k].sensitivity.items():
            assert np.array_equal(a[k].sensitivity[s], y, equal_nan=True), (what, k, s)


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("kind", ["wide", "zeros", "subnormal", "near_overflow"])
def test_compiled_bounds_are_the_reference_bounds(model_name, kind):
    model = MODELS[model_name]
    rule = model.rule
    rng = np.random.default_rng(abs(hash((model_name, kind))) % 2**32)
    theta, g, state = _inputs(kind, 64, rng)
    for pname, prec in PROFILES.items():
        for rname, (hyper, t) in REGIMES.items():
            env = environment(rule.inputs, theta, g, state, hyper, t, rule.defaults)
            for order in model.orders(prec):
                _assert_same(bound(order, env, prec), reference_bound(order, env, prec),
                             (pname, rname, order.name))


def test_chunked_bounds_are_the_reference_bounds():
    """Above CHUNK elements the plan runs in pieces; the pieces put together are the same."""
    model = MODELS["adamw"]
    rng = np.random.default_rng(3)
    theta, g, state = _inputs("zeros", 2 * CHUNK + 17, rng)
    prec = PROFILES["float32"]
    env = environment(model.rule.inputs, theta, g, state, HYPER, 7, model.rule.defaults)
    for order in model.orders(prec):
        _assert_same(bound(order, env, prec), reference_bound(order, env, prec), order.name)


@pytest.mark.parametrize("model_name", ["adamw", "adam_l2", "sgd", "rmsprop_centered_momentum"])
@pytest.mark.parametrize("kind", ["wide", "zeros", "subnormal"])
def test_filter_pass_is_the_reference_estimate(model_name, kind):
    """The filter's one pass: the estimate is the reference engine's float64 bound (times SAFETY),
    and the early-acceptance bound never exceeds the reference bound of the same order."""
    model = MODELS[model_name]
    rule = model.rule
    theta, g, state = _inputs(kind, 200, np.random.default_rng(11))
    for prec in PROFILES.values():
        for hyper, t in REGIMES.values():
            env = environment(rule.inputs, theta, g, state, hyper, t, rule.defaults)
            step = Filter(rule, env, prec)
            order = step.order
            ref64 = reference_bound(order, env, FLOAT64_ARITHMETIC)
            ref = reference_bound(order, env, prec)
            for name in rule.outputs:
                est = step.estimate(name)
                want = ref64[name]
                assert np.array_equal(est.value, want.center, equal_nan=True)
                assert np.array_equal(est.ok, est.ok & want.in_domain)
                assert np.array_equal(est.error[est.ok], (want.value * SAFETY)[est.ok])
                low = step.lower_bound(name)
                judged = ref[name].in_domain
                assert np.all(low[judged] <= ref[name].value[judged]), name


def _near_bound(exact, b, factor, sign):
    return np.array([round_to(e + sign * mpmath.mpf(float(bv)) * factor) if np.isfinite(bv)
                     else round_to(e) for e, bv in zip(exact, b, strict=True)])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c[0])
def test_tiered_verdict_is_the_exact_verdict(case, dtype, monkeypatch):
    """Outputs just inside and just outside the bound: the tiered, filtered verdict (a bound not
    computed before compare) is the verdict of the exact oracle against the full bound."""
    _, theta, g, state, hyper, t = case
    prec = Precision.of(dtype)
    model = MODELS["adamw"]
    monkeypatch.setenv("CONFORMANCE_ORACLE", "exact")
    full, bnd_full = model.expect(theta, g, state, hyper, t, prec)
    values = bnd_full["theta"].value
    monkeypatch.setenv("CONFORMANCE_ORACLE", "filtered")
    for factor in (1 - 2.0**-45, 1 + 2.0**-45, 0.5, 3.0):
        for sign in (1, -1):
            got = _near_bound(full["theta"], values, factor, sign)
            lazy, bnd = model.expect(theta, g, state, hyper, t, prec)
            assert isinstance(bnd["theta"], LazyMaximum) and not bnd["theta"].computed
            have = compare("theta", got, lazy["theta"], bnd["theta"], "float32")
            want = compare("theta", got, full["theta"], bnd_full["theta"], "float32")
            assert (want is None) == (have is None), (factor, sign)
            if want is not None:
                assert (have.index, have.count, have.exact, have.bound) == \
                    (want.index, want.count, want.exact, want.bound)


def test_scalar_parameter_goes_through_every_tier(monkeypatch):
    """A 0-d parameter (one scalar) whose output is far off: judged by the full maximum."""
    monkeypatch.setenv("CONFORMANCE_ORACLE", "filtered")
    model = MODELS["adamw"]
    theta, g = np.array(-2140.5), np.array(0.0)
    exact, bnd = model.expect(theta, g, {"m": np.array(-1.35), "v": np.array(2.0)}, HYPER, 3,
                              Precision.of("float32"))
    bad = compare("theta", np.array(exact["theta"].estimate.value + 1.0), exact["theta"],
                  bnd["theta"], "float32")
    assert bad is not None and bad.index == () and bad.count == 1
