"""An AdamW the suite has never heard of: correct, but with its own state names ('first',
'second', 'n') and its own constructor defaults (eps=1e-6, weight_decay=0.1), and without the
amsgrad/maximize options. The suite must judge it by behaviour alone: state replay degrades to
fresh-state and trajectory checks, options it lacks are skipped, nothing crashes
(tests/test_foreign.py)."""

from __future__ import annotations

import math
from typing import Any

import torch


class ForeignAdamW(torch.optim.Optimizer):
    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.1) -> None:
        if not (0.0 <= lr and 0.0 <= eps and 0.0 <= weight_decay
                and 0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"ForeignAdamW: invalid lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def decay_factor(self, lr: float, wd: float) -> float:
        return 1 - lr * wd

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                # Arithmetic in float32 for bf16/fp16 parameters; state kept in their dtype.
                work = torch.promote_types(p.dtype, torch.float32)
                state = self.state[p]
                if not state:
                    state["n"] = 0
                    state["first"] = torch.zeros_like(p)
                    state["second"] = torch.zeros_like(p)
                state["n"] += 1
                n = state["n"]
                g = p.grad.to(work)
                state["first"].copy_(state["first"].to(work) * b1 + g * (1 - b1))
                state["second"].copy_(state["second"].to(work) * b2 + g * g * (1 - b2))
                m, v = state["first"].to(work), state["second"].to(work)
                denom = v.sqrt() / math.sqrt(1 - b2**n) + eps
                x = p.to(work) * self.decay_factor(lr, wd)
                p.copy_(torch.addcdiv(x, m, denom, value=-lr / (1 - b1**n)))
        return loss


class ForeignUncoupledDecay(ForeignAdamW):
    """The same unknown optimizer with one defect: it decays by weight_decay alone, not by
    lr * weight_decay. Its state cannot be replayed, yet the suite must still reject it.
    Killed by decouple.decay_only."""

    def decay_factor(self, lr: float, wd: float) -> float:
        return 1 - wd
