"""DeepSpeed ZeRO-1/2 in a rank (`--impl=deepspeed-zero1:...`, `deepspeed-zero2:...`), an
optional extra: each group flattened and padded into an fp32 buffer split by element count, the
optimizer given stepping its partition.

Gradients reach it as a user's do, through `engine.backward` of a loss whose gradient they are
(sum of theta * g: a parameter without a gradient is left out of it); parameters are read from
the module, the state through `deepspeed.utils.safe_get_full_optimizer_state` where DeepSpeed
gives it (the full state is then partial: the suite judges the rest by trajectory). The state
is not written (DeepSpeed's `safe_set_full_optimizer_state` writes m and v but no counter):
replay is refused. state.round_trip goes through DeepSpeed's own checkpoint
(`engine.save_checkpoint` / `load_checkpoint`, a directory).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from adamw_conformance.adapters.base import Setup
from adamw_conformance.sharded import MARKER_ENV
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
        """m and v through `safe_get_full_optimizer_state`, where every rank holding a piece of
        the parameter has that key linked. DeepSpeed 0.19 links the state of every group but
        the first to nothing (it links all groups after stepping the first one only:
        reports/sharded-audit.md), and the call raises on a rank with an unlinked fragment
        before the all_reduce the others enter: the ranks agree first, by a MIN all_reduce."""
        import torch.distributed as dist
        from deepspeed.utils import safe_get_full_optimizer_state

        keys = ("exp_avg", "exp_avg_sq")
        ps = list(self.engine.module.ps)
        linked = torch.tensor([[_linked(p, key) for key in keys] for p in ps],
                              dtype=torch.int32).reshape(len(ps), len(keys))
        dist.all_reduce(linked, op=dist.ReduceOp.MIN)
        state: list[dict[str, Any]] = []
        for i, (p, shape) in enumerate(zip(ps, self.shapes, strict=True)):
            entry: dict[str, Any] = {}
            for j, key in enumerate(keys):
                x = safe_get_full_optimizer_state(p, key) if linked[i, j] else None
                if x is not None:
                    entry[key] = (to_numpy(x).reshape(shape), str(x.dtype).split(".")[-1])
            state.append(entry)
        return {"state": state, "groups": [{} for _ in self.setup.groups]} \
            if dist.get_rank() == 0 else {}

    def checkpoint(self) -> str:
        """DeepSpeed's own checkpoint: `engine.save_checkpoint` into a fresh directory (one
        machine: every rank writes its partition there), named to every rank by rank 0."""
        import tempfile

        import torch.distributed as dist

        box = [tempfile.mkdtemp(prefix="ds-ckpt-", dir=_checkpoints()) if dist.get_rank() == 0
               else None]
        dist.broadcast_object_list(box, src=0)
        self.engine.save_checkpoint(box[0], tag="saved")
        return box[0]

    def load_checkpoint(self, sd: Any) -> None:
        self.engine.load_checkpoint(sd, tag="saved", load_optimizer_states=True,
                                    load_lr_scheduler_states=False)

    def write_params(self, values: Any) -> None:
        raise NotImplementedError("the DeepSpeed engine writes no state: replay is refused")

    def load_full(self, state: Any, groups: Any) -> None:
        raise NotImplementedError("the DeepSpeed engine writes no state: replay is refused")


def _linked(p: torch.Tensor, key: str) -> int:
    """1 if this rank can give `key` of p's state (it holds none of p, or its piece is linked
    to that key), else 0."""
    mapping = getattr(p, "_hp_mapping", None)
    return int(mapping is None or key in (mapping.optim_fragment or {}))


def checkpoints_folder(parent: int) -> str:
    """Where the workers of the suite process `parent` write DeepSpeed checkpoints: the parent
    removes it when it exits (the workers leave by os._exit, which runs no exit handlers)."""
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"adamw-conformance-ds-{parent}")


def _checkpoints() -> str:
    folder = checkpoints_folder(int(os.environ.get(MARKER_ENV, os.getpid())))
    os.makedirs(folder, exist_ok=True)
    return folder


class DeepSpeedZero1Run(DeepSpeedRun):
    stage = 1
