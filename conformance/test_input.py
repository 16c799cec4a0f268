"""input.*: what an implementation does with input outside the spec's domain."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from adamw_conformance.adapters.base import GroupSetup, Setup
from adamw_conformance.adapters.kernel import KernelAdapter
from adamw_conformance.core import calls, checks, replay
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import format_hyper
from adamw_conformance.core.rules import L2_COUPLED
from adamw_conformance.core.strategies import hyperparameters, step_cases
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.catalogue("input")

NAN = math.nan

# The spec's domain of each hyperparameter (PyTorch checks the same: `0 <= lr`, `0 <= eps`,
# `0 <= beta < 1`, `0 <= weight_decay`, each of which is False for NaN).
# The other rules' hyperparameters as PyTorch checks them (dampening it does not check at all,
# so the suite does not require it either).
DOMAIN = {"lr": "lr >= 0", "eps": "eps >= 0", "beta1": "0 <= beta1 < 1",
          "beta2": "0 <= beta2 < 1", "weight_decay": "weight_decay >= 0",
          "momentum": "momentum >= 0", "alpha": "alpha >= 0", "lr_decay": "lr_decay >= 0"}

negative = st.floats(max_value=0.0, exclude_max=True, allow_nan=False, allow_infinity=True)
one_or_more = st.floats(min_value=1.0, allow_nan=False, allow_infinity=True)


def _keywords(name: str) -> tuple[str, ...]:
    """The constructor keywords through which a torch-style target receives `name`."""
    return {"beta1": ("betas", "beta1"), "beta2": ("betas", "beta2")}.get(name, (name,))


def _reaches(cfg: Config, name: str) -> bool:
    """Whether the target's constructor receives hyperparameter `name` at all."""
    return any(cfg.caps.receives(k) for k in _keywords(name))


@pytest.mark.parametrize("name", list(DOMAIN))
@given(hyper=hyperparameters(), below=negative, above=one_or_more)
def test_validation(cfg, name, hyper, below, above):
    """Invalid hyperparameters are rejected at construction with ValueError.

    The spec's domain is lr >= 0, eps >= 0, 0 <= beta1, beta2 < 1, weight_decay >= 0 (as in
    PyTorch). Each hyperparameter in turn gets a negative value (down to -inf), NaN, and for the
    betas a value >= 1 (up to +inf); the others stay valid. Creating the optimizer must raise
    ValueError; another exception type, a hang or accepting the value fails. +inf for lr, eps or
    weight_decay is not required to be rejected: PyTorch accepts it, and eps = +inf is a
    well-defined (zero) update. Skipped for functional kernels, which have no construction.
    """
    if isinstance(cfg.adapter, KernelAdapter):
        pytest.skip("a functional kernel has no construction step to validate at")
    if name not in cfg.model.rule.hyperparameter_names:
        pytest.skip(f"rule {cfg.model.rule_name} has no hyperparameter {name}")
    if name in cfg.caps.pinned:
        pytest.skip(f"{cfg.adapter.name} fixes {name} at construction; the suite draws no "
                    f"other value for it")
    if not _reaches(cfg, name):
        pytest.skip(f"{cfg.adapter.name} takes no {name} hyperparameter")
    bad_values = [below, NAN] + ([above] if name.startswith("beta") else [])
    calls.warm_up(cfg)  # a first creation that loads or compiles is not held to the limit
    for value in bad_values:
        bad = {**hyper, name: value}
        setup = Setup([GroupSetup([np.ones(4)], bad)], cfg.dtype, cfg.device)
        what = (f"input.validation: {cfg.adapter.name} given {name}={value!r} (outside the "
                f"spec's domain {DOMAIN[name]}) at construction")
        context = (f"\n  hyperparameters: {format_hyper(bad)}\n  reproduce: "
                   f"{checks.reproduction(cfg, 'input.validation')}")
        try:
            calls.guarded("creating the optimizer", cfg.adapter.create, setup,
                          timeout=cfg.timeout)
        except calls.ImplementationError as e:
            cause = e.__cause__
            if isinstance(cause, ValueError):
                continue
            if cause is None:  # a hang: the guard's own message says so
                raise AssertionError(f"{what}: {e}{context}") from None
            raise AssertionError(f"{what} raised {type(cause).__name__} "
                                 f"({calls.said(cause)}) instead of "
                                 f"ValueError{context}") from None
        raise AssertionError(f"{what} accepted it: a ValueError is expected{context}")


