"""Correct AdamWs written differently: what the suite must pass (its false-alarm side).

Each computes AdamW exactly in real arithmetic, by another valid road than the reference:
another evaluation order, more precise arithmetic, bias-corrected state, state under names the
suite does not know. A property that fails one of them is shaped to one implementation, not to
the spec. `CORRECT` lists every correct implementation the false-alarm sweep runs
(tests/test_false_alarms.py, `python -m adamw_conformance.tools.detection`).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from impl.reference.adamw_kernel import AdamWMath, Kernel, make_kernel
from impl.reference.optimizer import ReferenceAdamW


class DecayFromOldParams(ReferenceAdamW):
    """Computes the Adam step first and subtracts the decay term from the old parameters in the
    same expression, theta - lr wd theta - step, instead of multiplying by (1 - lr wd) first:
    another evaluation order of the same decoupled decay."""

    def decay(self, x: Tensor, group: dict) -> Tensor:
        return x  # applied in update(), from the same previous parameters

    def update(self, x: Tensor, m: Tensor, denom: Tensor, t: int, group: dict) -> Tensor:
        lr, wd, beta1 = group["lr"], group["weight_decay"], group["betas"][0]
        step = lr * (m / (1 - beta1**t)) / denom
        return x - (lr * wd) * x - step


class Float64Math(ReferenceAdamW):
    """Computes every step in float64 and keeps the moments in float64, whatever the parameters'
    dtype; only the parameters are rounded back to their dtype. More precise than the spec's
    declared precision, so it must pass wherever float32 arithmetic does."""

    @staticmethod
    def compute_dtype(p: Tensor) -> torch.dtype:
        return torch.float64


class DebiasedMoments(ReferenceAdamW):
    """Stores the bias-corrected moments mh, vh instead of m, v ("debiased betas"): each step
    mixes with b' = b (1 - b^(t-1)) / (1 - b^t), 1 - b' = (1 - b) / (1 - b^t), and the step uses
    the stored moments without further correction. The parameters are AdamW's; the state is a
    different but equivalent one, which the suite finds and decodes (conformance/core/layout.py)
    under the default conventions as under --conventions=moments=debiased (the registry
    declares the latter). It offers no amsgrad: the maximum of debiased v's is a different
    AMSGrad (optax's 'corrected_max')."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, maximize=maximize)

    def moments(self, state: dict, g: Tensor, group: dict) -> tuple[Tensor, ...]:
        t = state["step"]
        out = []
        for key, beta, x in (("exp_avg", group["betas"][0], g), ("exp_avg_sq", group["betas"][1],
                                                                 g * g)):
            keep = beta * (1 - beta ** (t - 1)) / (1 - beta**t)
            out.append(state[key].mul_(keep).add_(x, alpha=(1 - beta) / (1 - beta**t)))
        return tuple(out)

    def denominator(self, state: dict, v: Tensor, t: int, group: dict) -> Tensor:
        return v.sqrt() + group["eps"]

    def update(self, x: Tensor, m: Tensor, denom: Tensor, t: int, group: dict) -> Tensor:
        return x - group["lr"] * m / denom


class FoldedSqrt(ReferenceAdamW):
    """sqrt(1 - b2^t) folded into the step size, as the Adam paper's "efficient version" writes
    it, with eps scaled so that it stays AdamW's eps: lr sqrt(bc2)/bc1 * m / (sqrt(v) +
    eps sqrt(bc2)) equals lr/bc1 * m / (sqrt(v/bc2) + eps) exactly in real arithmetic."""

    def denominator(self, state: dict, v: Tensor, t: int, group: dict) -> Tensor:
        return v.sqrt() + group["eps"] * math.sqrt(1 - group["betas"][1] ** t)

    def update(self, x: Tensor, m: Tensor, denom: Tensor, t: int, group: dict) -> Tensor:
        beta1, beta2 = group["betas"]
        step_size = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        return x - step_size * m / denom


class ExplicitMath(AdamWMath):
    """The reference kernel with explicit forms instead of fused ones: b1 m + (1 - b1) g instead
    of lerp, g^2 as a square, lr * (m / bc1) / denom instead of a folded step size, sqrt(v / bc2)
    instead of sqrt(v) / sqrt(bc2)."""

    def first_moment(self, exp_avg: Tensor, grad: Tensor, beta1: float) -> Tensor:
        return exp_avg * beta1 + grad * (1 - beta1)

    def second_moment(self, exp_avg_sq: Tensor, grad: Tensor, beta2: float) -> Tensor:
        return exp_avg_sq * beta2 + grad.square() * (1 - beta2)

    def denominator(self, exp_avg_sq: Tensor, bias_correction2: float, eps: float) -> Tensor:
        return (exp_avg_sq / bias_correction2).sqrt() + eps

    def adam_step(self, exp_avg: Tensor, denom: Tensor, lr: float,
                  bias_correction1: float) -> Tensor:
        return lr * (exp_avg / bias_correction1) / denom


explicit_kernel: Kernel = make_kernel(ExplicitMath(), "explicit_kernel",
                                      f"AdamW kernel, equivalent. {ExplicitMath.__doc__}",
                                      __name__)


@dataclass(frozen=True)
class Correct:
    """A correct implementation: `args` are the suite options it needs (a declared convention);
    `module` must be importable for it to run (the Triton kernel is optional)."""

    name: str
    target: str
    args: tuple[str, ...] = ()

    def available(self) -> bool:
        module = self.target.partition(":")[0] if ":" in self.target else ""
        if not module:
            return True
        try:
            return importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            return False

    def argv(self) -> list[str]:
        return [f"--impl={self.target}", *self.args]


CORRECT: tuple[Correct, ...] = (
    Correct("torch-loop", "torch-loop"),
    Correct("torch-foreach", "torch-foreach"),
    Correct("torch-fused", "torch-fused"),
    Correct("ReferenceAdamW", "impl.reference.optimizer:ReferenceAdamW"),
    Correct("reference kernel", "impl.reference.adamw_kernel:adamw"),
    Correct("Triton kernel", "impl.kernels.triton_adamw:adamw"),
    Correct("ForeignAdamW", "impl.foreign:ForeignAdamW"),
    Correct("DecayFromOldParams", "impl.equivalent:DecayFromOldParams"),
    Correct("Float64Math", "impl.equivalent:Float64Math"),
    Correct("DebiasedMoments", "impl.equivalent:DebiasedMoments",
            ("--conventions=moments=debiased",)),
    Correct("explicit_kernel", "impl.equivalent:explicit_kernel"),
    Correct("FoldedSqrt", "impl.equivalent:FoldedSqrt"),
    # Orders nobody traced (impl/orders.py): transformers' and fairseq's expanded decay
    Correct("TransformersAdamW", "impl.orders:TransformersAdamW",
            ("--conventions=eps=hat,decay_target=updated",)),
    Correct("ExpandedDecayAdamW", "impl.orders:ExpandedDecayAdamW"),
    Correct("TensorLrAdamW", "impl.tensor_lr:TensorLrAdamW"),
    # Precision techniques (impl/precision_techniques.py, impl/quantized.py): judged through
    # what they store (p + c, stochastic rounding, block-quantized moments), in the dtype each
    # technique is for
    Correct("KahanAdamW", "impl.precision_techniques:KahanAdamW", ("--dtype=bfloat16",)),
    Correct("StochasticRoundingAdamW", "impl.precision_techniques:StochasticRoundingAdamW",
            ("--dtype=bfloat16",)),
    Correct("BlockQuantAdamW", "impl.quantized:BlockQuantAdamW"),
    Correct("BlockQuantAdamW bfloat16", "impl.quantized:BlockQuantAdamW", ("--dtype=bfloat16",)),
)

__all__ = ["CORRECT", "Correct", "DebiasedMoments", "DecayFromOldParams", "Float64Math",
           "FoldedSqrt", "explicit_kernel"]
