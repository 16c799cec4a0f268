"""Decoupling mutants: weight decay that is not AdamW's decoupled decay.

Each subclasses the reference optimizer and overrides the one piece that carries the defect; the
decouple.* properties must kill every one (torch.optim.Adam with weight_decay > 0, the real
Adam+L2, is in the zoo too: impl.mutants.ZOO, tests/test_kill_matrix.py).
"""

from __future__ import annotations

import torch

from impl.reference.optimizer import ReferenceAdamW


class CoupledDecay(ReferenceAdamW):
    """Adam+L2 offered as AdamW: weight_decay * theta is added to the gradient and there is no
    decoupled decay, so the decay goes through the moments and is divided by sqrt(vh) + eps
    (torch.optim.Adam's weight_decay, the bug AdamW was written to fix). Killed by
    decouple.moments (and decouple.decay_only, decouple.uniform)."""

    def gradient(self, p: torch.Tensor, group: dict) -> torch.Tensor | None:
        g = super().gradient(p, group)
        return None if g is None else g + group["weight_decay"] * p.to(g.dtype)

    def decay(self, x: torch.Tensor, group: dict) -> torch.Tensor:
        return x


class L2InGradient(ReferenceAdamW):
    """Adds weight_decay * theta to the gradient (Adam+L2's coupling) on top of the decoupled
    decay, as code that "also" regularises through the loss gradient does: the moments see the
    decay. Killed by decouple.moments (and decouple.decay_only, decouple.uniform)."""

    def gradient(self, p: torch.Tensor, group: dict) -> torch.Tensor | None:
        g = super().gradient(p, group)
        return None if g is None else g + group["weight_decay"] * p.to(g.dtype)


class DecayWithoutLR(ReferenceAdamW):
    """Decays by weight_decay alone, theta * (1 - wd), not by lr * wd (the paper's eta_t = 1
    reading; correct only under --conventions decay_coupling=independent). Killed by
    decouple.decay_only (and schedule.lr_zero)."""

    def decay(self, x: torch.Tensor, group: dict) -> torch.Tensor:
        return x * (1 - group["weight_decay"])


class DecayRateOff(ReferenceAdamW):
    """Decays by a rate 2^-12 (0.02 %) too large, theta * (1 - lr * wd * (1 + 2^-12)): a decay
    slightly wrong, as a rate folded from a rounded constant is. The orders probe
    (conformance/core/forms.py) finds its decay-only steps outside the factored forms' bound and
    keeps the expanded decay's: the mutant is judged by every order, and still fails. Killed by
    decouple.decay_only."""

    def decay(self, x: torch.Tensor, group: dict) -> torch.Tensor:
        return x * (1 - group["lr"] * group["weight_decay"] * (1 + 2.0**-12))


class DecayedMoments(ReferenceAdamW):
    """Applies the decay factor to the first moment too (a "decay everything" refactor): the
    moments then depend on weight_decay although the parameters' first step is right. Killed by
    decouple.moments."""

    def moments(self, state: dict, g: torch.Tensor, group: dict) -> tuple[torch.Tensor, ...]:
        state["exp_avg"].mul_(1 - group["lr"] * group["weight_decay"])
        return super().moments(state, g, group)


class DecayInNumerator(ReferenceAdamW):
    """Puts weight_decay * theta into the numerator of the adaptive step, lr * (mh + wd theta) /
    (sqrt(vh) + eps), instead of beside it, lr * (mh / (sqrt(vh) + eps) + wd theta): the decay
    is then divided by the gradient history's denominator, so parameters with the same value
    but different histories decay differently, as under Adam+L2. Killed by decouple.uniform."""

    def update(self, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, t: int,
               group: dict) -> torch.Tensor:
        lr, wd, beta1 = group["lr"], group["weight_decay"], group["betas"][0]
        # x arrives decayed, theta (1 - lr wd); undo it so the decay acts only through denom.
        theta = x / (1 - lr * wd) if lr * wd != 1 else x
        return theta - lr * (m / (1 - beta1**t) + wd * theta) / denom


MUTANTS = {"CoupledDecay": CoupledDecay, "L2InGradient": L2InGradient,
           "DecayWithoutLR": DecayWithoutLR, "DecayedMoments": DecayedMoments,
           "DecayInNumerator": DecayInNumerator}
