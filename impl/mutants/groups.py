"""Parameter-group mutants: hyperparameters taken from the wrong place, missing and zero
gradients confused, results that depend on where a parameter sits.

Each subclasses the reference optimizer and overrides the one piece that carries the defect; the
groups.* properties must kill every one.
"""

from __future__ import annotations

from typing import Any

import torch

from impl.reference.optimizer import ReferenceAdamW


class DefaultWeightDecay(ReferenceAdamW):
    """Decays every group with the constructor's weight_decay (self.defaults) instead of the
    group's own, so a weight_decay=0 group (biases, norms) is decayed anyway. Killed by
    groups.no_decay."""

    def decay(self, x: torch.Tensor, group: dict) -> torch.Tensor:
        return x * (1 - group["lr"] * self.defaults["weight_decay"])


class DefaultLR(ReferenceAdamW):
    """Takes the adaptive step with the constructor's lr (self.defaults) instead of the group's.
    Killed by groups.no_decay."""

    def update(self, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, t: int,
               group: dict) -> torch.Tensor:
        return super().update(x, m, denom, t, {**group, "lr": self.defaults["lr"]})


class NoneAsZero(ReferenceAdamW):
    """Treats a missing gradient as a zero one (zero-filling p.grad), so parameters without
    gradient are still decayed and get state. Killed by groups.none_grad."""

    def gradient(self, p: torch.Tensor, group: dict) -> torch.Tensor | None:
        if p.grad is None:
            return torch.zeros_like(p, dtype=self.compute_dtype(p))
        return super().gradient(p, group)


class DecaysWithoutGradient(ReferenceAdamW):
    """Applies the weight decay in its own loop over every parameter of the group, gradient or
    not (the decay written as a separate pass before the Adam update): a parameter whose grad is
    None is still shrunk, although it gets no state and no Adam step. Killed by
    groups.none_grad."""

    def step(self, closure: Any = None) -> Any:
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        p.copy_(self.decay(p.to(self.compute_dtype(p)), group))
        return super().step(closure)


class SkipsZeroGradient(ReferenceAdamW):
    """Skips a parameter whose gradient is all zeros as if it had none (a "nothing to do"
    shortcut): no decay, no moment decay, no counter advance. Killed by groups.none_grad."""

    def gradient(self, p: torch.Tensor, group: dict) -> torch.Tensor | None:
        g = super().gradient(p, group)
        return None if g is None or not bool(g.any()) else g


class SharedCounter(ReferenceAdamW):
    """One step counter for the whole optimizer, advanced for every parameter it updates, so a
    parameter's bias correction depends on how many were updated before it. Killed by
    groups.order."""

    def advance(self, state: dict, group: dict) -> int:
        self.updates = getattr(self, "updates", 0) + 1
        state["step"] = self.updates
        return self.updates


MUTANTS = {"DefaultWeightDecay": DefaultWeightDecay, "DefaultLR": DefaultLR,
           "NoneAsZero": NoneAsZero, "DecaysWithoutGradient": DecaysWithoutGradient,
           "SkipsZeroGradient": SkipsZeroGradient,
           "SharedCounter": SharedCounter}
