"""Mutants of the precision techniques (impl/precision_techniques.py): the defects that ship in
Kahan-compensated and stochastically rounded optimizers. Each is killed by the property its
docstring names (tests/test_precision_techniques.py), judged in bfloat16."""

from __future__ import annotations

from typing import Any

import torch

from impl.precision_techniques import KahanAdamW, StochasticRoundingAdamW, round_stochastic


class KahanCompensationDropped(KahanAdamW):
    """Computes and stores the compensation, but the next step starts from the parameter alone
    (the compensation is never added back): what the pair holds is lost at every step. Killed
    by dtype.compensation (from a pair with a nonzero low part, the step misses it by that low
    part, far outside the compensated store's bound)."""

    def value(self, p: torch.Tensor, state: dict) -> torch.Tensor:
        return p.float()


class KahanCompensationNotSaved(KahanAdamW):
    """Leaves the compensation out of state_dict() (a checkpoint of parameters and moments
    only) and starts a loaded state's compensation at zero: a resumed run drifts from the
    uninterrupted one. Killed by state.round_trip."""

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        # (torch's state_dict hands out the live state dicts: copy, not pop)
        sd["state"] = {k: {n: x for n, x in st.items() if n != "kahan_comp"}
                       for k, st in sd["state"].items()}
        return sd

    def value(self, p: torch.Tensor, state: dict) -> torch.Tensor:
        if p.dtype == torch.bfloat16:
            state.setdefault("kahan_comp", torch.zeros_like(p))
        return super().value(p, state)


class BiasedStochasticRounding(StochasticRoundingAdamW):
    """Draws its random threshold from [0, 2^15) instead of [0, 2^16) (an int16 range where the
    dropped bits are 16): rounds away from zero with probability min(1, 2 x fraction), biased
    away from zero. Killed by dtype.stochastic_rounding (the binomial test of the rounding
    probability)."""

    def store(self, p: torch.Tensor, x: torch.Tensor, state: dict) -> None:
        bits = x.contiguous().view(torch.int32)
        draw = torch.randint(0, 1 << 15, x.shape, dtype=torch.int32, generator=self.draws())
        away = (bits & 0xFFFF) > draw
        rounded = (bits & -65536) + away.to(torch.int32) * 65536
        p.copy_(rounded.view(torch.float32).to(p.dtype))


class ReusedStochasticDraw(StochasticRoundingAdamW):
    """Reseeds its generator with the same seed at every step, so that each element reuses one
    random draw across steps: each step's rounding is unbiased, but an element that rounds away
    once rounds away every time. Killed by dtype.stochastic_rounding (the independence test of
    two steps' roundings)."""

    def store(self, p: torch.Tensor, x: torch.Tensor, state: dict) -> None:
        p.copy_(round_stochastic(x, p.dtype, torch.Generator().manual_seed(1234)))


# --- more representation mutants of the kinds that ship: one defect each, one hook each ---------

class KahanSignFlipped(KahanAdamW):
    """Stores the compensation with its sign flipped (p - x for x - p): the pair's value is
    reflected about the high part, off by twice the low part. Killed by dtype.compensation."""

    def store(self, p: torch.Tensor, x: torch.Tensor, state: dict) -> None:
        p.copy_(x)
        comp = state.get("kahan_comp")
        if comp is not None:
            comp.copy_(p.float() - x)


class KahanNotRestored(KahanAdamW):
    """Saves the compensation in state_dict() but load_state_dict() starts it at zero (a loader
    that rebuilds the state it knows): a resumed run drifts from the uninterrupted one. Killed by
    state.round_trip."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for st in self.state.values():
            if "kahan_comp" in st:
                st["kahan_comp"].zero_()


class KahanResetEveryFourSteps(KahanAdamW):
    """Zeroes the compensation every fourth step (a periodic 'resync' of the pair): what the pair
    held is lost at steps 4, 8, ... Killed by dtype.compensation."""

    def store(self, p: torch.Tensor, x: torch.Tensor, state: dict) -> None:
        super().store(p, x, state)
        if state["step"] % 4 == 0 and "kahan_comp" in state:
            state["kahan_comp"].zero_()


class KahanCompensationOnce(KahanAdamW):
    """Adds the compensation back but updates it only on the first step (the low part written at
    creation, then read only): from step 2 on the pair's value carries a stale low part. Killed
    by dtype.compensation."""

    def store(self, p: torch.Tensor, x: torch.Tensor, state: dict) -> None:
        if state["step"] <= 1:
            return super().store(p, x, state)
        p.copy_(x)


def _sr(x: torch.Tensor, away: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float32 `x` truncated to bfloat16 and moved one ulp away from zero where `away`."""
    bits = x.contiguous().view(torch.int32)
    return ((bits & -65536) + away.to(torch.int32) * 65536).view(torch.float32).to(dtype)


