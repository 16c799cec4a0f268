"""A correct AdamW that keeps each group's lr as a tensor, as torchao's optimizers do (so that a
compiled step does not recompile when a schedule changes it).

It refuses a float lr at step time, as torchao does: a schedule must change the tensor in place
(`group["lr"].fill_(new_lr)`, which is what torch's LR schedulers do), never replace it. The
arithmetic is the reference optimizer's, with the lr read from the tensor, so that everything but
where lr lives is the reference's: the whole catalogue must pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from impl.reference.optimizer import ReferenceAdamW


class TensorLrAdamW(ReferenceAdamW):
    """ReferenceAdamW with `lr` a 0-dim float64 tensor in every parameter group."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if not isinstance(group["lr"], Tensor):
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float64)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            if not isinstance(group["lr"], Tensor):
                raise RuntimeError("lr was changed to a non-Tensor object. If you want to "
                                   "update lr, please use optim.param_groups[0]['lr']."
                                   "fill_(new_lr)")
        return super().step(closure)

    def decay(self, x: torch.Tensor, group: dict) -> torch.Tensor:
        return super().decay(x, {**group, "lr": group["lr"].item()})

    def update(self, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, t: int,
               group: dict) -> torch.Tensor:
        return super().update(x, m, denom, t, {**group, "lr": group["lr"].item()})


class Float32CorrectionsAdamW(ReferenceAdamW):
    """torchao's AdamW arithmetic for its bias corrections (torchao 0.18.0,
    torchao/optim/adam.py `single_param_adam`): the step counter is a float32 tensor, so
    `1 - beta**step` is formed in float32 (beta rounded to float32 first), while the moments mix
    with `1 - beta` taken in double from the Python float. Near beta = 1 the two no longer cancel
    (1 - float32(0.999999) is 1.3% off 1e-6): a precision defect, not a convention, which the
    suite's note on float32 bias corrections must name (tests/test_third_party.py)."""

    @staticmethod
    def _correction(beta: float, t: int) -> torch.Tensor:
        step = torch.tensor(float(t), dtype=torch.float32)
        return 1 - beta**step  # a float32 0-dim tensor, as torchao's

    def denominator(self, state: dict, v: torch.Tensor, t: int, group: dict) -> torch.Tensor:
        return (v / self._correction(group["betas"][1], t)).sqrt() + group["eps"]

    def update(self, x: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, t: int,
               group: dict) -> torch.Tensor:
        return x - group["lr"] * (m / self._correction(group["betas"][0], t)) / denom
