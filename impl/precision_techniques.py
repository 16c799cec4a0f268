"""Correct bfloat16 AdamWs that keep more than their dtype holds, the ways people train with:
Kahan-compensated parameters (optimi.AdamW's `kahan_sum`, torchdistX's AnyPrecisionAdamW) and
stochastic rounding of the parameters (torchao's `_AdamW(bf16_stochastic_round=True)`). Plain
torch, no library import: each passes the whole catalogue (tests/test_precision_techniques.py),
and `impl/mutants/precision.py` holds one defect of each kind that ships.

Both compute in float32 the way torchao's `single_param_adam` does (decay first, the moments by a
lerp and kept in the parameter's dtype, the update from the float32 moments), and differ only in
how the float32 result becomes the stored parameter (`store`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from impl.reference.optimizer import ReferenceAdamW

_LOW = (torch.bfloat16, torch.float16)


class _Float32StepAdamW(torch.optim.Optimizer):
    """AdamW computed in float32 from `value(p)`, stored by `store`: the hooks the techniques
    (and their mutants) override."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        ReferenceAdamW.validate(None, lr, betas, eps, weight_decay)  # type: ignore[arg-type]
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def init_state(self, p: torch.Tensor) -> dict:
        return {"step": 0, "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}

    def value(self, p: torch.Tensor, state: dict) -> torch.Tensor:
        """The parameter's value in float32, as this optimizer keeps it."""
        return p.float()

    def store(self, p: torch.Tensor, x: torch.Tensor, state: dict) -> None:
        p.copy_(x)

    def corrections(self, b1: float, b2: float, t: int) -> tuple[Any, Any]:
        """The bias corrections 1 - beta^t (in double)."""
        return 1 - b1**t, 1 - b2**t

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], \
                group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(self.init_state(p))
                state["step"] += 1
                t = state["step"]
                g = p.grad.float()
                x = self.value(p, state)
                x = x - lr * wd * x
                m = state["exp_avg"].float().lerp(g, 1 - b1)
                v = state["exp_avg_sq"].float().lerp(g.square(), 1 - b2)
                state["exp_avg"].copy_(m)
                state["exp_avg_sq"].copy_(v)
                c1, c2 = self.corrections(b1, b2, t)
                denom = v.sqrt() / c2.sqrt() + eps if isinstance(c2, torch.Tensor) \
                    else v.sqrt() / math.sqrt(c2) + eps
                x = x - lr * (m / c1) / denom
                self.store(p, x, state)
        return None


class KahanAdamW(_Float32StepAdamW):
    """Keeps each bf16/fp16 parameter as a pair (p, state['kahan_comp']), both in the parameter's
    dtype: the float32 result x is stored as p = x rounded and the compensation
    c = (x - p) rounded, and the next step starts from p + c. The pair holds about twice the
    dtype's significand; the suite judges p + c (docs/precision-techniques.md)."""

    def init_state(self, p: torch.Tensor) -> dict:
        state = super().init_state(p)
        if p.dtype in _LOW:
            state["kahan_comp"] = torch.zeros_like(p)
        return state

    def value(self, p: torch.Tensor, state: dict) -> torch.Tensor:
        comp = state.get("kahan_comp")
        return p.float() if comp is None else p.float() + comp.float()

    def store(self, p: torch.Tensor, x: torch.Tensor, state: dict) -> None:
        p.copy_(x)
        comp = state.get("kahan_comp")
        if comp is not None:
            comp.copy_(x - p.float())


def round_stochastic(x: torch.Tensor, dtype: torch.dtype,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """float32 `x` to bfloat16, away from zero with probability (the 16 bits bfloat16 drops) /
    2^16 and toward zero otherwise: the expected result is x. Other dtypes: round to nearest."""
    if dtype != torch.bfloat16:
        return x.to(dtype)
    bits = x.contiguous().view(torch.int32)
    draw = torch.randint(0, 1 << 16, x.shape, dtype=torch.int32, generator=generator,
                         device=x.device)
    away = (bits & 0xFFFF) > draw
    # the high half with the low 16 bits cleared, plus one bf16 ulp in magnitude where `away`
    rounded = (bits & -65536) + away.to(torch.int32) * 65536
    return rounded.view(torch.float32).to(dtype)


class StochasticRoundingAdamW(_Float32StepAdamW):
    """Rounds the float32 result to the bfloat16 parameter stochastically (torchao's
    `_fp32_to_bf16_sr`, written from its description): unbiased, a fresh draw per element and
    step, from torch's global generator (as torchao draws) unless a `seed` is given."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, seed: int | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def draws(self) -> torch.Generator | None:
        return self.generator

    def store(self, p: torch.Tensor, x: torch.Tensor, state: dict) -> None:
        p.copy_(round_stochastic(x, p.dtype, self.draws()))


class Float32CorrectionsSRAdamW(StochasticRoundingAdamW):
    """StochasticRoundingAdamW with torchao's bias corrections (torchao 0.18.0,
    `single_param_adam`): `1 - beta**step` with the step counter a float32 tensor, so formed in
    float32, while the moments mix with `1 - beta` in double. torchao's
    `_AdamW(bf16_stochastic_round=True)` in plain torch: its failures near beta = 1 must carry
    the note on float32 bias corrections, not one on a lower compute precision
    (tests/test_precision_techniques.py). Its draws come from its own generator, seeded 0 unless
    told otherwise, so that the test sees the same run each time."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, seed: int | None = 0) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, seed)

    def corrections(self, b1: float, b2: float, t: int) -> tuple[Any, Any]:
        step = torch.tensor(float(t), dtype=torch.float32)
        return 1 - b1**step, 1 - b2**step


TECHNIQUES = {c.__name__: c for c in (KahanAdamW, StochasticRoundingAdamW)}
