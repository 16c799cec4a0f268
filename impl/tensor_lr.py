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
