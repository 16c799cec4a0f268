"""What a target's parameters hold beyond their dtype, once the layout probe has found it
(core/layout.py records it here; core/config.py reads it for the precision profile), and the
grid of a format around a value, which both techniques are judged on
(docs/precision-techniques.md). A leaf module: it imports nothing of the suite's core."""

from __future__ import annotations

from typing import Any

import numpy as np
from adamw_conformance.spec.formats import Format

#: The rounding found for each target: (adapter, dtype, device, rule) -> (adapter, rounding).
#: The adapter is kept in the value, so that a key's id() is never reused by another object.
_ROUNDING: dict[tuple[int, str, str, str], tuple[Any, str]] = {}


def _key(cfg: Any) -> tuple[int, str, str, str]:
    return (id(cfg.adapter), cfg.dtype, cfg.device, cfg.model.rule_name)


def note_rounding(cfg: Any, rounding: str) -> None:
    """Record how `cfg`'s target rounds into its parameters ("nearest" or "stochastic")."""
    _ROUNDING[_key(cfg)] = (cfg.adapter, rounding)


def rounding(cfg: Any) -> str:
    """How `cfg`'s target rounds into its parameters, as found; "nearest" until it is."""
    known = _ROUNDING.get(_key(cfg))
    return known[1] if known is not None and known[0] is cfg.adapter else "nearest"


def ulp(x: np.ndarray, fmt: Format) -> np.ndarray:
    """The spacing of `fmt` around x (normal range; the subnormal spacing below it)."""
    _, e = np.frexp(np.abs(x))
    return np.ldexp(1.0, np.maximum(e, fmt.emin + 1) - fmt.precision)


def neighbours(x: np.ndarray, fmt: Format) -> tuple[np.ndarray, np.ndarray]:
    """The representable numbers of `fmt` just below and just above x (equal where x is one)."""
    spacing = ulp(x, fmt)
    lower = np.floor(x / spacing) * spacing
    upper = np.where(lower == x, x, lower + spacing)
    return lower, upper
