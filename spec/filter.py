"""A float64 filter in front of the mpmath oracle: the spec's expressions evaluated in float64,
each element with a rigorous bound on its distance from the exact result.

The verdict asks one question per element: is |got - exact| <= B? With y the float64 evaluation
and E >= |y - exact|, the triangle inequality answers it without mpmath wherever
|got - y| + E <= B (inside) or |got - y| - E > B (outside); only the elements in between, a band
of width 2E around the bound, need the exact oracle. E is tiny (float64 rounding, ~2^-50 of the
value) against B (the implementation's rounding, ~2^-23 of it for float32), so the band is almost
always empty.

E comes from the same first-order model as B (`spec.bounds`), applied to the rule's own order
evaluated in float64 (u = 2^-53, every operation one rounding, IEEE_ULPS budgets). On top of the
model's margin for second-order terms:

- `SAFETY` = 2: numpy's pow (beta^t, and the sqrt/reciprocal the engine evaluates as pow) is libm's,
  within 1 ulp rather than the half-ulp of a correctly rounded operation;
- the domain guard: an element is filtered only where every intermediate is finite and in range,
  t is an exact float64 integer, and E <= GUARD * |y|: the float64 result carries at least 30
  correct bits by the model. Where it does not (heavy cancellation, an output at or near zero
  that float64 does not get exactly), the first-order model is no longer a safe description of
  float64 and the element goes to mpmath;
- a rule with a constant float64 cannot hold exactly is not filtered at all.

Non-finite implementation outputs and out-of-domain elements are decided exactly as without the
filter (the judge handles them before asking). `CONFORMANCE_ORACLE=exact` switches the filter off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import sympy as sp

from spec.bounds import Precision, bound
from spec.formats import FLOAT64
from spec.orders import Order, straightforward
from spec.rule import Rule
from spec.symbols import t as t_symbol

SAFETY = 2.0
GUARD = 2.0**-30
FLOAT64_ARITHMETIC = Precision(FLOAT64, FLOAT64, FLOAT64)
#: Relative slack for the float64 arithmetic of the decision itself (|got - y| +- E).
_SLACK = 2.0**-50
_TINY = 2.0**-1074


def mode() -> str:
    """'filtered' (default) or 'exact' (every element through mpmath), from CONFORMANCE_ORACLE."""
    value = os.environ.get("CONFORMANCE_ORACLE", "filtered").strip().lower() or "filtered"
    if value not in ("filtered", "exact"):
        raise ValueError(f"CONFORMANCE_ORACLE={value!r}: expected 'filtered' or 'exact'")
    return value


@dataclass(frozen=True)
class Estimate:
    """One output in float64: `value` y, `error` E >= |y - exact| where `ok`, else no claim."""

    value: np.ndarray
    error: np.ndarray
    ok: np.ndarray

    def decide(self, got: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(surely within, surely outside) `allowed` of the exact value, per element of the finite
        `got`; elements in neither need the exact oracle."""
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.abs(got - self.value)
            allowed = np.broadcast_to(allowed, d.shape)
            upper = d + self.error
            upper = np.where(upper == 0, 0.0, upper * (1 + _SLACK) + _TINY)
            lower = (d - self.error) * (1 - _SLACK) - _TINY
            inside = self.ok & (upper <= allowed)
            outside = self.ok & (lower > allowed)
        return inside, outside


@cache
def _order(rule: Rule) -> Order | None:
    """The rule's own order, or None if it holds a constant that float64 rounds."""
    for tree in rule.tree.values():
        for c in sp.preorder_traversal(tree):
            if isinstance(c, sp.Number) and sp.Rational(float(c)) != c:
                return None
    return straightforward(rule)


def estimate(rule: Rule, env: Mapping[sp.Symbol, Any]) -> dict[str, Estimate] | None:
    """Float64 value and error bound of every output at `env`; None where the rule cannot be
    filtered (a constant float64 rounds, or t past 2**53)."""
    order = _order(rule)
    t_value = np.asarray(env.get(t_symbol, 1), dtype=np.float64)
    if order is None or not np.all(np.abs(t_value) <= 2.0**53):
        return None
    out = {}
    for name, b in bound(order, env, FLOAT64_ARITHMETIC).items():
        y = np.asarray(b.center, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            err = b.value * SAFETY
            ok = b.in_domain & np.isfinite(y) & np.isfinite(err) & (err <= GUARD * np.abs(y))
        out[name] = Estimate(y, np.where(ok, err, np.inf), ok)
    return out


__all__ = ["Estimate", "estimate", "mode", "SAFETY", "GUARD"]
