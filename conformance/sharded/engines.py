"""Worker side: one sharded optimizer, built by an engine on this rank's process group, read and
written through the engine's own full-state API.

Every method is called on every rank with the same arguments (the pool broadcasts each call), so
the collectives inside them match across ranks. Values cross to the parent as float64 numpy
arrays; the full state as {"state": [per parameter {key: array or number}], "groups": [per group
{key: number}]} in creation order, whatever keys the engine uses (ZeRO: indices, FSDP2: names).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from adamw_conformance.adapters.base import Setup
from adamw_conformance.sharded.arrays import STEP_NAMES, to_numpy  # noqa: F401

# The worker imports this module and torch only (not the suite's spec and SymPy): a worker
# starts in the time torch takes to import. The parent computes the constructor's keywords.

FullState = dict[str, list[dict[str, Any]]]
#: Counter names (torch_optim's), kept as numbers, never as arrays.
@dataclass(frozen=True)
class Build:
    """How to construct the optimizer the engine shards: its class (as --impl names it, loaded
    on each rank), each group's keywords and the constructor's (the torch adapter's, computed
    by the parent)."""

    text: str
    directory: str
    groups: tuple[dict[str, Any], ...]
    constructor: dict[str, Any]


def load_class(text: str, directory: str) -> type:
    from adamw_conformance.core.loading import load

    return load(text, directory)[0]


def _number(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, torch.Tensor) and x.numel() == 1 and x.dim() == 0:
        return float(x.item())
    return None


def _from_torch(entry: Mapping[str, Any], shape: tuple[int, ...], held: tuple[int, ...]
                ) -> dict[str, Any]:
    """One parameter's state as the parent reads it: tensors of the parameter's shape as it is
    held (`held`) as (float64 array of its created `shape`, dtype), numbers (a counter, also as
    a 0-dim tensor) as floats."""
    out: dict[str, Any] = {}
    for k, x in entry.items():
        if isinstance(x, torch.Tensor) and tuple(x.shape) == held and k not in STEP_NAMES:
            out[k] = (to_numpy(x).reshape(shape), str(x.dtype).split(".")[-1])
        elif (value := _number(x)) is not None:
            out[k] = value
        elif isinstance(x, torch.Tensor):
            out[k] = (to_numpy(x), str(x.dtype).split(".")[-1])
    return out


def _into(entry: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Write the parent's values into one parameter's state entry of a full state dict, in the
    types the engine keeps there."""
    for k, value in values.items():
        old = entry.get(k)
        if isinstance(old, torch.Tensor):
            new = torch.as_tensor(np.asarray(value[0] if isinstance(value, tuple) else value),
                                  dtype=torch.float64)
            entry[k] = new.reshape(old.shape).to(old.dtype)
        elif isinstance(old, (int, float)) and not isinstance(old, bool):
            entry[k] = type(old)(value)
        else:
            entry[k] = value


