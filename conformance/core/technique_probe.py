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

#: The detection probe: two halves of elements given one equal step that lands between two
#: representable numbers, just short of the midpoint: elements equal to 1 stepped up by
#: 63/128 + 1/1024 of the ulp above 1, elements equal to 1.5 stepped down by as much. Rounding to
#: nearest stores 1 and 1.5 (the float32 result is 1/146 of an ulp from the midpoint, far beyond
#: the arithmetic's error); stochastic rounding spreads each half over two values (all alike by
#: chance with probability below 1e-18; a rounding biased one way still spreads). A
#: deterministic rounding that stores the farther neighbour is no rounding to nearest: towards
#: zero (the second half), away from it (the first), or one draw for the whole tensor (one of
#: the halves unless the draw falls within 1/73 around the midpoint). The 1/1024 keeps the
#: fraction off the multiples of 1/256, so that a probability taken from the wrong bits (the
#: lowest 8 that bfloat16 drops) still spreads.
_PROBE_ELEMENTS = 64


def rounding(cfg: Config) -> str:
    """How the target stores bf16/fp16 results: "stochastic" where equal elements given an equal
    step end apart, "not nearest" where they end alike on the farther of the two numbers around
    their result, else "nearest"."""
    from adamw_conformance.core.strategies import typical_hyper

    fmt = format_of(cfg.dtype)
    if fmt.precision >= 24:  # float32 and float64 parameters are the arithmetic's own format
        return "nearest"
    hyper = typical_hyper(cfg.model.rule_name)
    if "weight_decay" in hyper:
        hyper["weight_decay"] = 0.0
    # the step at t=1 is lr g/(|g| + eps) ~ lr (g = -1 steps up, g = +1 down); 1 and 1.5 share
    # their binade, whose ulp is 2^(1 - p): the step is 505/1024 of it
    hyper["lr"] = 505 * 2.0 ** (-fmt.precision - 9)
    start = np.repeat([1.0, 1.5], _PROBE_ELEMENTS)
    grads = np.repeat([-1.0, 1.0], _PROBE_ELEMENTS)
    setup = Setup([GroupSetup([start], hyper)], cfg.dtype, cfg.device)
    run = calls.guarded("creating the optimizer", cfg.adapter.create, setup, timeout=cfg.timeout)
    calls.step(cfg, run, [grads])
    after = np.asarray(calls.guarded("params()", run.params, timeout=cfg.timeout)[0])
    halves = after[:_PROBE_ELEMENTS], after[_PROBE_ELEMENTS:]
    if any(len(np.unique(h)) > 1 for h in halves):
        return "stochastic"
    return "not nearest" if _farther_neighbour(cfg, start, grads, hyper, after) else "nearest"


#: A result nearer the midpoint between its two neighbours than this share of an ulp is not
#: classified: the target's float32 arithmetic (2^-16 of a bfloat16 ulp, 2^-13 of a float16
#: one) could move it across, with room to spare. Adam's probe result is 1/146 of an ulp from it.
_MIDPOINT_GUARD = 2.0**-8


def _farther_neighbour(cfg: Config, start: np.ndarray, grads: np.ndarray,
                       hyper: Mapping[str, float], after: np.ndarray) -> bool:
    """Whether every element is stored on one of the two neighbours of the spec's exact result
    (its oracle, whatever the rule's step) and some on the farther one: a step that went
    elsewhere (a NaN, a wrong update) is the other properties' to judge."""
    fmt = format_of(cfg.dtype)
    exact = cfg.model.oracle.trajectory(start, [grads], dict(hyper))[-1].float64()["theta"]
    u = ulp(start, fmt)  # the results stay in their starts' binades (a step below an ulp)
    lo = np.floor(exact / u) * u
    hi = lo + u
    nearer = np.where(exact - lo <= hi - exact, lo, hi)
    farther = np.where(nearer == lo, hi, lo)
    clear = np.abs(exact - (lo + hi) / 2) >= _MIDPOINT_GUARD * u
    neighbour = (after == nearer) | (after == farther)
    return bool(np.all(neighbour) and np.any((after == farther) & clear))


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


