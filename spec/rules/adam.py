"""Adam, Adam+L2 and AdamW, with AMSGrad and the named conventions of `spec.conventions`.

The moment updates and the bias-corrected direction are written once (`_moments`, `_direction`);
Adam+L2 and AdamW differ only in where weight decay enters, which is the whole point.
"""

from __future__ import annotations

import sympy as sp
from adamw_conformance.spec.conventions import DEFAULT, Convention
from adamw_conformance.spec.rule import Rule, Update
from adamw_conformance.spec.rules.sgd import _l2
from adamw_conformance.spec.symbols import (
    beta1,
    beta2,
    eps,
    g,
    initial_lr,
    lr,
    m,
    t,
    theta,
    v,
    vmax,
    weight_decay,
)

ADAM_DEFAULTS = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


def _moments(grad: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    return beta1 * m + (1 - beta1) * grad, beta2 * v + (1 - beta2) * grad * grad


def _direction(m1: sp.Expr, v1: sp.Expr, conv: Convention) -> tuple[sp.Expr, dict[str, sp.Expr]]:
    """The bias-corrected Adam direction mh / (sqrt(vh) + eps), and AMSGrad's extra state."""
    bc1, bc2 = 1 - beta1**t, 1 - beta2**t
    mh = m1 / bc1
    extra: dict[str, sp.Expr] = {}
    if conv.amsgrad == "raw_max":
        extra["vmax"] = sp.Max(vmax, v1)
        vh = extra["vmax"] / bc2
    elif conv.amsgrad == "corrected_max":
        extra["vmax"] = sp.Max(vmax, v1 / bc2)
        vh = extra["vmax"]
    else:
        vh = v1 / bc2
    if conv.eps == "after":
        denom = sp.sqrt(vh) + eps
    elif conv.eps == "hat":
        denom = sp.sqrt(vh) + eps / sp.sqrt(bc2)
    elif conv.eps == "root":
        denom = sp.sqrt(vh + eps)
    else:  # "floor"
        denom = sp.Max(sp.sqrt(vh), eps)
    return mh / denom, extra


def _decay_rate(conv: Convention) -> sp.Expr:
    return {
        "lr": lr * weight_decay,
        "schedule": lr / initial_lr * weight_decay,
        "independent": weight_decay,
    }[conv.decay_coupling]


#: The bias correction of each moment after step t: the bias-corrected ("debiased") state
#: holds m / DEBIASING[m] and v / DEBIASING[v]. moments=debiased below, and the suite's decoding
#: of a target that stores its moments so (core/layout.py), read it here.
DEBIASING: dict[sp.Symbol, sp.Expr] = {m: 1 - beta1**t, v: 1 - beta2**t}


def _debiased(rule_build, conv: Convention):
    """Store bias-corrected moments instead of raw ones: same parameters, different state.

    The stored mh_{t-1} is m_{t-1} / (1 - b1^(t-1)); the raw rule is applied to the raw moments
    recovered from it, and the new moments are stored corrected. At t = 1 the old state is zero.
    """
    def build() -> Update:
        raw = {s: s * f.subs(t, t - 1) for s, f in DEBIASING.items()}
        out = {k: e.xreplace(raw) for k, e in rule_build().items()}
        for s, f in DEBIASING.items():
            out[s.name] = out[s.name] / f
        return out
    return build


def adam(weight_decay_l2: bool = False, convention: Convention = DEFAULT) -> Rule:
    """Adam; with `weight_decay_l2`, PyTorch's Adam(weight_decay>0): decay added to the gradient."""

    def build() -> Update:
        grad = _l2(g) if weight_decay_l2 else g
        m1, v1 = _moments(grad)
        step, extra = _direction(m1, v1, convention)
        return {"theta": theta - lr * step, "m": m1, "v": v1, **extra}

    hyper = (lr, beta1, beta2, eps, *((weight_decay,) if weight_decay_l2 else ()))
    name = "adam_l2" if weight_decay_l2 else "adam"
    return _finish(name, hyper, build, convention, "Adam" + (" + L2" if weight_decay_l2 else ""))


def adamw(convention: Convention = DEFAULT) -> Rule:
    """AdamW: decay decoupled from the moments, m and v never see weight_decay."""

    def build() -> Update:
        m1, v1 = _moments(g)
        step, extra = _direction(m1, v1, convention)
        keep = 1 - _decay_rate(convention)
        if convention.decay_target == "previous":
            new = theta * keep - lr * step
        else:
            new = (theta - lr * step) * keep
        return {"theta": new, "m": m1, "v": v1, **extra}

    hyper = (lr, beta1, beta2, eps, weight_decay,
             *((initial_lr,) if convention.decay_coupling == "schedule" else ()))
    return _finish("adamw", hyper, build, convention, "AdamW (decoupled weight decay)")


def _finish(name: str, hyper, build, convention: Convention, what: str) -> Rule:
    state = (m, v, *((vmax,) if convention.amsgrad != "none" else ()))
    if convention.moments == "debiased":
        build = _debiased(build, convention)
    defaults = dict(ADAM_DEFAULTS)
    if weight_decay in hyper:
        defaults["weight_decay"] = 1e-2 if name == "adamw" else 0.0
    label = convention.label()
    full = name if label == "default" else f"{name}[{label}]"
    return Rule(full, hyper, state, build, defaults, description=f"{what}; {label} convention")
