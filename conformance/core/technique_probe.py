"""The layout probe's part for the precision techniques (docs/precision-techniques.md): whether
a target rounds its bf16/fp16 results stochastically, and which of its unnamed state, if any, is
a Kahan compensation. Both from behaviour; core/layout.py runs them with its probe."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from adamw_conformance.adapters.base import GroupSetup, Setup, capability
from adamw_conformance.core import calls
from adamw_conformance.core.config import Config
from adamw_conformance.core.representation import ulp
from adamw_conformance.spec.formats import format_of

#: The detection probe: elements equal to 1, one equal step that lands between two
#: representable numbers, 3/8 of the way from 1 up to the next one for half of them, a quarter
#: of the way up from the number below 1 for the other half: rounding to nearest stores one
#: value per half, stochastic rounding two (all alike by chance with probability
#: 0.625^64 + 0.375^64 < 1e-13 and 0.75^64 + 0.25^64 < 1e-7; a rounding biased one way still
#: spreads one of the halves).
_PROBE_ELEMENTS = 64


def rounds_stochastically(cfg: Config) -> bool:
    """Whether the target stores bf16/fp16 results by stochastic rounding: equal elements given
    an equal step that ends between two representable numbers end apart."""
    from adamw_conformance.core.strategies import typical_hyper

    fmt = format_of(cfg.dtype)
    if fmt.precision >= 24:  # float32 and float64 parameters are the arithmetic's own format
        return False
    hyper = typical_hyper(cfg.model.rule_name)
    if "weight_decay" in hyper:
        hyper["weight_decay"] = 0.0
    # the step at t=1 is lr g/(|g| + eps) ~ lr: 3/8 of the ulp above 1, 3/4 of the one below
    # (g = -1 steps up, g = +1 down)
    hyper["lr"] = 3 * 2.0 ** (-fmt.precision - 2)
    ones = np.ones(2 * _PROBE_ELEMENTS)
    grads = np.repeat([-1.0, 1.0], _PROBE_ELEMENTS)
    setup = Setup([GroupSetup([ones], hyper)], cfg.dtype, cfg.device)
    run = calls.guarded("creating the optimizer", cfg.adapter.create, setup, timeout=cfg.timeout)
    calls.step(cfg, run, [grads])
    after = np.asarray(calls.guarded("params()", run.params, timeout=cfg.timeout)[0])
    halves = after[:_PROBE_ELEMENTS], after[_PROBE_ELEMENTS:]
    return any(len(np.unique(h)) > 1 for h in halves)


def compensation_candidates(cfg: Config, run: Any) -> dict[str, bool]:
    """After one probe step: each unnamed tensor of the parameter's dtype that is within half an
    ulp of the parameter, and whether it is nonzero."""
    fmt = format_of(cfg.dtype)
    if fmt.precision >= 24 or not capability(run, "unnamed_state"):
        return {}
    unnamed = calls.guarded("unnamed_state()", run.unnamed_state, 0, timeout=cfg.timeout) or {}
    p = np.asarray(calls.guarded("params()", run.params, timeout=cfg.timeout)[0])
    half = np.where(p == 0, 0.0, ulp(p, fmt) / 2)
    out = {}
    for key, (values, dtype) in unnamed.items():
        c = np.asarray(values, dtype=np.float64)
        if format_of(dtype) == fmt and c.shape == p.shape and bool(np.all(np.abs(c) <= half)):
            out[key] = bool(np.any(c != 0))
    return out


def compensation(seen: Sequence[Mapping[str, bool]]) -> str | None:
    """The compensation among the probe steps' candidates: a key that was one at every step and
    nonzero at some; None where there is none."""
    if not seen:
        return None
    keys = set(seen[0]).intersection(*seen[1:])
    found = sorted(k for k in keys if any(s[k] for s in seen))
    return found[0] if found else None


