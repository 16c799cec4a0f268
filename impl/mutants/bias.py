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


class NoSecondMomentCorrection(ReferenceAdamW):
    """Partial bias correction: m is corrected, v is used raw (sqrt(v) + eps instead of
    sqrt(v / (1-b2^t)) + eps), so the early steps are up to 1/sqrt(1-b2) times too long.
    Killed by bias.step_one."""

    def denominator(self, state: dict, v: torch.Tensor, t: int, group: dict) -> torch.Tensor:
        return v.sqrt() + group["eps"]


class CounterStartsAtOne(ReferenceAdamW):
    """Off by one: the counter is initialised to 1 and advanced before use, so the first step is
    bias-corrected as t=2. Killed by bias.step_one."""

    def init_state(self, p: torch.Tensor) -> dict:
        return {**super().init_state(p), "step": 1}


class AdvancesWithoutGradient(ReferenceAdamW):
    """Advances every parameter's counter on every step() call, gradient or not (state created
    for all parameters up front, the counter bumped in a loop over all of them), while the
    update itself still skips parameters without a gradient: a parameter's first real gradient
    is then bias-corrected at t = k+1 instead of 1. Killed by bias.counter (late start, default
    'parameter' counter)."""

    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    state = self.state[p]
                    if not state:
                        state.update(self.init_state(p))
                    self.advance(state, group)
        return super().step(closure)


class GlobalCounter(ReferenceAdamW):
    """One counter for the whole optimizer (the number of step() calls, as optax and Keras
    count), where the spec's default counts per parameter: a parameter that first gets a
    gradient at call k+1 is corrected at t = k+1. The counter piece is two methods here: step()
    counts the calls and advance() reads the count. Killed by bias.counter (late start); passes
    it under --conventions=counter=global."""

    _calls = 0

    def advance(self, state: dict, group: dict) -> int:
        state["step"] = self._calls
        return state["step"]

    def step(self, closure: Any = None) -> Any:
        self._calls += 1
        return super().step(closure)


class GroupCounter(ReferenceAdamW):
    """One counter per parameter group, advanced once per step() call (the group's own count, as
    some sharded optimizers keep it), where the spec's default counts per parameter: a parameter
    that first gets a gradient at call k+1 is corrected at t = k+1. Killed by bias.counter (late
    start); passes it under --conventions=counter=group."""

    def advance(self, state: dict, group: dict) -> int:
        state["step"] = group["step"]
        return state["step"]

    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            group["step"] = group.get("step", 0) + 1
        return super().step(closure)


class _LowPrecisionCounter(ReferenceAdamW):
    """The counter is kept as a tensor of `counter_dtype`, which counts exactly only up to
    2^(precision bits): past that, step + 1 rounds back to step and the counter sticks."""

    counter_dtype = torch.bfloat16

    def advance(self, state: dict, group: dict) -> int:
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


MUTANTS = {c.__name__: c for c in (NoBiasCorrection, NoSecondMomentCorrection,
                                     CounterStartsAtOne, AdvancesWithoutGradient, GlobalCounter,
                                     GroupCounter, Bfloat16Counter, Float16Counter)}
