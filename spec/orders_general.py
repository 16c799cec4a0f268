"""The general order: one evaluation order whose bound covers every reasonable way of computing
an Adam-family step in the declared precision, under any convention, including the ways nobody
traced.

Real implementations differ from the traced kernels (`spec.orders`) in two ways that matter to
the rounding error, and this order is built to cover both (docs/tolerance-model.md, "Evaluation
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
  then `/ bc1`, or with `1 / bc1` formed first: to first order, a product's relative error is
  the sum of its roundings, and the flat product charges the most any association makes).

It computes in the compute format and stores each output once, as "compute in float32, store
bf16" means: an implementation that stores its intermediates in bfloat16 one op at a time, other
than torch's traced eager paths, computes in bfloat16 as far as the bound can tell
(`dtype.precision` says so), and is covered by this order under `--compute-dtype=bfloat16`.

The moments and the direction are the spec's own (`spec.rules.adam`: `_moments`, `_direction`,
`_decay_rate`, `_debiased`), so the order is the rule rearranged for every convention; the
symbolic tests prove it equal to the rule with the markers stripped (tests/test_orders.py,
tests/test_facts.py, tests/test_rule_facts.py). Its price in tightness is measured by
`python -m adamw_conformance.tools.tightness` (reports/tightness.md).
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp
from adamw_conformance.spec.conventions import Convention
from adamw_conformance.spec.rule import Update
from adamw_conformance.spec.rules.adam import _debiased, _decay_rate, _direction, _moments
from adamw_conformance.spec.symbols import g, lr, theta

__all__ = ["EAGER_STORES", "EXPANDED_DECAY", "RULED_OUT", "adamw_expanded", "flatten",
           "general_build"]

#: What a target's behaviour can rule out of its bound (conformance/core/forms.py probes it,
#: once per run; `spec.orders_in_play.adam_orders(ruled_out=...)`): the expanded decay
#: `theta - (lr wd) theta` (the general order then keeps the rule's factored decay), and
#: intermediates stored to the parameter's dtype op by op (torch's for-loop and foreach orders,
#: which in bf16 also round some scalars to it).
EXPANDED_DECAY, EAGER_STORES = "expanded_decay", "eager_stores"
RULED_OUT = (EXPANDED_DECAY, EAGER_STORES)


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
    """The general order of a step whose (possibly expanded) arithmetic `base` builds: every sum
    and product flattened; opmath throughout, one store per output."""

    def build() -> Update:
        return {k: flatten(e) for k, e in base().items()}

    return build
