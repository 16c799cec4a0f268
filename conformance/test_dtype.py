"""dtype.*: low-precision parameters, judged at the precision the implementation declares."""

from __future__ import annotations

import numpy as np
import pytest
from adamw_conformance.core import checks, replay
from adamw_conformance.core.precision import LOW_DTYPES as LOW
from adamw_conformance.core.precision import compute_verdict, within_compute
from adamw_conformance.core.strategies import representable, step_cases
from adamw_conformance.spec.formats import format_of
from hypothesis import assume, given
from hypothesis import strategies as st

pytestmark = pytest.mark.catalogue("dtype")


def test_precision(cfg, record_property):
    """bf16/fp16: within B for the declared precision; effective compute precision reported.

    One step (state replay where possible, else from a fresh state) is judged against the
    declared precision (--compute-dtype; by default float32 arithmetic, PyTorch's opmath, with
    state in the dtype the target keeps it in). The same step is then judged against two
    profiles, arithmetic in float32 and arithmetic in the parameter dtype, and the verdict is
    reported (record_property 'effective_compute', and a line in the output): "computes in
    float32 and stores bfloat16" if every step is within the float32-compute bound, "computes
    in bfloat16" if some are only within the bf16-compute one. float32/float64 parameters have
    no lower precision to detect: skipped (exact.one_step covers them).
    """
    if cfg.dtype not in LOW:
        pytest.skip(f"dtype.precision is about bfloat16/float16 parameters; --dtype={cfg.dtype} "
                    "is judged at its own precision by exact.one_step")
    fresh = None if replay.can_replay(cfg) else True
    has_m = {"m", "beta1"} <= {s.name for s in (*cfg.model.rule.state,
                                                *cfg.model.rule.hyperparameters)}
    seen = {"steps": 0, "float32": 0, cfg.dtype: 0}
    declared = cfg.precision().label()

    @given(data=st.data())
    def steps(data):
        # Half the replayed cases put the gradient against the first moment, so that
        # b1 m + (1 - b1) g nearly cancels: an intermediate rounded to the parameter dtype
        # (b1 m stored in bf16) then shows, where the float32-compute bound is tight.
        # (Rules without a first moment m and beta1, SGD/Adagrad/RMSprop, have no such case.)
        cancel = (fresh is None and has_m and data.draw(st.booleans(), label="cancelling m"))
        case = data.draw(step_cases(cfg.dtype, cfg.device, fresh=False if cancel else fresh),
                         label="case")
        if cancel:
            b1, m = case.hyper["beta1"], case.states[0].m
            wobble = 1 + 2.0**-6 * np.random.default_rng(case.seed).uniform(-1, 1, m.shape)
            g = representable(-b1 / (1 - b1) * m * wobble, cfg.dtype)
            assume(bool(np.all(np.isfinite(g))))
            case.grads = [g]
        params = [p for g in case.setup.groups for p in g.params]
        run = replay.prepare(cfg, case.setup, params, case.states)
        assert run is not None
        outcome = checks.judge_step(cfg, run, params, case.states, case.grads, [case.hyper])
        assert not outcome.mismatches, checks.failure(
            "dtype.precision", cfg, outcome, [case.hyper], case.states[0].step + 1,
            note=f"declared precision {declared}",
            repro=checks.reproduction(cfg, "dtype.precision"))
        seen["steps"] += 1
        for compute in ("float32", cfg.dtype):
            seen[compute] += within_compute(cfg, cfg.model, params, case.states, case.grads,
                                            [case.hyper], outcome.params, outcome.states,
                                            compute, outcome.exact)

    steps()
    verdict = compute_verdict(seen, cfg.dtype, declared).text
    record_property("effective_compute", verdict)
    print(f"dtype.precision: {cfg.adapter.name} ({cfg.dtype}): {verdict}")


