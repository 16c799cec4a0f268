"""State mutants: saving and loading loses part of the optimizer's state, silently.

Each is correct until it is saved and restored; state.round_trip must kill every one.
"""

from __future__ import annotations

from typing import Any

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


MUTANTS = {"LoadResetsStep": LoadResetsStep, "ForgetsSecondMoment": ForgetsSecondMoment}
