"""Schedule mutants: a learning rate changed between steps that does not fully take effect, and
lr = 0 that is not a clean no-op.

Each subclasses the reference optimizer; the schedule.* properties must kill every one.
"""

from __future__ import annotations

import torch

from impl.reference.optimizer import ReferenceAdamW


class DecayUsesInitialLR(ReferenceAdamW):
    """The decay keeps the lr the group had at its first step (cached in the group as
    'initial_lr', the key LR schedulers use), so after a schedule changes lr the adaptive step
    follows but the decay does not. Killed by schedule.current_lr."""

    def decay(self, x: torch.Tensor, group: dict) -> torch.Tensor:
        lr0 = group.setdefault("initial_lr", group["lr"])
        return x * (1 - lr0 * group["weight_decay"])


class StepUsesInitialLR(ReferenceAdamW):
    """The adaptive step keeps the lr the group had at its first step; the decay follows the
    schedule. Killed by schedule.current_lr."""

    def update(self, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, t: int,
               group: dict) -> torch.Tensor:
        lr0 = group.setdefault("initial_lr", group["lr"])
        return super().update(x, m, denom, t, {**group, "lr": lr0})


class LrFoldedIntoDenominator(ReferenceAdamW):
    """Folds the step size into the denominator, (sqrt(vh) + eps) / (lr / bc1), and divides m by
    it, as torch's capturable path does: the same number for lr > 0, but at lr = 0 the
    denominator is inf (eps / 0), or NaN where v = 0 (0 / 0), so the parameters become NaN.
    Killed by schedule.lr_zero."""

    def denominator(self, state: dict, v: torch.Tensor, t: int, group: dict) -> torch.Tensor:
        beta1, beta2 = group["betas"]
        step_size = group["lr"] / (1 - beta1**t)
        # Python floats would raise ZeroDivisionError at lr = 0: tensors divide as kernels do.
        size = torch.tensor(step_size, dtype=v.dtype, device=v.device)
        return (v / (1 - beta2**t)).sqrt() / size + group["eps"] / size

    def update(self, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, t: int,
               group: dict) -> torch.Tensor:
        return x - m / denom


MUTANTS = {"DecayUsesInitialLR": DecayUsesInitialLR, "StepUsesInitialLR": StepUsesInitialLR,
           "LrFoldedIntoDenominator": LrFoldedIntoDenominator}
