"""Whether a target compiles its step again for each new tensor shape, and for each new value of
a hyperparameter, found from behaviour. Such a target (torchao's optimizers:
`torch.compile(..., dynamic=False)` of a per-parameter step taking beta1, beta2, eps and
weight_decay as Python floats) pays a compilation for every new shape and value a property
draws; the run's properties then draw their shapes from a small set (core/strategies.py:
SHAPE_SET, `sized`) and those hyperparameters from a few per-run value sets
(core/strategies.py: value_sets), so that the compiled kernels are reused. Every other target
draws as before.

The probes, for a target whose warm-up step compiled a graph (core/calls.py: WarmUp), read
torch.compile's count of compiled graphs around steps of new optimizers:
- shapes: three new shapes with the same hyperparameters. A target that compiles with dynamic
  shapes (torch.compile's default) compiles for the second shape a kernel that takes any size
  and nothing for the third; one that compiles per shape compiles again.
- values: on the third shape, now compiled, one step for each hyperparameter the run draws, with
  that one hyperparameter at another value. One compiled again for it takes it from the value
  sets.
A target whose warm-up compiled nothing is not stepped at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from adamw_conformance.adapters.base import GroupSetup, Setup
from adamw_conformance.core import calls
from adamw_conformance.core.config import Config

if TYPE_CHECKING:
    from adamw_conformance.core.strategies import Range

#: The probe's shapes: new to a target that only took the layout probe and the warm-up.
_PROBE_SIZES = (5, 6, 7)


@dataclass(frozen=True)
class Recompiles:
    """What a target compiles again for: a new shape, new values of these hyperparameters."""

    per_shape: bool = False
    per_value: tuple[str, ...] = ()


_FOUND: dict[tuple[int, str, str], tuple[Any, Recompiles]] = {}


def recompiles(cfg: Config) -> Recompiles:
    """What `cfg`'s target compiles again for (probed once per target, dtype and device in this
    process); nothing where the probe raised."""
    key = (id(cfg.adapter), cfg.dtype, cfg.device)
    known = _FOUND.get(key)
    if known is None or known[0] is not cfg.adapter:
        try:
            found = _probe(cfg)
        except calls.ImplementationError:  # the properties meet the failure on their own draws
            found = Recompiles()
        known = _FOUND[key] = (cfg.adapter, found)
    return known[1]


def found(cfg: Config) -> Recompiles | None:
    """What the probes found of `cfg`'s target (None where they did not run)."""
    known = _FOUND.get((id(cfg.adapter), cfg.dtype, cfg.device))
    return known[1] if known is not None and known[0] is cfg.adapter else None


def lines(cfg: Config) -> list[str]:
    """What the summary says of the draws (report/summary.py: harness_notes)."""
    from adamw_conformance.core.strategies import VALUE_SETS

    got = found(cfg)
    out = []
    if got is not None and got.per_shape:
        out.append("its step compiles once per tensor shape (found from behaviour: a third new "
                   "shape compiled again): every property took its shapes from a small set "
                   "(core/strategies.py: SHAPE_SET), so that the compiled kernels are reused")
    if got is not None and got.per_value:
        out.append(f"its step compiles once per value of {', '.join(got.per_value)} (found from "
                   f"behaviour: a new value compiled again): the properties took them from "
                   f"{VALUE_SETS} value sets of this run (core/strategies.py: value_sets, "
                   "chosen by the run's seed), so that the compiled kernels are reused")
    return out


def _probe(cfg: Config) -> Recompiles:
    from adamw_conformance.core.strategies import RANGES, rule_hyper_names, typical_hyper

    warm = calls.warm_up(cfg)
    if warm is None or warm.error is not None or not warm.compiled:
        return Recompiles()  # its first step compiled nothing: no compiler to pay per shape
    hyper = typical_hyper(cfg.model.rule_name)
    compiled = [_compiles(cfg, n, hyper) for n in _PROBE_SIZES]
    pinned = set(cfg.caps.pinned)
    per_value = tuple(
        name for name in rule_hyper_names(cfg.model.rule_name) if name not in pinned
        and _compiles(cfg, _PROBE_SIZES[-1], {**hyper, name: _other(RANGES[name], hyper[name])}))
    return Recompiles(compiled[-1] > 0, per_value)


def _other(drawn: Range, typical: float) -> float:
    """A notable value of the range other than the typical one."""
    return next(x for x in drawn.notable if x != typical)


def _compiles(cfg: Config, n: int, hyper: dict[str, float]) -> int:
    """The graphs compiled by one step of a new optimizer on `n` elements under `hyper`."""
    limit = calls.WARM_UP_LIMITS * cfg.timeout
    setup = Setup([GroupSetup([np.full(n, 0.5)], hyper)], cfg.dtype, cfg.device)
    run = calls.guarded("creating the optimizer", cfg.adapter.create, setup, timeout=limit)
    before = calls.compiled_graphs()
    calls.guarded("step()", run.step, [np.full(n, 0.25)], timeout=limit)
    return calls.compiled_graphs() - before
