"""The orders in play: which evaluation orders (`spec.orders`) a bound of an Adam-family rule
takes the maximum over, under a convention, a compute precision, the orders a target declares
and what its behaviour ruled out.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

from adamw_conformance.spec.conventions import DEFAULT, Convention
from adamw_conformance.spec.formats import FLOAT32, Format
from adamw_conformance.spec.orders import (
    Order,
    _maximized,
    debiased_lerp,
    declared_orders,
    fused,
    general,
    straightforward,
    torch_foreach,
    torch_loop,
)
from adamw_conformance.spec.orders_general import EAGER_STORES, EXPANDED_DECAY
from adamw_conformance.spec.rule import Rule


def with_scalar(order: Order, fmt: Format | None) -> Order:
    """`order` with its hyperparameter-only arithmetic in `fmt` where that is coarser (a C
    `float` kernel: every hyperparameter and 1 - beta, lr * wd, beta^t in float32)."""
    if fmt is None or fmt.precision >= order.scalar.precision:
        return order
    return Order(order.name, order.build, fmt, f"{order.description}; scalars in {fmt}")


@cache
def adam_orders(rule: Rule, coupling: str, convention: Convention = DEFAULT,
                compute: Format = FLOAT32, hyper: Format | None = None,
                declared: tuple[str, ...] = (),
                ruled_out: frozenset[str] = frozenset()) -> tuple[Order, ...]:
    """The orders a bound for `rule` (the Adam family) takes the maximum over, for `compute`
    precision: `coupling` "decoupled" (AdamW), "l2" (Adam+L2, torch.optim.Adam with
    weight_decay), "none" (Adam). PyTorch's Adam and AdamW share one implementation, so the
    traced orders differ only where the decay enters.

    The spec's own order and the general one (`general`) hold under every convention; torch's
    for-loop, foreach and fused orders are written for the default convention (optionally with
    PyTorch's AMSGrad), optimi's `debiased_lerp` for moments=debiased, each under any counter
    (which says which t a step takes, not how it computes). `declared` names orders the
    implementation declares (`DECLARABLE`: Keras', torch's capturable ones), added where they
    are written for `convention`. `hyper`: the precision profile's hyperparameter format
    (`Precision.hyper`); where it is coarser than double, every order's scalar arithmetic runs
    in it (`with_scalar`). `ruled_out`: what behaviour ruled out (`orders_general.RULED_OUT`); a
    declared order is kept whatever it does."""
    orders = [straightforward(rule)]
    base = Convention(amsgrad=convention.amsgrad)
    # the counter says which t a parameter's step takes, not how the step is computed
    per_step = replace(convention, counter="parameter")
    if base == per_step and convention.amsgrad in ("none", "raw_max"):
        ams = convention.amsgrad == "raw_max"
        kernel_orders = [fused(ams, coupling)]
        if EAGER_STORES not in ruled_out:
            kernel_orders[:0] = [torch_loop(ams, coupling), torch_foreach(ams, coupling)]
        if rule.maximized:
            kernel_orders = [_maximized(o) for o in kernel_orders]
        orders += kernel_orders
    if per_step == Convention(moments="debiased"):
        orders.append(_maximized(debiased_lerp(coupling)) if rule.maximized
                      else debiased_lerp(coupling))
    orders.append(general(rule, coupling, convention, EXPANDED_DECAY in ruled_out))
    orders += declared_orders(rule, convention, declared, coupling, compute)
    return tuple(with_scalar(o, hyper) for o in orders)


def adamw_orders(rule: Rule, convention: Convention = DEFAULT,
                 compute: Format = FLOAT32, declared: tuple[str, ...] = (),
                 hyper: Format | None = None,
                 ruled_out: frozenset[str] = frozenset()) -> tuple[Order, ...]:
    """`adam_orders` of an AdamW (coupling "decoupled")."""
    return adam_orders(rule, "decoupled", convention, compute, hyper, declared, ruled_out)
