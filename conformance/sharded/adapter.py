"""The parent's side of a sharded target: `--impl=ENGINE:TARGET` (`zero:torch.optim.AdamW`),
presented through the adapter protocol like any other.

Calls go to every rank (the pool); reads come from rank 0, where the engines gather the full
values. The state is read and written through the engine's full-state API, once per step: a
read takes the whole full state (cached until the run changes), and replay's writes (state and
parameters) are kept and sent in one call before the run is next used.
"""

from __future__ import annotations

import atexit
import os
import shutil
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from adamw_conformance.adapters.base import ParamState, Place, Setup, StateLayout
from adamw_conformance.adapters.torch_optim import (
    _STEP_NAMES,
    STATE_KEYS,
    TorchOptimizerAdapter,
)
from adamw_conformance.sharded import DEFAULT_WORLD
from adamw_conformance.sharded import pool as pools
from adamw_conformance.sharded.engines import Build


def inner_adapter(text: str, directory: str | None) -> TorchOptimizerAdapter:
    """The torch.optim.Optimizer subclass the engine shards, as the torch adapter drives it."""
    import inspect

    import torch
    from adamw_conformance.core.loading import TargetError, load

    obj, _path, kwargs = load(text, directory)
    if not (inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer)):
        raise TargetError(f"--impl: a sharded engine shards a torch.optim.Optimizer subclass; "
                          f"{text!r} is a {type(obj).__name__}")
    adapter = TorchOptimizerAdapter(obj, kwargs)
    unknown = [k for k in kwargs if k not in adapter.accepted and not adapter.takes_kwargs]
    if unknown:
        raise TargetError(f"--impl={text!r}: {obj.__name__} takes no keyword(s) {unknown}")
    return adapter


class ShardedAdapter:
    """`engine` sharding the optimizer `text` names over `world` ranks."""

    def __init__(self, engine: str, text: str, world: int = DEFAULT_WORLD,
                 directory: str | os.PathLike[str] | None = None,
                 timeout: float | None = None) -> None:
        self.engine, self.text, self.world = engine, text, world
        #: the per-call limit where no suite session gives one (--impl-timeout)
        self.limit = timeout
        self.directory = str(directory) if directory is not None else os.getcwd()
        self.inner = inner_adapter(text, self.directory)
        self.name = f"{engine}:{self.inner.name} ({world} ranks)"
        self.version = self.inner.version
        self.options = self.inner.options
        self.fixed, self.pinned, self.rule = self.inner.fixed, self.inner.pinned, self.inner.rule
        #: the sharded class (what --rule=auto reads, as for the torch adapter)
        self.cls = self.inner.cls

    @property
    def orders(self) -> tuple[str, ...]:
        return self.inner.orders

    def accepts(self, option: str) -> bool:
        return self.inner.accepts(option)

    def timeout(self) -> float:
        """This run's per-call limit, a little under the suite's own (--impl-timeout), so that
        the pool's message, which names the rank, is the one a user reads."""
        from adamw_conformance.core import session

        current = session.current()
        limit = self.limit or (current.timeout if current is not None else 60.0)
        return max(0.5, 0.9 * limit)

    def build(self, setup: Setup) -> Build:
        """The constructor's keywords, as the torch adapter passes them (group 0's
        hyperparameters double as the defaults; every group sets its own)."""
        groups = tuple(self.inner._group_kwargs(g.hyper) for g in setup.groups)
        options = {k: v for k, v in setup.options.items() if self.inner.accepts(k)}
        inner_text = self.text if "(" not in self.text else self.text.partition("(")[0]
        return Build(inner_text, self.directory, groups,
                     {**groups[0], **options, **self.inner.fixed})

    def create(self, setup: Setup) -> ShardedRun:
        limit = self.timeout()
        workers = pools.pool(self.world, start_timeout=max(4 * limit, 60.0))
        kind = ReadOnlyShardedRun if self.engine.startswith("deepspeed-") else ShardedRun
        return kind(self, workers, setup, limit)


def _free(workers: pools.WorkerPool, run_id: int) -> None:
    workers.pending_free.append(run_id)


