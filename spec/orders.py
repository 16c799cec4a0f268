"""Evaluation orders: the same AdamW step arranged the way real kernels compute it.

Rounding errors depend on the order of operations, so the bounds are derived per order and the
bound for "any of these" is their maximum. Each order is the rule's math rearranged, and a test
proves symbolically that it equals its rule (markers stripped): no order can drift from the
spec. Trees are built with SymPy's rewriting off, so they keep the order written.

- `straightforward`: the spec's own order; and `general` (`spec.orders_general`): the decay
  expanded, sums and products free of association, for the orders nobody traced. Both under
  every convention.
- Traced from torch 2.13 (each docstring quotes the source it follows): `torch_loop`,
  `torch_foreach`, `fused` (the default convention, any counter); `debiased_lerp` (optimi's,
  under moments=debiased, any counter); `torch_capturable`,
  `torch_capturable_foreach`, declared (`DECLARABLE`) by targets that take that branch; `keras`,
  declared by the Keras adapter; `expanded` (transformers' and fairseq's decay), a real order the
  general one covers, for the tightness report and tests.

Markers (`spec.markers`) say where a value is stored to the tensor's dtype: after every ATen op for
PyTorch's for-loop and foreach paths, only at the end for fused kernels; `Opmath` where torch
takes a scalar into a float32 tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache, cached_property

import sympy as sp
from adamw_conformance.spec.conventions import DEFAULT, Convention
from adamw_conformance.spec.formats import FLOAT32, FLOAT64, Format
from adamw_conformance.spec.markers import Opmath, StoreParam, StoreState
from adamw_conformance.spec.orders_general import (
    adamw_expanded,
    general_build,
)
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
    """torch.optim.AdamW (Adam: `coupling`), foreach=False: one rounding per ATen op. torch
    2.13, torch/optim/adam.py `_single_tensor_adam`, the non-capturable branch:

        param.mul_(1 - lr * weight_decay)          # Python double, taken in opmath
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = lr / bias_correction1          # Python doubles (bias corrections too)
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-step_size)

    Adam+L2 instead: grad = grad.add(param, alpha=weight_decay) (`_coupled`)."""
    return Order("torch_loop", _torch_eager(amsgrad, False, coupling), FLOAT64,
                 "PyTorch for-loop: lerp, addcmul, step_size=lr/bc1, "
                 "denom=sqrt(v)/sqrt(bc2)+eps, addcdiv; Python-float scalars")


def torch_foreach(amsgrad: bool = False, coupling: str = "decoupled") -> Order:
    """torch.optim.AdamW, foreach=True: torch 2.13, torch/optim/adam.py `_multi_tensor_adam`,
    the non-capturable branch: `_foreach_mul_(params, 1 - lr*wd)`, `_foreach_lerp_`,
    `_foreach_mul_(exp_avg_sqs, beta2)`, `_foreach_addcmul_(.., 1 - beta2)`, `_foreach_sqrt`,
    `_foreach_div_` by sqrt(bc2) and `_foreach_add_(.., eps)` (Python doubles), then
    `_foreach_addcdiv_` with -lr/bc1. The loop's ops (on CPU the _foreach_ ops loop over the
    tensors), except that _foreach_mul_ rounds its scalar (1 - lr*wd, beta2) to the tensor dtype.
    Identical to the loop for float32/float64; in bfloat16, beta2 = 0.999 becomes 1.0."""
    return Order("torch_foreach", _torch_eager(amsgrad, True, coupling), FLOAT64,
                 "PyTorch foreach: as the loop, with 1 - lr*wd and beta2 rounded to the tensor "
                 "dtype by _foreach_mul_")


def _f32(x: sp.Expr, ulps: int = 1) -> sp.Expr:
    """A value torch computes as a 0-dim float32 tensor (the capturable paths' step counter is
    one): rounded to the compute format, `ulps` roundings' budget (2 for pow and sqrt)."""
    return _in_compute(x, ulps)


