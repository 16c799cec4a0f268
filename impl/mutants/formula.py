"""Seeded formula errors: the reference kernel with exactly one thing wrong.

Each mutant overrides one method of `impl.reference.AdamWMath` and is turned into a kernel with the
reference's signature (torch._fused_adamw_'s). A conformance suite with any power must reject every
one of them, each in the regime where its defect shows:

- `eps_inside_sqrt`: where sqrt(vh) is comparable to eps (or smaller);
- `no_bias_correction`: at small t, where 1 - beta^t is far from 1;
- `decay_after_update`: where lr * wd and the Adam step are both sizable;
- `eps_doubled`: where |g| (so sqrt(vh)) is near eps.
"""

from __future__ import annotations

from torch import Tensor

from impl.reference.adamw_kernel import AdamWMath, Kernel, make_kernel


class EpsInsideSqrt(AdamWMath):
    """Defect: eps inside the square root, sqrt(vh + eps) instead of sqrt(vh) + eps.
    Killed by scale.power_of_two."""

    def denominator(self, exp_avg_sq: Tensor, bias_correction2: float, eps: float) -> Tensor:
        return (exp_avg_sq / bias_correction2 + eps).sqrt()


class NoBiasCorrection(AdamWMath):
    """Defect: no bias correction, m and v used raw (1 - beta^t taken as 1). Killed by
    bias.step_one."""

    def bias_corrections(self, beta1: float, beta2: float, step: float) -> tuple[float, float]:
        return 1.0, 1.0


class DecayAfterUpdate(AdamWMath):
    """Defect: weight decay applied after the Adam step, to the updated parameter:
    (theta - update) (1 - lr wd) instead of theta (1 - lr wd) - update. Killed by bias.step_one."""

    def apply(self, param: Tensor, update: Tensor, lr: float, weight_decay: float) -> Tensor:
        return self.decay(param - update, lr, weight_decay)


class EpsDoubled(AdamWMath):
    """Defect: eps doubled, sqrt(vh) + 2 eps. Killed by bias.step_one."""

    def denominator(self, exp_avg_sq: Tensor, bias_correction2: float, eps: float) -> Tensor:
        return super().denominator(exp_avg_sq, bias_correction2, 2 * eps)


def _kernel(cls: type[AdamWMath], name: str) -> Kernel:
    return make_kernel(cls(), name, f"AdamW kernel, mutant. {cls.__doc__}", __name__)


eps_inside_sqrt = _kernel(EpsInsideSqrt, "eps_inside_sqrt")
no_bias_correction = _kernel(NoBiasCorrection, "no_bias_correction")
decay_after_update = _kernel(DecayAfterUpdate, "decay_after_update")
eps_doubled = _kernel(EpsDoubled, "eps_doubled")

#: Every mutant of this module by name.
MUTANTS: dict[str, Kernel] = {
    "eps_inside_sqrt": eps_inside_sqrt,
    "no_bias_correction": no_bias_correction,
    "decay_after_update": decay_after_update,
    "eps_doubled": eps_doubled,
}

__all__ = ["MUTANTS", "DecayAfterUpdate", "EpsDoubled", "EpsInsideSqrt", "NoBiasCorrection",
           "decay_after_update", "eps_doubled", "eps_inside_sqrt", "no_bias_correction"]