@given(data=st.data(), poison=st.sampled_from([NAN, math.inf, -math.inf]))
def test_nonfinite(cfg, data, poison):
    """A NaN/inf gradient element affects only its own element.

    One gradient element of the first of two parameters is NaN, +inf or -inf. Every other
    element, of both parameters, is judged against the oracle within B (parameters and, where
    readable, state); where the state is readable, a second step with finite gradients is judged
    the same way, from the implementation's own state. The poisoned element itself is an exact
    property: the spec's value there is NaN for the parameter (inf/inf, or NaN in the moments),
    so the implementation must give NaN, not a finite number (zeroing or skipping non-finite
    gradients is a different rule, that of a loss scaler); where its state is readable, m and v
    there must be NaN or the oracle's own infinity (an equivalent evaluation order such as lerp
    may meet inf - inf where the oracle has inf, never a finite value).
    """
    fresh = None if replay.can_replay(cfg) else True
    case = data.draw(step_cases(cfg.dtype, cfg.device, fresh=fresh, shape=(32,)), label="case")
    if cfg.model.rule_name in L2_COUPLED and case.hyper.get("weight_decay") == 0.0:
        # The spec's L2 term 0 * theta is NaN where theta became NaN; PyTorch skips the term at
        # weight_decay = 0. With a decay both propagate the NaN alike.
        case.setup.groups[0].hyper["weight_decay"] = 0.1
    # One case split in two parameters of one group: a leak through a whole-tensor reduction
    # shows in the first, one through a reduction over all parameters in the second.
    halves = (slice(0, 16), slice(16, 32))
    theta, g, s0 = case.setup.groups[0].params[0], case.grads[0].copy(), case.states[0]
    where = data.draw(st.integers(0, 15), label="poisoned index")
    g[where] = poison
    params = [theta[h] for h in halves]
    grads = [g[h] for h in halves]
    states = [s0.mapped(lambda _, x, h=h: x[h]) for h in halves]
    setup = replace(case.setup, groups=[GroupSetup(params, case.hyper)])
    run = replay.prepare(cfg, setup, params, states)
    assert run is not None
    t = s0.step + 1
    note = f"gradient element [0][{where}] = {poison!r}"
    repro = checks.reproduction(cfg, "input.nonfinite")

    # NaN and inf inputs are the point here: numpy's warnings about them are noise.
    with np.errstate(invalid="ignore", over="ignore"):
        outcome = checks.judge_step(cfg, run, params, states, grads, [case.hyper] * 2)
    assert not outcome.mismatches, checks.failure(
        "input.nonfinite", cfg, outcome, [case.hyper] * 2, t,
        note=note + ": other elements left the spec's bound", repro=repro)
    _check_poisoned(cfg, outcome, where, t, note, case.hyper, repro)
    if outcome.states is None:
        return
    # One more step, finite gradients, from the implementation's own (partly non-finite) state:
    # a reduction over the state (a max of v, a norm of m) would spread the NaN now.
    rng = np.random.default_rng(case.seed + 1)
    clean = [case.regimes["g"].sample(rng, (16,), cfg.dtype) for _ in halves]
    with np.errstate(invalid="ignore", over="ignore"):
        second = checks.judge_step(cfg, run, outcome.params, outcome.states, clean,
                                   [case.hyper] * 2)
    assert not second.mismatches, checks.failure(
        "input.nonfinite", cfg, second, [case.hyper] * 2, t + 1,
        note=note + " one step earlier: other elements left the spec's bound", repro=repro)
    _check_poisoned(cfg, second, where, t + 1, note + " one step earlier", case.hyper, repro)


def _check_poisoned(cfg: Config, outcome, where: int, t: int, note: str, hyper: dict,
                    repro: str) -> None:
    """The poisoned element: NaN where the oracle is NaN; NaN or the same infinity where it is
    infinite (see test_nonfinite)."""
    exact = outcome.exact[0]
    got = {"theta": outcome.params[0]}
    if outcome.states is not None:
        got.update(outcome.states[0].as_mapping())
    for name, values in got.items():
        if name not in exact.values:
            continue
        want = float(exact[name][where])
        value = float(values[where])
        if math.isnan(want):
            ok = math.isnan(value)
        elif math.isinf(want):
            ok = math.isnan(value) or value == want
        else:
            continue  # a finite exact value is judged within B by judge_step
        assert ok, (f"input.nonfinite: {cfg.adapter.name} ({cfg.dtype} on {cfg.device}) at step "
                    f"t={t}, {note}: {name}[0][{where}] is {value!r} where the spec's exact "
                    f"value is {want!r}; non-finite input must propagate to its own element, "
                    f"not be replaced by a finite number\n  hyperparameters: "
                    f"{format_hyper(hyper)}\n  reproduce: {repro}")
