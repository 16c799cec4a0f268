"""dtype.*: low-precision parameters, judged at the precision the implementation declares."""

from __future__ import annotations

import numpy as np
import pytest
from adamw_conformance.core import checks, replay
from adamw_conformance.core.precision import LOW_DTYPES as LOW
from adamw_conformance.core.precision import compute_verdict, within_compute
from adamw_conformance.core.strategies import representable, step_cases
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
