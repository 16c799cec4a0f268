"""SGD, heavy-ball momentum (PyTorch's dampening form and the EMA form) and Nesterov."""

from __future__ import annotations

import sympy as sp
from adamw_conformance.spec.rule import Rule
from adamw_conformance.spec.symbols import (
    beta1,
    buf,
    dampening,
    g,
    lr,
    m,
    momentum,
    t,
    theta,
    weight_decay,
)


def _l2(grad: sp.Expr) -> sp.Expr:
    """Weight decay the L2 way: added to the gradient (PyTorch's SGD, Adagrad, RMSprop, Adam)."""
    return grad + weight_decay * theta


def sgd() -> Rule:
    return Rule(
        "sgd", (lr, weight_decay), (),
        lambda: {"theta": theta - lr * _l2(g)},
        defaults={"weight_decay": 0.0},
        description="theta - lr (g + wd theta)",
    )


def sgd_decoupled() -> Rule:
    return Rule(
        "sgd_decoupled", (lr, weight_decay), (),
        lambda: {"theta": theta * (1 - lr * weight_decay) - lr * g},
        defaults={"weight_decay": 0.0},
        description="theta (1 - lr wd) - lr g: SGD with decoupled weight decay",
    )


def _dampened_buffer() -> sp.Expr:
    # PyTorch starts the buffer as a copy of the gradient, so the first step has no dampening.
    d = _l2(g)
    return sp.Piecewise((d, sp.Eq(t, 1)), (momentum * buf + (1 - dampening) * d, True))


def momentum_sgd() -> Rule:
    def build():
        b = _dampened_buffer()
        return {"theta": theta - lr * b, "buf": b}

    return Rule(
        "momentum", (lr, momentum, dampening, weight_decay), (buf,), build,
        defaults={"dampening": 0.0, "weight_decay": 0.0},
        description="heavy ball, PyTorch form: buf = mu buf + (1-dampening) g (buf = g at t=1)",
    )


def nesterov() -> Rule:
    def build():
        b = _dampened_buffer()
        return {"theta": theta - lr * (_l2(g) + momentum * b), "buf": b}

    return Rule(
        "nesterov", (lr, momentum, dampening, weight_decay), (buf,), build,
        defaults={"dampening": 0.0, "weight_decay": 0.0},
        description="PyTorch's Nesterov: theta - lr (g + mu buf_t)",
    )


def momentum_ema() -> Rule:
    def build():
        m1 = beta1 * m + (1 - beta1) * g
        return {"theta": theta - lr * m1, "m": m1}

    return Rule(
        "momentum_ema", (lr, beta1), (m,), build,
        description="heavy ball, EMA form: m = b1 m + (1-b1) g; theta - lr m",
    )
