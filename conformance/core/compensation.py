"""Kahan-compensated parameters: a target that keeps beside each bf16/fp16 parameter p a
compensation c in the same dtype holds the value p + c, which the suite judges
(docs/precision-techniques.md).

Found from behaviour: among the tensors of the parameter's shape kept under keys the suite has
no name for (`unnamed_state`), a compensation is one in the parameter's dtype that is, after every
probe step, within half an ulp of p (|c| <= ulp(p) / 2, so that p is p + c rounded) and not zero
after some step (the probe's steps end between representable numbers).

Its store model, in the spec's precision model: the compensated store rounds only what the high
part does not hold, once, to the parameter's format: the pair's result x' is off by at most
u |x' - p| + eta / 2 beyond the arithmetic's own bound, with p the old high part, and
|x' - p| <= |x' - x| + ulp(x) / 2 for the old pair value x. dtype.compensation judges a step
from a pair with a nonzero low part against that bound (weight_decay 0: a decay applied to the
high part alone, as optimi applies it, rounds outside the compensation; dtype.precision and
exact.one_step judge it at the parameter's dtype).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from adamw_conformance.adapters.base import ParamState, capability
from adamw_conformance.core import calls
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import Mismatch, compare
from adamw_conformance.core.stochastic import neighbours
from adamw_conformance.spec.formats import format_of
from adamw_conformance.spec.rounding_model import Bound, margin


def candidates(cfg: Config, run: Any) -> dict[str, bool]:
    """After one probe step: each unnamed tensor of the parameter's dtype that is within half an
    ulp of the parameter, and whether it is nonzero."""
    fmt = format_of(cfg.dtype)
    if fmt.precision >= 24 or not capability(run, "unnamed_state"):
        return {}
    unnamed = calls.guarded("unnamed_state()", run.unnamed_state, 0, timeout=cfg.timeout) or {}
    p = np.asarray(calls.guarded("params()", run.params, timeout=cfg.timeout)[0])
    half = np.where(p == 0, 0.0, _half_ulp(p, fmt))
    out = {}
    for key, (values, dtype) in unnamed.items():
        c = np.asarray(values, dtype=np.float64)
        if format_of(dtype) == fmt and c.shape == p.shape and bool(np.all(np.abs(c) <= half)):
            out[key] = bool(np.any(c != 0))
    return out


def _half_ulp(x: np.ndarray, fmt: Any) -> np.ndarray:
    _, e = np.frexp(np.abs(x))
    return np.ldexp(1.0, np.maximum(e, fmt.emin + 1) - fmt.precision - 1)


def choose(seen: Sequence[Mapping[str, bool]]) -> str | None:
    """The compensation among the probe steps' candidates: a key that was one at every step and
    nonzero at some; None where there is none."""
    if not seen:
        return None
    keys = set(seen[0]).intersection(*seen[1:])
    found = sorted(k for k in keys if any(s[k] for s in seen))
    return found[0] if found else None


def low_parts(high: np.ndarray, dtype: str, rng: np.random.Generator) -> np.ndarray:
    """A low part for each high part, in `dtype`, below half an ulp of it (zero where it is)."""
    fmt = format_of(dtype)
    y = _half_ulp(high, fmt) * rng.uniform(-0.99, 0.99, high.shape)
    lo, _ = neighbours(np.abs(y), fmt)
    return np.where(high == 0, 0.0, np.sign(y) * lo)


def judge(cfg: Config, before: np.ndarray, high: np.ndarray, grad: np.ndarray,
          state: ParamState, hyper: Mapping[str, float], after: np.ndarray
          ) -> tuple[Mismatch | None, Bound]:
    """The compensated step `before` -> `after` (pair values; `high` the high parts `before`
    was made from) against the compensated store's bound: the spec's bound of the arithmetic (no
    final store to the parameter's dtype) plus one rounding to it of what the high part does not
    hold. The high part the target stores is `before` rounded to nearest, no farther from it
    than `high`: |x' - p| <= |x' - x| + ulp(high) / 2."""
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
    return compare("theta", after, exact["theta"], total, cfg.dtype), total
