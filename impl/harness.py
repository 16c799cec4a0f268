"""AdamWs that put the harness to the test, not the update rule: what they do is the
harness's to handle, never a defect to report (tests/test_harness.py).

- RefusesAmsgradOnUse takes `amsgrad` in its constructor and raises when a step uses it (an
  option accepted for API compatibility, not implemented): the amsgrad variants skip, saying
  what it raised.
- AssertsInConstructor validates with bare asserts, as lion-pytorch does: what it raises has no
  message, and a failure must still say what was raised, and where.
- SlowFirstCall spends a second and a half in its first construction in a process, as an
  optimizer that loads or compiles its extension on first use does: the warm-up pays it, before
  any call is held to --impl-timeout, and the summary reports it.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from impl.reference.optimizer import ReferenceAdamW

#: Seconds SlowFirstCall's first construction takes (its "extension build").
FIRST_CALL_SECONDS = 1.5
#: Whether SlowFirstCall's extension is "loaded" in this process (a test resets it).
LOADED = {"extension": False}


class RefusesAmsgradOnUse(ReferenceAdamW):
    """ReferenceAdamW whose step() refuses amsgrad=True, which its constructor accepted."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        if any(group["amsgrad"] for group in self.param_groups):
            raise RuntimeError("RefusesAmsgradOnUse does not support the AMSGrad variant.")
        return super().step(closure)


class AssertsInConstructor(ReferenceAdamW):
    """ReferenceAdamW that validates its hyperparameters with bare asserts."""

    def validate(self, lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float) -> None:
        assert lr > 0.0
        assert all(0.0 <= beta <= 1.0 for beta in betas)


class SlowFirstCall(ReferenceAdamW):
    """ReferenceAdamW whose first construction in a process takes FIRST_CALL_SECONDS."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        if not LOADED["extension"]:
            time.sleep(FIRST_CALL_SECONDS)
            LOADED["extension"] = True
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
