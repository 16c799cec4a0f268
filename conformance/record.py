"""Observing how close an implementation comes to its bounds: the largest err/bound per output.

Off by default, and free when off. `judge.compare` reports every comparison it makes to
`observe`; while a `recording()` block is open, the largest err/bound seen per output (theta, m,
v, ...) is kept. The detection report (`python -m conformance.detection`) uses it for the
margin of each correct implementation; a run report can use it the same way:

    with recording() as seen:
        run the suite in this process
    seen.worst()        # the largest err/bound over all outputs (0.0 if nothing was compared)
    seen.by_output      # {"theta": 0.41, "m": 0.12, ...}
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_ACTIVE: list[Recorder] = []


@dataclass
class Recorder:
    """The largest err/bound seen per output, and how many comparisons fed it."""

    by_output: dict[str, float] = field(default_factory=dict)
    comparisons: int = 0

    def add(self, output: str, ratio: float) -> None:
        self.comparisons += 1
        if ratio > self.by_output.get(output, float("-inf")):
            self.by_output[output] = ratio

    def worst(self) -> float:
        return max(self.by_output.values(), default=0.0)


def active() -> bool:
    """Whether anyone is recording (so that compare computes ratios only when needed)."""
    return bool(_ACTIVE)


def observe(output: str, ratio: float) -> None:
    """One comparison's largest in-domain err/bound for `output` (inf: non-finite or bound 0)."""
    for recorder in _ACTIVE:
        recorder.add(output, ratio)


@contextmanager
def recording() -> Iterator[Recorder]:
    recorder = Recorder()
    _ACTIVE.append(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.remove(recorder)
