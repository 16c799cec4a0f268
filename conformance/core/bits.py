"""Bitwise comparison of exact float64 images, and where two arrays differ, for a message: what
the exact properties (decouple.moments, groups.*, schedule.lr_zero, scale.*, state.*) demand."""

from __future__ import annotations

import numpy as np

#: How `difference` shows the first differing pair by default: got, then expected.
GOT_EXPECTED = "got {a!r}, expected {b!r}"
#: Two runs' values side by side, as a message that names the runs before it shows them.
VERSUS = "{a!r} vs {b!r}"


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equality of two exact float64 images (-0.0 != 0.0; a NaN equals the same NaN)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and np.array_equal(a.view(np.int64), b.view(np.int64))


def difference(a: np.ndarray, b: np.ndarray, pair: str = GOT_EXPECTED) -> str:
    """Where `a` and `b` differ bitwise, for a failure message: how many elements, and the first
    pair, shown by the format `pair` of `a` and `b` (GOT_EXPECTED, VERSUS, or the caller's)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    diff = np.flatnonzero(a.view(np.int64).reshape(-1) != b.view(np.int64).reshape(-1))
    if not diff.size:
        return "bitwise equal"
    i = int(diff[0])
    return (f"{diff.size} of {a.size} elements differ; first at flat index {i}: "
            + pair.format(a=a.reshape(-1)[i], b=b.reshape(-1)[i]))
