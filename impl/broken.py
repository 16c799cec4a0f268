"""Deliberately broken implementations: what the suite must report as readable failures (not
crashes, not hangs) while the rest of the run goes on. See tests/test_bad_targets.py."""

from __future__ import annotations

import threading
from typing import Any

import torch

from impl.reference.optimizer import ReferenceAdamW


class RaisingAdamW(ReferenceAdamW):
    """step() raises: every test that steps it must fail saying what it raised."""

    def step(self, closure: Any = None) -> Any:
        raise RuntimeError("RaisingAdamW: deliberate failure in step()")


class HangingAdamW(ReferenceAdamW):
    """step() never returns (it waits for an event nobody sets): the per-call limit
    (--impl-timeout) must end the test with a failure that says so, and the run must go on. A
    run that waited for the call instead would never end."""

    def step(self, closure: Any = None) -> Any:
        threading.Event().wait()
        return super().step(closure)


class NaNAdamW(ReferenceAdamW):
    """Every parameter that has a gradient becomes NaN, where the oracle is finite."""

    def update(self, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, t: int,
               group: dict) -> torch.Tensor:
        return torch.full_like(x, float("nan"))


class RaisingConstructor(ReferenceAdamW):
    """The constructor itself raises (a broken install, a missing backend)."""

    def __init__(self, params: Any, **kwargs: Any) -> None:
        raise ImportError("RaisingConstructor: deliberate failure: backend not available")
