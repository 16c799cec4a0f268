"""state.*: saving and restoring an optimizer is invisible to the run that continues."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pytest
from adamw_conformance.adapters.base import GroupSetup, ParamState, Run, Setup, capability
from adamw_conformance.core import bits, calls, checks, replay, stochastic
from adamw_conformance.core.config import Config
from adamw_conformance.core.strategies import SizedShapes, hyperparameters, regimes, typical_hyper
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.catalogue("state")

# Three small parameters: enough to see a state that is attached to the wrong parameter or
# group, cheap enough for the ci profile.
_SHAPES = SizedShapes(((8,), (2, 3), (5,)))
#: How the parameters are grouped, and what the groups share. Two groups with their own
#: hyperparameters show a state attached to the wrong group; one group, or two with equal
#: betas, show what an optimizer keeps per betas outside its state dict (DeepSpeedCPUAdam's
#: beta^t, accumulated in its C++ object while the betas stay the same, and lost on a load):
#: groups with different betas make such an optimizer recompute every step and hide it.
LAYOUTS = {"two groups": (0, 0, 1), "one group": (0, 0, 0), "equal betas": (0, 0, 1)}


def state_differences(want: Sequence[ParamState], got: Sequence[ParamState],
                      labels: tuple[str, str]) -> list[str]:
    """What differs, bitwise, between two runs' states; `labels` name (got, want)."""
    out = []
    vs = f"{labels[0]} vs {labels[1]}"
    for i, (w, g) in enumerate(zip(want, got, strict=True)):
        if w.step != g.step:
            out.append(f"parameter {i}: step counter {g.step} vs {w.step} ({vs})")
        wm, gm = w.as_mapping(), g.as_mapping()
        for name in sorted(set(wm) | set(gm)):
            x, y = wm.get(name), gm.get(name)
            if x is None or y is None:
                out.append(f"parameter {i}: {name} present in only one of the runs")
            elif not bits.same(x, y):
                out.append(f"parameter {i}: {name} ({vs}): {bits.difference(y, x, bits.VERSUS)}")
    return out


@dataclass
class Plan:
    """Two runs of the same gradients: one uninterrupted, one saved after `before` steps."""

    setup: Setup
    grads: list[list[np.ndarray | None]]
    before: int
    new_lr: float | None  # a schedule's lr change for group 0 just before the save
    layout: str = "two groups"  # a key of LAYOUTS

    def __repr__(self) -> str:
        hyper = [g.hyper for g in self.setup.groups]
        nones = [[g is None for g in gs] for gs in self.grads]
        return (f"Plan({self.layout}, hyper={hyper}, options={self.setup.options}, "
                f"steps={len(self.grads)}, "
                f"saved after {self.before}, new_lr={self.new_lr}, grad is None: {nones})")


@st.composite
def plans(draw: st.DrawFn, cfg: Config, can_set_lr: bool) -> Plan:
    layout = draw(st.sampled_from(list(LAYOUTS)))
    group_of = LAYOUTS[layout]
    hyper = [draw(hyperparameters()) for _ in range(max(group_of) + 1)]
    if layout == "equal betas":
        hyper[1].update({k: hyper[0][k] for k in ("beta1", "beta2") if k in hyper[0]})
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    theta = draw(regimes(-4, 4, zeros=False))
    params = [theta.sample(rng, s, cfg.dtype) for s in _SHAPES]
    groups = [GroupSetup([p for p, gi in zip(params, group_of, strict=True) if gi == k],
                         hyper[k]) for k in range(len(hyper))]
    # An option the target refuses (at construction or on use) is not drawn: the header's
    # summary says why (calls.refusal).
    options = cfg.options(amsgrad=draw(st.booleans()))
    if calls.refusal(cfg, options) is not None:
        options = {}
    setup = Setup(groups, cfg.dtype, cfg.device, options)
    before, after = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    g = draw(regimes(-8, 4))
    # Parameter 1 may go without a gradient until the save: its state then does not exist yet
    # when the optimizer is saved and must be created lazily after the load, at its own t=1.
    late = draw(st.booleans()) and cfg.caps.none_grads
    grads = [[None if (i == 1 and late and k < before) else g.sample(rng, s, cfg.dtype)
              for i, s in enumerate(_SHAPES)] for k in range(before + after)]
    new_lr = draw(st.sampled_from([None, 0.5, 2.0])) if can_set_lr else None
    return Plan(setup, grads, before, None if new_lr is None else hyper[0]["lr"] * new_lr,
                layout)


