"""Mutants of a block-quantized AdamW (impl/quantized.py: BlockQuantAdamW), each with one defect
of the kinds such optimizers ship: a corrupted code map (bitsandbytes#227: a construction error
in its map, an indented block, that no test covered, NaN losses in 8-bit AdamW),
a code that is not the nearest, a block's scale taken from another block. Each is one override
of the representation; exact.one_step kills each on the tensors the strategies draw for a
quantized target (core/strategies.py: QUANTIZED_SHAPES)."""

from __future__ import annotations

import torch

from impl.quantized import BlockQuantAdamW, dynamic_map


class UnsortedMap(BlockQuantAdamW):
    """A corrupted code map: built without its final sort (the signed map's negative half then
    sits among the positive codes), so the nearest-code search lands on wrong codes; what the
    codes mean by the scheme's map is far from the state. Killed by exact.one_step (the stored
    moments outside the store model's bound)."""

    def qmap(self, signed: bool) -> torch.Tensor:
        good = dynamic_map(signed)
        # the construction's order before sorting: positives of each decade, then negatives
        return torch.cat([good[good > 0], good[good <= 0]]) if signed else good.flip(0)


class TruncatedCode(BlockQuantAdamW):
    """A non-nearest code choice: the code below the scaled value (truncation), up to a whole
    gap off where the nearest code is at most half a gap. Killed by exact.one_step (the stored
    moments outside the store model's bound)."""

    def codes(self, y: torch.Tensor, qmap: torch.Tensor) -> torch.Tensor:
        hi = torch.searchsorted(qmap, y, right=True).clamp(1, qmap.numel())
        return (hi - 1).to(torch.uint8)


class NeighbourAbsmax(BlockQuantAdamW):
    """Each block's scale taken from the next block (an off-by-one in the block index): values
    clamp where the neighbour's absmax is smaller, and the stored scale is not the block's own.
    Killed by exact.one_step (the stored block scale outside its bound)."""

    def absmax(self, blocks: torch.Tensor) -> torch.Tensor:
        return blocks.abs().amax(dim=1).roll(-1)
