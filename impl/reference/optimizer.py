"""A clean, readable AdamW as a torch.optim.Optimizer, written the way an implementation is.

It is a correct implementation under test, not the oracle: ordinary float32 torch arithmetic
(bf16/fp16 parameters are upcast and stored back). Each piece of the update is a small method, so
that a mutant in `impl.mutants` is a one-method override carrying exactly one defect.
"""

from __future__ import annotations

from typing import Any

import torch


class ReferenceAdamW(torch.optim.Optimizer):
    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        self.validate(lr, betas, eps, weight_decay)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize)
        super().__init__(params, defaults)

    # --- pieces a mutant may override ------------------------------------------------------

    def validate(self, lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid beta parameters: {betas}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")

    def gradient(self, p: torch.Tensor, group: dict) -> torch.Tensor | None:
        """This step's gradient in float32, or None to leave the parameter untouched."""
        if p.grad is None:
            return None
        g = p.grad.to(self.compute_dtype(p))
        return -g if group["maximize"] else g

    @staticmethod
    def compute_dtype(p: torch.Tensor) -> torch.dtype:
        """float32 for bf16/fp16 parameters, their own dtype otherwise."""
        return torch.promote_types(p.dtype, torch.float32)

    def init_state(self, p: torch.Tensor) -> dict:
        dtype = self.compute_dtype(p)
        return {"step": 0, "exp_avg": torch.zeros_like(p, dtype=dtype),
                "exp_avg_sq": torch.zeros_like(p, dtype=dtype)}

    def advance(self, state: dict, group: dict) -> int:
        state["step"] += 1
        return state["step"]

    def decay(self, x: torch.Tensor, group: dict) -> torch.Tensor:
        return x * (1 - group["lr"] * group["weight_decay"])

    def moments(self, state: dict, g: torch.Tensor, group: dict) -> tuple[torch.Tensor, ...]:
        beta1, beta2 = group["betas"]
        m = state["exp_avg"].mul_(beta1).add_(g, alpha=1 - beta1)
        v = state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        return m, v

    def second_moment_used(self, state: dict, v: torch.Tensor, group: dict) -> torch.Tensor:
        """The v the denominator uses: v, or with amsgrad the running maximum of v."""
        if not group["amsgrad"]:
            return v
        vmax = state.setdefault("max_exp_avg_sq", torch.zeros_like(v))
        torch.maximum(vmax, v, out=vmax)
        return vmax

    def denominator(self, state: dict, v: torch.Tensor, t: int, group: dict) -> torch.Tensor:
        beta2 = group["betas"][1]
        return (v / (1 - beta2**t)).sqrt() + group["eps"]

    def update(self, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, t: int,
               group: dict) -> torch.Tensor:
        beta1 = group["betas"][0]
        return x - group["lr"] * (m / (1 - beta1**t)) / denom

    # --- saving and loading ------------------------------------------------------------------

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's load_state_dict casts floating state to the parameter's dtype; this optimizer
        keeps bf16/fp16 parameters' state in float32, so the saved tensors are put back as they
        were (state.round_trip caught the loss of precision)."""
        super().load_state_dict(state_dict)
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(ids, params, strict=True):
            for key, value in state_dict["state"].get(pid, {}).items():
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    self.state[p][key] = value.to(p.device, self.compute_dtype(p), copy=True)

    # --- the step ----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                g = self.gradient(p, group)
                if g is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(self.init_state(p))
                t = self.advance(state, group)
                x = self.decay(p.to(self.compute_dtype(p)), group)
                m, v = self.moments(state, g, group)
                denom = self.denominator(state, self.second_moment_used(state, v, group), t,
                                         group)
                p.copy_(self.update(x, m, denom, t, group))
        return loss