def torch_capturable(amsgrad: bool = False, coupling: str = "decoupled") -> Order:
    """torch.optim.AdamW(capturable=True) on its single-tensor path, and differentiable=True
    (the same branch): torch 2.13, torch/optim/adam.py `_single_tensor_adam`, the
    `if capturable or differentiable:` branch.

    Only the bias corrections are 0-dim float32 tensors, because the step counter is one
    (`state["step"]`, float32); everything the non-capturable path takes as a Python float stays
    one, computed in double and taken into opmath by the tensor op:

        param.mul_(1 - lr * weight_decay)                # double scalar, as the loop
        exp_avg.lerp_(grad, 1 - beta1)                   # double weight, as the loop
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** step             # float32: beta1 cast, pow, rsub
        step_size = lr / bias_correction1                # Tensor.__rtruediv__: reciprocal()*lr
        step_size_neg = step_size.neg()
        bias_correction2_sqrt = bias_correction2.sqrt()
        denom = (exp_avg_sq.sqrt() / (bias_correction2_sqrt * step_size_neg)
                 ).add_(eps / step_size_neg)             # eps / t: reciprocal() * eps
        param.addcdiv_(exp_avg, denom)

    Measured on CPU (differentiable=True, and capturable=True with the device check lifted):
    these scalars, emulated in numpy float32, reproduce torch's step bit for bit in float32 and
    bfloat16. `lr` and `eps` enter as float32 operands of 0-dim float32 ops; the division of a
    bf16 tensor by the 0-dim float32 tensor takes its float32 value, `.add_` of one rounds it to
    bf16 (StoreParam).
    """

    def build() -> Update:
        if coupling == "decoupled":
            decayed, grad = StoreParam(theta * (1 - lr * weight_decay)), g
        else:
            decayed, grad = _coupled(coupling, StoreParam)
        m1 = StoreState(_lerp(m, grad, 1 - beta1))
        v1 = _second_moment(StoreState, grad=grad)
        source, extra = _denominator_source(v1, amsgrad, StoreState)
        bc1 = _f32(1 - _f32(_f32(beta1) ** t, 2))
        bc2 = _f32(1 - _f32(_f32(beta2) ** t, 2))
        step_size_neg = -_f32(_f32(1 / bc1) * _f32(lr))
        scale = _f32(_f32(sp.sqrt(bc2), 2) * step_size_neg)
        eps_scaled = _f32(_f32(1 / step_size_neg) * _f32(eps))
        denom = StoreParam(StoreParam(StoreParam(sp.sqrt(source)) / scale)
                           + StoreParam(eps_scaled))
        new = StoreParam(decayed + m1 / denom)  # addcdiv_(m, denom), value 1
        return {"theta": new, "m": m1, "v": v1, **extra}

    return Order("torch_capturable", build, FLOAT64,
                 "PyTorch capturable (single tensor) and differentiable: bias corrections, "
                 "step size and eps/-step_size in 0-dim float32 tensors, "
                 "denom = sqrt(v)/(sqrt(bc2)*-step_size) + eps/-step_size")


def torch_capturable_foreach(amsgrad: bool = False, coupling: str = "decoupled") -> Order:
    """torch.optim.AdamW(capturable=True, foreach=True): torch 2.13, torch/optim/adam.py
    `_multi_tensor_adam`, the `if capturable:` branch. The foreach loop's scalars
    (`_foreach_mul_` rounds 1 - lr*wd and beta2 to the tensor dtype), then the bias corrections
    as lists of 0-dim float32 tensors and a denominator divided by the step size:

        bias_correction1 = _foreach_pow(beta1, steps); _foreach_sub_(bias_correction1, 1)
        bias_correction2 = _foreach_pow(beta2, steps); _foreach_sub_(.., 1); _foreach_neg_(..)
        _foreach_div_(bias_correction1, lr); _foreach_reciprocal_(bias_correction1)
        step_size = bias_correction1                     # lr / (beta1^t - 1), negative
        _foreach_sqrt_(bias_correction2)
        exp_avg_sq_sqrt = _foreach_sqrt(exp_avg_sqs)
        _foreach_div_(exp_avg_sq_sqrt, bias_correction2_sqrt)
        _foreach_add_(exp_avg_sq_sqrt, eps)
        _foreach_div_(exp_avg_sq_sqrt, step_size)
        _foreach_addcdiv_(params, exp_avgs, exp_avg_sq_sqrt)

    Measured as torch_capturable (CPU, the device check lifted): bit for bit in float32 and
    bfloat16. On CUDA the same ops run as multi-tensor kernels in opmath, one store per op.
    """

    def build() -> Update:
        if coupling == "decoupled":
            decayed, grad = StoreParam(theta * StoreParam(1 - lr * weight_decay)), g
        else:
            decayed, grad = _coupled(coupling, StoreParam)
        m1 = StoreState(_lerp(m, grad, 1 - beta1))
        v1 = _second_moment(StoreState, StoreState(beta2), grad)
        source, extra = _denominator_source(v1, amsgrad, StoreState)
        bc1_minus_one = _f32(_f32(_f32(beta1) ** t, 2) - 1)
        step_size = _f32(1 / _f32(bc1_minus_one / _f32(lr)))
        bc2 = -_f32(_f32(_f32(beta2) ** t, 2) - 1)
        denom = StoreParam(StoreParam(StoreParam(StoreParam(sp.sqrt(source))
                                                 / _f32(sp.sqrt(bc2), 2)) + StoreParam(eps))
                           / step_size)
        new = StoreParam(decayed + m1 / denom)  # _foreach_addcdiv_(params, m, denom), value 1
        return {"theta": new, "m": m1, "v": v1, **extra}

    return Order("torch_capturable_foreach", build, FLOAT64,
                 "PyTorch capturable foreach: bias corrections and lr/(b1^t - 1) in 0-dim "
                 "float32 tensors, denom = (sqrt(v)/sqrt(bc2) + eps) / step_size")


