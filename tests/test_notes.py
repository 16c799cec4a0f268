"""The notes of a failure message appear where a control computed in the run supports them, and
not otherwise (core/notes.py, groups.no_decay's leaked hyperparameter, decouple.moments judged by
behaviour, and what an exception without a message says). Unit tests on the note functions, with
steps built here: no suite run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from adamw_conformance.adapters.base import ParamState
from adamw_conformance.adapters.torch_optim import TorchOptimizerAdapter
from adamw_conformance.core import calls, checks, notes
from adamw_conformance.core.config import Config
from adamw_conformance.core.strategies import representable
from adamw_conformance.test_decouple import decay_difference
from adamw_conformance.test_groups import whose_hyper

from impl.harness import AssertsInConstructor

HYPER = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1}
THETA = np.array([1.5, -0.75, 0.375, -2.0])
G = np.array([0.5, -0.25, 1.0, 0.125])


def _cfg(dtype: str) -> Config:
    return Config(TorchOptimizerAdapter(torch.optim.AdamW), dtype=dtype)


def _judged(cfg: Config, hyper: dict[str, float], theta: np.ndarray,
            state: ParamState | None = None, before_state: ParamState | None = None,
            g: np.ndarray = G) -> checks.StepOutcome:
    """A step whose result (theta, and state if given) is judged from fresh state at t=1."""
    before = representable(THETA, cfg.dtype)
    fresh = before_state or ParamState(np.zeros(4), np.zeros(4), 0)
    return checks.judge_values(cfg, [theta], None if state is None else [state], [before],
                               [fresh], [representable(g, cfg.dtype)], [hyper])


def _oracle(cfg: Config, hyper: dict[str, float], g: np.ndarray = G) -> dict[str, np.ndarray]:
    """The oracle's step from fresh state, rounded to the dtype."""
    out = cfg.model.oracle.step(representable(THETA, cfg.dtype), representable(g, cfg.dtype),
                                {"m": np.zeros(4), "v": np.zeros(4)}, hyper, 1)
    return {k: representable(out.float64()[k], cfg.dtype) for k in ("theta", "m", "v")}


# --- betas the dtype rounds -----------------------------------------------------------------------

def test_candidates_are_the_betas_the_dtype_moves():
    [cast] = notes.beta_casts("bfloat16", [HYPER])
    assert (cast.name, cast.value, cast.cast) == ("beta2", 0.999, 1.0)
    assert notes.beta_casts("float32", [HYPER]) == []
    [cast] = notes.beta_casts("bfloat16", [{**HYPER, "beta1": 0.99, "beta2": 0.5}])
    assert cast.cast == 0.98828125 and "off by 17%" in cast.head("bfloat16")


def test_beta_rounded_to_one_is_named_where_theta_took_the_pure_decay_step():
    # Keras in bfloat16: beta2 cast in its bias correction, sqrt(1 - 1^t) = 0, no adaptive step.
    cfg = _cfg("bfloat16")
    hyper = {**HYPER, "lr": 0.125}  # an adaptive step the dtype shows
    decayed = representable(representable(THETA, "bfloat16") * (1 - 0.125 * 0.1), "bfloat16")
    found = notes.of(cfg, _judged(cfg, hyper, decayed), [hyper])
    assert len(found) == 1 and found[0].startswith("beta2=0.999 rounds to 1.0 in bfloat16")
    assert "pure decay step" in found[0] and "bias correction" in found[0]


def test_beta_rounded_to_one_is_named_where_the_state_it_decays_did_not_move():
    cfg = _cfg("bfloat16")
    spec = _oracle(cfg, HYPER)
    frozen = ParamState(spec["m"], np.zeros(4), 1, dtype="bfloat16")  # v never moved
    outcome = _judged(cfg, HYPER, spec["theta"], frozen)
    assert [mm.output for _, mm in outcome.mismatches] == ["v"]
    [found] = notes.of(cfg, outcome, [HYPER])
    assert "v did not move where the spec moves it" in found


def test_beta_rounded_to_one_is_not_named_for_another_miss():
    # A step a few ulps off, with v moved as the spec moves it: nothing says beta2 was cast
    # (issue 13: an AdamW that never casts beta2 got the note).
    cfg = _cfg("bfloat16")
    spec = _oracle(cfg, HYPER)
    off = spec["theta"] * (1 + 2.0**-5)
    state = ParamState(spec["m"], spec["v"], 1, dtype="bfloat16")
    outcome = _judged(cfg, HYPER, off, state)
    assert outcome.mismatches
    assert not any("rounds to 1.0" in n for n in notes.of(cfg, outcome, [HYPER]))


def test_beta_moved_by_the_dtype_is_named_where_the_rounded_oracle_accepts_the_step():
    cfg = _cfg("bfloat16")
    hyper = {**HYPER, "beta1": 0.99, "beta2": 0.5}
    cast = _oracle(cfg, {**hyper, "beta1": 0.98828125})
    outcome = _judged(cfg, hyper, cast["theta"],
                      ParamState(cast["m"], cast["v"], 1, dtype="bfloat16"))
    assert [mm.output for _, mm in outcome.mismatches] == ["m"]
    [found] = notes.of(cfg, outcome, [hyper])
    assert found.startswith("beta1=0.99 is 0.98828125 in bfloat16")
    assert "within the bound of the oracle with beta1=0.98828125" in found
    # The same dtype, a miss the rounded beta does not explain: no note.
    spec = _oracle(cfg, hyper)
    wrong = ParamState(spec["m"] * 1.5, spec["v"], 1, dtype="bfloat16")
    assert notes.of(cfg, _judged(cfg, hyper, spec["theta"], wrong), [hyper]) == []


