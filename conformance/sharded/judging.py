"""The properties' verdict on a sharded target, judged on the ranks: each rank judges the
elements it holds of each parameter and its state against the oracle (rank_judge.py), and the
parent combines the ranks' reports into the verdict judging the gathered values gives: the same
mismatches, in the same order, each with its worst element over all ranks, its count summed.

The values themselves (parameters, state, the oracle's and the bound's) are gathered only where a
property or a failure's notes read them (`RankOutcome`). Where the ranks cannot give that same
verdict (reports and detection record every element's ratio; a layout that decodes a stored
form; a state dtype whose precision would differ once the state is unreadable) the caller
gathers and judges in the parent instead (None).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from adamw_conformance.adapters.base import ParamState
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import Mismatch, Model
from adamw_conformance.core.step import StepInputs, StepOutcome

#: Off: every step is gathered and judged in the parent (the tests compare the two verdicts).
ON_RANKS = True
#: The state dtypes a rank may find (a precision per each is sent with the call).
_STATE_DTYPES = (None, "float16", "bfloat16", "float32", "float64")


class RankOutcome(StepOutcome):
    """A StepOutcome whose mismatches the ranks found; its values are gathered (and judged
    again in the parent, for the oracle's values and bounds) when first read, which must be
    before the run changes (the next step, a write)."""

    def __init__(self, mismatches: list[tuple[int, Mismatch]], inputs: StepInputs,
                 gather: Callable[[], tuple[list[np.ndarray], list[ParamState] | None]],
                 judged: Callable[[list[np.ndarray], list[ParamState] | None], StepOutcome]
                 ) -> None:
        self.mismatches, self.inputs = mismatches, inputs
        self._gather, self._judged = gather, judged
        self._values: tuple[list[np.ndarray], list[ParamState] | None] | None = None
        self._whole: StepOutcome | None = None

    def _read(self) -> tuple[list[np.ndarray], list[ParamState] | None]:
        if self._values is None:
            self._values = self._gather()
        return self._values

    def _all(self) -> StepOutcome:
        if self._whole is None:
            self._whole = self._judged(*self._read())
        return self._whole

    params = property(lambda self: self._read()[0])  # type: ignore[assignment]
    states = property(lambda self: self._read()[1])  # type: ignore[assignment]
    bounds = property(lambda self: self._all().bounds)  # type: ignore[assignment]
    exact = property(lambda self: self._all().exact)  # type: ignore[assignment]


def bare(model: Model) -> Model:
    """The model without its built rule and oracle (a rank builds its own, once)."""
    return dataclasses.replace(model)


def combine(reports: Sequence[Sequence[Any]], n: int, judged: Sequence[bool],
            cfg: Config) -> list[tuple[int, Mismatch]] | None:
    """The ranks' reports as judge_values' mismatches, or None where they cannot be those."""
    mismatches: list[tuple[int, Mismatch]] = []
    readable = True
    per_param = []
    for i in range(n):
        mine = [rep[i] for rep in reports if rep[i] is not None]
        if not mine:
            return None  # no rank holds it: the engine is not one the ranks can judge
        readable &= all(r.readable for r in mine)
        per_param.append(mine)
    for i, mine in enumerate(per_param):
        if not judged[i]:
            continue
        sdtype = mine[0].sdtype
        if not readable and cfg.precision(sdtype) != cfg.precision(None):
            return None  # theta judged under the state's precision; unread, it is the default
        for name in ("theta", *(mine[0].names if readable else ())):
            found = [r.mismatches[name] for r in mine if name in r.mismatches]
            if not found:
                continue
            worst, _, _ = max(found, key=lambda f: (f[1], -f[2]))
            mismatches.append((i, dataclasses.replace(
                worst, count=sum(f[0].count for f in found))))
    return mismatches


def on_ranks(cfg: Config, sharded: Any, run: Any, before: Sequence[np.ndarray],
             before_states: Sequence[ParamState | None], grads: Sequence[np.ndarray | None],
             hypers: Sequence[dict[str, float]], model: Model) -> StepOutcome | None:
    """The step `run` (the suite's wrapper of the ShardedRun `sharded`) just took, judged on
    the ranks; None where the parent must gather and judge instead."""
    from adamw_conformance.core import layout, record, replay
    from adamw_conformance.core.step import judge_values

    if not ON_RANKS or record.active() or layout.translates(run):
        return None
    layout.bind(run)
    counters = [k for scope, k in (sharded.layout.counters if sharded.layout else ())
                if scope == "parameter"]
    items = [None if g is None or s is None else
             (np.asarray(before[i]), np.asarray(g), s.as_mapping(), dict(hypers[i]), s.step + 1)
             for i, (g, s) in enumerate(zip(grads, before_states, strict=True))]
    precisions = {d: cfg.precision(d) for d in _STATE_DTYPES}
    reports = sharded.judge_call(bare(model), precisions, cfg.dtype, items, counters)
    mismatches = combine(reports, len(sharded.shapes), [x is not None for x in items], cfg)
    if mismatches is None:
        return None
    generation = sharded.generation

    def gather() -> tuple[list[np.ndarray], list[ParamState] | None]:
        if sharded.generation != generation:
            raise RuntimeError("a sharded step's values read after the run changed: read "
                               "outcome.params and .states before the next step")
        after = run.params()
        return after, replay.read_states(run, len(after))

    def judged(after: list[np.ndarray], states: list[ParamState] | None) -> StepOutcome:
        return judge_values(cfg, after, states, before, before_states, grads, hypers, model)

    return RankOutcome(mismatches, StepInputs(list(before), list(before_states), list(grads),
                                              model), gather, judged)
