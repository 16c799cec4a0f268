"""State mutants: saving and loading loses part of the optimizer's state, silently.

Each is correct until it is saved and restored; state.round_trip must kill every one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from impl.reference.optimizer import ReferenceAdamW


class LoadResetsStep(ReferenceAdamW):
    """load_state_dict restores the moments but restarts every step counter at 0, so the resumed
    run bias-corrects as if at t=1 again. Killed by state.round_trip."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for st in self.state.values():
            st["step"] = 0


class ForgetsSecondMoment(ReferenceAdamW):
    """load_state_dict restores the step and the first moment but re-zeroes exp_avg_sq, as an
    implementation that forgot to save the second moment would. Killed by state.round_trip."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for st in self.state.values():
            st["exp_avg_sq"] = torch.zeros_like(st["exp_avg_sq"])


class BetaPowerNotSaved(ReferenceAdamW):
    """Keeps beta1^t and beta2^t in the optimizer object, in float32, as DeepSpeedCPUAdam's C++
    object does: a step with the same betas as the object's previous one, at the next t,
    multiplies the powers it holds by the betas; any other step recomputes them as beta^t. They
    are not in the state dict: a fresh optimizer that loads it recomputes where the uninterrupted
    one multiplies, and the resumed run's bias corrections differ in their last bits. Parameter
    groups with different betas make every step recompute, which hides the defect; one group (or
    equal betas) shows it. Killed by state.round_trip (its one-group and equal-betas plans)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._powers: tuple[float, float, int, float, float] | None = None
        self._now = (1.0, 1.0)

    def _power(self, group: dict, t: int) -> tuple[float, float]:
        beta1, beta2 = group["betas"]
        held = self._powers
        if held is not None and held[:2] == (beta1, beta2) and held[2] == t:
            return held[3], held[4]
        if held is not None and held[:2] == (beta1, beta2) and held[2] == t - 1:
            b1t, b2t = float(np.float32(held[3] * beta1)), float(np.float32(held[4] * beta2))
        else:
            b1t, b2t = float(np.float32(beta1**t)), float(np.float32(beta2**t))
        self._powers = (beta1, beta2, t, b1t, b2t)
        return b1t, b2t

    def advance(self, state: dict, group: dict) -> int:
        t = super().advance(state, group)
        self._now = self._power(group, t)
        return t

    def denominator(self, state: dict, v: torch.Tensor, t: int, group: dict) -> torch.Tensor:
        return (v / (1 - self._now[1])).sqrt() + group["eps"]

    def update(self, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, t: int,
               group: dict) -> torch.Tensor:
        return x - group["lr"] * (m / (1 - self._now[0])) / denom


MUTANTS = {"LoadResetsStep": LoadResetsStep, "ForgetsSecondMoment": ForgetsSecondMoment,
           "BetaPowerNotSaved": BetaPowerNotSaved}