def fused(amsgrad: bool = False, coupling: str = "decoupled") -> Order:
    """A fused kernel (torch's fused=True, typical CUDA/Triton): opmath throughout, double
    scalars, one store per output. torch 2.13's CPU kernel, aten/src/ATen/native/cpu/
    FusedAdamKernel.cpp `adam_math` (reached from torch/optim/adam.py `_fused_adam` through
    torch._fused_adamw_): bias corrections, 1 - beta and step_size = lr / bc1 in double, each
    cast to opmath where used; `param * (1 - lr*wd)`; the lerp of exp_avg (fmadd); `exp_avg_sq *
    beta2 + (1 - beta2) * grad * grad`; `sqrt(exp_avg_sq) / bc2_sqrt + eps`; `param +
    (-step_size) * exp_avg / denom`; one store per output. torch's CUDA kernel
    (aten/src/ATen/native/cuda/fused_adam_utils.cuh `adam_math`) decays in the expanded form
    `param -= lr * weight_decay * param`, in double: the general order covers it."""

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


def debiased_lerp(coupling: str = "decoupled") -> Order:
    """optimi (torch-optimi 0.3.3, optimi/adam.py `adam` and `_single_param_adam`; the foreach
    path runs the same ops) under moments=debiased: the state holds mh, vh, mixed each step with
    the debiased betas b_hat = (b^t - b) / (b^t - 1) formed in Python doubles:

        param.mul_(1 - lr * weight_decay)           # skipped where that factor is 0
        exp_avg.lerp_(grad, weight=1 - beta1_hat)
        exp_avg_sq.mul_(beta2_hat).addcmul_(grad, grad, value=1 - beta2_hat)
        param.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(eps), value=-lr)

    `m`, `v` are the stored mh, vh here, as in the debiased rule. Adam+L2 instead: grad.add_(
    param, alpha=weight_decay) (`_coupled`)."""

    def build() -> Update:
        if coupling == "decoupled":
            decayed, grad = StoreParam(theta * (1 - lr * weight_decay)), g
        else:
            decayed, grad = _coupled(coupling, StoreParam)
        b1_hat = (beta1**t - beta1) / (beta1**t - 1)
        b2_hat = (beta2**t - beta2) / (beta2**t - 1)
        m1 = StoreState(_lerp(m, grad, 1 - b1_hat))
        v1 = StoreState(StoreState(v * b2_hat) + (1 - b2_hat) * grad * grad)
        denom = StoreParam(StoreParam(sp.sqrt(v1)) + StoreParam(eps))
        new = StoreParam(decayed + (-lr) * m1 / denom)
        return {"theta": new, "m": m1, "v": v1}

    return Order("debiased_lerp", build, FLOAT64,
                 "optimi: bias-corrected moments mixed with debiased betas (lerp, mul, addcmul), "
                 "addcdiv by sqrt(vh) + eps; Python-float scalars")


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


def _keras(amsgrad: bool, coupling: str) -> Order | None:
    return keras(amsgrad) if coupling == "decoupled" else None


