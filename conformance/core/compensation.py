"""Kahan-compensated parameters: a target that keeps beside each bf16/fp16 parameter p a
compensation c in the same dtype holds the value p + c, which the suite judges
(docs/precision-techniques.md).

Found from behaviour (core/technique_probe.py): among the tensors of the parameter's shape
kept under keys the suite has no name for (`unnamed_state`), a compensation is one in the
parameter's dtype that is, after every probe step, within half an ulp of p (|c| <= ulp(p) / 2,
so that p is p + c rounded) and not zero after some step (the probe's steps end between
representable numbers).

Its store model, in the spec's precision model: the compensated store rounds only what the high
part does not hold, once, to the parameter's format: the pair's result x' is off by at most
u |x' - p| + eta / 2 beyond the arithmetic's own bound, with p the old high part, and
|x' - p| <= |x' - x| + ulp(p) / 2 for the old pair value x. dtype.compensation judges a step
from a pair with a nonzero low part against that bound (weight_decay 0: a decay applied to the
high part alone, as optimi applies it, rounds outside the compensation; dtype.precision and
exact.one_step judge it at the parameter's dtype).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
from adamw_conformance.adapters.base import ParamState
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import Mismatch, compare
from adamw_conformance.core.representation import neighbours, ulp
from adamw_conformance.spec.formats import Format, format_of
from adamw_conformance.spec.rounding_model import Bound, margin


def _half_ulp(x: np.ndarray, fmt: Format) -> np.ndarray:
    return ulp(x, fmt) / 2


def low_parts(high: np.ndarray, dtype: str, rng: np.random.Generator) -> np.ndarray:
    """A low part for each high part, in `dtype`, below half an ulp of it (zero where it is)."""
    fmt = format_of(dtype)
    y = _half_ulp(high, fmt) * rng.uniform(-0.99, 0.99, high.shape)
    lo, _ = neighbours(np.abs(y), fmt)
    return np.where(high == 0, 0.0, np.sign(y) * lo)


def judge(cfg: Config, before: np.ndarray, high: np.ndarray, grad: np.ndarray,
          state: ParamState, hyper: Mapping[str, float], after: np.ndarray
          ) -> tuple[Mismatch | None, float]:
    """The compensated step `before` -> `after` (pair values; `high` the high parts `before`
    was made from) against the compensated store's bound: the spec's bound of the arithmetic (no
    final store to the parameter's dtype) plus one rounding to it of what the high part does not
    hold. The high part the target stores is `before` rounded to nearest, no farther from it
    than `high`: |x' - p| <= |x' - x| + ulp(high) / 2. Also gives the worst relative error of
    the pairs (the precision they held)."""
    fmt = format_of(cfg.dtype)
    prec = cfg.precision(state.dtype)
    compute_only = replace(prec, param=prec.compute)
    exact, bounds = cfg.model.expect(before, grad, state.as_mapping(), hyper, state.step + 1,
                                     compute_only)
    x_new = np.array([float(v) for v in np.asarray(exact["theta"]).ravel()]).reshape(
        before.shape)
    rest = np.abs(x_new - before) + _half_ulp(high, fmt)
    store = (fmt.u * rest + fmt.eta / 2) * margin(1, fmt.u)
    b = bounds["theta"]
    total = Bound(np.where(b.in_domain, b.value + store, np.inf), b.in_domain, b.sensitivity)
    # relative to the larger of the old and new values: a step that nearly cancels the value
    # leaves a result whose own magnitude says nothing of the pair's precision
    scale = np.maximum(np.abs(x_new), np.abs(before))
    nonzero = scale != 0
    worst = float(np.max(np.abs(after - x_new)[nonzero] / scale[nonzero], initial=0.0))
    return compare("theta", after, exact["theta"], total, cfg.dtype), worst


def bits(worst: float) -> float:
    """A worst relative error as the significand bits it leaves (a measurement, not a verdict:
    the float64 oracle value it is computed from is itself good to 53 bits)."""
    return 53.0 if worst <= 2.0**-53 else -float(np.log2(worst))
