"""A float64 filter in front of the mpmath oracle: the spec's expressions evaluated in float64,
each element with a rigorous bound on its distance from the exact result.

The verdict asks one question per element: is |got - exact| <= B? With y the float64 evaluation
and E >= |y - exact|, the triangle inequality answers it without mpmath wherever
|got - y| + E <= B (inside) or |got - y| - E > B (outside); only the elements in between, a band
of width 2E around the bound, need the exact oracle. E is tiny (float64 rounding, ~2^-50 of the
value) against B (the implementation's rounding, ~2^-23 of it for float32), so the band is almost
always empty.

E comes from the same first-order model as B (`spec.rounding_model`), applied to the rule's own
order evaluated in float64 (u = 2^-53, every operation one rounding, IEEE_ULPS budgets). On top of
the model's margin for second-order terms:

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
from adamw_conformance.spec.bounds import evaluate
from adamw_conformance.spec.formats import FLOAT64
from adamw_conformance.spec.orders import Order, straightforward
from adamw_conformance.spec.rounding_model import Precision
from adamw_conformance.spec.rule import Rule
from adamw_conformance.spec.symbols import SCALARS
from adamw_conformance.spec.symbols import t as t_symbol

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

    def at(self, flat: Any, shape: tuple[int, ...]) -> Estimate:
        """The estimate at the elements `flat` (flat indices, or a slice) of `shape`."""
        return Estimate(*(np.broadcast_to(a, shape).reshape(-1)[flat]
                          for a in (self.value, self.error, self.ok)))

    def within(self, got: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """The `decide` "surely within" half alone (what early acceptance needs)."""
        with np.errstate(invalid="ignore", over="ignore"):
            upper = np.abs(got - self.value)
            upper += self.error
            zero = upper == 0
            upper *= 1 + _SLACK
            upper += _TINY
            return self.ok & (np.where(zero, 0.0, upper) <= allowed)

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
    step = Filter(rule, env)
    if step.order is None:
        return None
    return {name: step.estimate(name) for name in rule.outputs}  # type: ignore[misc]


class Filter:
    """The float64 filter of one step, output by output when asked.

    With a `companion` profile (the implementation's), the same pass also gives a lower value of
    that profile's bound for the rule's own order (`spec.plan.Wanted.lower`): the values, partials
    and adjoints are the filter's, only the rounding weights differ. The judge accepts by it the
    elements that are surely within the bound before computing any other order."""

    def __init__(self, rule: Rule, env: Mapping[sp.Symbol, Any],
                 companion: Precision | None = None) -> None:
        self.rule, self.companion = rule, companion
        order = _order(rule)
        t_value = np.asarray(env.get(t_symbol, 1), dtype=np.float64)
        if order is not None and not np.all(np.abs(t_value) <= 2.0**53):
            order = None
        self.order = order
        self.env = _common_scalars(env)
        self._estimates: dict[str, Estimate] = {}
        self._lower: dict[str, np.ndarray] = {}

    def _run(self, name: str) -> None:
        assert self.order is not None
        precs = [FLOAT64_ARITHMETIC] + ([self.companion] if self.companion is not None else [])
        result = evaluate(self.order, self.env, precs, tuple(self.order.tree), (name,),
                          sensitivity=False, lower=(1,))
        b = result[0][name]
        y = np.asarray(b.center, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            err = b.value * SAFETY
            ok = b.in_domain & np.isfinite(y) & np.isfinite(err) & (err <= GUARD * np.abs(y))
        self._estimates[name] = Estimate(y, np.where(ok, err, np.inf), ok)
        if self.companion is not None:
            self._lower[name] = result[1][name].value

    def estimate(self, name: str) -> Estimate | None:
        if self.order is None:
            return None
        if name not in self._estimates:
            self._run(name)
        return self._estimates[name]

    def lower_bound(self, name: str) -> np.ndarray | None:
        """A lower value of the companion profile's bound of the rule's own order (None without
        a companion or where the filter does not apply)."""
        if self.order is None or self.companion is None:
            return None
        if name not in self._lower:
            self._run(name)
        return self._lower[name]


def _common_scalars(env: Mapping[sp.Symbol, Any]) -> dict[sp.Symbol, Any]:
    """`env` with every hyperparameter or t that is one value broadcast to the tensors' shape
    (as the lazy oracle binds t) given as that one value: scalar arithmetic stays scalar."""
    out = dict(env)
    for s, value in env.items():
        if s in SCALARS and isinstance(value, np.ndarray) and value.ndim and value.size:
            first = value.flat[0]
            # A broadcast scalar (all strides 0) is one value without looking at the others.
            if not any(value.strides) or np.all(value == first):
                out[s] = np.asarray(first)
    return out


__all__ = ["Estimate", "Filter", "estimate", "mode", "SAFETY", "GUARD"]
