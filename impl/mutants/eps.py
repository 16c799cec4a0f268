"""eps mutants: eps placed where real libraries have put it by mistake.

Each subclasses the reference optimizer and overrides its denominator. eps inside the square
root, the other classic, is `impl.mutants.scale.EpsInsideSqrt` (scale.power_of_two kills it).
"""

from __future__ import annotations

import math

import torch

from impl.reference.optimizer import ReferenceAdamW


class EpsFloor(ReferenceAdamW):
    """eps as a floor, max(sqrt(vh), eps), instead of an addend, sqrt(vh) + eps (a "guard
    against division by zero" rewrite, and heavyball's form): the same wherever sqrt(vh) >> eps,
    wrong by up to a factor 2 where |g| is near eps. Killed by bias.step_one; passes the
    catalogue under --conventions=eps=floor."""

    def denominator(self, state: dict, v: torch.Tensor, t: int, group: dict) -> torch.Tensor:
        beta2 = group["betas"][1]
        return (v / (1 - beta2**t)).sqrt().clamp(min=group["eps"])


class EpsHat(ReferenceAdamW):
    """The "eps-hat" form of the Adam paper's efficient version (Keras, TensorFlow): eps is
    added to sqrt(v) before v's bias correction is folded into the step size,
    lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) + eps), which is eps / sqrt(1-b2^t) after correction:
    31.6 eps at t=1 with b2 = 0.999. Killed by bias.step_one; passes it under
    --conventions=eps=hat."""

    def denominator(self, state: dict, v: torch.Tensor, t: int, group: dict) -> torch.Tensor:
        beta2 = group["betas"][1]
        return (v.sqrt() + group["eps"]) / math.sqrt(1 - beta2**t)


MUTANTS = {"EpsFloor": EpsFloor, "EpsHat": EpsHat}
