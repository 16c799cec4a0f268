"""Moment mutants: the first and second moments computed from the wrong ingredients.

Each subclasses the reference optimizer and overrides the one piece that carries the defect.
"""

from __future__ import annotations

import torch

from impl.reference.optimizer import ReferenceAdamW


class SwappedBetas(ReferenceAdamW):
    """Unpacks the betas in the wrong order, `beta2, beta1 = group["betas"]`, everywhere: m
    averages with beta2 and v with beta1, each bias-corrected with the beta it used. At t=1 the
    corrections cancel and the step is right; from t=2 on, the averages are the wrong ones.
    Killed by exact.one_step."""

    def moments(self, state: dict, g: torch.Tensor, group: dict) -> tuple[torch.Tensor, ...]:
        beta1, beta2 = group["betas"]
        return super().moments(state, g, {**group, "betas": (beta2, beta1)})

    def denominator(self, state: dict, v: torch.Tensor, t: int, group: dict) -> torch.Tensor:
        beta1, beta2 = group["betas"]
        return super().denominator(state, v, t, {**group, "betas": (beta2, beta1)})

    def update(self, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, t: int,
               group: dict) -> torch.Tensor:
        beta1, beta2 = group["betas"]
        return super().update(x, m, denom, t, {**group, "betas": (beta2, beta1)})


class AbsGradSecondMoment(ReferenceAdamW):
    """Accumulates |g| instead of g^2 in the second moment (an "AdaMax-like" slip): the
    denominator is then sqrt(|g|), not |g|, and the step is no longer scale-free. Killed by
    bias.step_one."""

    def moments(self, state: dict, g: torch.Tensor, group: dict) -> tuple[torch.Tensor, ...]:
        beta1, beta2 = group["betas"]
        m = state["exp_avg"].mul_(beta1).add_(g, alpha=1 - beta1)
        v = state["exp_avg_sq"].mul_(beta2).add_(g.abs(), alpha=1 - beta2)
        return m, v


class FirstMomentFromGradient(ReferenceAdamW):
    """Initialises the first moment with the first gradient (an EMA seeded with its first value)
    instead of zero, but keeps the bias correction that assumes a zero start: at t=1 m = g and
    the step is 1/(1-b1) times too long. Killed by bias.step_one."""

    def moments(self, state: dict, g: torch.Tensor, group: dict) -> tuple[torch.Tensor, ...]:
        if state["step"] == 1:
            state["exp_avg"].copy_(g)
        return super().moments(state, g, group)


MUTANTS = {"SwappedBetas": SwappedBetas, "AbsGradSecondMoment": AbsGradSecondMoment,
           "FirstMomentFromGradient": FirstMomentFromGradient}
