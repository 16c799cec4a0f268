"""The general order: one evaluation order whose bound covers every reasonable way of computing
an Adam-family step under any convention, including the ones nobody traced.

Real implementations differ from the traced kernels (`spec.orders`) in three ways that matter to
the rounding error, and this order is built to cover each (docs/tolerance-model.md, "Evaluation
orders"):

- **the decay, factored or expanded**: `theta (1 - lr wd)` (torch), or `theta - (lr wd) theta`
  (transformers' and fairseq's `p.add_(p, alpha=-lr*wd)`, torch's CUDA fused kernel,
  DeepSpeed's CPU Adam), before or after the Adam step as the convention says. The expanded form
  rounds `lr wd theta`, about u |theta| where the factored one rounds u |theta (1 - lr wd)|: where
  lr wd is near 1 it is lr wd / (1 - lr wd) times less accurate, and legitimately so. AdamW's
  parameter update is written here as the expanded sum theta - rate theta - lr step, whose bound
  dominates the factored form's (|theta (1 - rate)| <= |theta| + |rate theta|);
- **association**: every sum of three or more terms is one n-ary sum, bounded as the classical
  gamma_n bounds do by (n - 1) u times the sum of the terms' magnitudes, whatever order the
  partial sums are formed in (`spec.bounds`: an n-ary add's magnitude is the sum of |terms|);
  every product is one flat product of all its factors, each scalar factor cast separately to
  the compute format (`lr * m / bc1 / denom` computed as `(lr / bc1) * m / denom`, or `m * lr`
  then `/ bc1`, or with `1 / bc1` formed first: first order, a product's relative error is the
  sum of its roundings, and the flat product charges the most any association makes);
- **stores**: an eager implementation (one ATen op at a time) writes every intermediate to a
  tensor of the parameter's or the state's dtype, and a PyTorch op may round its scalar operand
  to that dtype (`_foreach_mul_`, `add_(alpha=)`, a scalar `add_`). Here every tensor operation
  is stored and every scalar operand is rounded to the tensor dtype; the terms of an n-ary sum
  are stored too, which covers any intermediate partial sum's store (|a + b| <= |a| + |b|). In
  float32 and float64 these stores are exact and the order is fused-like: opmath throughout.

The moments and the direction are the spec's own (`spec.rules.adam`: `_moments`, `_direction`,
`_decay_rate`, `_debiased`), so the order is the rule rearranged for every convention; the
symbolic tests prove it equal to the rule with the markers stripped (tests/test_facts.py,
tests/test_rule_facts.py). Its bound is at least the spec's own order's wherever they share a
rounding, and a few times a traced kernel's in the typical regime (reports/tightness.md).
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp
from adamw_conformance.spec.conventions import Convention
from adamw_conformance.spec.markers import MARKERS, StoreParam, StoreState
from adamw_conformance.spec.rule import Update
from adamw_conformance.spec.rules.adam import _debiased, _decay_rate, _direction, _moments
from adamw_conformance.spec.symbols import SCALARS, g, lr, theta

__all__ = ["adamw_expanded", "eager", "flatten", "general_build"]


def _is_scalar(x: sp.Basic) -> bool:
    return x.free_symbols <= SCALARS


def flatten(x: sp.Basic) -> sp.Basic:
    """`x` with every nested product merged into one flat product (a divisor that is itself a
    product becomes one divisor per factor) and every nested sum into one n-ary sum: the bound
    engine then charges each product and sum what its worst association costs."""
    if x.is_Atom:
        return x
    if isinstance(x, sp.Mul):
        factors: list[sp.Basic] = []
        _factors(x, factors, invert=False)
        return sp.Mul(*factors, evaluate=False) if len(factors) > 1 else factors[0]
    if isinstance(x, sp.Add):
        terms: list[sp.Basic] = []
        for a in x.args:
            a = flatten(a)
            terms.extend(a.args if isinstance(a, sp.Add) else (a,))
        return sp.Add(*terms, evaluate=False)
    return x.func(*(flatten(a) for a in x.args), evaluate=False)


def _factors(x: sp.Basic, out: list[sp.Basic], invert: bool) -> None:
    if isinstance(x, sp.Mul):
        for a in x.args:
            _factors(a, out, invert)
    elif isinstance(x, sp.Pow) and x.exp == -1:
        _factors(x.base, out, not invert)
    elif invert:
        out.append(sp.Pow(flatten(x), -1, evaluate=False))
    else:
        out.append(flatten(x))


def eager(update: Update) -> Update:
    """Every tensor operation of `update` stored in its output's format, every scalar operand of
    a tensor operation rounded to it, and the terms of every n-ary sum stored: what an eager
    implementation of the same arithmetic may round, one ATen op at a time. The state outputs
    are rewritten first, so the moments the parameter update reuses are state-format values."""
    memo: dict[sp.Basic, sp.Basic] = {}
    order = [k for k in update if k != "theta"] + ["theta"]
    out = {k: _stored(update[k], StoreParam if k == "theta" else StoreState, memo)
           for k in order}
    return {k: out[k] for k in update}


def _exact(x: sp.Basic) -> bool:
    """A tensor operation that rounds nothing: a max, or a negation (-1 times one factor)."""
    if isinstance(x, sp.Max):
        return True
    if isinstance(x, sp.Mul):
        numbers = [a for a in x.args if a.is_Number]
        return len(x.args) - len(numbers) == 1 and all(abs(a) == 1 for a in numbers)
    return False


def _stored(x: sp.Basic, store: type, memo: dict[sp.Basic, sp.Basic]) -> sp.Basic:
    if x.is_Atom or _is_scalar(x) or isinstance(x, MARKERS):
        return x
    if x in memo:
        return memo[x]

    def operand(a: sp.Basic) -> sp.Basic:
        if a.is_Number:
            return a
        if _is_scalar(a):
            return store(a)
        return _stored(a, store, memo)

    if isinstance(x, sp.Mul):
        # A divisor stays a divisor (Pow(d, -1) inside the product): the division rounds once.
        args = [sp.Pow(operand(a.base), -1, evaluate=False)
                if isinstance(a, sp.Pow) and a.exp == -1 else operand(a) for a in x.args]
    elif isinstance(x, sp.Pow):
        args = [operand(x.base), x.exp]
    else:
        args = [operand(a) for a in x.args]
    if isinstance(x, sp.Add) and len(args) > 2:
        args = [a if a.is_Number or isinstance(a, MARKERS) else store(a) for a in args]
    node = x.func(*args, evaluate=False)
    memo[x] = node if _exact(x) else store(node)
    return memo[x]


def adamw_expanded(convention: Convention) -> Callable[[], Update]:
    """AdamW with the decay expanded: theta - rate theta - lr step (decay_target=previous) or
    x - rate x with x = theta - lr step (updated); the moments and the direction are the spec's."""

    def build() -> Update:
        m1, v1 = _moments(g)
        step, extra = _direction(m1, v1, convention)
        rate = _decay_rate(convention)
        update = -(lr * step)
        if convention.decay_target == "previous":
            new = sp.Add(theta, -rate * theta, update, evaluate=False)
        else:
            x = theta + update
            new = sp.Add(x, -rate * x, evaluate=False)
        return {"theta": new, "m": m1, "v": v1, **extra}

    if convention.moments == "debiased":
        return _debiased(build, convention)
    return build


def general_build(base: Callable[[], Update]) -> Callable[[], Update]:
    """The general order of a step whose (possibly expanded) arithmetic `base` builds: flattened,
    then stored as an eager implementation stores it."""

    def build() -> Update:
        return eager({k: flatten(e) for k, e in base().items()})

    return build
