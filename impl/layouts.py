"""Correct AdamWs that keep the spec's state in another layout: the same parameters, the state
stored another way. The suite must judge what the state means, not how it is kept
(conformance/core/layout.py): each passes the whole catalogue under the default conventions
(the group counter under counter=group, the one convention here that changes parameters: those
of a parameter that starts late), tests/test_layouts.py.

Written the way third-party libraries write them: optimi, heavyball and pytorch_optimizer's
StableAdamW store bias-corrected moments ("debiased betas"), optimi keeps one counter per
parameter group in the group's dict, others name their counter `steps` or keep running powers
of the betas instead of a counter.
"""

from __future__ import annotations

from typing import Any

import torch

from impl.reference.optimizer import ReferenceAdamW


def debias_beta(beta: float, t: int) -> float:
    """optimi's debiased beta: the weight that keeps the stored moment bias-corrected,
    beta (1 - beta^(t-1)) / (1 - beta^t) = (beta^t - beta) / (beta^t - 1)."""
    return (beta**t - beta) / (beta**t - 1)


class DebiasedAdamW(ReferenceAdamW):
    """Stores the bias-corrected moments mh = m / (1-b1^t), vh = v / (1-b2^t) under torch's
    names, mixing each step with optimi's debiased betas, and steps lr mh / (sqrt(vh) + eps)
    with no further correction. (optimi mixes m with a lerp: the traced lerp order, which the
    bound includes under the default conventions only, spec/orders.py; the plain form here
    keeps this a test of the layout alone.) No amsgrad: a maximum of corrected v's is another
    AMSGrad (optax's corrected_max)."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, maximize=maximize)

    def moments(self, state: dict, g: torch.Tensor, group: dict) -> tuple[torch.Tensor, ...]:
        t = self.counter(state, group)
        b1, b2 = (debias_beta(beta, t) for beta in group["betas"])
        m = state["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
        v = state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
        return m, v

    def counter(self, state: dict, group: dict) -> int:
        return state["step"]

    def denominator(self, state: dict, v: torch.Tensor, t: int, group: dict) -> torch.Tensor:
        return v.sqrt() + group["eps"]

    def update(self, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, t: int,
               group: dict) -> torch.Tensor:
        return x - group["lr"] * m / denom


class GroupStepAdamW(ReferenceAdamW):
    """One counter per parameter group, kept where optimi keeps it, `param_groups[i]["step"]`
    (a tensor), advanced once per step() call; the parameters' own state holds no counter. A
    parameter that first gets a gradient at call k+1 is corrected at t = k+1: the counter=group
    convention (bias.counter[late-start] fails it under the default, for that reason)."""

    def init_state(self, p: torch.Tensor) -> dict:
        state = super().init_state(p)
        del state["step"]
        return state

    def advance(self, state: dict, group: dict) -> int:
        return int(group["step"].item())

    def counter(self, state: dict, group: dict) -> int:
        return int(group["step"].item())

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            group.setdefault("step", torch.tensor(0, dtype=torch.int32))
            group["step"].add_(1)
        return super().step(closure)


class OptimiLikeAdamW(GroupStepAdamW, DebiasedAdamW):
    """optimi.AdamW's layout: bias-corrected moments and the group's counter in
    `param_groups[i]["step"]` (judged under counter=group; its moments decoded whatever
    moments convention is declared)."""


class StepsCounterAdamW(ReferenceAdamW):
    """Torch's for-loop AdamW op for op, with its counter named `steps` (as AdamAtan2 names
    it): a name the suite has no list for, found from behaviour."""

    def init_state(self, p: torch.Tensor) -> dict:
        state = super().init_state(p)
        state["steps"] = state.pop("step")
        return state

    def advance(self, state: dict, group: dict) -> int:
        state["steps"] += 1
        return state["steps"]


class BetaPowerAdamW(ReferenceAdamW):
    """Keeps the running powers b1^t, b2^t in its state instead of a counter (some Adams fold
    the bias correction so): nothing counts steps, and replay cannot write a power it does not
    know the meaning of. The suite refuses replay, says why, and judges by fresh-state and
    trajectory checks."""

    def init_state(self, p: torch.Tensor) -> dict:
        state = super().init_state(p)
        del state["step"]
        state.update(beta1_power=1.0, beta2_power=1.0)
        return state

    def advance(self, state: dict, group: dict) -> int:
        beta1, beta2 = group["betas"]
        state["beta1_power"] *= beta1
        state["beta2_power"] *= beta2
        # this parameter's corrections, read by denominator() and update() right after
        self.powers = state["beta1_power"], state["beta2_power"]
        return 0  # unused: the corrections read the powers

    def denominator(self, state: dict, v: torch.Tensor, t: int, group: dict) -> torch.Tensor:
        return (v / (1 - self.powers[1])).sqrt() + group["eps"]

    def update(self, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, t: int,
               group: dict) -> torch.Tensor:
        return x - group["lr"] * (m / (1 - self.powers[0])) / denom


class HiddenCounterAdamW(ReferenceAdamW):
    """Counts each parameter's steps in a list the suite cannot see (`self.counts`, by the
    parameter's position) and copies the count into `state["step"]` for show: replay can write
    the copy, not the count the next step reads. The suite finds that out (replay at t=3, one
    step, the counter reads 2, not 4), refuses replay and judges by trajectory."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
        self.counts: list[int] = [0] * sum(len(g["params"]) for g in self.param_groups)

    def advance(self, state: dict, group: dict) -> int:
        params = [p for g in self.param_groups for p in g["params"]]
        i = next(k for k, p in enumerate(params) if self.state.get(p) is state)
        self.counts[i] += 1
        state["step"] = self.counts[i]
        return state["step"]

    # Saved and restored with the rest, so that a resume is exact (state.round_trip).
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "counts": list(self.counts)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        rest = dict(state_dict)
        self.counts = list(rest.pop("counts"))
        super().load_state_dict(rest)


LAYOUTS = {c.__name__: c for c in (DebiasedAdamW, GroupStepAdamW, OptimiLikeAdamW,
                                     StepsCounterAdamW, BetaPowerAdamW, HiddenCounterAdamW)}


class OptimiOrderAdamW(torch.optim.Optimizer):
    """optimi.AdamW (torch-optimi 0.3.3, optimi/adam.py) op for op, with what it keeps where it
    keeps it: the betas in each group's dict as `beta1`, `beta2` (the constructor's `betas` sets
    only the defaults), one counter per group in `param_groups[i]["step"]` that every step()
    advances, bias-corrected moments mixed with the debiased betas by a lerp (the order
    spec/orders.py: `debiased_lerp`). Unlike optimi it decays by 1 - lr*wd also where that is 0.
    Judged under --conventions=counter=global,moments=debiased."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        ReferenceAdamW.validate(None, lr, betas, eps, weight_decay)  # type: ignore[arg-type]
        super().__init__(params, dict(lr=lr, beta1=betas[0], beta2=betas[1], eps=eps,
                                      weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            step = group.setdefault("step", torch.tensor(0, dtype=torch.int32))
            step.add_(1)
            t = int(step.item())
            b1, b2 = debias_beta(group["beta1"], t), debias_beta(group["beta2"], t)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                state["exp_avg"].lerp_(p.grad, weight=1 - b1)
                state["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                p.addcdiv_(state["exp_avg"], state["exp_avg_sq"].sqrt().add_(group["eps"]),
                           value=-group["lr"])
        return None
