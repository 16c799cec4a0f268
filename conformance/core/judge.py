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
from adamw_conformance.core import record, rule_table
from adamw_conformance.spec import registry
from adamw_conformance.spec.bounds import (
    Bound,
    LazyMaximum,
    Precision,
    environment,
    max_over_orders,
)
from adamw_conformance.spec.conventions import Convention
from adamw_conformance.spec.filter import Estimate
from adamw_conformance.spec.filter import mode as oracle_mode
from adamw_conformance.spec.formats import format_of
from adamw_conformance.spec.lazy_oracle import ExactOutput, lazy_step
from adamw_conformance.spec.oracle import Oracle, StepResult
from adamw_conformance.spec.orders import DECLARABLE, Order, straightforward
from adamw_conformance.spec.orders_general import RULED_OUT
from adamw_conformance.spec.rounding import round_to, ulp_distance
from adamw_conformance.spec.rule import Rule


@dataclass(frozen=True)
class Model:
    """What an implementation is judged against: a rule of the spec, its conventions, and the
    precision the implementation declares (dtype of parameters, of state, of arithmetic)."""

    rule_name: str = "adamw"
    convention: Convention = field(default_factory=Convention)
    maximize: bool = False
    #: Evaluation orders the implementation declares (`spec.orders.DECLARABLE`, an adapter's
    #: `orders` attribute): judged in them too where they are written for the convention.
    declared_orders: tuple[str, ...] = ()
    #: What the target's behaviour ruled out of the bound (`spec.orders_general.RULED_OUT`),
    #: found once per run by core/forms.py; empty: every order in play.
    ruled_out: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = [n for n in self.declared_orders if n not in DECLARABLE]
        if unknown:
            raise ValueError(f"unknown evaluation order(s) {unknown}: declarable orders are "
                             f"{', '.join(DECLARABLE)} (spec/orders.py: DECLARABLE)")
        if not self.ruled_out <= set(RULED_OUT):
            raise ValueError(f"cannot rule out {sorted(self.ruled_out - set(RULED_OUT))}: "
                             f"known are {', '.join(RULED_OUT)}")

    @cached_property
    def rule(self) -> Rule:
        return registry.get(self.rule_name, self.convention, self.maximize)

    @cached_property
    def oracle(self) -> Oracle:
        return Oracle(self.rule)

    def orders(self, prec: Precision) -> tuple[Order, ...]:
        """The orders the bounds take the maximum over (the rule's entry in the rule table)."""
        return rule_table.info(self.rule_name).orders(self, prec)

    def expect(self, params: Any, grad: Any, state: Mapping[str, Any], hyper: Mapping[str, float],
               t: int, prec: Precision) -> tuple[StepResult, dict[str, Bound]]:
        """Exact result and per-element bounds of one step from (params, state).

        The exact result is lazy (`spec.lazy_oracle`): mpmath runs only for the elements the
        float64 filter cannot decide and those a message shows; CONFORMANCE_ORACLE=exact
        evaluates every element up front instead."""
        env = environment(self.rule.inputs, params, grad, state, hyper, t, self.rule.defaults)
        orders = self.orders(prec)
        if oracle_mode() == "exact":
            return self.oracle.step(params, grad, state, hyper, t), max_over_orders(orders, env,
                                                                                    prec)
        exact = lazy_step(self.oracle, params, grad, state, hyper, t, companion=prec)
        # The filter's pass evaluates the rule's own order; it is the first of `orders`, so its
        # bound for the implementation's profile starts the early acceptance. (Its inputs are
        # the oracle's: the same numbers as `env` wherever the rule has no initial state.)
        first = (exact.filter.lower_bound
                 if orders[0] is straightforward(self.rule) and not self.rule.initial_state
                 else None)
        return exact, max_over_orders(orders, env, prec, first)

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
    if record.active():  # reports and detection: every verdict's err/bound; free when off
        record.note(output, ratios(got, exact, bound))
    if isinstance(exact, ExactOutput) and exact.estimate is not None:
        return _compare_filtered(output, got, exact, bound, fmt)
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


#: Above this many candidates for the worst element, the float64 ratios pick it (see below).
_EXACT_WORST_LIMIT = 4096


