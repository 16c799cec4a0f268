"""Evaluation orders: the same AdamW step arranged the way real kernels compute it.

Rounding errors depend on the order of operations, so the bounds are derived per order and the
bound for "any of these" is their maximum. Each order here is the rule's math rearranged, and a test
proves symbolically that it equals `spec.rules.adam.adamw` (markers stripped): no order can drift
from the spec. Trees are built with SymPy's rewriting off, so they keep the order written.

Markers (`spec.markers`) say where a value is stored to the tensor's dtype: after every ATen op for
PyTorch's for-loop and foreach paths, only at the end for fused kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache, cached_property

import sympy as sp
from adamw_conformance.spec.conventions import DEFAULT, Convention
from adamw_conformance.spec.formats import FLOAT32, FLOAT64, Format
from adamw_conformance.spec.markers import Opmath, StoreParam, StoreState
from adamw_conformance.spec.rule import Rule, Update
from adamw_conformance.spec.symbols import (
    beta1,
    beta2,
    eps,
    g,
    lr,
    m,
    t,
    theta,
    v,
    vmax,
    weight_decay,
)


@dataclass(frozen=True, eq=False)
class Order:
    """A named evaluation order. `scalar` is the format hyperparameter-only arithmetic runs in."""

    name: str
    build: Callable[[], Update]
    scalar: Format = FLOAT64
    description: str = ""

    @cached_property
    def tree(self) -> Update:
        with sp.evaluate(False):
            return self.build()

    def __repr__(self) -> str:
        return f"Order({self.name!r})"


@cache
def straightforward(rule: Rule) -> Order:
    """The rule as written in the spec, every intermediate kept in the compute format.

    Orders are cached (here and in `adamw_orders`) so that their trees, and the bound engine's
    graphs keyed by them, are built once per rule rather than once per judged step."""
    return Order("straightforward", rule.build, FLOAT64, "the spec's own order")


def _lerp(start: sp.Expr, end: sp.Expr, weight: sp.Expr) -> sp.Expr:
    """ATen's lerp: start + w (end - start) for |w| < 1/2, else end - (end - start)(1 - w).

    The weight is rounded to opmath first and 1 - w is formed from the rounded w (exactly, in
    float), so the second branch's coefficient carries w's rounding error, about u |w|, not
    u |1 - w|: for beta1 < 1/2 that is up to 1/beta1 times more. The branch condition is taken on
    the exact weight (they differ only for w within an ulp of 1/2, where both branches round alike).
    """
    w = Opmath(weight)
    return sp.Piecewise(
        (start + w * (end - start), weight < sp.Rational(1, 2)),
        (end - (end - start) * (1 - w), True),
    )


def _second_moment(store, b2: sp.Expr = beta2, grad: sp.Expr = g) -> sp.Expr:
    # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    return store(store(v * b2) + (1 - beta2) * grad * grad)


#: Where weight decay enters an Adam-family step: decoupled (AdamW: the parameters are scaled by
#: 1 - lr*wd), l2 (Adam+L2: grad.add(param, alpha=wd) before the moments), none (Adam).
COUPLINGS = ("decoupled", "l2", "none")


def _coupled(coupling: str, store) -> tuple[sp.Expr, sp.Expr]:
    """(the parameters the step starts from, the gradient the moments see) for `coupling`;
    `store` marks where the L2 gradient is written to a tensor (the identity for fused).

    torch's eager paths form it with grad.add(param, alpha=weight_decay), whose CPU kernel rounds
    alpha to the tensor dtype (measured on torch 2.13: bf16(wd) for bf16 tensors), so `store`
    marks weight_decay too; in float32/float64 that store is exact."""
    if coupling == "l2":
        return theta, store(g + store(weight_decay) * theta)
    return theta, g


def _denominator_source(v1: sp.Expr, amsgrad: bool, store) -> tuple[sp.Expr, dict]:
    if not amsgrad:
        return v1, {}
    vm = store(sp.Max(vmax, v1))
    return vm, {"vmax": vm}


def _torch_eager(amsgrad: bool, foreach: bool, coupling: str = "decoupled"
                 ) -> Callable[[], Update]:
    def build() -> Update:
        keep = 1 - lr * weight_decay
        b2 = beta2
        if foreach:
            # ATen's CPU _foreach_mul_ casts its Python scalar to the tensor's dtype (Tensor.mul_
            # takes it in opmath): for bf16/fp16 tensors 1 - lr*wd and beta2 are rounded to it.
            keep, b2 = StoreParam(keep), StoreState(beta2)
        if coupling == "decoupled":
            decayed, grad = StoreParam(theta * keep), g
        else:
            decayed, grad = _coupled(coupling, StoreParam)
        m1 = StoreState(_lerp(m, grad, 1 - beta1))
        v1 = _second_moment(StoreState, b2, grad)
        source, extra = _denominator_source(v1, amsgrad, StoreState)
        step_size = lr / (1 - beta1**t)
        bc2_sqrt = sp.sqrt(1 - beta2**t)
        # add_(eps) rounds the Python scalar to the tensor's dtype (bf16(eps) for bf16 tensors),
        # unlike mul/div, which take it in opmath.
        denom = StoreParam(StoreParam(StoreParam(sp.sqrt(source)) / bc2_sqrt) + StoreParam(eps))
        new = StoreParam(decayed + (-step_size) * m1 / denom)  # addcdiv_(m, denom, -step_size)
        return {"theta": new, "m": m1, "v": v1, **extra}

    return build


def torch_loop(amsgrad: bool = False, coupling: str = "decoupled") -> Order:
    """torch.optim.AdamW (Adam: `coupling`), foreach=False: one rounding per ATen op."""
    return Order("torch_loop", _torch_eager(amsgrad, False, coupling), FLOAT64,
                 "PyTorch for-loop: lerp, addcmul, step_size=lr/bc1, "
                 "denom=sqrt(v)/sqrt(bc2)+eps, addcdiv; Python-float scalars")


def torch_foreach(amsgrad: bool = False, coupling: str = "decoupled") -> Order:
    """torch.optim.AdamW, foreach=True: the loop's ops (on CPU the _foreach_ ops loop over the
    tensors), except that _foreach_mul_ rounds its scalar (1 - lr*wd, beta2) to the tensor dtype.
    Identical to the loop for float32/float64; in bfloat16, beta2 = 0.999 becomes 1.0."""
    return Order("torch_foreach", _torch_eager(amsgrad, True, coupling), FLOAT64,
                 "PyTorch foreach: as the loop, with 1 - lr*wd and beta2 rounded to the tensor "
                 "dtype by _foreach_mul_")


def torch_capturable(amsgrad: bool = False, coupling: str = "decoupled") -> Order:
    """capturable=True: bias corrections are 0-dim tensors, lr folded into the denominator."""

    def build() -> Update:
        if coupling == "decoupled":
            decayed, grad = StoreParam(theta * (1 - lr * weight_decay)), g
        else:
            decayed, grad = _coupled(coupling, StoreParam)
        m1 = StoreState(_lerp(m, grad, 1 - beta1))
        v1 = _second_moment(StoreState, grad=grad)
        source, extra = _denominator_source(v1, amsgrad, StoreState)
        step_size_neg = -(lr / (1 - beta1**t))
        bc2_sqrt = sp.sqrt(1 - beta2**t)
        denom = StoreParam(StoreParam(StoreParam(sp.sqrt(source)) / (bc2_sqrt * step_size_neg))
                           + eps / step_size_neg)
        new = StoreParam(decayed + m1 / denom)  # addcdiv_(m, denom), value 1
        return {"theta": new, "m": m1, "v": v1, **extra}

    return Order("torch_capturable", build, FLOAT32,
                 "PyTorch capturable: float32 0-dim tensor scalars, "
                 "denom = sqrt(v)/(sqrt(bc2)*-step_size) + eps/-step_size")


def fused(amsgrad: bool = False, coupling: str = "decoupled") -> Order:
    """A fused kernel (torch's fused=True, typical CUDA/Triton): opmath throughout, double
    scalars, one store per output."""

    def build() -> Update:
        if coupling == "decoupled":
            decayed, grad = theta * (1 - lr * weight_decay), g
        else:
            decayed, grad = _coupled(coupling, lambda x: x)
        m1 = _lerp(m, grad, 1 - beta1)
        v1 = v * beta2 + (1 - beta2) * grad * grad
        source, extra = _denominator_source(v1, amsgrad, lambda x: x)
        step_size = lr / (1 - beta1**t)
        denom = sp.sqrt(source) / sp.sqrt(1 - beta2**t) + eps
        new = decayed + (-step_size) * m1 / denom
        return {"theta": new, "m": m1, "v": v1, **extra}

    return Order("fused", build, FLOAT64,
                 "fused kernel: opmath intermediates, double scalars, stores only at the end")


def _in_compute(x: sp.Expr, ulps: int = 1) -> sp.Expr:
    """x computed as a 0-dim tensor in the compute format: `ulps` roundings' budget (2 for pow
    and sqrt, which libm and SLEEF deliver faithfully, not correctly rounded)."""
    for _ in range(ulps):
        x = Opmath(x)
    return x


def keras(amsgrad: bool = False) -> Order:
    """keras.optimizers.AdamW on the torch backend (keras 3.15: backend/torch/optimizers/
    torch_adam.py `_parallel_update_step`, torch_optimizer.py `_apply_weight_decay`); the rule
    with eps=hat, eps added to sqrt(v) and the bias corrections folded into one scalar:

        variables *= 1 - wd * lr                    # _foreach_mul_, a 0-dim float32 tensor
        alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)    # 0-dim tensors: b cast, t cast, pow
        m *= b1;  m += (1 - b1) g                   # _foreach_mul_, _foreach_add_(alpha=)
        v *= b2;  v += (1 - b2) g*g
        variables -= (m * alpha) / (sqrt(v) + eps)

    Keras does its hyperparameter arithmetic (lr, b^t, alpha, 1 - wd*lr) in 0-dim tensors:
    `_in_compute` rounds each of those values to the compute format, and each hyperparameter
    where Keras casts it (`ops.cast(beta_1, dtype)`, the float32 learning-rate variable). `b1`
    in m * b1, `1 - b1` and eps are Python floats, rounded per use (the bound engine's casts;
    the Store markers where torch casts them to a bfloat16 tensor's dtype). In float32 this is
    exactly Keras. In bfloat16 Keras makes these scalars bfloat16 (beta2 = 0.999 becomes 1.0,
    so 1 - b2^t = 0 and no step is taken): the order keeps them in the declared compute format
    (float32 unless --compute-dtype says otherwise), because a first-order bound cannot
    describe a bias correction that rounds to zero; judged there, Keras' bfloat16 step fails.
    Keras' learning rate is a float32 variable whatever the dtype: in float64 the order does
    not model that."""

    def build() -> Update:
        lr32 = _in_compute(lr)
        keep = StoreParam(_in_compute(1 - _in_compute(_in_compute(weight_decay) * lr32)))
        decayed = StoreParam(theta * keep)
        # _foreach_mul_ and add_(alpha=) cast their Python scalars (beta, 1 - beta) to the tensor
        # dtype: a cast per use in float32, bfloat16 values for bfloat16 tensors
        m1 = StoreState(StoreState(m * StoreState(beta1)) + StoreState(1 - beta1) * g)
        v1 = StoreState(StoreState(v * StoreState(beta2))
                        + StoreState(1 - beta2) * StoreState(g * g))
        source, extra = _denominator_source(v1, amsgrad, StoreState)
        # ops.power(ops.cast(beta, dtype), ops.cast(t, dtype)): the cast beta is the same float32
        # value as above; rounding it again here is independent, which only widens the bound
        b1, b2 = _in_compute(beta1), _in_compute(beta2)
        bc1 = _in_compute(1 - _in_compute(b1**t, 2))
        bc2_sqrt = _in_compute(sp.sqrt(_in_compute(1 - _in_compute(b2**t, 2))), 2)
        alpha = _in_compute(_in_compute(lr32 * bc2_sqrt) / bc1)
        denom = StoreParam(StoreParam(sp.sqrt(source)) + StoreParam(eps))
        new = StoreParam(decayed - StoreParam(StoreParam(m1 * alpha) / denom))
        return {"theta": new, "m": m1, "v": v1, **extra}

    return Order("keras", build, FLOAT64,
                 "Keras 3 (torch backend): eps=hat, alpha = lr*sqrt(1-b2^t)/(1-b1^t) in 0-dim "
                 "tensors of the compute format, m*b1 + (1-b1) g, (m*alpha)/(sqrt(v)+eps)")


#: Orders an adapter may declare (`orders = ("keras",)`): name -> (the convention it is written
#: for, counter and AMSGrad aside; its builder, taking `amsgrad`).
DECLARABLE: dict[str, tuple[Convention, Callable[[bool], Order]]] = {
    "keras": (Convention(eps="hat"), keras),
}


def declared_orders(rule: Rule, convention: Convention, names: tuple[str, ...]
                    ) -> tuple[Order, ...]:
    """The declared orders written for `convention` (the counter is the driver's business, not
    the step's; AMSGrad none or PyTorch's raw_max); the others do not compute this rule."""
    out = []
    for name in names:
        if name not in DECLARABLE:
            raise ValueError(f"unknown evaluation order {name!r}: declarable orders are "
                             f"{', '.join(DECLARABLE)}")
        written_for, build = DECLARABLE[name]
        if convention.amsgrad not in ("none", "raw_max"):
            continue
        if replace(convention, counter="parameter", amsgrad="none") != written_for:
            continue
        order = build(convention.amsgrad == "raw_max")
        out.append(_maximized(order) if rule.maximized else order)
    return tuple(out)


@cache
def adam_orders(rule: Rule, coupling: str, convention: Convention = DEFAULT,
                compute: Format = FLOAT32) -> tuple[Order, ...]:
    """adamw_orders for the Adam family: `coupling` "decoupled" (AdamW), "l2" (Adam+L2,
    torch.optim.Adam with weight_decay), "none" (Adam). PyTorch's Adam and AdamW share one
    implementation, so the traced orders differ only where the decay enters."""
    orders = [straightforward(rule)]
    base = Convention(amsgrad=convention.amsgrad)
    if base == convention and convention.amsgrad in ("none", "raw_max"):
        ams = convention.amsgrad == "raw_max"
        kernel_orders = [torch_loop(ams, coupling), torch_foreach(ams, coupling),
                         fused(ams, coupling)]
        if compute.precision <= FLOAT32.precision:
            kernel_orders.append(torch_capturable(ams, coupling))
        if rule.maximized:
            kernel_orders = [_maximized(o) for o in kernel_orders]
        orders += kernel_orders
    return tuple(orders)


@cache
def adamw_orders(rule: Rule, convention: Convention = DEFAULT,
                 compute: Format = FLOAT32, declared: tuple[str, ...] = ()) -> tuple[Order, ...]:
    """The orders a bound for `rule` (an AdamW) takes the maximum over, for `compute` precision.

    The traced kernel orders are written for the default convention (optionally with PyTorch's
    AMSGrad); other conventions are bounded in the spec's own order. The capturable order computes
    bias corrections in float32, so it joins only where compute is float32 or coarser: a float64
    implementation with float32 scalars does not deliver float64 accuracy, and should be told so.
    `declared` names orders the implementation declares (`DECLARABLE`, e.g. Keras'), added
    where they are written for `convention`.
    """
    return adam_orders(rule, "decoupled", convention, compute) + declared_orders(
        rule, convention, declared)


def _maximized(order: Order) -> Order:
    def build() -> Update:
        return {k: e.xreplace({g: -g}) for k, e in order.build().items()}
    return Order(order.name, build, order.scalar, order.description + "; maximize")
