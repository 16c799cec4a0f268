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
