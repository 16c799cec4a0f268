"""Seeded defects in the other rules of the lineage: one per rule family, each an optimizer that
names the rule it claims (`conformance_rule`) and keeps torch.optim's state names, so that the
suite replays its state. tests/test_other_rules.py proves that the named property kills each.
"""

from __future__ import annotations

from typing import Any

import torch


class _Simple(torch.optim.Optimizer):
    """A per-parameter loop with torch.optim's constructor and state names; `update` is the
    rule (with its defect)."""

    def __init__(self, params: Any, **hyper: Any) -> None:
        for name in ("lr", "eps", "weight_decay", "momentum", "alpha", "lr_decay"):
            if name in hyper and not 0.0 <= hyper[name]:
                raise ValueError(f"Invalid {name}: {hyper[name]}")
        super().__init__(params, hyper)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group.get("weight_decay", 0.0) != 0:
                    g = g.add(p, alpha=group["weight_decay"])
                self.update(p, g, self.state[p], group)
        return None

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError


class NesterovOldBuffer(_Simple):
    """Defect: Nesterov's look-ahead uses the previous momentum buffer, g + mu buf_{t-1}, not the
    updated one, g + mu buf_t. Killed by exact.one_step (from a replayed buffer, t >= 2)."""

    conformance_rule = "nesterov"
    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.9,
                 dampening: float = 0.0, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay)

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        mu = group["momentum"]
        old = state.get("momentum_buffer")
        if old is None:
            buf = state["momentum_buffer"] = g.clone()
            look = g.add(buf, alpha=mu)
        else:
            look = g.add(old, alpha=mu)
            old.mul_(mu).add_(g, alpha=1 - group["dampening"])
        p.add_(look, alpha=-group["lr"])


class AdagradDecayOffByOne(_Simple):
    """Defect: lr_decay counts from t, lr / (1 + t lr_decay), not from t - 1. Killed by
    exact.one_step (wherever lr_decay > 0, already at t = 1)."""

    conformance_rule = "adagrad"
    def __init__(self, params: Any, lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, eps: float = 1e-10) -> None:
        super().__init__(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps)

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        if not state:
            state["step"] = torch.tensor(0.0)
            state["sum"] = torch.zeros_like(p)
        state["step"] += 1
        t = float(state["step"])
        clr = group["lr"] / (1 + t * group["lr_decay"])
        state["sum"].addcmul_(g, g, value=1)
        p.addcdiv_(g, state["sum"].sqrt().add_(group["eps"]), value=-clr)


class RMSpropCenteredWithoutMean(_Simple):
    """Defect: claims centered RMSProp and keeps grad_avg, but divides by sqrt(v) + eps instead
    of sqrt(v - gavg^2) + eps. Killed by exact.one_step."""

    conformance_rule = "rmsprop_centered"
    def __init__(self, params: Any, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay)

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        if not state:
            state["step"] = torch.tensor(0.0)
            state["square_avg"] = torch.zeros_like(p)
            state["grad_avg"] = torch.zeros_like(p)
        state["step"] += 1
        alpha = group["alpha"]
        state["square_avg"].mul_(alpha).addcmul_(g, g, value=1 - alpha)
        state["grad_avg"].lerp_(g, 1 - alpha)
        p.addcdiv_(g, state["square_avg"].sqrt().add_(group["eps"]), value=-group["lr"])


class AdamL2FirstMomentOnly(_Simple):
    """Defect: Adam+L2 whose decay term reaches the first moment only: v sees g^2, not
    (g + wd theta)^2. Killed by exact.one_step (wherever weight_decay > 0)."""

    conformance_rule = "adam_l2"
    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        raw = p.grad
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        t = float(state["step"])
        b1, b2 = group["betas"]
        state["exp_avg"].lerp_(g, 1 - b1)
        state["exp_avg_sq"].mul_(b2).addcmul_(raw, raw, value=1 - b2)
        denom = (state["exp_avg_sq"].sqrt() / (1 - b2**t) ** 0.5).add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - b1**t))


class AdamaxEpsOutsideMax(_Simple):
    """Defect: Adamax with eps added after the infinity norm's maximum, m / (max(b2 u, |g|) +
    eps), as the paper's algorithm and Keras have it, where torch.optim.Adamax (the rule it
    claims) takes the maximum with |g| + eps. Killed by exact.one_step (the stored norm lacks eps
    already at t = 1; from a replayed norm above |g| + eps the step differs too)."""

    conformance_rule = "adamax"
    def __init__(self, params: Any, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        if not all(0.0 <= b < 1.0 for b in betas):  # as torch validates them: one defect only
            raise ValueError(f"Invalid betas: {betas}")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_inf"] = torch.zeros_like(p)
        state["step"] += 1
        t = float(state["step"])
        b1, b2 = group["betas"]
        state["exp_avg"].lerp_(g, 1 - b1)
        torch.maximum(state["exp_inf"].mul_(b2), g.abs(), out=state["exp_inf"])
        denom = state["exp_inf"].add(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - b1**t))


#: Every mutant of this module, with the property that kills it.
KILLS = {
    "NesterovOldBuffer": "exact.one_step",
    "AdagradDecayOffByOne": "exact.one_step",
    "RMSpropCenteredWithoutMean": "exact.one_step",
    "AdamL2FirstMomentOnly": "exact.one_step",
    "AdamaxEpsOutsideMax": "exact.one_step",
}
