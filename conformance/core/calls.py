"""Calls into the implementation: each guarded, so that an exception or a hang becomes a readable
failure that names the call, and its params() checked against the parameters it was given."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from adamw_conformance.adapters.base import Run, Setup
from adamw_conformance.core.config import Config


class ImplementationError(AssertionError):
    """The implementation raised, hung or misbehaved: a failure of the test, with its cause."""


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
        raise ImplementationError(f"the implementation did not return from {what} within "
                                  f"{timeout:g} s (set --impl-timeout to allow more)")
    if "error" in box:
        e = box["error"]
        if isinstance(e, ImplementationError):  # already says what the implementation did
            raise e
        raise ImplementationError(f"the implementation raised {type(e).__name__} in {what}: "
                                  f"{e}") from e
    return box.get("value")


def create(cfg: Config, setup: Setup) -> Run:
    __tracebackhide__ = True
    run = guarded("creating the optimizer", cfg.adapter.create, setup, timeout=cfg.timeout)
    if run is None or not callable(getattr(run, "step", None)) \
            or not callable(getattr(run, "params", None)):
        raise ImplementationError(f"creating the optimizer gave {_short(run)}, which has no "
                                  "step(grads) and params() (the adapter protocol's Run)")
    return CheckedRun(run, [np.shape(p) for g in setup.groups for p in g.params], cfg, setup)


def step(cfg: Config, run: Run, grads: Sequence[np.ndarray | None]) -> None:
    __tracebackhide__ = True
    guarded("step()", run.step, list(grads), timeout=cfg.timeout)


def _short(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


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
