"""Whether a target compiles its step once per tensor shape, found from behaviour: such a target
(torchao's optimizers: `torch.compile(..., dynamic=False)` of its per-parameter step) pays a
compilation for every new shape a property draws, so the run's properties then draw their
shapes from a small set (core/strategies.py: SHAPE_SET, `sized`), and the compiled kernels are
reused. Every other target draws as before.

The probe, for a target whose warm-up step compiled a graph (core/calls.py: WarmUp): three
creations and steps on three new shapes with the same hyperparameters, torch.compile's count of
compiled graphs read around each step. A target that compiles with dynamic shapes (torch.compile's
default) compiles for the second shape a kernel that takes any size and nothing for the third;
one that compiles per shape compiles again. A target whose warm-up compiled nothing is not
stepped at all.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from adamw_conformance.adapters.base import GroupSetup, Setup
from adamw_conformance.core import calls
from adamw_conformance.core.config import Config

#: The probe's shapes: new to a target that only took the layout probe and the warm-up.
_PROBE_SIZES = (5, 6, 7)

_FOUND: dict[tuple[int, str, str], tuple[Any, bool]] = {}


def recompiles_per_shape(cfg: Config) -> bool:
    """Whether `cfg`'s target compiled its step again for a third new shape (once per target,
    dtype and device in this process); False where the probe raised."""
    key = (id(cfg.adapter), cfg.dtype, cfg.device)
    known = _FOUND.get(key)
    if known is None or known[0] is not cfg.adapter:
        try:
            found = _probe(cfg)
        except calls.ImplementationError:  # the properties meet the failure on their own draws
            found = False
        known = _FOUND[key] = (cfg.adapter, found)
    return known[1]


#: What the summary says of such a target (report/summary.py: harness_notes).
LINE = ("its step compiles once per tensor shape (found from behaviour: a third new shape "
        "compiled again): every property took its shapes from a small set "
        "(core/strategies.py: SHAPE_SET), so that the compiled kernels are reused")


def found(cfg: Config) -> bool:
    """Whether the probe found `cfg`'s target compiling per shape (False where it did not run)."""
    known = _FOUND.get((id(cfg.adapter), cfg.dtype, cfg.device))
    return known is not None and known[0] is cfg.adapter and known[1]


def _probe(cfg: Config) -> bool:
    from adamw_conformance.core.strategies import typical_hyper

    warm = calls.warm_up(cfg)
    if warm is None or warm.error is not None or not warm.compiled:
        return False  # its first step compiled nothing: no compiler to pay per shape
    hyper = typical_hyper(cfg.model.rule_name)
    limit = calls.WARM_UP_LIMITS * cfg.timeout
    compiled = []
    for n in _PROBE_SIZES:
        setup = Setup([GroupSetup([np.full(n, 0.5)], hyper)], cfg.dtype, cfg.device)
        run = calls.guarded("creating the optimizer", cfg.adapter.create, setup, timeout=limit)
        before = calls.compiled_graphs()
        calls.guarded("step()", run.step, [np.full(n, 0.25)], timeout=limit)
        compiled.append(calls.compiled_graphs() - before)
    return compiled[-1] > 0
