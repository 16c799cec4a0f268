"""Worker side of the properties' sharded verdict: one rank judges the elements it holds of each
parameter (and of its state) against the oracle step, and reports its mismatches with their
place in the whole parameter; sharded/judging.py combines the ranks' reports in the parent.

The suite's spec (SymPy, mpmath) is imported here on a rank's first judged step only: a worker
that is never asked to judge starts in the time torch takes to import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from adamw_conformance.sharded.arrays import STEP_NAMES, to_numpy


@dataclass(frozen=True)
class Held:
    """What a rank holds of one parameter: the flat elements [lo, hi) of the parameter (in its
    created shape, C order), their values after the step, and the state entries there (local
    tensors), or the whole entry where the rank holds the parameter whole."""

    lo: int
    hi: int
    theta: np.ndarray
    state: Mapping[str, Any]
    #: the shape the rank's local tensors of this parameter have (state arrays are those)
    local_shape: tuple[int, ...]


@dataclass
class Report:
    """One rank's report on one parameter: whether its state reads as the parent's adapter
    reads it (keys of the spec's names, nothing unknown), the state's dtype, and per output the
    worst element outside its bound (as `Mismatch`, index and total of the whole parameter),
    with its err/bound ratio and flat index (to pick the worst across ranks)."""

    readable: bool
    sdtype: str | None
    names: tuple[str, ...] = ()
    mismatches: dict[str, tuple[Any, float, int]] = field(default_factory=dict)


_MODELS: dict[Any, Any] = {}


def _keys(held: Held, counters: Sequence[str]) -> dict[str, str] | None:
    """The spec's names of the state's arrays as the adapter finds them (adapter._keys), or
    None where the adapter would not read this state."""
    from adamw_conformance.adapters.torch_optim import STATE_KEYS

    arrays = {k for k, x in held.state.items() if isinstance(x, torch.Tensor)
              and tuple(x.shape) == held.local_shape and k not in STEP_NAMES}
    keys = {name: key for name, cands in STATE_KEYS.items()
            if (key := next((c for c in cands if c in arrays), None)) is not None}
    unknown = arrays - set(keys.values()) - set(STEP_NAMES) - set(counters)
    return None if not keys or unknown else keys


def judge_held(held: Sequence[Held | None], shapes: Sequence[tuple[int, ...]], model: Any,
               precisions: Mapping[str | None, Any], fmt: str,
               items: Sequence[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray],
                                     dict[str, float], int] | None],
               counters: Sequence[str]) -> list[Report | None]:
    """This rank's report per parameter (None where it holds none of it). `items[i]`: the step
    judged for parameter i, whole (before, gradient, state before, hyperparameters, t), or
    None where it is not judged (no gradient, state before unknown)."""
    from adamw_conformance.adapters.base import ParamState
    from adamw_conformance.core.judge import compare

    model = _MODELS.setdefault(model, model)  # one rule built per rank, not one per step
    out: list[Report | None] = []
    for i, h in enumerate(held):
        if h is None:
            out.append(None)
            continue
        keys = _keys(h, counters)
        local = {name: to_numpy(h.state[key]).reshape(-1) for name, key in keys.items()} \
            if keys else {}
        sdtype = str(h.state[next(iter(keys.values()))].dtype).split(".")[-1] if keys else None
        report = Report(keys is not None, sdtype,
                        tuple(ParamState.of(local, 0).as_mapping()) if keys else ())
        out.append(report)
        item = items[i]
        if item is None or h.hi == h.lo:
            continue
        before, grad, state, hyper, t = item
        part = slice(h.lo, h.hi)
        exact, bound = model.expect(
            np.asarray(before).reshape(-1)[part], np.asarray(grad).reshape(-1)[part],
            {k: np.asarray(x).reshape(-1)[part] for k, x in state.items()}, hyper, t,
            precisions[sdtype])
        for name, got in {"theta": h.theta.reshape(-1), **local}.items():
            if name not in bound:
                continue
            bad = compare(name, got, exact[name], bound[name],
                          fmt if name == "theta" else (sdtype or fmt))
            if bad is not None:
                report.mismatches[name] = _placed(bad, h.lo, shapes[i])
    return out


def _placed(bad: Any, lo: int, shape: tuple[int, ...]) -> tuple[Any, float, int]:
    """A local mismatch as one of the whole parameter: its index and total there, with the
    err/bound ratio that ranks it and its flat index."""
    import mpmath

    flat = lo + int(bad.index[0])
    err = abs(mpmath.mpf(bad.got) - bad.exact) if np.isfinite(bad.got) else mpmath.inf
    ratio = float(err / bad.bound) if bad.bound > 0 else float("inf")
    bad.index = tuple(int(k) for k in np.unravel_index(flat, shape))
    bad.total = int(np.prod(shape, dtype=np.int64))
    return bad, ratio, flat
