"""Layout mutants: the state kept in another layout (impl/layouts.py), with one defect. Reading a
layout must not excuse a wrong state, and a state replay cannot write must not hide a wrong step.
"""

from __future__ import annotations

import torch

from impl.layouts import BetaPowerAdamW, DebiasedAdamW


class HalfDebiased(DebiasedAdamW):
    """Stores bias-corrected moments but keeps them with the plain betas, mh_t = b mh_{t-1} +
    (1-b)/(1-b^t) g: right at t=1 (mh = g), wrong from t=2 on, parameters included. The layout
    probe finds that the second step matches neither raw nor bias-corrected moments and reads
    the state as stored. Killed by exact.one_step (from a replayed state, t >= 2)."""

    def moments(self, state: dict, g: torch.Tensor, group: dict) -> tuple[torch.Tensor, ...]:
        t = self.counter(state, group)
        out = []
        for key, beta, x in (("exp_avg", group["betas"][0], g),
                             ("exp_avg_sq", group["betas"][1], g * g)):
            out.append(state[key].mul_(beta).add_(x, alpha=(1 - beta) / (1 - beta**t)))
        return tuple(out)


class BetaPowerSwapped(BetaPowerAdamW):
    """Keeps running powers of the betas (replay refused, as for BetaPowerAdamW) and advances
    beta1's with beta2: the first moment's correction is 1 - b2^t. Killed by bias.step_one,
    without replay."""

    def advance(self, state: dict, group: dict) -> int:
        beta1, beta2 = group["betas"]
        state["beta1_power"] *= beta2
        state["beta2_power"] *= beta2
        self.powers = state["beta1_power"], state["beta2_power"]
        return 0
