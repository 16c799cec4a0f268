"""The float64 filter gives the verdicts of the exact oracle: hard cases, both paths compared."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
from adamw_conformance.core.judge import Model, compare, ratios
from adamw_conformance.spec.bounds import Precision
from adamw_conformance.spec.filter import GUARD
from adamw_conformance.spec.lazy_oracle import ExactOutput
from adamw_conformance.spec.rounding import round_to

HYPER = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2}
MODEL = Model()


def _cases():
    rng = np.random.default_rng(7)
    n = 48
    normal = rng.standard_normal(n)
    yield "normal", normal, normal * 0.3, {"m": normal * 0.1, "v": normal**2 * 0.01}, HYPER, 7
    yield "zeros", np.zeros(n), np.zeros(n), {"m": np.zeros(n), "v": np.zeros(n)}, HYPER, 1
    tiny = np.ldexp(rng.standard_normal(n), -140)  # subnormal in float32
    yield "subnormal", tiny, tiny, {"m": tiny, "v": np.abs(tiny) * 2.0**-10}, HYPER, 3
    big = np.ldexp(rng.standard_normal(n), 120)  # g*g overflows float32: out of domain
    yield "overflow", big, big, {"m": big, "v": np.abs(big)}, HYPER, 2
    yield "t1", normal, normal, {}, HYPER, 1
    yield "huge_t", normal, normal, {"m": normal, "v": normal**2}, HYPER, 2**40
    close = dict(HYPER, beta2=1 - 2.0**-40, beta1=1 - 2.0**-30)
    yield "beta2_near_1", normal, normal, {"m": normal, "v": normal**2}, close, 2
    # theta (1 - lr wd) and the Adam step nearly cancel: the output is near zero.
    theta = np.full(n, 1e-3) * np.sign(normal)
    yield "cancellation", theta, normal, {"m": normal, "v": normal**2}, dict(HYPER, lr=1.0,
                                                                          weight_decay=0.0), 1


def _exact_verdict(got, exact_values, bound):
    return compare("theta", got, exact_values, bound, "float32")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c[0])
def test_filtered_equals_exact_near_the_bound(case, dtype, monkeypatch):
    """Outputs placed just inside and just outside the bound around the exact value give the same
    verdict, count, worst element and ratios with and without the filter."""
    _, theta, g, state, hyper, t = case
    prec = Precision.of(dtype)
    monkeypatch.setenv("CONFORMANCE_ORACLE", "filtered")
    lazy, bnd = MODEL.expect(theta, g, state, hyper, t, prec)
    monkeypatch.setenv("CONFORMANCE_ORACLE", "exact")
    full, bnd_exact = MODEL.expect(theta, g, state, hyper, t, prec)
    assert isinstance(lazy["theta"], ExactOutput)
    assert np.array_equal(bnd["theta"].value, bnd_exact["theta"].value)
    b = bnd["theta"]
    exact = full["theta"]
    # got = exact +- bound * (1 +- 2^-45): the nearest doubles either side of the bound.
    for factor in (1 - 2.0**-45, 1 + 2.0**-45, 0.5, 3.0):
        for sign in (1, -1):
            got = np.array([round_to(e + sign * mpmath.mpf(float(bv)) * factor)
                            if np.isfinite(bv) else round_to(e) for e, bv
                            in zip(exact, b.value, strict=True)])
            want = _exact_verdict(got, exact, b)
            have = compare("theta", got, lazy["theta"], b, "float32")
            assert (want is None) == (have is None), (factor, sign)
            if want is not None:
                assert (have.index, have.count, have.exact) == (want.index, want.count,
                                                                want.exact)
            r_exact, r_fast = ratios(got, exact, b), ratios(got, lazy["theta"], b)
            assert np.array_equal(np.isnan(r_exact), np.isnan(r_fast))
            fin = np.isfinite(r_exact)
            assert np.allclose(r_fast[fin], r_exact[fin], rtol=2.0**-20, atol=0)


def test_fallback_where_it_must(monkeypatch):
    """Zero outputs that float64 gets exactly are decided by the filter; a near-cancelling output,
    t past 2**53 and a NaN input are not: those go to mpmath."""
    monkeypatch.setenv("CONFORMANCE_ORACLE", "filtered")
    prec = Precision.of("float32")
    exact, _ = MODEL.expect(np.zeros(4), np.zeros(4), {}, HYPER, 1, prec)
    est = exact["theta"].estimate
    assert est.ok.all() and not est.error.any()
    exact, _ = MODEL.expect(np.array([1.0, np.nan]), np.array([1.0, 1.0]), {}, HYPER, 3, prec)
    assert exact["theta"].estimate.ok.tolist() == [True, False]
    exact, _ = MODEL.expect(np.ones(2), np.ones(2), {}, HYPER, 2**60, prec)
    assert exact["theta"].estimate is None
    # theta (1 - lr wd) - lr g/(|g| + eps) with theta = lr: the result is ~ lr eps, far below
    # float64's error of the two terms: no 30-bit claim possible.
    exact, _ = MODEL.expect(np.array([1e-3]), np.array([1.0]), {}, dict(HYPER, weight_decay=0.0),
                            1, prec)
    est = exact["theta"].estimate
    assert not est.ok[0] or est.error[0] <= GUARD * abs(est.value[0])


def test_message_shows_the_exact_oracle_value(monkeypatch):
    monkeypatch.setenv("CONFORMANCE_ORACLE", "filtered")
    theta, g = np.linspace(-1, 1, 16), np.linspace(1, 2, 16)
    exact, bnd = MODEL.expect(theta, g, {}, HYPER, 1, Precision.of("float32"))
    got = theta + 1e-3
    bad = compare("theta", got, exact["theta"], bnd["theta"], "float32")
    full = MODEL.oracle.step(theta, g, {}, HYPER, 1)["theta"]
    assert bad is not None and bad.count == 16
    assert bad.exact == full[bad.index]
    assert "oracle" in bad.describe()


def test_switch_rejects_nonsense(monkeypatch):
    monkeypatch.setenv("CONFORMANCE_ORACLE", "fast-and-loose")
    with pytest.raises(ValueError, match="CONFORMANCE_ORACLE"):
        MODEL.expect(np.zeros(1), np.zeros(1), {}, HYPER, 1, Precision.of("float32"))
