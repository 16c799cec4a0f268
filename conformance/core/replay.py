"""State replay: reading an implementation's state, and putting a fresh run at given parameters
and state, so that one step can be judged from any reachable state.

Both go through the target's layout (core/layout.py): a state is read in the spec's terms
whatever form the target keeps it in, and written in the target's form, its counter wherever
the target keeps it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from adamw_conformance.adapters.base import GroupSetup, ParamState, Run, Setup, capability
from adamw_conformance.core import calls, layout
from adamw_conformance.core.config import Config


def read_states(run: Run, n: int, as_stored: bool = False) -> list[ParamState] | None:
    """Every parameter's state in the spec's terms (`as_stored`: as the target keeps it), or
    None if the layout is unknown for any of them."""
    if not capability(run, "read_state"):
        return None
    layout.bind(run)
    states = [run.read_state(i) for i in range(n)]
    if any(s is None for s in states):
        return None
    return states if as_stored else [layout.decoded(run, i, s) for i, s in enumerate(states)]


def read_each_state(run: Run, n: int, as_stored: bool = False) -> list[ParamState | None]:
    """Each parameter's state where the target exposes it (None for a parameter without state
    yet, or everywhere when the layout is unknown): unlike read_states, one missing state does
    not hide the others."""
    if not capability(run, "read_state"):
        return [None] * n
    layout.bind(run)
    states = [run.read_state(i) for i in range(n)]
    return states if as_stored else [layout.decoded(run, i, s) for i, s in enumerate(states)]


def prepare(cfg: Config, setup: Setup, params: Sequence[np.ndarray],
            states: Sequence[ParamState]) -> Run | None:
    """A run positioned at (params, states), ready for the next step: state replay.

    Fresh states need nothing. Otherwise one warm-up step creates the implementation's state,
    which is then overwritten; None if the implementation's state cannot be written (or replay
    is refused: `refusal`).

    Where the target keeps its moments in another form than the spec's, the state it can hold
    is the spec's state encoded and rounded to its storage: `states` are then updated in place
    to what the run holds, decoded, so that the oracle steps from where the target stands.
    """
    fresh = all(s.step == 0 and not any(np.any(x) for x in s.as_mapping().values())
                for s in states)
    run = calls.create(cfg, replace(setup, groups=[replace(g, params=list(g.params))
                                                   for g in setup.groups]))
    if fresh:
        return run
    if not (capability(run, "write_state") and capability(run, "write_params")):
        return None
    if layout.of(cfg).refused is not None:
        return None
    calls.step(cfg, run, [np.zeros_like(p) for p in params])
    layout.bind(run)
    for i, (p, s) in enumerate(zip(params, states, strict=True)):
        if not run.write_state(i, layout.encoded(run, i, s)):
            return None
        run.write_params(i, p)
    # a decoded or block-quantized state holds what the target could store, not what was
    # drawn: the oracle steps from that
    _held(run, states, always=layout.translates(run))
    return run


def _held(run: Run, states: Sequence[ParamState], always: bool = True) -> None:
    """Put into `states` the moments `run` holds after replay wrote them (decoded): where
    `always`, or where the target keeps a state block-quantized (then every such state)."""
    held = read_states(run, len(states))
    if held is None or not (always or any(h.stored for h in held)):
        return
    for s, h in zip(states, held, strict=True):
        for name in h.stored:  # m, v, vmax
            setattr(s, name, getattr(h, name))
        for name in layout.DECODED if always else ():
            if getattr(s, name) is not None and getattr(h, name) is not None:
                setattr(s, name, getattr(h, name))


def describe(cfg: Config) -> str:
    """The target's state layout and whether replay goes through it, in one line (the header,
    the report)."""
    text = layout.of(cfg).describe()
    why = refusal(cfg)
    return text + (f"; replay refused ({why}): judged from fresh states and by trajectory"
                   if why else "; replayed through it")


def refusal(cfg: Config) -> str | None:
    """Why the target's state cannot be replayed (None where it can): what the properties that
    fall back to fresh-state and trajectory checks say."""
    if can_replay(cfg):
        return None
    return getattr(cfg, "_replay_refused", None) or (
        "its state cannot be read and written in the spec's terms")


def can_replay(cfg: Config) -> bool:
    """Whether the target's state can be read and written (probed once per run): written at
    t=3, one step must leave its counter at 4 (a counter the target keeps where replay cannot
    write it would not)."""
    cached = getattr(cfg, "_can_replay", None)
    if cached is None:
        cached, why = _probe(cfg)
        object.__setattr__(cfg, "_can_replay", cached)
        object.__setattr__(cfg, "_replay_refused", why)
    return cached


def _probe(cfg: Config) -> tuple[bool, str | None]:
    from adamw_conformance.core.strategies import typical_hyper

    refused = layout.of(cfg).refused
    if refused is not None:
        return False, refused
    setup = Setup([GroupSetup([np.ones(2)], typical_hyper(cfg.model.rule_name))],
                  cfg.dtype, cfg.device)
    # m, buf, gavg 0.5; v, accum 0.25 (gavg^2 <= v, as centered RMSProp needs)
    probe = {s.name: np.full(2, 0.25 if s.name in ("v", "accum") else 0.5)
             for s in cfg.model.rule.state}
    try:
        run = prepare(cfg, setup, [np.ones(2)], [ParamState.of(probe, 3)])
        if run is None or read_states(run, 1) is None:
            return False, None
        calls.step(cfg, run, [np.full(2, 0.5)])
        after = read_states(run, 1)
    except calls.ImplementationError:
        return False, None
    if after is not None and after[0].step != 4:
        return False, (f"replay wrote the step counter at 3 and one step left it at "
                       f"{after[0].step}, not 4: the target counts somewhere replay cannot "
                       f"write")
    return True, None
