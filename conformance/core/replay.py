"""State replay: reading an implementation's state, and putting a fresh run at given parameters
and state, so that one step can be judged from any reachable state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from adamw_conformance.adapters.base import GroupSetup, ParamState, Run, Setup, capability
from adamw_conformance.core import calls
from adamw_conformance.core.config import Config


def read_states(run: Run, n: int) -> list[ParamState] | None:
    """Every parameter's state, or None if the layout is unknown for any of them."""
    if not capability(run, "read_state"):
        return None
    states = [run.read_state(i) for i in range(n)]
    return None if any(s is None for s in states) else states


def read_each_state(run: Run, n: int) -> list[ParamState | None]:
    """Each parameter's state where the target exposes it (None for a parameter without state
    yet, or everywhere when the layout is unknown): unlike read_states, one missing state does
    not hide the others."""
    if not capability(run, "read_state"):
        return [None] * n
    return [run.read_state(i) for i in range(n)]


def prepare(cfg: Config, setup: Setup, params: Sequence[np.ndarray],
            states: Sequence[ParamState]) -> Run | None:
    """A run positioned at (params, states), ready for the next step: state replay.

    Fresh states need nothing. Otherwise one warm-up step creates the implementation's state,
    which is then overwritten; None if the implementation's state cannot be written.
    """
    fresh = all(s.step == 0 and not any(np.any(x) for x in s.as_mapping().values())
                for s in states)
    run = calls.create(cfg, replace(setup, groups=[replace(g, params=list(g.params))
                                                   for g in setup.groups]))
    if fresh:
        return run
    if not (capability(run, "write_state") and capability(run, "write_params")):
        return None
    calls.step(cfg, run, [np.zeros_like(p) for p in params])
    for i, (p, s) in enumerate(zip(params, states, strict=True)):
        if not run.write_state(i, s):
            return None
        run.write_params(i, p)
    return run


def can_replay(cfg: Config) -> bool:
    """Whether the target's state can be read and written (probed once per run)."""
    cached = getattr(cfg, "_can_replay", None)
    if cached is None:
        from adamw_conformance.core.strategies import typical_hyper
        setup = Setup([GroupSetup([np.ones(2)], typical_hyper(cfg.model.rule_name))],
                      cfg.dtype, cfg.device)
        # m, buf, gavg 0.5; v, accum 0.25 (gavg^2 <= v, as centered RMSProp needs)
        probe = {s.name: np.full(2, 0.25 if s.name in ("v", "accum") else 0.5)
                 for s in cfg.model.rule.state}
        try:
            run = prepare(cfg, setup, [np.ones(2)], [ParamState.of(probe, 3)])
            cached = run is not None and read_states(run, 1) is not None
        except calls.ImplementationError:
            cached = False
        object.__setattr__(cfg, "_can_replay", cached)
    return cached