def test_stochastic_rounding(cfg, record_property):
    """A target that rounds its bf16/fp16 parameters stochastically rounds without bias.

    Stochastic rounding is not a bound: a stored parameter is one of the two neighbours of the
    float32 result x, the upper with probability (x - lower) / (upper - lower). Whether a target
    rounds so is found from behaviour (equal elements given an equal step end apart; the header
    names it). The experiment (core/stochastic.py) steps 1024 elements per class (five binades,
    either sign, stepped up or down, an update of 15/128 to 15/4096 of an ulp) 8 times and
    tests, per class, that the probability of the upper neighbour equals the fraction (binomial
    test), that over the 8 steps the mean change equals the update (which rounding to nearest
    loses), that each two consecutive steps' roundings are independent (a random draw reused
    fails it), and that a result that is representable (a zero-gradient class) never moves. The
    binomial tests run at a false-alarm rate of ALPHA (1e-6) for the whole run,
    Bonferroni-corrected (docs/precision-techniques.md). A target whose equal elements end alike
    but on the farther neighbour (a directed rounding, one draw for a whole tensor) takes the
    experiment too; a target that rounds to nearest is skipped, saying so.
    """
    from adamw_conformance.core import stochastic

    if cfg.dtype not in LOW:
        pytest.skip(f"dtype.stochastic_rounding is about bfloat16/float16 parameters; "
                    f"--dtype={cfg.dtype}")
    found = stochastic.rounding(cfg)
    if found == "nearest":
        pytest.skip(f"{cfg.adapter.name} rounds its {cfg.dtype} parameters to nearest (equal "
                    "elements given an equal step stay equal): no stochastic rounding to test")
    findings, tests = stochastic.experiment(cfg)
    failed = [f for f in findings if not f.ok]
    record_property("stochastic_rounding", f"{len(findings) - len(failed)} of {tests} tests "
                                           "passed")
    assert not failed, (
        f"dtype.stochastic_rounding: {cfg.adapter.name} ({cfg.dtype}) "
        + ("rounds stochastically" if found == "stochastic" else
           "does not round to nearest (a probe's step stored the farther neighbour), nor "
           "spreads equal results as a stochastic rounding does")
        + f", and {len(failed)} of {tests} tests of its rounding fail (false-alarm rate "
        f"{stochastic.ALPHA:g} for the run):\n"
        + "\n".join(f"  {f.test}: {f.text}" for f in failed[:6])
        + f"\n  reproduce:\n    {checks.reproduction(cfg, 'dtype.stochastic_rounding')}")
    print(f"dtype.stochastic_rounding: {cfg.adapter.name} ({cfg.dtype}): unbiased, "
          f"{tests} tests passed")


def test_compensation(cfg, record_property):
    """A Kahan-compensated target holds the pair's precision: from a pair with a low part.

    Where the target keeps a compensation c beside each bf16/fp16 parameter p (found from
    behaviour; the header names it), every property judges the pair's value p + c. Here a step
    from a replayed state whose parameters are pairs with a nonzero low part is judged against
    the compensated store's bound (core/compensation.py): the spec's bound of the arithmetic
    plus one rounding, to the parameter's dtype, of what the high part does not hold; a
    compensation dropped or not carried into the next step misses by the low part, up to half
    an ulp, far outside it. weight_decay is 0: a decay applied to the high part alone rounds
    outside the compensation (dtype.precision and exact.one_step judge it). A target without a
    compensation is skipped, saying so.
    """
    from adamw_conformance.core import compensation, layout

    if cfg.dtype not in LOW:
        pytest.skip(f"dtype.compensation is about bfloat16/float16 parameters; --dtype={cfg.dtype}")
    key = layout.of(cfg).compensation
    if key is None:
        pytest.skip(f"{cfg.adapter.name} keeps no Kahan compensation beside its {cfg.dtype} "
                    "parameters (none found from behaviour): dtype.precision judges them")
    if not replay.can_replay(cfg):
        pytest.skip(f"dtype.compensation replays a pair with a low part: {replay.refusal(cfg)}")
    seen = {"steps": 0}

    @given(data=st.data())
    def steps(data):
        case = data.draw(step_cases(cfg.dtype, cfg.device, fresh=False, decay=False),
                         label="case")
        if "weight_decay" in case.hyper:
            case.hyper["weight_decay"] = 0.0
        # at t=0 replay would create a fresh run, which cannot hold a low part; zero moments
        # after one step are reachable (a zero gradient)
        case.states[0].step = max(case.states[0].step, 1)
        high = case.setup.groups[0].params[0]
        before = high + compensation.low_parts(high, cfg.dtype,
                                               np.random.default_rng(case.seed))
        case.setup.groups[0].params[0] = before
        run = replay.prepare(cfg, case.setup, [before], case.states)
        assert run is not None
        from adamw_conformance.core import calls
        calls.step(cfg, run, case.grads)
        after = run.params()[0]
        miss, worst = compensation.judge(cfg, before, high, case.grads[0], case.states[0],
                                     case.hyper, after)
        assert miss is None, (
            f"dtype.compensation: {cfg.adapter.name} ({cfg.dtype}, compensated by "
            f"state['{key}']) is outside the compensated store's bound at step "
            f"t={case.states[0].step + 1}, from parameters p + c with a nonzero low part:\n"
            f"  {miss.describe()}\n"
            f"  the pair holds the value to about twice {cfg.dtype}'s precision; a "
            f"compensation dropped or not carried into the next step misses by the low part\n"
            f"  reproduce:\n    {checks.reproduction(cfg, 'dtype.compensation')}")
        seen["steps"] += 1
        seen["worst"] = max(seen.get("worst", 0.0), worst)

    steps()
    held = (f"state['{key}']: {seen['steps']} steps within the compensated store's bound; the "
            f"pairs held {compensation.bits(seen.get('worst', 0.0)):.1f} significand bits at "
            f"worst (relative to the larger of the old and new values, the moments' own "
            f"rounding included; a {cfg.dtype} store alone keeps "
            f"{format_of(cfg.dtype).precision})")
    record_property("compensation", held)
    print(f"dtype.compensation: {cfg.adapter.name} ({cfg.dtype}): {held}")
