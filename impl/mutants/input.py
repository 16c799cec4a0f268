"""Input mutants: correct on valid, finite input; wrong on what lies outside the domain."""

from __future__ import annotations

import torch

from impl.reference.optimizer import ReferenceAdamW


class NoValidation(ReferenceAdamW):
    """Accepts any hyperparameter (negative lr, NaN eps, beta >= 1, ...) without complaint.
    Killed by input.validation."""

    def validate(self, lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float) -> None:
        pass


class AssertValidation(ReferenceAdamW):
    """Validates with `assert`, so a bad value raises AssertionError (and nothing under
    `python -O`) instead of ValueError. Killed by input.validation, whose message names what
    was raised."""

    def validate(self, lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float) -> None:
        assert 0.0 <= lr, f"Invalid learning rate: {lr}"
        assert 0.0 <= eps, f"Invalid epsilon value: {eps}"
        assert 0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0, f"Invalid betas: {betas}"
        assert 0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}"


class ZeroNonFinite(ReferenceAdamW):
    """Silently replaces NaN/inf gradient elements by zero (nan_to_num), so the poisoned
    element takes a finite step where the spec's result is NaN. Killed by input.nonfinite."""

    def gradient(self, p: torch.Tensor, group: dict) -> torch.Tensor | None:
        g = super().gradient(p, group)
        return None if g is None else torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)


class NormClipped(ReferenceAdamW):
    """Clips each gradient tensor by its norm with a max_norm that never binds (+inf), as
    torch.nn.utils.clip_grad_norm_ computes it: the factor min(max_norm / (norm + 1e-6), 1) is
    exactly 1 for finite gradients, but one NaN/inf element makes the norm non-finite and the
    whole tensor NaN. Killed by input.nonfinite."""

    def gradient(self, p: torch.Tensor, group: dict) -> torch.Tensor | None:
        g = super().gradient(p, group)
        if g is None:
            return None
        factor = torch.clamp(torch.inf / (torch.linalg.vector_norm(g) + 1e-6), max=1.0)
        return g * factor


MUTANTS = {"NoValidation": NoValidation, "AssertValidation": AssertValidation,
           "ZeroNonFinite": ZeroNonFinite, "NormClipped": NormClipped}
