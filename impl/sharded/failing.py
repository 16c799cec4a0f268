"""Optimizers that misbehave on one rank only, from their second step (the suite's warm-up, one
step, passes): what the worker pool must turn into a failure naming the rank, with no process
left behind (tests/test_sharded.py). Each is torch.optim.AdamW on the other ranks."""

from __future__ import annotations

import os
import threading
from typing import Any

import torch

#: The rank that misbehaves.
RANK = 1


class _OnRank(torch.optim.AdamW):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps = 0

    def step(self, closure: Any = None) -> Any:
        self.steps += 1
        if self.steps >= 2 and torch.distributed.get_rank() == RANK:
            self.misbehave()
        return super().step(closure)

    def misbehave(self) -> None:
        raise NotImplementedError


class RaisingRankAdamW(_OnRank):
    """Rank 1 raises in step(); the other ranks go on into the engine's collectives."""

    def misbehave(self) -> None:
        raise RuntimeError("RaisingRankAdamW: deliberate failure on this rank")


class HangingRankAdamW(_OnRank):
    """Rank 1 never returns from step() (it waits for an event nobody sets)."""

    def misbehave(self) -> None:
        threading.Event().wait()


class DyingRankAdamW(_OnRank):
    """Rank 1's process exits in the middle of step() (an out-of-memory kill, a segfault)."""

    def misbehave(self) -> None:
        os._exit(3)


class WrongOnRankAdamW(torch.optim.AdamW):
    """Every step right, then rank 1 moves the first element it steps of each parameter by
    2^-10 of itself: a defect on one rank's shard only (FSDP2: its rows of every parameter;
    ZeRO: the parameters assigned to it), which the ranks' verdict must find where it lives."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        out = super().step(closure)
        if torch.distributed.get_rank() == RANK:
            for group in self.param_groups:
                for p in group["params"]:
                    x = p.to_local() if hasattr(p, "to_local") else p
                    if p.grad is not None and x.numel():
                        flat = x.view(-1)
                        flat[0] += flat[0] * 2.0**-10
        return out
