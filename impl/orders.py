"""AdamWs in orders the suite did not trace, written as real libraries write them: what the
general order (spec/orders_general.py) and the hyperparameter precision profile are for.

- `TransformersAdamW`: transformers.optimization.AdamW 4.46 (`AdamW.step`), op for op: eps added
  to sqrt(v) and sqrt(bias_correction2) folded into the step size (eps=hat), and the decay after
  the Adam step in the expanded form `p.add_(p, alpha=-lr * weight_decay)` (decay_target=
  updated). Correct under `--conventions=eps=hat,decay_target=updated`, in float32 and bfloat16.
- `ExpandedDecayAdamW`: the default convention with the expanded decay first and the first
  moment mixed with mul_ and add_, as fairseq's Adam writes them (spec/orders.py: expanded).
  Correct under the default conventions.
- `SwitchingDecayAdamW`: torch's loop with the decay factored where lr * wd > 0.999 and
  expanded elsewhere: it fools the orders probe (conformance/core/forms.py); correct with
  `--orders=all`.
- `Float32HyperAdamW`: DeepSpeed's CPU Adam scalar loop (csrc/adam/cpu_adam_impl.cpp
  `Adam_Optimizer::Step_1`, AdamW mode), every hyperparameter and every scalar a C `float`:
  1 - beta2 is formed from float32(beta2), so v at t = 1 is ~100 ulps off where beta2 is near 1.
  Outside the default bound; within it declared with `--hyper-dtype=float32`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor


class _Base(torch.optim.Optimizer):
    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        # transformers' checks (lr, betas, eps), and weight_decay's as torch's
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr} - should be >= 0.0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid beta parameters: {betas} - should be in [0.0, 1.0)")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps} - should be >= 0.0")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay})

    def _state(self, p: Tensor) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        return state

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    state = self._state(p)
                    state["step"] += 1
                    self.update(p, p.grad, state, group)
        return loss

    def update(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict) -> None:
        raise NotImplementedError


class TransformersAdamW(_Base):
    """transformers.optimization.AdamW 4.46's step (correct_bias=True), op for op."""

    conformance_rule = "adamw"

    def update(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict) -> None:
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        beta1, beta2 = group["betas"]
        exp_avg.mul_(beta1).add_(grad, alpha=(1.0 - beta1))
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        denom = exp_avg_sq.sqrt().add_(group["eps"])
        step_size = group["lr"]
        bias_correction1 = 1.0 - beta1 ** state["step"]
        bias_correction2 = 1.0 - beta2 ** state["step"]
        step_size = step_size * math.sqrt(bias_correction2) / bias_correction1
        p.addcdiv_(exp_avg, denom, value=-step_size)
        if group["weight_decay"] > 0.0:
            p.add_(p, alpha=(-group["lr"] * group["weight_decay"]))


class ExpandedDecayAdamW(_Base):
    """The default convention in spec/orders.py's `expanded` order: the decay first as
    `p.add_(p, alpha=-lr * wd)`, `exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)`, then torch's
    loop (sqrt(v) / sqrt(bc2) + eps, addcdiv with -lr / bc1)."""

    conformance_rule = "adamw"

    def update(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict) -> None:
        beta1, beta2 = group["betas"]
        t = state["step"]
        if group["weight_decay"] != 0:
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        state["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - beta1**t))


class SwitchingDecayAdamW(_Base):
    """torch's for-loop step, except that the decay is factored, `p.mul_(1 - lr * wd)`, only
    where lr * wd > 0.999, and expanded, `p.add_(p, alpha=-lr * wd)`, elsewhere: each step is
    a correct AdamW step in a legitimate order, but the order depends on the hyperparameters.
    The orders probe (conformance/core/forms.py) sees the factored form at lr * wd near 1 and
    rules the expanded one out, so steps at lr * wd ~ 0.9 are judged by a bound that does not
    allow it: the documented limit of judging orders from behaviour. Correct under the default
    conventions with `--orders=all`."""

    conformance_rule = "adamw"

    def update(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict) -> None:
        beta1, beta2 = group["betas"]
        t, rate = state["step"], group["lr"] * group["weight_decay"]
        if rate > 0.999:
            p.mul_(1 - rate)
        else:
            p.add_(p, alpha=-rate)
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - beta1**t))


class Float32HyperAdamW(_Base):
    """DeepSpeed's CPU Adam (AdamW mode) scalar loop in numpy float32: hyperparameters, bias
    corrections and every scalar are C floats, each element's arithmetic is float32 (no FMA):

        betta1_minus1 = 1 - _betta1;  betta2_minus1 = 1 - _betta2
        _bias_correction1 = 1 - pow(_betta1, step);  _bias_correction2 = 1 / sqrt(1 - pow(..))
        step_size = -1 * _alpha / _bias_correction1;  w_decay = -1 * _alpha * _weight_decay
        momentum = momentum * _betta1;  momentum = grad * betta1_minus1 + momentum
        variance = variance * _betta2;  grad = grad * grad
        variance = grad * betta2_minus1 + variance
        grad = sqrt(variance);  grad = grad * _bias_correction2 + _eps;  grad = momentum / grad
        param += w_decay * param;  param = grad * step_size + param
    """

    conformance_rule = "adamw"

    def update(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict) -> None:
        # IEEE results without numpy's warnings, as the C loop computes them (a beta that
        # rounds to 1.0f gives a zero bias correction, a NaN gradient NaN)
        with np.errstate(all="ignore"):
            self._float_step(p, grad, state, group)

    def _float_step(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict) -> None:
        f = np.float32
        beta1, beta2 = f(group["betas"][0]), f(group["betas"][1])
        lr, eps, wd = f(group["lr"]), f(group["eps"]), f(group["weight_decay"])
        t = state["step"]
        b1_minus, b2_minus = f(1) - beta1, f(1) - beta2
        bc1 = f(1) - f(beta1 ** f(t))
        bc2 = f(1) / f(np.sqrt(f(1) - f(beta2 ** f(t))))
        step_size = f(-1) * lr / bc1
        w_decay = f(-1) * lr * wd

        def host(x: Tensor) -> np.ndarray:
            return x.detach().to("cpu", torch.float32).numpy().copy()

        param, g = host(p), host(grad)
        momentum, variance = host(state["exp_avg"]), host(state["exp_avg_sq"])
        momentum = momentum * beta1
        momentum = g * b1_minus + momentum
        variance = variance * beta2
        g = g * g
        variance = g * b2_minus + variance
        g = np.sqrt(variance)
        g = g * bc2 + eps
        g = momentum / g
        if wd > 0:
            param = param + w_decay * param
        param = g * step_size + param
        for x, value in ((p, param), (state["exp_avg"], momentum),
                         (state["exp_avg_sq"], variance)):
            x.copy_(torch.from_numpy(np.asarray(value, dtype=np.float32)).to(x.dtype))


__all__ = ["ExpandedDecayAdamW", "Float32HyperAdamW", "TransformersAdamW"]
