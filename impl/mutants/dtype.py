"""Precision mutants: the right formula evaluated in the wrong arithmetic."""

from __future__ import annotations

import torch

from impl.reference.optimizer import ReferenceAdamW


class Bfloat16Arithmetic(ReferenceAdamW):
    """No upcast: bf16/fp16 parameters are updated with every operation rounded to their own
    dtype, and the moments are kept in it too (a "pure bf16" optimizer). Killed by
    dtype.precision under the default declared precision (compute in float32); passes under
    --compute-dtype=bfloat16, and the property reports it as computing in bfloat16."""

    @staticmethod
    def compute_dtype(p: torch.Tensor) -> torch.dtype:
        return p.dtype


def fast_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt(x) as x * rsqrt(x), rsqrt by the bit-trick estimate and one Newton step (the
    "fast inverse square root"): relative error up to 1.75e-3, about 12 correct bits."""
    x32 = x.to(torch.float32)
    i = torch.tensor(0x5F3759DF, dtype=torch.int32) - (x32.view(torch.int32) >> 1)
    y = i.view(torch.float32)
    y = y * (1.5 - 0.5 * x32 * y * y)
    return (x32 * y).to(x.dtype)


class ApproxSqrt(ReferenceAdamW):
    """Takes sqrt(vh) with a fast approximate reciprocal square root (12 correct bits, as a
    hardware rsqrt estimate or the bit-trick gives) instead of a correctly rounded sqrt: every
    step is off by up to 1.75e-3 relative, ~10^4 float32 ulps. Killed by exact.one_step."""

    def denominator(self, state: dict, v: torch.Tensor, t: int, group: dict) -> torch.Tensor:
        beta2 = group["betas"][1]
        return fast_sqrt(v / (1 - beta2**t)) + group["eps"]


MUTANTS = {"Bfloat16Arithmetic": Bfloat16Arithmetic, "ApproxSqrt": ApproxSqrt}
