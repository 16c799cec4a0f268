"""Verdicts on a block-quantized stored state (spec/quantization.py: the store model).

The library dequantizes, updates in float32 and requantizes. So the new state it stores,
decoded, is judged against the exact new state within the store model's bound (half the gap
between the codes around it times the block's scale, the clamp terms, the float32 bound of the
unquantized update), and each block's scale against the absmax of the exact new state. The
parameter is judged as usual, from the decoded old state, with the float32 bound.
"""

from __future__ import annotations

from typing import Any

import mpmath
import numpy as np
from adamw_conformance.adapters.base import Stored
from adamw_conformance.core.judge import Mismatch, compare
from adamw_conformance.spec.bounds import Bound
from adamw_conformance.spec.lazy_oracle import ExactOutput
from adamw_conformance.spec.quantization import scheme


def approximate(exact: Any) -> tuple[np.ndarray, np.ndarray]:
    """The exact output in float64 and a bound on that float64 value's error: the filter's
    estimate where it makes a claim, mpmath elsewhere."""
    shape = np.shape(exact)
    if isinstance(exact, ExactOutput) and exact.estimate is not None:
        est = exact.estimate
        value = np.array(np.broadcast_to(est.value, shape), dtype=np.float64)
        error = np.array(np.broadcast_to(est.error, shape), dtype=np.float64)
        for flat in np.flatnonzero(~np.broadcast_to(est.ok, shape)):
            idx = np.unravel_index(int(flat), shape)
            e = exact.at(idx)
            value[idx] = float(e)
            error[idx] = np.nextafter(float(abs(e - mpmath.mpf(value[idx]))), np.inf)
        return value, error
    full = np.asarray(exact)
    value = full.astype(np.float64)
    error = np.vectorize(lambda e, v: np.nextafter(float(abs(mpmath.mpf(e) - mpmath.mpf(v))),
                                                   np.inf),
                         otypes=[np.float64])(full, value) if full.dtype == object \
        else np.zeros(shape)
    return value, error


def compare_stored(name: str, stored: Stored, got: np.ndarray, exact: Any, bound: Bound,
                   fmt: str) -> Mismatch | None:
    """The worst element (or block scale) of a quantized state outside the store model."""
    sch = scheme(stored.scheme)
    x, err = approximate(exact)
    domain = np.broadcast_to(bound.in_domain, np.shape(got))
    inner = np.where(domain, np.broadcast_to(bound.value, np.shape(got)), 0.0) + err
    lo, hi = sch.scale_interval(name, x, inner)
    scales = np.asarray(stored.scales, dtype=np.float64)
    bad = ((scales < lo) | (scales > hi)) & np.isfinite(lo) & np.isfinite(hi)
    if bad.any():
        mid = (lo + hi) / 2
        half = (hi - lo) / 2
        ratio = np.where(bad, np.abs(scales - mid) / np.where(half > 0, half, np.inf), -1.0)
        k = int(np.argmax(ratio))
        return Mismatch(f"{name} block scale", (k,), float(scales[k]), mpmath.mpf(mid[k]),
                        float(half[k]), int(bad.sum()), int(scales.size), "float32")
    # the store model bounds the distance from the float64 estimate x; x is within err of
    # the exact value
    # (rounded up: the sum's own rounding, and a tiny value's underflow, must not shrink it)
    allowed = np.nextafter(sch.store_bound(name, x, inner, scales) + err, np.inf)
    return compare(name, got, exact, Bound(np.where(domain, allowed, np.inf), domain), fmt)