class ShardedRun:
    def __init__(self, adapter: ShardedAdapter, workers: pools.WorkerPool, setup: Setup,
                 limit: float) -> None:
        self.adapter, self.workers, self.setup, self.limit = adapter, workers, setup, limit
        self.id = pools.new_id()
        self.shapes = [tuple(np.shape(p)) for g in setup.groups for p in g.params]
        self.group_of = setup.group_of()
        self.layout: StateLayout | None = None
        self._snapshot: dict[str, list[dict[str, Any]]] | None = None
        self._params: list[np.ndarray] | None = None
        self._dirty_state: dict[int, dict[str, Any]] = {}
        self._dirty_groups: dict[int, dict[str, Any]] = {}
        self._dirty_params: dict[int, np.ndarray] = {}
        #: counts the changes to the run: a step's values read after one are not that step's
        self.generation = 0
        self._call("create", (adapter.engine, adapter.build(setup), setup),
                   "creating the optimizer")
        weakref.finalize(self, _free, workers, self.id)

    def _call(self, op: str, args: tuple, what: str) -> list[Any]:
        return self.workers.call(op, self.id, args, what, self.limit)

    def _flush(self) -> None:
        """Send replay's writes, in one call each for parameters and state."""
        if self._dirty_params:
            self._call("write_params", (dict(self._dirty_params),), "writing parameters")
            self._dirty_params.clear()
        if self._dirty_state or self._dirty_groups:
            state = [self._dirty_state.get(i) for i in range(len(self.shapes))]
            groups = [self._dirty_groups.get(g, {}) for g in range(len(self.setup.groups))]
            self._call("load_full", (state, groups), "loading the full state")
            self._dirty_state.clear()
            self._dirty_groups.clear()

    def _changed(self) -> None:
        self._snapshot, self._params = None, None
        self.generation += 1

    def judge_call(self, *args: Any) -> list[Any]:
        """Every rank's reports on the step just taken (sharded/rank_judge.py)."""
        self._flush()
        return self._call("judge", args, "judging the step on the ranks")

    def judge_step_on_ranks(self, cfg: Any, run: Any, before: Sequence[np.ndarray],
                            before_states: Sequence[ParamState | None],
                            grads: Sequence[np.ndarray | None],
                            hypers: Sequence[dict[str, float]], model: Any) -> Any:
        """The step just taken judged where its values live (sharded/judging.py): a
        StepOutcome, or None where the parent must gather and judge."""
        from adamw_conformance.sharded import judging

        return judging.on_ranks(cfg, self, run, before, before_states, grads, hypers, model)

    # the protocol ------------------------------------------------------------------------

    def step(self, grads: Sequence[np.ndarray | None]) -> None:
        self._flush()
        self._changed()
        self._call("step", ([None if g is None else np.asarray(g) for g in grads],), "step()")

    @property
    def amp_step(self) -> Any:
        """Loss scaling through torch.amp.GradScaler (engines.RankRun.amp_step), for ZeRO
        and FSDP2 (whose DTensor gradients make the scaler's found_inf agree across ranks)."""
        return self._amp_step if self.adapter.engine in ("zero", "fsdp2") else None

    def _amp_step(self, grads: Sequence[np.ndarray | None], scale: float,
                  unscale_first: bool = False) -> None:
        self._flush()
        self._changed()
        self._call("amp_step", ([None if g is None else np.asarray(g) for g in grads], scale,
                                unscale_first), "amp_step()")

    def params(self) -> list[np.ndarray]:
        self._flush()
        if self._params is None:
            self._params = self._call("params", (), "params()")[0]
        return [p.copy() for p in self._params]

    def write_params(self, i: int, values: np.ndarray) -> None:
        self.generation += 1
        self._dirty_params[i] = np.array(values, dtype=np.float64)
        if self._params is not None:
            self._params[i] = self._dirty_params[i].copy()

    def set_lr(self, group: int, lr: float) -> None:
        self._flush()
        self._changed()
        self._call("set_lr", (group, lr), "set_lr()")

    def state_dict(self) -> Any:
        """The engine's own checkpoint (its full state dict), as a resume would load it. Reading
        it may change the run (FSDP2 creates a missing state by a step): read afresh after."""
        self._flush()
        self._changed()
        return self._call("checkpoint", (), "state_dict()")[0]

    def load_state_dict(self, sd: Any) -> None:
        self._flush()
        self._changed()
        self._call("load_checkpoint", (sd,), "load_state_dict()")

    # the state, through the engine's full state ---------------------------------------

    def _full(self) -> dict[str, list[dict[str, Any]]]:
        if self._snapshot is None:
            self._flush()
            self._snapshot = self._call("full_state", (), "reading the full state")[0]
        return self._snapshot

    def use_layout(self, layout: StateLayout) -> None:
        self.layout = layout

    def scalars(self, i: int) -> dict[Place, float]:
        full = self._full()
        out: dict[Place, float] = {("parameter", k): float(x)
                                   for k, x in full["state"][i].items() if not isinstance(x, tuple)}
        out.update({("group", k): float(x) for k, x in full["groups"][self.group_of[i]].items()})
        return out

    def _counters(self, entry: Mapping[str, Any]) -> tuple[Place, ...]:
        if self.layout is not None:
            return self.layout.counters
        return next(((("parameter", n),) for n in _STEP_NAMES if n in entry), ())

    def _keys(self, i: int) -> dict[str, str] | None:
        entry = self._full()["state"][i]
        arrays = {k for k, x in entry.items() if isinstance(x, tuple)
                  and x[0].shape == self.shapes[i]}
        keys = {name: key for name, cands in STATE_KEYS.items()
                if (key := next((c for c in cands if c in arrays), None)) is not None}
        counters = {k for scope, k in self._counters(entry) if scope == "parameter"}
        unknown = arrays - set(keys.values()) - set(_STEP_NAMES) - counters
        return None if not keys or unknown else keys

    def state_keys(self, i: int) -> dict[str, str]:
        return self._keys(i) or {}

    def read_state(self, i: int) -> ParamState | None:
        keys = self._keys(i)
        if keys is None:
            return None
        full = self._full()
        entry = full["state"][i]
        places = self._counters(entry)
        t = 0
        if places:
            scope, key = places[0]
            holder = entry if scope == "parameter" else full["groups"][self.group_of[i]]
            t = int(holder.get(key, 0) or 0)
        first = entry[next(iter(keys.values()))]
        return ParamState.of({name: entry[key][0].copy() for name, key in keys.items()}, t,
                             first[1])

    def write_state(self, i: int, state: ParamState) -> bool:
        keys = self._keys(i)
        if keys is None:
            return False
        values = state.as_mapping()
        if any(name not in keys for name in values if name != "vmax"):
            return False
        places = self._counters(self._full()["state"][i])
        if any(scope not in ("parameter", "group") for scope, _ in places):
            return False
        full = self._full()
        self.generation += 1
        entry, change = full["state"][i], self._dirty_state.setdefault(i, {})
        for name, x in values.items():
            if name in keys:
                key = keys[name]
                entry[key] = (np.array(x, dtype=np.float64), entry[key][1])
                change[key] = entry[key][0]
        for scope, key in places:
            if scope == "parameter":
                entry[key] = change[key] = float(state.step)
            else:
                g = self.group_of[i]
                full["groups"][g][key] = float(state.step)
                self._dirty_groups.setdefault(g, {})[key] = float(state.step)
        return True


#: The folders of DeepSpeed checkpoints this process's workers wrote, removed at exit.
_CHECKPOINTS: set[str] = set()


class ReadOnlyShardedRun(ShardedRun):
    """An engine whose state the suite reads but does not write (DeepSpeed): replay is refused;
    fresh-state and trajectory checks judge it, and its own checkpoint (a directory, named by
    state_dict()) is round-tripped."""

    def state_dict(self) -> Any:
        folder = os.path.dirname(path := super().state_dict())
        if folder not in _CHECKPOINTS:
            _CHECKPOINTS.add(folder)
            atexit.register(shutil.rmtree, folder, True)
        return path
    #: its ranks hold flat partitions the workers do not map to parameters: judged gathered
    judge_step_on_ranks = None  # type: ignore[assignment]
    #: DeepSpeed scales the loss itself (its fp16 config), not through torch's GradScaler
    amp_step = None  # type: ignore[assignment]

    def write_state(self, i: int, state: ParamState) -> bool:
        return False
