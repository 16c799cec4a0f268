"""shard.*: what sharding an optimizer across ranks breaks, drawn against the target's ranks.

Applies to targets that shard (a `world` attribute: `--impl=zero:...`, `fsdp2:...`, a sharded
model of one's own); other targets skip it, their groups are groups.*'s."""

from __future__ import annotations

import numpy as np
import pytest
from adamw_conformance.adapters.base import GroupSetup, ParamState, Setup
from adamw_conformance.core import checks, replay
from adamw_conformance.core.strategies import (
    first_step_creates_state,
    hyperparameters,
    regimes,
    sample_state,
    state_regimes,
    steps,
)
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.catalogue("shard")

#: How a group's elements fall on W ranks (an engine that splits by element count, ZeRO-1/2's
#: flat buffers, or dim 0, FSDP2's): fewer than W (some ranks' shards empty or all padding),
#: a size that is no multiple of W (uneven shards), a first parameter one element past a shard
#: (it straddles two ranks), one parameter per rank exactly.
KINDS = ("fewer than the ranks", "uneven", "straddling", "one per rank")


def sizes(kind: str, world: int, extra: int) -> list[int]:
    """The sizes of one group's parameters for a layout kind (`extra` varies them)."""
    if kind == "fewer than the ranks":
        return [1 + extra % max(world - 1, 1)] if world > 1 else [1]
    if kind == "uneven":
        return [world * (1 + extra % 3) + 1 + extra % max(world - 1, 1), 2]
    if kind == "straddling":
        shard = 2 + extra % 3
        return [shard + 1, world * shard - shard - 1 + world]
    return [3] * world


@st.composite
def layouts(draw: st.DrawFn, world: int) -> list[list[int]]:
    """2 or 3 groups, each of a drawn kind."""
    return [sizes(draw(st.sampled_from(KINDS)), world, draw(st.integers(0, 5)))
            for _ in range(draw(st.integers(2, 3)))]


@given(data=st.data(), theta=regimes(-4, 4, zeros=False), g=regimes(-8, 4), m=regimes(-10, 8),
       v=regimes(-20, 16), t=steps, seed=st.integers(0, 2**32 - 1))
def test_layouts(cfg, data, theta, g, m, v, t, seed):
    """Groups laid out against the target's ranks keep every element's step.

    Two or three groups, each smaller than the world (some ranks hold none of it, or only
    padding), of a size that is no multiple of the world (uneven shards), with a parameter that
    straddles two ranks' shards, or one parameter per rank (KINDS); one group drawn with
    weight_decay=0; a parameter without a gradient at the first step (where the target has
    missing gradients). Two steps from a replayed state (fresh where the target's state is not
    writable): every parameter with a gradient must be within the bound of the oracle step under
    its own group's hyperparameters, at the counter the target's state shows. What it finds:
    decay applied to padding or twice to a straddling parameter, a no-decay group's mapping lost
    after flattening, a rank that skips its step when its shard of a group is empty.
    """
    world = getattr(cfg.adapter, "world", None)
    if not isinstance(world, int):
        pytest.skip(f"{cfg.adapter.name} is not sharded (no `world`): groups.* judge its groups")
    layout = data.draw(layouts(world), label="sizes of each group's parameters")
    hypers = [data.draw(hyperparameters(), label=f"group {k}") for k in range(len(layout))]
    plain = data.draw(st.integers(0, len(layout) - 1), label="the no-decay group")
    if "weight_decay" in hypers[plain]:
        hypers[plain]["weight_decay"] = 0.0
    group_of = [k for k, ss in enumerate(layout) for _ in ss]
    shapes = [(n,) for ss in layout for n in ss]
    missing = (data.draw(st.integers(0, len(shapes) - 1), label="no gradient at step 1")
               if cfg.caps.none_grads else None)
    rng = np.random.default_rng(seed)
    params = [theta.sample(rng, s, cfg.dtype) for s in shapes]
    if replay.can_replay(cfg):
        t = max(t, 2) if first_step_creates_state() else t
        states = [sample_state(state_regimes(m, v), rng, s, cfg.dtype, t - 1) for s in shapes]
    else:
        states = [ParamState(np.zeros(s), np.zeros(s), 0) for s in shapes]
    setup = Setup([GroupSetup([p for p, k in zip(params, group_of, strict=True) if k == j],
                              h) for j, h in enumerate(hypers)], cfg.dtype, cfg.device)
    run = replay.prepare(cfg, setup, params, states)
    assert run is not None, "can_replay() promised a writable state"
    per_param = [checks.with_schedule_base(cfg.model, hypers[k], hypers[k]["lr"])
                 for k in group_of]
    described = "; ".join(f"group {k}: sizes {ss}, weight_decay "
                          f"{hypers[k].get('weight_decay', 0.0):g}"
                          for k, ss in enumerate(layout))
    before, before_states = params, list(states)
    for step in (1, 2):
        grads = [None if (step == 1 and i == missing) else g.sample(rng, s, cfg.dtype)
                 for i, s in enumerate(shapes)]
        outcome = checks.judge_step(cfg, run, before, before_states, grads, per_param)
        if outcome.mismatches:
            checks.fail(checks.failure(
                "shard.layouts", cfg, outcome, per_param,
                (before_states[outcome.mismatches[0][0]] or states[0]).step + 1,
                note=f"step {step} of 2 over {world} ranks; {described}; parameter "
                     f"{missing} had no gradient at step 1",
                repro=checks.reproduction(cfg, "shard.layouts")))
        if outcome.states is None or any(s is None for s in outcome.states):
            return  # the state after the step is not readable: the next step cannot be judged
        before, before_states = outcome.params, list(outcome.states)
