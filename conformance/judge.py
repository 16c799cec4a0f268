"""Verdicts: an implementation's numbers against the oracle, within the derived bound.

Data flows one way: the spec gives the rule, the oracle the exact result, the bound engine the
allowance; this module compares and, on failure, writes the message a user reads: property,
hyperparameters, step, element, got vs oracle vs bound, the distance in ulps, and a reproduction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import mpmath
import numpy as np

from spec import registry
from spec.bounds import Bound, Precision, environment, max_over_orders
from spec.conventions import Convention
from spec.formats import format_of
from spec.oracle import Oracle, StepResult
from spec.orders import adam_orders, adamw_orders, straightforward
from spec.rounding import round_to, ulp_distance
from spec.rule import Rule


@dataclass(frozen=True)
class Model:
    """What an implementation is judged against: a rule of the spec, its conventions, and the
    precision the implementation declares (dtype of parameters, of state, of arithmetic)."""

    rule_name: str = "adamw"
    convention: Convention = field(default_factory=Convention)
    maximize: bool = False

    @cached_property
    def rule(self) -> Rule:
        return registry.get(self.rule_name, self.convention, self.maximize)

    @cached_property
    def oracle(self) -> Oracle:
        return Oracle(self.rule)

    def orders(self, prec: Precision):
        if self.rule_name == "adamw":
            return adamw_orders(self.rule, self.convention, prec.compute)
        if self.rule_name in ("adam", "adam_l2"):
            coupling = "l2" if self.rule_name == "adam_l2" else "none"
            return adam_orders(self.rule, coupling, self.convention, prec.compute)
        return (straightforward(self.rule),)

    def expect(self, params: Any, grad: Any, state: Mapping[str, Any], hyper: Mapping[str, float],
               t: int, prec: Precision) -> tuple[StepResult, dict[str, Bound]]:
        """Exact result and per-element bounds of one step from (params, state)."""
        exact = self.oracle.step(params, grad, state, hyper, t)
        env = environment(self.rule.inputs, params, grad, state, hyper, t, self.rule.defaults)
        return exact, max_over_orders(self.orders(prec), env, prec)

    def bounds(self, params: Any, grad: Any, state: Mapping[str, Any], hyper: Mapping[str, float],
               t: int, prec: Precision) -> dict[str, Bound]:
        """The per-element bounds of one step alone (no oracle): to judge one step against
        several precision profiles, e.g. dtype.precision's float32- vs bf16-compute."""
        env = environment(self.rule.inputs, params, grad, state, hyper, t, self.rule.defaults)
        return max_over_orders(self.orders(prec), env, prec)


@dataclass
class Mismatch:
    """The worst element of one output that broke its bound (or is non-finite where the oracle
    is finite), with what a user needs to see it."""

    output: str
    index: tuple[int, ...]
    got: float
    exact: mpmath.mpf
    bound: float
    count: int
    total: int
    fmt: str

    def describe(self) -> str:
        exact_rounded = round_to(self.exact, format_of(self.fmt))
        err = abs(mpmath.mpf(self.got) - self.exact) if np.isfinite(self.got) else mpmath.inf
        ulps = (int(ulp_distance(self.got, exact_rounded, self.fmt))
                if np.isfinite(self.got) and np.isfinite(exact_rounded) else "n/a")
        ratio = (f"{float(err / self.bound):.3g} x the bound" if self.bound > 0
                 else "bound is 0 (exact result required)")
        return (f"{self.output}{list(self.index)}: got {self.got!r}, oracle "
                f"{mpmath.nstr(self.exact, 17)} (rounded to {self.fmt}: {exact_rounded!r}), "
                f"|error| {mpmath.nstr(err, 3)} = {ratio} (bound {self.bound:.3g}; {ulps} ulps "
                f"of {self.fmt}); {self.count} of {self.total} elements out of bound")


def compare(output: str, got: np.ndarray, exact: np.ndarray, bound: Bound,
            fmt: str) -> Mismatch | None:
    """The worst in-domain element of `got` outside `bound` of `exact`, or None."""
    got = np.asarray(got, dtype=np.float64)
    if got.size == 0:
        return None
    bad = np.zeros(got.shape, dtype=bool)
    ratio = np.zeros(got.shape)
    for idx in np.ndindex(got.shape):
        if not bound.in_domain[idx] if bound.in_domain.shape else not bound.in_domain:
            continue
        e = exact[idx]
        if not np.isfinite(got[idx]):
            bad[idx], ratio[idx] = True, np.inf
            continue
        err = abs(mpmath.mpf(got[idx]) - e)
        b = np.broadcast_to(bound.value, got.shape)[idx]
        if err > b:
            bad[idx] = True
            ratio[idx] = float(err / b) if b > 0 else np.inf
    if not bad.any():
        return None
    worst = np.unravel_index(int(np.argmax(np.where(bad, ratio, -1.0))), got.shape)
    return Mismatch(output, tuple(int(i) for i in worst), float(got[worst]), exact[worst],
                    float(np.broadcast_to(bound.value, got.shape)[worst]), int(bad.sum()),
                    int(got.size), fmt)


def ratios(got: np.ndarray, exact: np.ndarray, bound: Bound) -> np.ndarray:
    """err/bound per element (nan outside the domain): what reports and tightness look at."""
    got = np.asarray(got, dtype=np.float64)
    out = np.full(got.shape, np.nan)
    values = np.broadcast_to(bound.value, got.shape)
    domain = np.broadcast_to(bound.in_domain, got.shape)
    for idx in np.ndindex(got.shape):
        if domain[idx] and np.isfinite(got[idx]):
            err = abs(mpmath.mpf(got[idx]) - exact[idx])
            out[idx] = float(err / values[idx]) if values[idx] > 0 else (0.0 if err == 0
                                                                          else np.inf)
    return out


def format_hyper(hyper: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v!r}" for k, v in hyper.items())
