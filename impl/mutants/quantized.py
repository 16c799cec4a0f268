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


# --- more representation mutants of the kinds that ship: one defect each, one hook each ---------

def _moved(qmap: torch.Tensor, k: int) -> torch.Tensor:
    """`qmap` with code k moved halfway towards code k + 1 (still sorted)."""
    out = qmap.clone()
    out[k] = (qmap[k] + qmap[k + 1]) / 2
    return out


class OneCodeMoved(BlockQuantAdamW):
    """One corrupted entry of the signed map: the code nearest 0.5 moved halfway towards the
    next code (a typo in one value of a hand-written table). Values near it take the wrong
    code, and what that code means by the scheme is off. Killed by exact.one_step."""

    def qmap(self, signed: bool) -> torch.Tensor:
        good = dynamic_map(signed)
        return _moved(good, int((good - 0.5).abs().argmin())) if signed else good


class FineCodeMoved(BlockQuantAdamW):
    """One corrupted entry of the unsigned map among its finest codes (the second smallest
    nonzero level, ~1e-6 of the block's absmax): only elements 10^5 below their block's largest
    meet it. Killed by exact.one_step."""

    def qmap(self, signed: bool) -> torch.Tensor:
        good = dynamic_map(signed)
        return good if signed else _moved(good, 2)


class SignedMapForV(BlockQuantAdamW):
    """The signed map used for the second moment too (one map for both states): v, never
    negative, gets half the codes, and its codes mean other values by the unsigned map the
    scheme names. Killed by exact.one_step."""

    def qmap(self, signed: bool) -> torch.Tensor:
        return dynamic_map(True)


class HalfBlockAbsmax(BlockQuantAdamW):
    """Each block's scale from its first 128 elements only (a scale kernel written for blocks of
    128 under a scheme of 256): the second half clamps to the end codes where it holds the
    block's largest. Killed by exact.one_step (the block scale outside its bound)."""

    def absmax(self, blocks: torch.Tensor) -> torch.Tensor:
        return blocks[:, : self.block // 2].abs().amax(dim=1)


class SignedAbsmax(BlockQuantAdamW):
    """The scale is the block's maximum, not its absolute maximum (abs() forgotten): a block
    whose largest magnitude is negative clamps it, and a block of negatives stores zeros.
    Killed by exact.one_step."""

    def absmax(self, blocks: torch.Tensor) -> torch.Tensor:
        return blocks.amax(dim=1)


class StaleAbsmax(BlockQuantAdamW):
    """Requantizes with last step's scales (the absmax buffer read before it is rewritten) where
    there are any: values beyond last step's absmax clamp to the end codes, and the stored
    scale is not the new state's. Killed by exact.one_step."""

    def _store(self, st: dict, k: str, x: torch.Tensor) -> None:
        old = st.get("absmax" + k)
        if st["state" + k].dtype != torch.uint8 or old is None or not bool((old > 0).all()):
            return super()._store(st, k, x)
        blocks = self._blocks(x)
        y = (blocks / old[:, None]).clamp(-1, 1)
        st["state" + k].copy_(self.codes(y.reshape(-1), st["qmap" + k])[: x.numel()]
                              .view(x.shape))


class PartialBlockNeighbourAbsmax(BlockQuantAdamW):
    """The last block's scale, where that block is partial, taken from the block before (the
    tail handled with the previous full block's scale): its values clamp or lose codes, and its
    stored scale is not its own. Killed by exact.one_step (on 4100 or 64 x 66 elements)."""

    def quantize(self, x: torch.Tensor, qmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        blocks = self._blocks(x)
        scale = self.absmax(blocks)
        if x.numel() % self.block and scale.numel() > 1:
            scale[-1] = scale[-2]
        y = torch.where(scale[:, None] > 0, blocks / scale[:, None], blocks.new_zeros(()))
        codes = self.codes(y.clamp(-1, 1).reshape(-1), qmap)[: x.numel()]
        return codes.view(x.shape), scale


class NegativeTruncated(BlockQuantAdamW):
    """A non-nearest code for negative values only: they take the code below (towards -1), the
    positives the nearest. Killed by exact.one_step."""

    def codes(self, y: torch.Tensor, qmap: torch.Tensor) -> torch.Tensor:
        nearest = super().codes(y, qmap).long()
        below = (torch.searchsorted(qmap, y, right=True) - 1).clamp(0, qmap.numel() - 1)
        return torch.where(y < 0, below, nearest).to(torch.uint8)


class EveryNthCodeUp(BlockQuantAdamW):
    """Every 64th element takes the code above its scaled value, not the nearest (a vectorised
    kernel's tail lane rounding up). Killed by exact.one_step."""

    def codes(self, y: torch.Tensor, qmap: torch.Tensor) -> torch.Tensor:
        nearest = super().codes(y, qmap).long()
        above = torch.searchsorted(qmap, y).clamp(0, qmap.numel() - 1)
        lane = torch.arange(y.numel()) % 64 == 63
        return torch.where(lane, above, nearest).to(torch.uint8)


class TinyCodesFlushed(BlockQuantAdamW):
    """Scaled values below 1e-4 of the block's absmax are stored as the zero code (a flush of
    the map's finest decades). Killed by exact.one_step."""

    def codes(self, y: torch.Tensor, qmap: torch.Tensor) -> torch.Tensor:
        zero = int((qmap == 0).nonzero()[0])
        return torch.where(y.abs() < 1e-4, torch.full_like(y, zero, dtype=torch.long),
                           super().codes(y, qmap).long()).to(torch.uint8)


class LastBlockNotRequantized(BlockQuantAdamW):
    """Requantizes every block but the last (a launch grid one block short): the last block
    keeps last step's codes and scale, the new update never reaches it. Killed by
    exact.one_step."""

    def _store(self, st: dict, k: str, x: torch.Tensor) -> None:
        if st["state" + k].dtype != torch.uint8:
            return super()._store(st, k, x)
        codes, scale = self.quantize(x, st["qmap" + k])
        last = (scale.numel() - 1) * self.block
        flat = st["state" + k].view(-1)
        flat[:last].copy_(codes.reshape(-1)[:last])
        st["absmax" + k][:-1].copy_(scale[:-1])
