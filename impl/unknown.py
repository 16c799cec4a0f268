"""Optimizers and adapters that no part of the suite names: what a user may point --impl at.

The fingerprint and the suite must answer from behaviour on each, never crash
(tests/test_fingerprint.py, tests/test_bad_targets.py, reports/unknown-optimizers.md):

- `LionLike`: a correct Lion (sign of an interpolated momentum), not an Adam-family rule;
- `Atan2Like`: Adam-atan2 (the step a * atan2(mh, b sqrt(vh)), no eps), counter `steps`;
- `FrozenOptimizer`: an Optimizer whose step does nothing (a silent no-op must not pass);
- `chained_adam_l2`, `masked_adamw`: optax factories built the way users build them (a chain with
  the decay before scale_by_adam is Adam+L2; a mask that decays nothing is Adam);
- `WrongShapeAdapter`, `NoParamsAdapter`, `StringParamsAdapter`: adapters whose params() give
  the wrong shape, None, or text;
- `InfAdamW`: every stepped parameter becomes +inf.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from adamw_conformance.adapters.base import Setup

from impl.reference.optimizer import ReferenceAdamW


class Atan2Like(torch.optim.Optimizer):
    """Adam-atan2 (Everett et al. 2024; adam-atan2-pytorch 0.4.1 `AdamAtan2.step`): the moments
    are Adam's, the step is lr * a * atan2(mh, b * sqrt(vh)) with a = 1.27, b = 1, no eps, and
    the decay 1 - lr * wd; the counter is `state['steps']`. Close to Adam where |mh| << sqrt(vh),
    so it misses AdamW by tens to thousands of bounds, not by orders of magnitude."""

    def __init__(self, params: Any, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 0.0, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay,
                                  "a": 1.27, "b": 1.0})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            (b1, b2), a, b = group["betas"], group["a"], group["b"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(steps=0, exp_avg=torch.zeros_like(p),
                                 exp_avg_sq=torch.zeros_like(p))
                state["steps"] += 1
                t = state["steps"]
                state["exp_avg"].lerp_(p.grad, 1.0 - b1)
                state["exp_avg_sq"].lerp_(p.grad * p.grad, 1.0 - b2)
                den = state["exp_avg_sq"].mul(b * b / (1.0 - b2**t)).sqrt_()
                update = state["exp_avg"].mul(1.0 / (1.0 - b1**t)).atan2_(den)
                if group["weight_decay"] > 0.0:
                    p.mul_(1.0 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"] * a)
        return None


class LionLike(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): theta -= lr (sign(b1 m + (1-b1) g) + wd theta); m = b2 m +
    (1-b2) g. Takes the usual AdamW constructor, so the suite can drive it."""

    def __init__(self, params: Any, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 0.0, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if "exp_avg" not in st:
                    st["exp_avg"] = torch.zeros_like(p)
                m = st["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group["lr"])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return None


class FrozenOptimizer(torch.optim.Optimizer):
    """Accepts AdamW's constructor and never changes anything."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay})

    def step(self, closure: Any = None) -> Any:
        return None


class InfAdamW(ReferenceAdamW):
    """Every parameter that has a gradient becomes +inf."""

    def update(self, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, t: int,
               group: dict) -> torch.Tensor:
        return torch.full_like(x, float("inf"))


def chained_adam_l2(learning_rate: float, b1: float = 0.9, b2: float = 0.999,
                    eps: float = 1e-8, weight_decay: float = 1e-4) -> Any:
    """optax.chain(add_decayed_weights, scale_by_adam, scale(-lr)): the decay enters the
    gradient before the moments, i.e. Adam+L2, though it reads like AdamW."""
    import optax

    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
                       optax.scale_by_learning_rate(learning_rate))


def masked_adamw(learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 1e-4) -> Any:
    """optax.adamw with a mask that decays no parameter: plain Adam whatever weight_decay is."""
    import jax
    import optax

    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                       mask=lambda params: jax.tree_util.tree_map(lambda _: False, params))


class _Run:
    def __init__(self, setup: Setup) -> None:
        self.values = [np.array(p, dtype=np.float64) for g in setup.groups for p in g.params]

    def step(self, grads: Sequence[np.ndarray | None]) -> None:
        for x, g in zip(self.values, grads, strict=True):
            if g is not None:
                x -= 1e-3 * np.sign(g)


class _WrongShapeRun(_Run):
    def params(self) -> list[np.ndarray]:
        return [np.concatenate([x.reshape(-1), [0.0]]) for x in self.values]


class _NoParamsRun(_Run):
    def params(self) -> Any:
        return None


class _StringParamsRun(_Run):
    def params(self) -> Any:
        return ["not a number" for _ in self.values]


class _Adapter:
    version = "0"
    options: dict[str, Any] = {}
    run: type = _Run

    def __init__(self) -> None:
        self.name = f"impl.unknown:{type(self).__name__}"

    def create(self, setup: Setup) -> Any:
        return self.run(setup)


class WrongShapeAdapter(_Adapter):
    """params() returns each parameter flattened with one element too many."""

    run = _WrongShapeRun


class NoParamsAdapter(_Adapter):
    """params() returns None."""

    run = _NoParamsRun


class StringParamsAdapter(_Adapter):
    """params() returns strings."""

    run = _StringParamsRun