class StochasticLowBits(StochasticRoundingAdamW):
    """The rounding probability from the wrong bits: the lowest 8 of the 16 that bfloat16 drops
    against an 8-bit draw. Killed by dtype.stochastic_rounding."""

    def store(self, p: torch.Tensor, x: torch.Tensor, state: dict) -> None:
        if p.dtype != torch.bfloat16:
            return super().store(p, x, state)
        bits = x.contiguous().view(torch.int32)
        draw = torch.randint(0, 256, x.shape, dtype=torch.int32, generator=self.draws())
        p.copy_(_sr(x, (bits & 0xFF) > draw, p.dtype))


class StochasticEightBitDraw(StochasticRoundingAdamW):
    """Only 8 random bits: the top 8 of the 16 dropped bits against an 8-bit draw, so that the
    probability is the fraction truncated to 1/256: an update below 1/256 of an ulp is never
    kept, a larger one is biased down by up to 1/256. Killed by dtype.stochastic_rounding."""

    def store(self, p: torch.Tensor, x: torch.Tensor, state: dict) -> None:
        if p.dtype != torch.bfloat16:
            return super().store(p, x, state)
        bits = x.contiguous().view(torch.int32)
        draw = torch.randint(0, 256, x.shape, dtype=torch.int32, generator=self.draws())
        p.copy_(_sr(x, ((bits >> 8) & 0xFF) > draw, p.dtype))


class StochasticSharedDraw(StochasticRoundingAdamW):
    """One random draw for the whole tensor at each step (from a generator seeded by the step,
    the same in every run): every element with the same fraction rounds the same way, so that
    equal elements given an equal step stay equal, on the farther neighbour where the draw fell
    below the fraction. Killed by dtype.stochastic_rounding."""

    def store(self, p: torch.Tensor, x: torch.Tensor, state: dict) -> None:
        if p.dtype != torch.bfloat16:
            return super().store(p, x, state)
        bits = x.contiguous().view(torch.int32)
        gen = torch.Generator().manual_seed(17 * state["step"])
        draw = torch.randint(0, 1 << 16, (), dtype=torch.int32, generator=gen)
        p.copy_(_sr(x, (bits & 0xFFFF) > draw, p.dtype))


class StochasticCoinFlip(StochasticRoundingAdamW):
    """Rounds away from zero with probability 1/2 wherever the result is not representable,
    whatever its fraction. Killed by dtype.stochastic_rounding."""

    def store(self, p: torch.Tensor, x: torch.Tensor, state: dict) -> None:
        if p.dtype != torch.bfloat16:
            return super().store(p, x, state)
        bits = x.contiguous().view(torch.int32)
        coin = torch.randint(0, 2, x.shape, generator=self.draws()).bool()
        p.copy_(_sr(x, ((bits & 0xFFFF) != 0) & coin, p.dtype))


class StochasticDrawReusedInPairs(StochasticRoundingAdamW):
    """Reseeds its generator from step // 2: steps 2 and 3 (4 and 5, ...) reuse one draw per
    element, steps 1 and 2 do not. Killed by dtype.stochastic_rounding."""

    def store(self, p: torch.Tensor, x: torch.Tensor, state: dict) -> None:
        gen = torch.Generator().manual_seed(1000 + state["step"] // 2)
        p.copy_(round_stochastic(x, p.dtype, gen))


class StochasticSeededByStep(StochasticRoundingAdamW):
    """Not a defect: reseeds its generator from the step alone, fresh draws at every step, the
    same in every run (a reproducible stochastic rounding). Unbiased and independent from step
    to step, it passes dtype.stochastic_rounding (tests/test_precision_techniques.py); kept
    out of the zoo."""

    def store(self, p: torch.Tensor, x: torch.Tensor, state: dict) -> None:
        gen = torch.Generator().manual_seed(7919 * state["step"])
        p.copy_(round_stochastic(x, p.dtype, gen))


class StochasticSmallFractionDown(StochasticRoundingAdamW):
    """Rounds towards zero where the fraction is below 1/32 (a 'denoise' of tiny updates): an
    update below a thirty-second of an ulp is never kept. Killed by
    dtype.stochastic_rounding."""

    def store(self, p: torch.Tensor, x: torch.Tensor, state: dict) -> None:
        if p.dtype != torch.bfloat16:
            return super().store(p, x, state)
        bits = x.contiguous().view(torch.int32)
        draw = torch.randint(0, 1 << 16, x.shape, dtype=torch.int32, generator=self.draws())
        frac = bits & 0xFFFF
        p.copy_(_sr(x, (frac > draw) & (frac >= 1 << 11), p.dtype))


class RoundedAwayFromZero(StochasticRoundingAdamW):
    """A deterministic directed rounding: every inexact result stored one ulp away from zero (a
    stochastic rounding whose draw is always 0). Within the bounds of one step (one ulp, as
    torch's two roundings of a bf16 step), but biased: the probe's step stores the farther
    neighbour. Killed by dtype.stochastic_rounding."""

    def store(self, p: torch.Tensor, x: torch.Tensor, state: dict) -> None:
        if p.dtype != torch.bfloat16:
            return super().store(p, x, state)
        bits = x.contiguous().view(torch.int32)
        p.copy_(_sr(x, (bits & 0xFFFF) != 0, p.dtype))
