"""Exact values of binary inputs, correct rounding of exact results, and ULP distances.

mpmath holds every value of every format here exactly, so the oracle's inputs are exact. Rounding
an exact result to a format goes straight from the mpf (never through float64, which would round
twice), including subnormals and overflow.
"""

from __future__ import annotations

from typing import Any

import mpmath
import numpy as np
from adamw_conformance.spec.formats import FLOAT32, FLOAT64, Format, format_of
from mpmath.libmp import from_man_exp, round_nearest, to_float


def as_float64(x: Any, copy: bool = True) -> np.ndarray:
    """Any numpy array, torch tensor (bfloat16 included) or scalar as float64, losslessly;
    copy=False returns a float64 array itself (for callers that never write to it)."""
    if hasattr(x, "detach"):  # torch tensor: bf16/fp16/fp32 all widen exactly to float64
        x = x.detach().to("cpu").double().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"expected a real floating-point array, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=copy)


def to_mpf(x: Any) -> np.ndarray:
    """Exact mpf values (object array) of a float array, tensor or Python float."""
    return np.vectorize(mpmath.mpf, otypes=[object])(as_float64(x))


def round_to(x: mpmath.mpf, fmt: Format = FLOAT64) -> float:
    """`x` correctly rounded (to nearest, ties to even) to `fmt`, returned as a Python float."""
    if not mpmath.isfinite(x):
        return float(x)
    if x == 0:
        return float(x)
    sign, man, exp, bc = x._mpf_
    top = exp + bc - 1  # exponent of the leading bit
    # Below the normal range the significand loses bits: round to a fixed absolute quantum.
    prec = fmt.precision - max(0, fmt.emin - top)
    if prec <= 0:
        quantum_exp = fmt.emin - fmt.precision + 1
        half = mpmath.mpf(2) ** (quantum_exp - 1)
        mag = abs(x)
        r = 0.0 if mag < half or (mag == half) else 2.0**quantum_exp
        return -r if sign else r
    rounded = from_man_exp(-man if sign else man, exp, prec, round_nearest)
    # Ties to even for the shortened precision is what from_man_exp with round_nearest does.
    value = to_float(rounded, rnd=round_nearest)
    if abs(value) > fmt.max:
        return float("-inf") if value < 0 else float("inf")
    return value


def round_array(values: np.ndarray, fmt: Format = FLOAT64) -> np.ndarray:
    """Elementwise `round_to` of an object array of mpf; float64 array of representable values."""
    out = np.frompyfunc(lambda v: round_to(v, fmt), 1, 1)(values)
    return np.asarray(out, dtype=np.float64)


def ordered_key(x: Any, fmt: Format) -> np.ndarray:
    """An int64 key, monotone in the value, on which adjacent numbers of `fmt` differ by one.

    Works for every format here (bfloat16 included) by counting representable magnitudes, instead of
    reinterpreting bits (numpy has no bfloat16 and its ULP helpers overflow int32).
    """
    a = as_float64(x)
    mag = np.abs(a)
    finite = np.isfinite(mag)
    # frexp gives the exponent exactly (log2 rounds up just below a power of two in float64), and
    # the index is built in int64: float64 indices pass 2**53 and would lose the last steps.
    _, ex = np.frexp(np.where(finite, mag, 0.0))
    e = np.maximum(ex.astype(np.int64) - 1, fmt.emin)
    # mag / quantum, quantum = 2**(e - p + 1): an integer below 2**p, exact in float64.
    scaled = np.ldexp(np.where(finite, mag, 0.0), -(e - (fmt.precision - 1)))
    steps = np.rint(scaled).astype(np.int64)
    # Numbers below 2**e (all binades from emin up to e) and the steps of mag's own binade.
    index = (e - fmt.emin) * (1 << (fmt.precision - 1)) + steps
    index = np.where(mag == 0, 0, index)
    index = np.where(finite, index, (fmt.emax - fmt.emin + 2) * (1 << (fmt.precision - 1)))
    return np.where(a < 0, -index, index).astype(np.int64)


def ulp_distance(a: Any, b: Any, fmt: Format | str = FLOAT32) -> np.ndarray:
    """How many representable numbers of `fmt` lie between a and b (both on fmt's grid)."""
    if not isinstance(fmt, Format):
        fmt = format_of(fmt)
    return np.abs(ordered_key(a, fmt) - ordered_key(b, fmt))


__all__ = ["as_float64", "to_mpf", "round_to", "round_array", "ordered_key", "ulp_distance",
           "FLOAT32", "FLOAT64"]
