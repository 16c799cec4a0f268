"""Recording err/bound of every verdict, for `--report` and the detection report: off (and free)
unless someone records. The recorder belongs to the run in progress (context.py).

`judge.compare` calls `note` with the output name and the per-element err/bound it judged; the
plugin says which test is running (`current`). Diagnostics that judge against a hypothesis the
verdict rejected (which group's lr explains a result, which compute precision fits) run inside
`suspended()`, so that a report shows what the verdicts saw, not what the diagnosis tried.

    with recording() as seen:
        run the suite in this process
    seen.worst()        # the largest err/bound over all outputs (0.0 if nothing was compared)
    seen.by_output      # {"theta": 0.41, "m": 0.12, ...}
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from adamw_conformance.core import context


@dataclass
class Recorder:
    """err/bound samples per (catalogue id, output), in the order the verdicts made them."""

    samples: dict[tuple[str, str], list[np.ndarray]] = field(default_factory=dict)
    test: str = ""  # catalogue id of the test now running ("" between tests)
    paused: int = 0

    def add(self, output: str, ratios: np.ndarray) -> None:
        if self.paused:
            return
        values = np.asarray(ratios, dtype=np.float64).reshape(-1)
        self.samples.setdefault((self.test, output), []).append(values)

    def ratios(self, test: str, output: str) -> np.ndarray:
        """Every recorded err/bound of one output of one property (nan: not judged)."""
        parts = self.samples.get((test, output), [])
        return np.concatenate(parts) if parts else np.zeros(0)

    @property
    def by_output(self) -> dict[str, float]:
        """The largest err/bound per output over every test (non-finite counts as inf)."""
        worst: dict[str, float] = {}
        for (_, output), parts in self.samples.items():
            for values in parts:
                judged = values[~np.isnan(values)]
                if judged.size:
                    worst[output] = max(worst.get(output, 0.0), float(np.max(judged)))
        return worst

    def worst(self) -> float:
        return max(self.by_output.values(), default=0.0)

    def outputs(self, test: str) -> list[str]:
        return sorted({o for t, o in self.samples if t == test})


def _recorder() -> Recorder | None:
    return context.current().recorder


def active() -> bool:
    """Whether a report is being recorded: the one check a verdict pays when none is."""
    return _recorder() is not None


def note(output: str, ratios: np.ndarray) -> None:
    recorder = _recorder()
    if recorder is not None:
        recorder.add(output, ratios)


def start() -> Recorder:
    """Record every verdict of the session from now on (the plugin starts it for --report)."""
    recorder = context.current().recorder = Recorder()
    return recorder


def stop() -> None:
    context.current().recorder = None


@contextmanager
def recording() -> Iterator[Recorder]:
    """Record every verdict made inside the block (runs of the suite started in it included)."""
    where = context.current()
    previous, where.recorder = where.recorder, Recorder()
    try:
        yield where.recorder
    finally:
        where.recorder = previous


@contextmanager
def current(test: str) -> Iterator[None]:
    """Attribute what is recorded inside the block to catalogue id `test`."""
    recorder = _recorder()
    if recorder is None:
        yield
        return
    previous = recorder.test
    recorder.test = test
    try:
        yield
    finally:
        recorder.test = previous


@contextmanager
def suspended() -> Iterator[None]:
    """Judgements inside the block are diagnoses, not verdicts: not recorded."""
    recorder = _recorder()
    if recorder is None:
        yield
        return
    recorder.paused += 1
    try:
        yield
    finally:
        recorder.paused -= 1