#: Orders an adapter may declare (`orders = ("keras",)`): name -> (the convention it is written
#: for, counter and AMSGrad aside; its builder, taking `amsgrad` and the coupling of the decay,
#: None where it does not compute that rule). torch's capturable orders are declared, not
#: assumed: they compute beta^t, lr and eps / step_size in float32, and an implementation that
#: rounds hyperparameters to float32 is judged as doing so only where it says so (the torch
#: adapter declares them for capturable=True and differentiable=True, which take that branch).
DECLARABLE: dict[str, tuple[Convention, Callable[[bool, str], Order | None]]] = {
    "keras": (Convention(eps="hat"), _keras),
    "torch_capturable": (DEFAULT, torch_capturable),
    "torch_capturable_foreach": (DEFAULT, torch_capturable_foreach),
}

#: Declared orders that compute scalars in float32 tensors: left out where compute is finer (a
#: float64 implementation with float32 scalars does not deliver float64 accuracy, and should be
#: told so).
FLOAT32_SCALARS = frozenset({"torch_capturable", "torch_capturable_foreach"})


def declared_orders(rule: Rule, convention: Convention, names: tuple[str, ...],
                    coupling: str = "decoupled", compute: Format = FLOAT32
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
        if name in FLOAT32_SCALARS and compute.precision > FLOAT32.precision:
            continue
        order = build(convention.amsgrad == "raw_max", coupling)
        if order is not None:
            out.append(_maximized(order) if rule.maximized else order)
    return tuple(out)


def general(rule: Rule, coupling: str, convention: Convention = DEFAULT,
            factored: bool = False) -> Order:
    """The general order (`spec.orders_general`) of `rule` under `convention`: the decay
    expanded where it is decoupled (AdamW), every sum and product free of association, every
    tensor operation stored. In the bound of every Adam-family rule, under every convention.
    `factored` (behaviour ruled out EXPANDED_DECAY): the decay as the rule factors it."""
    if coupling == "decoupled" and factored:
        return Order("general_factored", general_build(rule.build), FLOAT64, _FACTORED)
    if coupling == "decoupled":
        order = Order("general", general_build(adamw_expanded(convention)), FLOAT64,
                      _GENERAL)
        return _maximized(order) if rule.maximized else order
    return Order("general", general_build(rule.build), FLOAT64, _GENERAL)


_GENERAL = ("any reasonable order: decay expanded (theta - rate theta), n-ary sums and flat "
            "products in any association, every tensor op and its scalars stored")
_FACTORED = "the general order with the decay factored, theta (1 - rate)"


def expanded(amsgrad: bool = False) -> Order:
    """An eager AdamW in the default convention that decays in the expanded form and mixes the
    first moment with mul_ and add_, as fairseq's Adam (fairseq/optim/adam.py `Adam.step`) and
    transformers.optimization.AdamW 4.46 (`AdamW.step`) write them:

        p.add_(p, alpha=-lr * weight_decay)              # ATen's add_ rounds alpha to the dtype
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / sqrt(bias_correction2)).add_(eps)
        p.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)

    (transformers and fairseq fold sqrt(bias_correction2) into the step size, eps=hat; this is
    their decay and first moment in torch's loop otherwise.) A real order the general one
    covers, not itself in the bound: the tightness report compares the verdict with it, and
    `impl.orders.ExpandedDecayAdamW` computes in it."""

    def build() -> Update:
        decayed = StoreParam(theta + StoreParam(-(lr * weight_decay)) * theta)
        m1 = StoreState(StoreState(m * beta1) + StoreParam(1 - beta1) * g)
        v1 = _second_moment(StoreState)
        source, extra = _denominator_source(v1, amsgrad, StoreState)
        step_size = lr / (1 - beta1**t)
        denom = StoreParam(StoreParam(StoreParam(sp.sqrt(source)) / sp.sqrt(1 - beta2**t))
                           + StoreParam(eps))
        new = StoreParam(decayed + (-step_size) * m1 / denom)
        return {"theta": new, "m": m1, "v": v1, **extra}

    return Order("expanded", build, FLOAT64,
                 "eager, p.add_(p, alpha=-lr*wd) and exp_avg.mul_(b1).add_(g, alpha=1-b1)")


def _maximized(order: Order) -> Order:
    def build() -> Update:
        return {k: e.xreplace({g: -g}) for k, e in order.build().items()}
    return Order(order.name, build, order.scalar, order.description + "; maximize")