# --- a lower compute precision --------------------------------------------------------------------

def _bf16_ulps(x: np.ndarray, k: int) -> np.ndarray:
    """x moved k bfloat16 ulps away from zero."""
    t = torch.tensor(x, dtype=torch.bfloat16)
    for _ in range(k):
        t = torch.nextafter(t, torch.sign(t) * torch.tensor(float("inf"), dtype=torch.bfloat16))
    return t.double().numpy()


def test_lower_compute_precision_is_named_for_a_miss_it_explains():
    cfg = _cfg("bfloat16")
    hyper = {**HYPER, "beta2": 0.5}  # no beta the dtype moves: the compute note alone
    spec = _oracle(cfg, hyper)
    one_ulp = ParamState(_bf16_ulps(spec["m"], 1), spec["v"], 1, dtype="bfloat16")
    outcome = _judged(cfg, hyper, spec["theta"], one_ulp)
    assert outcome.mismatches and all(notes.ratio(mm) <= notes.FEW_BOUNDS
                                      for _, mm in outcome.mismatches)
    [found] = notes.of(cfg, outcome, [hyper])
    assert "within the bound of arithmetic in bfloat16" in found
    assert "--compute-dtype=bfloat16" in found


def test_lower_compute_precision_is_not_named_far_outside_the_bound_or_in_float32():
    cfg = _cfg("bfloat16")
    hyper = {**HYPER, "beta2": 0.5}
    spec = _oracle(cfg, hyper)
    far = ParamState(_bf16_ulps(spec["m"], 40), spec["v"], 1, dtype="bfloat16")
    assert notes.of(cfg, _judged(cfg, hyper, spec["theta"], far), [hyper]) == []
    cfg32 = _cfg("float32")
    spec = _oracle(cfg32, hyper)
    near = ParamState(spec["m"] * (1 + 2.0**-18), spec["v"], 1, dtype="float32")
    outcome = _judged(cfg32, hyper, spec["theta"], near)
    assert outcome.mismatches and notes.of(cfg32, outcome, [hyper]) == []


# --- a group's hyperparameter leaked ------------------------------------------------------------

def _group_case(cfg: Config, other_lr: float, got_lr: float) -> str:
    own = dict(HYPER)
    hypers = [own, {**HYPER, "lr": other_lr}]
    theta = _oracle(cfg, {**own, "lr": got_lr})["theta"]
    fresh = ParamState(np.zeros(4), np.zeros(4), 0)
    return whose_hyper(cfg, 0, 0, hypers, representable(THETA, cfg.dtype),
                       representable(G, cfg.dtype), fresh, theta, None)


def test_leak_is_named_where_the_other_groups_lr_explains_theta():
    note = _group_case(_cfg("float32"), other_lr=0.25, got_lr=0.25)
    assert "stepped with group 1's lr" in note and "outside that under its own" in note


def test_leak_is_not_named_for_a_candidate_equal_to_the_groups_own():
    # issue 13: Lion's groups all had the same lr, and 'group 1's lr' was named.
    cfg = _cfg("float32")
    assert _group_case(cfg, other_lr=1e-3, got_lr=1e-3) == ""  # theta is its own group's
    assert _group_case(cfg, other_lr=1e-3, got_lr=0.25) == ""  # wrong, but no group's lr


# --- decouple.moments judged by behaviour --------------------------------------------------------

def test_decay_difference_is_measured():
    cfg = _cfg("float32")
    theta0 = representable(THETA, "float32")
    grads = [representable(G, "float32")] * 2
    hypers = [HYPER, {**HYPER, "weight_decay": 0.0}]
    exact = [cfg.model.oracle.trajectory(theta0, grads, h)[-1].float64()["theta"] for h in hypers]
    # Both runs off their trajectories by the same amount: the decay is AdamW's.
    same_offset = [representable(e + 1e-3, "float32") for e in exact]
    note = decay_difference(cfg, theta0, grads, hypers, same_offset)
    assert "differ by the exact difference of their trajectories" in note
    assert "exact.trajectory" in note
    # One run moved by more than the difference of the decays: measured, element named.
    apart = [representable(exact[0] * 1.01, "float32"), representable(exact[1], "float32")]
    note = decay_difference(cfg, theta0, grads, hypers, apart)
    assert "differ at element [" in note and "allowed error" in note


# --- an exception without a message --------------------------------------------------------------

def test_an_empty_exception_message_says_where_it_was_raised():
    # lion-pytorch validates with bare asserts: the message was "raised AssertionError in
    # creating the optimizer: " and nothing else.
    param = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(calls.ImplementationError) as info:
        calls.guarded("creating the optimizer", AssertsInConstructor, [param], -1.0)
    text = str(info.value)
    assert text.startswith("the implementation raised AssertionError in creating the "
                           "optimizer: (no message) at impl/harness.py:"), text
    assert text.endswith("in validate: assert lr > 0.0"), text
    assert calls.said(ValueError("lr must be positive")) == "lr must be positive"
