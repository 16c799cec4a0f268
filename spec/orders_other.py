"""Evaluation orders of torch.optim's SGD, Adagrad, RMSprop and Adamax (for-loop and foreach
paths).

Traced from torch 2.13's torch/optim/sgd.py, adagrad.py, rmsprop.py and adamax.py. Each ATen op
of the eager paths stores its result in the tensor's dtype (`StoreParam` for tensors derived from
the parameter or the gradient, `StoreState` for state buffers): in bfloat16 the L2 gradient,
sqrt(sum), sqrt(v) + eps, |g| + eps and the momentum buffer's partial products are bf16 values,
which the spec's own order (one store per output) does not model. Scalars are taken as the CPU
kernels take them, measured op by op on bf16 tensors (torch 2.13, CPU):

- `add`/`add_` with `alpha=` (tensor + alpha * tensor), `_foreach_add(_)` with `alpha=`, and
  `add_`/`_foreach_add_` of a Python scalar round the scalar to the tensor dtype: the L2 term's
  `weight_decay`, `1 - dampening`, Nesterov's `momentum`, the `-lr` of `param.add_(buf, ...)`,
  and `eps` are bf16 values for bf16 tensors (`StoreParam(scalar)`);
- in-place `_foreach_mul_` rounds its scalar (or scalar list) to the tensor dtype; out-of-place
  `_foreach_mul` and `Tensor.mul_` take it in opmath (float32);
- the `value=` of `addcmul`/`addcdiv` (and their `_foreach_` forms) and lerp's weight are taken
  in opmath.

Each order is the rule's math rearranged; `tests/test_rule_facts.py` proves that every order
equals its rule once the markers are stripped. In float32 and float64 every store is exact and
these orders reduce to one rounding per operation, as the spec's own order has.

Fused paths (`fused=True` of SGD and Adagrad) compute in opmath and store only the outputs: the
spec's own order (`spec.orders.straightforward`) is theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, partial

import sympy as sp
from adamw_conformance.spec.formats import FLOAT64
from adamw_conformance.spec.markers import StoreParam, StoreState
from adamw_conformance.spec.orders import Order, _lerp, _maximized, straightforward
from adamw_conformance.spec.rule import Rule, Update
from adamw_conformance.spec.symbols import (
    accum,
    alpha,
    beta1,
    beta2,
    buf,
    dampening,
    eps,
    g,
    gavg,
    lr,
    lr_decay,
    m,
    momentum,
    t,
    theta,
    u,
    v,
    weight_decay,
)


def _l2_grad() -> sp.Expr:
    # grad.add(param, alpha=weight_decay) / _foreach_add(grads, params, alpha=weight_decay):
    # alpha is rounded to the tensor dtype.
    return StoreParam(g + StoreParam(weight_decay) * theta)


def _sgd(kind: str, foreach: bool) -> Callable[[], Update]:
    def build() -> Update:
        d = _l2_grad()
        if kind == "sgd":
            # param.add_(grad, alpha=-lr)
            return {"theta": StoreParam(theta + StoreParam(-lr) * d)}
        # buf.mul_(momentum) (foreach: _foreach_mul_, momentum in the tensor dtype), then
        # add_(grad, alpha=1 - dampening); the buffer is a clone of the gradient at t = 1.
        mu = StoreState(momentum) if foreach else momentum
        later = StoreState(StoreState(buf * mu) + StoreParam(1 - dampening) * d)
        b = sp.Piecewise((d, sp.Eq(t, 1)), (later, True))
        # Nesterov: grad.add(buf, alpha=momentum); otherwise the step is the buffer itself.
        direction = StoreParam(d + StoreParam(momentum) * b) if kind == "nesterov" else b
        return {"theta": StoreParam(theta + StoreParam(-lr) * direction), "buf": b}

    return build


def _adagrad(foreach: bool) -> Callable[[], Update]:
    def build() -> Update:
        d = _l2_grad()
        s = StoreState(accum + d * d)  # state_sum.addcmul_(grad, grad, value=1)
        std = StoreParam(StoreParam(sp.sqrt(s)) + StoreParam(eps))  # sqrt(), add_(eps)
        clr = lr / (1 + (t - 1) * lr_decay)  # Python float arithmetic on step.item()
        if foreach:
            # _foreach_mul_(grads, minus_clr) rounds -clr to the dtype (with weight_decay or
            # maximize; otherwise the out-of-place _foreach_mul takes it in opmath, which this
            # bound covers), then _foreach_addcdiv_(params, numerator, std).
            numerator = StoreParam(d * StoreParam(-clr))
            return {"theta": StoreParam(theta + numerator / std), "accum": s}
        # param.addcdiv_(grad, std, value=-clr)
        return {"theta": StoreParam(theta + (-clr) * d / std), "accum": s}

    return build


def _rmsprop(centered: bool, with_momentum: bool, foreach: bool) -> Callable[[], Update]:
    def build() -> Update:
        d = _l2_grad()
        a = StoreState(alpha) if foreach else alpha  # _foreach_mul_ rounds alpha to the dtype
        # square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        v1 = StoreState(StoreState(v * a) + (1 - alpha) * d * d)
        out: Update = {"v": v1}
        if centered:
            ga = StoreState(_lerp(gavg, d, 1 - alpha))  # grad_avg.lerp_(grad, 1 - alpha)
            out["gavg"] = ga
            # square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
            root = StoreParam(sp.sqrt(StoreParam(v1 - ga * ga)))
        else:
            root = StoreParam(sp.sqrt(v1))
        avg = StoreParam(root + StoreParam(eps))  # add_(eps)
        if with_momentum:
            mu = StoreState(momentum) if foreach else momentum
            b = StoreState(StoreState(buf * mu) + d / avg)  # buf.mul_(momentum).addcdiv_(g, avg)
            out["buf"] = b
            out["theta"] = StoreParam(theta + StoreParam(-lr) * b)  # add_(buf, alpha=-lr)
        else:
            out["theta"] = StoreParam(theta + (-lr) * d / avg)  # addcdiv_(g, avg, value=-lr)
        return out

    return build


def _adamax(foreach: bool) -> Callable[[], Update]:
    def build() -> Update:
        d = _l2_grad()
        m1 = StoreState(_lerp(m, d, 1 - beta1))  # exp_avg.lerp_(grad, 1 - beta1)
        # exp_inf.mul_(beta2) (foreach: _foreach_mul_, beta2 in the tensor dtype), and
        # grad.abs().add_(eps) (eps in the tensor dtype); their maximum is exact
        b2 = StoreState(beta2) if foreach else beta2
        u1 = sp.Max(StoreState(u * b2), StoreParam(sp.Abs(d) + StoreParam(eps)))
        clr = lr / (1 - beta1**t)  # Python float arithmetic on step.item()
        # param.addcdiv_(exp_avg, exp_inf, value=-clr) (foreach: a list of -clr)
        return {"theta": StoreParam(theta + (-clr) * m1 / u1), "m": m1, "u": u1}

    return build


#: One of torch's eager implementations as a function of `foreach`: the step built in the
#: for-loop path's order (False) or the foreach path's (True).
Path = Callable[[bool], Callable[[], Update]]


def torch_eager(label: str, path: Path, foreach: bool) -> Order:
    """torch.optim's for-loop (foreach=False) or foreach path of the rule `label` names."""
    kind = "foreach" if foreach else "loop"
    return Order(f"torch_{kind}", path(foreach), FLOAT64,
                 f"PyTorch {kind} path of {label}: one store per ATen op, add's alpha and "
                 "scalar add in the tensor dtype" + (", _foreach_mul_'s scalar too"
                                                     if foreach else ""))