class RankRun:
    """One rank's side of a sharded run (the parent's side is adapter.ShardedRun, which calls
    these methods on every rank through the pool). What the engines share: the inner
    optimizer's construction as the torch adapter does it, the gradients, and reading/writing
    the full state through `_full()`/`_load()`."""

    def __init__(self, build: Build, cls: type, setup: Setup) -> None:
        self.build, self.cls, self.setup = build, cls, setup
        self.dtype = getattr(torch, setup.dtype)
        self.shapes = [tuple(np.shape(p)) for g in setup.groups for p in g.params]
        self.group_of = setup.group_of()
        self.world = dist.get_world_size()

    def _held(self, i: int) -> tuple[int, ...]:
        """The shape parameter i is held in by the engine."""
        return self.shapes[i]

    def _groups(self, tensors: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
        out, i = [], 0
        for gi, gs in enumerate(self.setup.groups):
            out.append({"params": list(tensors[i:i + len(gs.params)]), **self.build.groups[gi]})
            i += len(gs.params)
        return out

    # the engine's full state, in creation order --------------------------------------------

    def _read(self) -> dict[str, Any]:
        """The full state to read or change (the engine's full-state API)."""
        return self._full()

    def full_state(self) -> FullState:
        sd = self._read()
        if dist.get_rank() != 0:
            return {}
        keys = self._keys()
        state = [_from_torch(sd["state"].get(k, {}), s, self._held(i))
                 for i, (k, s) in enumerate(zip(keys, self.shapes, strict=True))]
        groups = [{k: v for k, x in g.items() if k != "params" and (v := _number(x)) is not None}
                  for g in sd["param_groups"]]
        return {"state": state, "groups": groups}

    def load_full(self, state: Sequence[Mapping[str, Any] | None],
                  groups: Sequence[Mapping[str, Any]]) -> None:
        """Write the parent's changes (None: parameter unchanged) through the engine's API:
        the full state read, changed, and loaded back."""
        sd = self._read()
        box = [sd]
        dist.broadcast_object_list(box, src=0)
        sd = box[0]
        for key, values in zip(self._keys(), state, strict=True):
            if values:
                _into(sd["state"].setdefault(key, {}), values)
        for g, values in zip(sd["param_groups"], groups, strict=False):
            for k, v in values.items():
                g[k] = type(g[k])(v) if isinstance(g.get(k), (int, float)) else v
        self._load(sd)

    def checkpoint(self) -> Any:
        """The engine's full state dict itself (a checkpoint), on every rank."""
        box = [self._full()]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def set_lr(self, group: int, lr: float) -> None:
        self.opt.param_groups[group]["lr"] = lr

    def _set_grads(self, grads: Sequence[np.ndarray | None]) -> None:
        raise NotImplementedError

    def step(self, grads: Sequence[np.ndarray | None]) -> None:
        self._set_grads(grads)
        self.opt.step()

    def amp_step(self, grads: Sequence[np.ndarray | None], scale: float,
                 unscale_first: bool = False) -> None:
        """One step under torch.amp.GradScaler, as the torch adapter takes it (its amp_step):
        `grads` already multiplied by `scale`; the scaler unscales them, looks for inf/NaN and
        skips the step if it finds any. Each rank's scaler sees the gradients this rank holds,
        as a user's script on that rank does; under FSDP2 they are DTensors, whose unscale
        makes found_inf agree across ranks (torch's own FSDP2 test uses this scaler, not
        ShardedGradScaler)."""
        self._set_grads(grads)
        if any(p.grad is not None and p.grad.dtype == torch.float16 for p in self.tensors):
            raise NotImplementedError("torch.amp.GradScaler does not unscale float16 gradients "
                                      "(it expects float32 master parameters)")
        scaler = torch.amp.GradScaler("cpu", init_scale=scale)
        scaler.scale(torch.zeros(()))  # what scaler.scale(loss) sets up
        if unscale_first:
            scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.tensors, max_norm=float("inf"))
        scaler.step(self.opt)
        scaler.update()

    def load_checkpoint(self, sd: Any) -> None:
        self._load(sd)

    # the verdict on this rank's elements (sharded/rank_judge.py) ---------------------------

    def _holding(self, i: int) -> Any:
        """What this rank holds of parameter i after the step (a rank_judge.Held), or None."""
        raise NotImplementedError

    def judge(self, model: Any, precisions: Mapping[str | None, Any], fmt: str,
              items: Sequence[Any], counters: Sequence[str]) -> list[Any]:
        """This rank's reports on the step just taken (rank_judge.judge_held)."""
        from adamw_conformance.sharded import rank_judge

        return rank_judge.judge_held([self._holding(i) for i in range(len(self.shapes))],
                                     self.shapes, model, precisions, fmt, items, counters)


class ZeroRun(RankRun):
    """ZeroRedundancyOptimizer: parameters replicated, each whole parameter's state on the rank
    it is assigned to; full state via consolidate_state_dict(to=0) and state_dict()."""

    def __init__(self, build: Build, cls: type, setup: Setup) -> None:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        super().__init__(build, cls, setup)
        self.tensors = [torch.nn.Parameter(torch.tensor(p, dtype=torch.float64).to(self.dtype))
                        for g in setup.groups for p in g.params]
        groups = self._groups(self.tensors)
        self.opt = ZeroRedundancyOptimizer(groups, optimizer_class=cls, **build.constructor)

    def _set_grads(self, grads: Sequence[np.ndarray | None]) -> None:
        for p, g in zip(self.tensors, grads, strict=True):
            p.grad = None if g is None else torch.tensor(g, dtype=torch.float64).to(self.dtype)

    def params(self) -> list[np.ndarray] | None:
        return [to_numpy(p) for p in self.tensors] if dist.get_rank() == 0 else None

    def write_params(self, values: Mapping[int, np.ndarray]) -> None:
        with torch.no_grad():
            for i, x in values.items():
                self.tensors[i].copy_(torch.tensor(x, dtype=torch.float64))

    def _keys(self) -> list[Any]:
        return list(range(len(self.tensors)))

    def _holding(self, i: int) -> Any:
        """The parameter whole, on the rank it is assigned to (whose local optimizer, `optim`,
        steps it and keeps its state); None on the others."""
        from adamw_conformance.sharded.rank_judge import Held

        p = self.tensors[i]
        if not any(q is p for g in self.opt.optim.param_groups for q in g["params"]):
            return None
        return Held(0, p.numel(), to_numpy(p), self.opt.optim.state.get(p, {}), tuple(p.shape))

    def _full(self) -> dict[str, Any]:
        self.opt.consolidate_state_dict(to=0)
        return self.opt.state_dict() if dist.get_rank() == 0 else {}

    def _load(self, sd: Any) -> None:
        self.opt.load_state_dict(sd)


