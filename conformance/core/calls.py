"""Calls into the implementation: each guarded, so that an exception or a hang becomes a readable
failure that names the call, and its params() checked against the parameters it was given.

Two things about the target are the harness's to find out, never the target's to be blamed for:
its one-time costs (an extension loaded or a step compiled by the first call), paid in a warm-up
before any call is held to the per-call limit (`warm_up`), and the options it refuses at
construction or on use (`refusal`), which the properties skip, saying why.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from adamw_conformance.adapters.base import GroupSetup, Run, Setup
from adamw_conformance.core.config import Config
from adamw_conformance.core.errors import (  # noqa: F401 - the names callers import from here
    ImplementationError,
    TimedOut,
    _short_path,
)

#: The warm-up's limit, in per-call limits (--impl-timeout): a first call that loads or compiles
#: may take several times an ordinary one; a warm-up that does not end within it is reported and
#: the calls after it keep their own limit.
WARM_UP_LIMITS = 5


def guarded(what: str, fn: Callable[..., Any], *args: Any, timeout: float = 60.0) -> Any:
    """Call into the implementation: an exception or a hang becomes a readable failure."""
    # pytest leaves these frames out of failure reports: the user reads the implementation's
    # own traceback and the message, not the suite's plumbing.
    __tracebackhide__ = True
    box: dict[str, Any] = {}

    def target() -> None:
        __tracebackhide__ = True
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - everything the implementation raises
            box["error"] = e

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimedOut(f"the implementation did not return from {what} within {timeout:g} s "
                       "(set --impl-timeout to allow more)")
    if "error" in box:
        e = box["error"]
        if isinstance(e, ImplementationError):  # already says what the implementation did
            raise e
        raise ImplementationError(f"the implementation raised {type(e).__name__} in {what}: "
                                  f"{said(e)}") from e
    return box.get("value")


def said(e: BaseException) -> str:
    """What an exception says: its message, or, where that is empty (a bare `assert`), where it
    was raised and the line that raised it."""
    text = str(e).strip()
    if text:
        return text
    frames = traceback.extract_tb(e.__traceback__)
    if not frames:
        return "(no message)"
    last = frames[-1]
    line = (last.line or "").strip()
    return (f"(no message) at {_short_path(last.filename)}:{last.lineno} in {last.name}"
            + (f": {line}" if line else ""))


def create(cfg: Config, setup: Setup) -> Run:
    __tracebackhide__ = True
    warm_up(cfg)
    run = guarded("creating the optimizer", cfg.adapter.create, setup, timeout=cfg.timeout)
    if run is None or not callable(getattr(run, "step", None)) \
            or not callable(getattr(run, "params", None)):
        raise ImplementationError(f"creating the optimizer gave {_short(run)}, which has no "
                                  "step(grads) and params() (the adapter protocol's Run)")
    return CheckedRun(run, [np.shape(p) for g in setup.groups for p in g.params], cfg, setup)


def step(cfg: Config, run: Run, grads: Sequence[np.ndarray | None]) -> None:
    __tracebackhide__ = True
    guarded("step()", run.step, list(grads), timeout=cfg.timeout)


def set_lr(cfg: Config, run: Run, group: int, lr: float) -> None:
    """A schedule's change of group `group`'s lr (the adapter's set_lr), guarded."""
    __tracebackhide__ = True
    guarded("set_lr()", run.set_lr, group, lr, timeout=cfg.timeout)


# --- one-time costs ----------------------------------------------------------------------------

@dataclass(frozen=True)
class WarmUp:
    """The first creation and step of a target in this process, before any per-call limit."""

    seconds: float
    error: str | None = None  # what the warm-up raised or that it did not end (it goes on)
    #: graphs torch.compile compiled during it (0: none, or the compiler never loaded)
    compiled: int = 0

    def line(self, timeout: float) -> str:
        """What the header and the report say about it."""
        if self.error is not None:
            return (f"warm-up (first creation and step, {self.seconds:.1f} s, before the "
                    f"per-call limit) did not complete: {self.error}")
        return (f"one-time cost: the first creation and step took {self.seconds:.2f} s (loading, "
                f"compiling), paid in a warm-up before the per-call limit of {timeout:g} s")


_WARM: dict[tuple[int, str, str], tuple[Any, WarmUp | None]] = {}


def warm_up(cfg: Config) -> WarmUp | None:
    """Create the target once and step it once, with WARM_UP_LIMITS times the per-call limit,
    the first time this process creates it in this dtype on this device: what a first call costs
    once (an extension loaded, a kernel compiled) is paid here, not by a judged call. What it
    cost is kept (`warmed`); a warm-up that raised is not a verdict (the judged calls say)."""
    key = (id(cfg.adapter), cfg.dtype, cfg.device)
    if key in _WARM:
        return _WARM[key][1]
    _WARM[key] = (cfg.adapter, None)  # the calls below must not warm up again
    from adamw_conformance.core.strategies import typical_hyper

    limit = WARM_UP_LIMITS * cfg.timeout
    setup = Setup([GroupSetup([np.full(4, 0.5)], typical_hyper(cfg.model.rule_name))],
                  cfg.dtype, cfg.device)
    start, error = time.perf_counter(), None
    graphs = compiled_graphs()
    try:
        run = guarded("creating the optimizer (warm-up)", cfg.adapter.create, setup,
                      timeout=limit)
        guarded("step() (warm-up)", run.step, [np.full(4, 0.25)], timeout=limit)
    except ImplementationError as e:
        error = str(e)
    except Exception as e:  # noqa: BLE001 - a run without step(): create() says so, judged
        error = f"{type(e).__name__}: {said(e)}"
    done = WarmUp(time.perf_counter() - start, error, compiled_graphs() - graphs)
    _WARM[key] = (cfg.adapter, done)
    return done


def compiled_graphs() -> int:
    """torch.compile's count of graphs compiled in this process (0 where it never loaded)."""
    dynamo = sys.modules.get("torch._dynamo.utils")
    return int(dynamo.counters["stats"]["unique_graphs"]) if dynamo is not None else 0


def warmed(cfg: Config) -> WarmUp | None:
    """The warm-up of `cfg`'s target in this process, if there was one."""
    entry = _WARM.get((id(cfg.adapter), cfg.dtype, cfg.device))
    return entry[1] if entry is not None else None


# --- options the target refuses ----------------------------------------------------------------

_REFUSED: dict[tuple[Any, ...], tuple[Any, str | None]] = {}


def refusal(cfg: Config, options: Mapping[str, Any]) -> str | None:
    """Why the target refuses `options` at construction or on use, or None where it takes them.

    A probe, once per target and options: a small run created with the options and stepped
    twice, and, where that raised, the same run without them (the control). The options are
    refused only where the first raised and the control did not: a target that fails either way
    is judged, not excused. A hang is not a refusal."""
    wanted = {k: v for k, v in options.items() if cfg.caps.options.get(k, _UNSET) != v}
    if not wanted:
        return None
    key = (id(cfg.adapter), cfg.dtype, cfg.device, tuple(sorted(wanted.items())))
    if key not in _REFUSED:
        _REFUSED[key] = (cfg.adapter, _probe_refusal(cfg, wanted))
    return _REFUSED[key][1]


_UNSET = object()


def refusals(cfg: Config) -> list[str]:
    """Every refusal found for `cfg`'s target in this process (for the summary and report)."""
    return [why for (ident, dtype, device, _), (_, why) in _REFUSED.items()
            if why is not None and ident == id(cfg.adapter) and (dtype, device) == (cfg.dtype,
                                                                                 cfg.device)]


def _probe_refusal(cfg: Config, wanted: dict[str, Any]) -> str | None:
    from adamw_conformance.core.strategies import typical_hyper

    hyper = typical_hyper(cfg.model.rule_name)

    def attempt(options: dict[str, Any]) -> None:
        run = create(cfg, Setup([GroupSetup([np.full(4, 0.5)], hyper)], cfg.dtype, cfg.device,
                                options))
        for g in (0.25, -0.125):
            step(cfg, run, [np.full(4, g)])

    try:
        attempt(wanted)
        return None
    except TimedOut:
        return None
    except ImplementationError as e:
        cause = str(e)
    try:
        attempt({})
    except ImplementationError:
        return None
    named = ", ".join(f"{k}={v!r}" for k, v in wanted.items())
    cause = cause.rstrip(". ")
    return (f"{cfg.adapter.name} refuses {named}: with it {cause[0].lower() + cause[1:]}, "
            "without it the same calls succeed")


def _short(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"
#: Called with a run the suite created before its parameters are read: core/layout.py sets it
#: to its `bind`, which tells the run its layout (a Kahan pair is read as its sum).
before_params: Callable[[Any], Any] | None = None


class CheckedRun:
    """A Run whose params() is checked against the parameters it was created with: one float
    array of the created shape per parameter. Whatever else an implementation returns (None,
    text, a missing or reshaped parameter) becomes an ImplementationError that says so, never an
    error deep inside a comparison. Everything else is the wrapped Run's own."""

    def __init__(self, run: Any, shapes: Sequence[tuple[int, ...]], judged_by: Config | None = None,
                 created_with: Setup | None = None) -> None:
        self._run, self._shapes = run, list(shapes)
        # What reading its state needs (core/layout.py): the target's layout is the run
        # config's, the hyperparameters those it was created with.
        self.judged_by, self.created_with = judged_by, created_with
        self.layout_told = False

    @property
    def suite_run(self) -> CheckedRun:
        """This run, also through a wrapper that forwards attributes (a test's stand-in)."""
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run, name)

    def step(self, grads: Sequence[np.ndarray | None]) -> Any:
        return self._run.step(grads)

    def params(self) -> list[np.ndarray]:
        __tracebackhide__ = True
        if self.judged_by is not None and before_params is not None:
            before_params(self)
        got = self._run.params()
        want = (f"expected a list of {len(self._shapes)} float arrays, one per parameter in "
                "creation order")
        if isinstance(got, (str, bytes)) or not hasattr(got, "__len__") \
                or len(got) != len(self._shapes):
            raise ImplementationError(f"the implementation's params() returned {_short(got)}: "
                                      + want)
        out = []
        for i, (p, shape) in enumerate(zip(got, self._shapes, strict=True)):
            try:
                x = np.asarray(p, dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise ImplementationError(f"the implementation's params() gave parameter {i} as "
                                          f"{_short(p)}, not numbers ({e}): {want}") from None
            if x.shape != tuple(shape):
                raise ImplementationError(f"the implementation's params() gave parameter {i} "
                                          f"with shape {x.shape}, created with shape "
                                          f"{tuple(shape)}")
            out.append(x)
        return out
