"""DeepSpeed ZeRO-1/2 in a rank (`--impl=deepspeed-zero1:...`, `deepspeed-zero2:...`), an
optional extra: each group flattened and padded into an fp32 buffer split by element count, the
optimizer given stepping its partition.

Gradients reach it as a user's do, through `engine.backward` of a loss whose gradient they are
(sum of theta * g: a parameter without a gradient is left out of it); parameters are read from
the module, the state through `deepspeed.utils.safe_get_full_optimizer_state` where DeepSpeed
gives it (the full state is then partial: the suite judges the rest by trajectory). The state
is not written: replay is refused, and state.round_trip skips (no state_dict here).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from adamw_conformance.adapters.base import Setup
from adamw_conformance.sharded.arrays import to_numpy
from adamw_conformance.sharded.engines import Build, RankRun

_READY = False


def _deepspeed() -> Any:
    global _READY
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    if not _READY:
        deepspeed.init_distributed("gloo")  # takes the process group the pool made
        _READY = True
    return deepspeed


class DeepSpeedRun(RankRun):
    stage = 2

    def __init__(self, build: Build, cls: type, setup: Setup) -> None:
        deepspeed = _deepspeed()
        super().__init__(build, cls, setup)
        self.module = torch.nn.Module()
        self.module.ps = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.tensor(p, dtype=torch.float64).to(self.dtype))
             for g in setup.groups for p in g.params])
        self.tensors = list(self.module.ps)
        groups = self._groups(self.tensors)
        # gradient_clipping: DeepSpeed's default clips the gradient to global norm 1.0
        # (GRADIENT_CLIPPING_DEFAULT): a transformation of the gradient, not the rule's; off, as
        # the suite hands every target the gradients it judges the step on.
        config = {"train_micro_batch_size_per_gpu": 1, "zero_allow_untested_optimizer": True,
                  "gradient_clipping": 0.0,
                  "zero_optimization": {"stage": self.stage}, "steps_per_print": 2**30,
                  **({"bf16": {"enabled": True}} if setup.dtype == "bfloat16" else {})}
        self.engine, self.opt, _, _ = deepspeed.initialize(
            model=self.module, optimizer=cls(groups, **build.constructor), config=config)

    def step(self, grads: Sequence[np.ndarray | None]) -> None:
        loss = torch.zeros((), dtype=self.dtype)
        for p, g in zip(self.engine.module.ps, grads, strict=True):
            if g is not None:
                loss = loss + (p * torch.tensor(g, dtype=torch.float64).to(p.dtype)).sum()
        self.engine.backward(loss)
        self.engine.step()

    def params(self) -> list[np.ndarray] | None:
        import torch.distributed as dist

        out = [to_numpy(p) for p in self.engine.module.ps]
        return out if dist.get_rank() == 0 else None

    def full_state(self) -> dict[str, list[dict[str, Any]]]:
        import torch.distributed as dist
        from deepspeed.utils import safe_get_full_optimizer_state

        state: list[dict[str, Any]] = []
        for p, shape in zip(self.engine.module.ps, self.shapes, strict=True):
            entry: dict[str, Any] = {}
            for key in ("exp_avg", "exp_avg_sq"):
                try:
                    x = safe_get_full_optimizer_state(p, key)
                except (ValueError, KeyError, AttributeError):
                    x = None
                if x is not None:
                    entry[key] = (to_numpy(x).reshape(shape), str(x.dtype).split(".")[-1])
            state.append(entry)
        return {"state": state, "groups": [{} for _ in self.setup.groups]} \
            if dist.get_rank() == 0 else {}

    def write_params(self, values: Any) -> None:
        raise NotImplementedError("the DeepSpeed engine writes no state: replay is refused")

    def load_full(self, state: Any, groups: Any) -> None:
        raise NotImplementedError("the DeepSpeed engine writes no state: replay is refused")


class DeepSpeedZero1Run(DeepSpeedRun):
    stage = 1