def _compare_filtered(output: str, got: np.ndarray, exact: ExactOutput, bound: Bound,
                      fmt: str) -> Mismatch | None:
    """`compare` through the float64 filter: the same verdict per element, mpmath only where
    float64 cannot decide, and for the worst element's message.

    A bound not computed yet (`LazyMaximum`) is consulted in tiers: elements surely within one
    order's bound pass without the others (the maximum over orders is at least as large); the
    rest are judged against the full maximum, computed for them alone."""
    est = exact.estimate
    assert est is not None
    shape = got.shape
    flat_got = got.reshape(-1)
    if isinstance(bound, LazyMaximum) and not bound.computed:
        finite = np.isfinite(flat_got)
        first = np.broadcast_to(bound.source.first(bound.name), shape).reshape(-1)
        whole = est.at(slice(None), shape)
        accepted = finite & whole.within(np.where(finite, flat_got, 0.0), first)
        if accepted.all():
            return None
        flat = np.flatnonzero(~accepted)
        sub = bound.at(flat)
        return _judge(output, flat_got[flat], est.at(flat, shape), sub.value, sub.in_domain,
                      exact, flat, shape, fmt)
    flat = np.arange(flat_got.size)
    return _judge(output, flat_got, est.at(flat, shape),
                  np.broadcast_to(bound.value, shape).reshape(-1),
                  np.broadcast_to(bound.in_domain, shape).reshape(-1), exact, flat, shape, fmt)


def _judge(output: str, got: np.ndarray, est: Estimate, values: np.ndarray, domain: np.ndarray,
           exact: ExactOutput, flat: np.ndarray, shape: tuple[int, ...],
           fmt: str) -> Mismatch | None:
    """The filtered verdict on the elements `flat` of an output of `shape` (1-d arrays)."""
    finite = np.isfinite(got)
    inside, outside = est.decide(np.where(finite, got, 0.0), values)
    bad = np.array(domain & (~finite | outside))
    undecided = domain & finite & ~inside & ~outside
    # ratio holds float(err / b) where `known`, as compare has it; elsewhere the float64 ratio,
    # within `slack` of it.
    known = np.array(domain & (~finite | (values == 0)))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(known, np.inf, np.abs(got - est.value) / values)
        slack = np.where(known, 0.0, est.error / values)

    def index(k: int) -> tuple[int, ...]:
        return tuple(int(i) for i in np.unravel_index(int(flat[k]), shape))

    def exact_ratio(k: int) -> tuple[bool, float]:
        e = abs(mpmath.mpf(got[k]) - exact.at(index(k)))
        b = values[k]
        return bool(e > b), (float(e / b) if b > 0 else np.inf)

    for k in np.flatnonzero(undecided):
        bad[k], ratio[k] = exact_ratio(int(k))
        known[k] = True
    if not bad.any():
        return None
    # The worst element as the exact comparison ranks it: only elements whose float64 ratio is
    # within its slack of the top can be it; those get their exact ratio.
    with np.errstate(invalid="ignore", over="ignore"):
        top = np.max(np.where(bad, ratio - slack, -np.inf))
        candidates = bad & ~known & (ratio + slack >= top * (1 - 2.0**-40))
    if np.count_nonzero(candidates) <= _EXACT_WORST_LIMIT:
        for k in np.flatnonzero(candidates):
            ratio[k] = exact_ratio(int(k))[1]
    worst = int(np.argmax(np.where(bad, ratio, -1.0)))
    total = int(np.prod(shape, dtype=np.int64))
    return Mismatch(output, index(worst), float(got[worst]), exact.at(index(worst)),
                    float(values[worst]), int(bad.sum()), total, fmt)


def ratios(got: np.ndarray, exact: np.ndarray, bound: Bound) -> np.ndarray:
    """err/bound per element (nan outside the domain): what reports and tightness look at.

    Through the float64 filter the ratio is float64-accurate: within E/B <= 2^-20 (relative) of
    the exact one; elements where float64 cannot promise that (a float64 implementation's bound is
    as fine as float64 itself) are computed in mpmath."""
    got = np.asarray(got, dtype=np.float64)
    out = np.full(got.shape, np.nan)
    values = np.broadcast_to(bound.value, got.shape)
    domain = np.broadcast_to(bound.in_domain, got.shape)
    todo = domain & np.isfinite(got)
    est = exact.estimate if isinstance(exact, ExactOutput) else None
    if est is not None:
        y = np.broadcast_to(est.value, got.shape)
        e = np.broadcast_to(est.error, got.shape)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            d = np.abs(got - y)
            fast = (todo & np.broadcast_to(est.ok, got.shape)
                    & (((values > 0) & (e <= 2.0**-20 * values)) | ((d == 0) & (e == 0))))
            out[fast] = np.where(values > 0, d / values, 0.0)[fast]
        todo = todo & ~fast
    for flat in np.flatnonzero(todo):
        idx = np.unravel_index(int(flat), got.shape)
        err = abs(mpmath.mpf(got[idx]) - exact[idx])
        out[idx] = float(err / values[idx]) if values[idx] > 0 else (0.0 if err == 0 else np.inf)
    return out


def format_hyper(hyper: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v!r}" for k, v in hyper.items())
