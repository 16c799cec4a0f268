"""Scale mutants: implementations that are not invariant (or not scale-correct) the way the spec
is: under g -> 2^k g with eps -> 2^k eps, under g -> c g, and under mixed-precision loss scaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from impl.reference.adamw_kernel import adamw as reference_kernel
from impl.reference.optimizer import ReferenceAdamW


class EpsInsideSqrt(ReferenceAdamW):
    """eps inside the square root, sqrt(vh + eps): v scales by 4^k where eps scales by 2^k, so
    the update is no longer a function of g/eps. Killed by scale.power_of_two (and passes it
    under --conventions=eps=root, where the spec scales eps by 4^k)."""

    def denominator(self, state: dict, v: torch.Tensor, t: int, group: dict) -> torch.Tensor:
        beta2 = group["betas"][1]
        return (v / (1 - beta2**t) + group["eps"]).sqrt()


class GradNormClipped(ReferenceAdamW):
    """Clips each gradient tensor to norm 1 (clip_grad_norm_ baked into the optimizer): large
    gradients are shrunk before they reach the moments, so g -> c g no longer gives the spec's
    step. Killed by scale.invariance."""

    def gradient(self, p: torch.Tensor, group: dict) -> torch.Tensor | None:
        g = super().gradient(p, group)
        if g is None:
            return None
        return g * torch.clamp(1.0 / (torch.linalg.vector_norm(g) + 1e-6), max=1.0)


class DecaysSkippedSteps(ReferenceAdamW):
    """Handles torch.amp.GradScaler itself (`_step_supports_amp_scaling`, as torch's fused
    optimizers do: the scaler hands over `grad_scale` and `found_inf`), but applies the weight
    decay before looking at found_inf: a skipped step still shrinks the parameters. The step()
    override is the AMP-handling piece. Killed by scale.grad_scaler."""

    _step_supports_amp_scaling = True

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        scale = getattr(self, "grad_scale", None)
        found = getattr(self, "found_inf", None)
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if scale is not None:
            for p in params:
                p.grad.div_(scale.to(p.grad.dtype))
        if found is not None and bool(found.item()):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.copy_(self.decay(p.to(self.compute_dtype(p)), group))
            return None
        return super().step(closure)


def ignores_found_inf(params: Sequence[Tensor], grads: Sequence[Tensor],
                      exp_avgs: Sequence[Tensor], exp_avg_sqs: Sequence[Tensor],
                      max_exp_avg_sqs: Sequence[Tensor], state_steps: Sequence[Tensor], *,
                      lr: float, beta1: float, beta2: float, weight_decay: float, eps: float,
                      amsgrad: bool, maximize: bool, grad_scale: Tensor | None = None,
                      found_inf: Tensor | None = None) -> None:
    """The reference kernel with found_inf dropped: it unscales, but steps even when the scaler
    found an inf/NaN, so the overflowed gradient poisons parameters and moments. Killed by
    scale.grad_scaler (kernel form)."""
    reference_kernel(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr=lr,
                     beta1=beta1, beta2=beta2, weight_decay=weight_decay, eps=eps,
                     amsgrad=amsgrad, maximize=maximize, grad_scale=grad_scale, found_inf=None)


class IgnoresFoundInfAfterUnscale(ReferenceAdamW):
    """Handles torch.amp.GradScaler itself, but checks found_inf only inside its own unscaling
    branch: after `scaler.unscale_(opt)` (PyTorch's AMP recipe with gradient clipping) the scaler
    hands over grad_scale=None with found_inf set, and this step goes ahead with the overflowed
    gradient. Without unscale_ it is correct. Killed by scale.grad_scaler (the unscale_
    pattern)."""

    _step_supports_amp_scaling = True

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        scale = getattr(self, "grad_scale", None)
        found = getattr(self, "found_inf", None)
        if scale is not None:
            for g in self.param_groups:
                for p in g["params"]:
                    if p.grad is not None:
                        p.grad.div_(scale.to(p.grad.dtype))
            if found is not None and bool(found.item()):
                return None
        return super().step(closure)


MUTANTS = {"EpsInsideSqrt": EpsInsideSqrt, "GradNormClipped": GradNormClipped,
           "IgnoresFoundInfAfterUnscale": IgnoresFoundInfAfterUnscale,
           "DecaysSkippedSteps": DecaysSkippedSteps}