class Fsdp2Run(RankRun):
    """FSDP2: each parameter a DTensor sharded on dim 0 (unevenly; a rank's shard may be empty),
    its moments too; full state via torch.distributed.checkpoint.state_dict's
    get/set_optimizer_state_dict(full_state_dict=True). fully_shard refuses 0-dim parameters
    (its message asks for a one-element 1-D one): such a parameter is held as shape (1,)."""

    def __init__(self, build: Build, cls: type, setup: Setup) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        super().__init__(build, cls, setup)
        self.mesh = init_device_mesh("cpu", (self.world,))
        self.module = torch.nn.Module()
        self.module.ps = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.tensor(p, dtype=torch.float64).reshape(self._held(i))
                                .to(self.dtype))
             for i, p in enumerate(p for g in setup.groups for p in g.params)])
        fully_shard(self.module, mesh=self.mesh)
        self.tensors = list(self.module.parameters())
        groups = self._groups(self.tensors)
        self.opt = cls(groups, **build.constructor)

    def _held(self, i: int) -> tuple[int, ...]:
        return self.shapes[i] or (1,)

    def _read(self) -> dict[str, Any]:
        """The full state to read: an optimizer with no state read as holding none, where
        get_optimizer_state_dict would first take a zero step (_init_optim_state: zero
        gradients, lr 0), creating every counter at 1, so that reading would change what it
        reads (reports/sharded-audit.md). A checkpoint (`checkpoint`) still goes through it, as
        a user's does. Every rank holds a shard of every parameter: all take this branch or
        none."""
        if self.opt.state:
            return self._full()
        return {"state": {}, "param_groups": [
            {**{k: v for k, v in g.items() if k != "params"},
             "params": self._keys()[i:i + len(g["params"])]}
            for g, i in zip(self.opt.param_groups, self._starts(), strict=True)]}

    def _starts(self) -> list[int]:
        """Each group's first parameter's index in creation order."""
        starts, i = [], 0
        for g in self.opt.param_groups:
            starts.append(i)
            i += len(g["params"])
        return starts

    def _sharded(self, i: int, x: np.ndarray) -> torch.Tensor:
        from torch.distributed.tensor import distribute_tensor

        full = torch.tensor(x, dtype=torch.float64).reshape(self._held(i)).to(self.dtype)
        return distribute_tensor(full, self.mesh, self.tensors[i].placements)

    def _set_grads(self, grads: Sequence[np.ndarray | None]) -> None:
        for i, (p, g) in enumerate(zip(self.tensors, grads, strict=True)):
            p.grad = None if g is None else self._sharded(i, g)

    def params(self) -> list[np.ndarray] | None:
        full = [to_numpy(p.full_tensor()).reshape(s) for p, s in zip(self.tensors, self.shapes,
                                                                      strict=True)]
        return full if dist.get_rank() == 0 else None

    def write_params(self, values: Mapping[int, np.ndarray]) -> None:
        with torch.no_grad():
            for i, x in values.items():
                self.tensors[i].to_local().copy_(self._sharded(i, x).to_local())

    def _keys(self) -> list[Any]:
        return [f"ps.{i}" for i in range(len(self.tensors))]

    def _holding(self, i: int) -> Any:
        """This rank's rows of dim 0 (Shard(0) splits as torch.chunk: ceil(n / world) rows
        per rank, the last ranks' shards shorter or empty), flat in the created shape."""
        from adamw_conformance.sharded.rank_judge import Held

        p = self.tensors[i]
        local = p.to_local()
        held = self._held(i)
        rows = -(-held[0] // self.world)
        lo = dist.get_rank() * rows * int(np.prod(held[1:], dtype=np.int64)) \
            if local.numel() else 0
        state = {k: x.to_local() if hasattr(x, "to_local") else x
                 for k, x in self.opt.state.get(p, {}).items()}
        return Held(lo, lo + local.numel(), to_numpy(local).reshape(-1), state,
                    tuple(local.shape))

    def _full(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        return get_optimizer_state_dict(self.module, self.opt, options=StateDictOptions(
            full_state_dict=True, cpu_offload=True))

    def _load(self, sd: Any) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        # strict=False: by default a checkpoint in which a parameter has no state yet (no
        # gradient before the save) is refused ("Missing optimizer state for parameter"), where
        # torch.optim's own load_state_dict creates that state at the parameter's first step.
        set_optimizer_state_dict(self.module, self.opt, sd, options=StateDictOptions(
            full_state_dict=True, strict=False))


RUNS: dict[str, type[RankRun]] = {"zero": ZeroRun, "fsdp2": Fsdp2Run}