def _probe(cfg: Config) -> Run:
    setup = Setup([GroupSetup([np.ones(2)], typical_hyper())], cfg.dtype, cfg.device)
    return calls.create(cfg, setup)


@given(data=st.data())
def test_round_trip(cfg, data):
    """Save, load into a fresh optimizer, continue: bitwise equal to the uninterrupted run.

    The parameters sit in two groups with their own hyperparameters, in one group, or in two
    groups with equal betas (LAYOUTS); amsgrad is drawn where the target takes it (not where it
    refuses it on use). The fresh optimizer is created with the same setup (the parameters it is
    given are the saved run's, as a user restores a model beside its optimizer) and loads a deep
    copy of the saved state dict (what serialization gives). After the same further gradients
    the parameters and, where the target's state is readable, every state tensor and counter
    must be bitwise those of the run that was never interrupted; a learning rate changed by a
    schedule before the save must come back with the load. Skipped for targets without
    state_dict/load_state_dict.
    """
    stochastic.defer(cfg, "state.round_trip")
    probe = _probe(cfg)
    if not (capability(probe, "state_dict") and capability(probe, "load_state_dict")):
        pytest.skip(f"{cfg.adapter.name} has no state_dict()/load_state_dict()")
    plan = data.draw(plans(cfg, capability(probe, "set_lr")), label="plan")
    n = plan.setup.n_params
    where = (f"  plan: {plan!r}\n  reproduce: {checks.reproduction(cfg, 'state.round_trip')}")

    whole = calls.create(cfg, plan.setup)
    for k in range(plan.before):
        calls.step(cfg, whole, plan.grads[k])
    if plan.new_lr is not None:
        calls.set_lr(cfg, whole, 0, plan.new_lr)
    saved = copy.deepcopy(calls.guarded("state_dict()", whole.state_dict, timeout=cfg.timeout))
    # as the model holds them: a Kahan pair's high part, its low part is the optimizer's state
    saved_params = (whole.stored_params() if capability(whole, "stored_params")
                    else whole.params())
    saved_states = replay.read_states(whole, n)

    groups, i = [], 0
    for g in plan.setup.groups:
        groups.append(replace(g, params=[saved_params[i + j] for j in range(len(g.params))]))
        i += len(g.params)
    resumed = calls.create(cfg, replace(plan.setup, groups=groups))
    calls.guarded("load_state_dict()", resumed.load_state_dict, saved, timeout=cfg.timeout)
    loaded_states = replay.read_states(resumed, n)
    if saved_states is not None and loaded_states is not None:
        bad = state_differences(saved_states, loaded_states, ("loaded", "saved"))
        assert not bad, (f"state.round_trip: {cfg.adapter.name} ({cfg.dtype}): the state read "
                         f"back right after load_state_dict is not the saved one:\n    "
                         + "\n    ".join(bad) + "\n" + where)

    for k in range(plan.before, len(plan.grads)):
        calls.step(cfg, whole, plan.grads[k])
        calls.step(cfg, resumed, plan.grads[k])
        t = k + 1
        for i, (a, b) in enumerate(zip(whole.params(), resumed.params(), strict=True)):
            assert bits.same(a, b), (
                f"state.round_trip: {cfg.adapter.name} ({cfg.dtype} on {cfg.device}): after "
                f"saving at step {plan.before} and loading into a fresh optimizer, parameter "
                f"{i} at step {t} differs from the uninterrupted run: resumed vs uninterrupted "
                f"{bits.difference(b, a, bits.VERSUS)}\n{where}")
    want, got = replay.read_states(whole, n), replay.read_states(resumed, n)
    if want is not None and got is not None:
        bad = state_differences(want, got, ("resumed", "uninterrupted"))
        assert not bad, (f"state.round_trip: {cfg.adapter.name} ({cfg.dtype}): after the "
                         f"resumed run's last step its state differs from the uninterrupted "
                         f"run's:\n    " + "\n    ".join(bad)
                         + "\n" + where)
