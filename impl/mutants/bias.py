"""Bias-correction and step-counter mutants: right formula, wrong t (or no correction at all).

Each subclasses the reference optimizer and overrides the one piece that carries the defect; the
bias.* properties must kill every one, each where its defect shows.
"""

from __future__ import annotations

from typing import Any

import torch

from impl.reference.optimizer import ReferenceAdamW


class NoBiasCorrection(ReferenceAdamW):
    """Forgets the first moment's bias correction: lr * m / denom instead of lr * m / (1-b1^t)
    / denom, so the first steps are (1 - b1) times too short. Killed by bias.step_one."""

    def update(self, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, t: int,
               group: dict) -> torch.Tensor:
        return x - group["lr"] * m / denom


class CounterStartsAtOne(ReferenceAdamW):
    """Off by one: the counter is initialised to 1 and advanced before use, so the first step is
    bias-corrected as t=2. Killed by bias.step_one."""

    def init_state(self, p: torch.Tensor) -> dict:
        return {**super().init_state(p), "step": 1}


class AdvancesWithoutGradient(ReferenceAdamW):
    """Treats a missing gradient as a zero gradient (as an implementation that zero-fills
    `p.grad` does): a parameter without gradient still steps, so its counter advances and its
    first real gradient is bias-corrected at t = k+1 instead of 1. Killed by bias.counter
    (late start, default 'parameter' counter)."""

    def gradient(self, p: torch.Tensor, group: dict) -> torch.Tensor | None:
        if p.grad is None:
            return torch.zeros_like(p, dtype=self.compute_dtype(p))
        return super().gradient(p, group)


class GlobalCounter(ReferenceAdamW):
    """One counter for the whole optimizer (the number of step() calls, as optax and Keras
    count), where the spec's default counts per parameter: a parameter that first gets a
    gradient at call k+1 is corrected at t = k+1. The counter piece is two methods here: step()
    counts the calls and advance() reads the count. Killed by bias.counter (late start); passes
    it under --conventions=counter=global."""

    _calls = 0

    def advance(self, state: dict) -> int:
        state["step"] = self._calls
        return state["step"]

    def step(self, closure: Any = None) -> Any:
        self._calls += 1
        return super().step(closure)


class _LowPrecisionCounter(ReferenceAdamW):
    """The counter is kept as a tensor of `counter_dtype`, which counts exactly only up to
    2^(precision bits): past that, step + 1 rounds back to step and the counter sticks."""

    counter_dtype = torch.bfloat16

    def advance(self, state: dict) -> int:
        step = torch.as_tensor(state["step"], dtype=self.counter_dtype)
        state["step"] = step + 1
        return int(state["step"].item())


class Bfloat16Counter(_LowPrecisionCounter):
    """Keeps the step counter in bfloat16: exact to 256, then 256 + 1 == 256 and bias
    corrections use a stuck t. Killed by bias.counter (past 256)."""

    counter_dtype = torch.bfloat16


class Float16Counter(_LowPrecisionCounter):
    """Keeps the step counter in float16: exact to 2048, then 2048 + 1 == 2048. Killed by
    bias.counter (past 2048)."""

    counter_dtype = torch.float16


MUTANTS = {c.__name__: c for c in (NoBiasCorrection, CounterStartsAtOne,
                                     AdvancesWithoutGradient, GlobalCounter, Bfloat16Counter,
                                     Float16Counter)}
