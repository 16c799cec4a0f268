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


MUTANTS = {"Bfloat16Arithmetic": Bfloat16Arithmetic}
