"""Adagrad and RMSProp (plain, with momentum, centered), in PyTorch's conventions."""

from __future__ import annotations

import sympy as sp
from adamw_conformance.spec.rule import Rule
from adamw_conformance.spec.rules.sgd import _l2
from adamw_conformance.spec.symbols import (
    accum,
    alpha,
    buf,
    eps,
    g,
    gavg,
    lr,
    lr_decay,
    momentum,
    t,
    theta,
    v,
)
from adamw_conformance.spec.symbols import weight_decay as wd


def adagrad() -> Rule:
    def build():
        d = _l2(g)
        s = accum + d * d
        clr = lr / (1 + (t - 1) * lr_decay)
        return {"theta": theta - clr * d / (sp.sqrt(s) + eps), "accum": s}

    return Rule(
        "adagrad", (lr, lr_decay, wd, eps), (accum,), build,
        defaults={"lr_decay": 0.0, "weight_decay": 0.0, "eps": 1e-10},
        description="sum += g^2; theta - lr/(1+(t-1) lr_decay) g/(sqrt(sum)+eps)",
    )


def rmsprop(centered: bool = False, with_momentum: bool = False) -> Rule:
    state = (v, *((gavg,) if centered else ()), *((buf,) if with_momentum else ()))

    def build():
        d = _l2(g)
        v1 = alpha * v + (1 - alpha) * d * d
        out = {"v": v1}
        if centered:
            ga = alpha * gavg + (1 - alpha) * d
            avg = sp.sqrt(v1 - ga * ga) + eps
            out["gavg"] = ga
        else:
            avg = sp.sqrt(v1) + eps
        if with_momentum:
            b = momentum * buf + d / avg
            out["buf"] = b
            out["theta"] = theta - lr * b
        else:
            out["theta"] = theta - lr * d / avg
        return out

    name = "rmsprop" + ("_centered" if centered else "") + ("_momentum" if with_momentum else "")
    hyper = (lr, alpha, eps, wd, *((momentum,) if with_momentum else ()))
    return Rule(
        name, hyper, state, build,
        defaults={"alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0},
        description="v = a v + (1-a) g^2; theta - lr g/(sqrt(v [- gavg^2]) + eps) [via momentum]",
    )
