"""Effective compute precision from behaviour: is a step of bf16/fp16 parameters within the bound
of arithmetic in float32, or only within that of arithmetic in the parameter dtype?

Shared by dtype.precision (conformance/test_dtype.py) and the convention fingerprint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from adamw_conformance.adapters.base import ParamState
from adamw_conformance.core import record
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import Model, compare

LOW_DTYPES = ("bfloat16", "float16")


def within_compute(cfg: Config, model: Model, before: Sequence[np.ndarray],
                   before_states: Sequence[ParamState | None],
                   grads: Sequence[np.ndarray | None], hypers: Sequence[Mapping[str, float]],
                   after: Sequence[np.ndarray], states: Sequence[ParamState | None] | None,
                   compute: str, exact: Sequence[Any] | None = None) -> bool:
    """Whether a step already taken (`before` -> `after`, state `states` where readable) is within
    the bound of the profile that computes in `compute`, with the same parameter and state
    formats. `exact` reuses oracle results already computed for the same step (one per
    parameter, None where not judged). Parameters without gradient or known state are skipped."""
    for i, g in enumerate(grads):
        s = before_states[i]
        if g is None or s is None:
            continue
        now = states[i] if states is not None else None
        sdtype = now.dtype if now is not None else None
        prec = replace(cfg, compute=compute).precision(sdtype)
        bnd = model.bounds(before[i], g, s.as_mapping(), hypers[i], s.step + 1, prec)
        ex = exact[i] if exact is not None and exact[i] is not None else model.oracle.step(
            before[i], g, s.as_mapping(), hypers[i], s.step + 1)
        got = {"theta": after[i], **(now.as_mapping() if now is not None else {})}
        # A diagnosis, not a verdict: a report must not show the profile it rejected.
        with record.suspended():
            for name, value in got.items():
                if name in bnd and compare(name, value, ex[name], bnd[name],
                                           cfg.dtype if name == "theta"
                                           else (sdtype or cfg.dtype)) is not None:
                    return False
    return True


@dataclass(frozen=True)
class Verdict:
    kind: str  # "float32", the parameter dtype, or "neither"
    text: str


def compute_verdict(seen: Mapping[str, int], dtype: str, declared: str) -> Verdict:
    """The effective arithmetic from counts of steps within each profile's bound: `seen` has
    'steps', 'float32' and `dtype` (how many of the steps were within that profile's bound)."""
    n = seen["steps"]
    if seen["float32"] == n:
        return Verdict("float32", f"computes in float32 and stores {dtype}: all {n} steps within "
                                  "the float32-compute bound")
    if seen[dtype] == n:
        return Verdict(dtype, f"computes in {dtype}: {n - seen['float32']} of {n} steps are "
                              f"outside the float32-compute bound, all within the "
                              f"{dtype}-compute bound")
    return Verdict("neither", f"matches neither profile on every step: {seen['float32']} of {n} "
                              f"within the float32-compute bound, {seen[dtype]} within the "
                              f"{dtype}-compute bound (declared: {declared})")
