"""Adamax (Kingma & Ba, "Adam", section 7.1) in PyTorch's form: Adam's second moment replaced
by an exponentially weighted infinity norm u, which needs no bias correction.

PyTorch's torch.optim.Adamax adds eps inside the maximum (the paper has none) and its weight
decay is L2, added to the gradient:

    d  = g + weight_decay theta
    m' = beta1 m + (1 - beta1) d
    u' = max(beta2 u, |d| + eps)
    theta' = theta - lr / (1 - beta1^t) m' / u'
"""

from __future__ import annotations

import sympy as sp
from adamw_conformance.spec.rule import Rule, Update
from adamw_conformance.spec.rules.sgd import _l2
from adamw_conformance.spec.symbols import beta1, beta2, eps, g, lr, m, t, theta, u, weight_decay


def adamax() -> Rule:
    def build() -> Update:
        d = _l2(g)
        m1 = beta1 * m + (1 - beta1) * d
        u1 = sp.Max(beta2 * u, sp.Abs(d) + eps)
        return {"theta": theta - lr / (1 - beta1**t) * m1 / u1, "m": m1, "u": u1}

    return Rule(
        "adamax", (lr, beta1, beta2, eps, weight_decay), (m, u), build,
        defaults={"lr": 2e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
        description="m = b1 m + (1-b1) g; u = max(b2 u, |g| + eps); "
                    "theta - lr/(1-b1^t) m/u (g + wd theta: L2 decay)",
    )
