"""Correct AdamWs that follow the spec's other named conventions (spec/conventions.py), written
the way the libraries that use them write them, and two precision behaviours. They are what the
convention fingerprint (conformance/tools/fingerprint/) must name from behaviour alone
(tests/test_fingerprint.py); each passes the suite under the --conventions the fingerprint
prints.

Each subclasses the reference optimizer and overrides the pieces its convention changes.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from impl.reference.optimizer import ReferenceAdamW


class EpsHatAdamW(ReferenceAdamW):
    """Keras/TF's form: lr_t = lr sqrt(1-b2^t) / (1-b1^t), theta -= lr_t m / (sqrt(v) + eps),
    so eps meets the raw sqrt(v): eps-hat = eps / sqrt(1-b2^t) after bias correction
    (convention eps=hat)."""

    def denominator(self, state: dict, v: torch.Tensor, t: int, group: dict) -> torch.Tensor:
        # `v` is already corrected (and, with amsgrad, the running maximum of corrected v).
        return v.sqrt() + group["eps"]

    def update(self, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, t: int,
               group: dict) -> torch.Tensor:
        beta1, beta2 = group["betas"]
        lr_t = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        return x - lr_t * m / denom


class DecayAfterUpdateAdamW(ReferenceAdamW):
    """Decays the parameters after the Adam step: (theta - lr step)(1 - lr wd)
    (convention decay_target=updated)."""

    def decay(self, x: torch.Tensor, group: dict) -> torch.Tensor:
        return x

    def update(self, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, t: int,
               group: dict) -> torch.Tensor:
        return super().decay(super().update(x, m, denom, t, group), group)


class ScheduleCoupledAdamW(ReferenceAdamW):
    """The paper's schedule multiplier: the decay follows the lr schedule relative to the lr the
    group was created with, theta (1 - (lr / initial_lr) wd) (convention
    decay_coupling=schedule). 'initial_lr' is the key torch's LR schedulers use."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
        for group in self.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def decay(self, x: torch.Tensor, group: dict) -> torch.Tensor:
        return x * (1 - group["lr"] / group["initial_lr"] * group["weight_decay"])


class DebiasedMomentsAdamW(ReferenceAdamW):
    """Keeps the bias-corrected moments in its state ("debiased betas"): mh_t = mh_{t-1} +
    (g - mh_{t-1}) (1-b1)/(1-b1^t), likewise vh, and steps lr mh / (sqrt(vh) + eps) with no
    further correction (convention moments=debiased). With amsgrad it takes the maximum of the
    corrected vh, optax's form (amsgrad=corrected_max)."""

    def moments(self, state: dict, g: torch.Tensor, group: dict) -> tuple[torch.Tensor, ...]:
        beta1, beta2 = group["betas"]
        t = state["step"]
        m = state["exp_avg"].lerp_(g, (1 - beta1) / (1 - beta1**t))
        v = state["exp_avg_sq"].lerp_(g * g, (1 - beta2) / (1 - beta2**t))
        return m, v

    def denominator(self, state: dict, v: torch.Tensor, t: int, group: dict) -> torch.Tensor:
        # `v` is already corrected (and, with amsgrad, the running maximum of corrected v).
        return v.sqrt() + group["eps"]

    def update(self, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, t: int,
               group: dict) -> torch.Tensor:
        return x - group["lr"] * m / denom


class CorrectedMaxAMSGrad(ReferenceAdamW):
    """AMSGrad on the bias-corrected second moment, vmax = max(vmax, v / (1-b2^t)), as optax
    does (amsgrad=corrected_max)."""

    def second_moment_used(self, state: dict, v: torch.Tensor, group: dict) -> torch.Tensor:
        return v  # the maximum is taken after the correction, in denominator()

    def denominator(self, state: dict, v: torch.Tensor, t: int, group: dict) -> torch.Tensor:
        beta2 = group["betas"][1]
        vh = v / (1 - beta2**t)
        if group["amsgrad"]:
            vmax = state.setdefault("max_exp_avg_sq", torch.zeros_like(v))
            torch.maximum(vmax, vh, out=vmax)
            vh = vmax
        return vh.sqrt() + group["eps"]


class GroupCounterAdamW(ReferenceAdamW):
    """One step counter per parameter group, advanced by every step() in which some parameter
    of the group has a gradient (convention counter=group)."""

    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            if any(p.grad is not None for p in group["params"]):
                group["group_step"] = group.get("group_step", 0) + 1
        return super().step(closure)

    def advance(self, state: dict, group: dict) -> int:
        state["step"] = group["group_step"]
        return state["step"]


class HyperparametersInParamDtype(ReferenceAdamW):
    """A precision behaviour, not a convention: the hyperparameters are rounded to the
    parameters' dtype before use (as code that builds them with torch.tensor(x, dtype=p.dtype)
    does). In bf16, beta2 = 0.999 becomes 1.0: v never leaves zero and 1 - beta2^t is 0, so the
    first step is 0/0. The fingerprint must report it."""

    def step(self, closure: Any = None) -> Any:
        saved = [dict(g) for g in self.param_groups]
        for group in self.param_groups:
            dtype = group["params"][0].dtype if group["params"] else torch.float32

            def r(x: float, dtype: torch.dtype = dtype) -> float:
                return float(torch.tensor(x, dtype=dtype).item())
            group.update(lr=r(group["lr"]), eps=r(group["eps"]),
                         weight_decay=r(group["weight_decay"]),
                         betas=(r(group["betas"][0]), r(group["betas"][1])))
        try:
            return super().step(closure)
        finally:
            for group, old in zip(self.param_groups, saved, strict=True):
                group.update({k: old[k] for k in ("lr", "eps", "weight_decay", "betas")})