def eager_orders(label: str, path: Path) -> Callable[[Rule], tuple[Order, ...]]:
    """The orders a bound for a rule torch computes with `path` takes the maximum over: the
    spec's own order (also the fused kernels') and torch's traced for-loop and foreach paths,
    each maximized where the rule is. Cached per rule, like the Adam family's orders."""

    @cache
    def orders(rule: Rule) -> tuple[Order, ...]:
        traced = [torch_eager(label, path, foreach=False), torch_eager(label, path, foreach=True)]
        if rule.maximized:
            traced = [_maximized(o) for o in traced]
        return (straightforward(rule), *traced)

    return orders


sgd_orders = eager_orders("sgd", partial(_sgd, "sgd"))
momentum_orders = eager_orders("momentum", partial(_sgd, "momentum"))
nesterov_orders = eager_orders("nesterov", partial(_sgd, "nesterov"))
adagrad_orders = eager_orders("adagrad", _adagrad)
adamax_orders = eager_orders("adamax", _adamax)


@cache
def rmsprop_orders(centered: bool, with_momentum: bool) -> Callable[[Rule], tuple[Order, ...]]:
    """eager_orders of the RMSprop rule with (`centered`, `with_momentum`)."""
    label = "rmsprop" + ("_centered" if centered else "") + ("_momentum" if with_momentum else "")
    return eager_orders(label, partial(_rmsprop, centered, with_momentum))


def own_order(rule: Rule) -> tuple[Order, ...]:
    """The orders of a rule no implementation is traced for: the spec's own order only."""
    return (straightforward(rule),)
