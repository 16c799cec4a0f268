"""The harness never blames the target for itself (issue 13): an lr kept as a tensor is set as
torch's schedulers set it, an option refused on use is a skip with the reason, a one-time cost is
paid before the per-call limit and reported, and both AMP patterns are judged."""

from __future__ import annotations

import numpy as np
import pytest
from adamw_conformance.adapters.base import GroupSetup, Setup
from adamw_conformance.core import calls
from adamw_conformance.core.config import Config
from adamw_conformance.core.strategies import representable, typical_hyper
from adamw_conformance.core.targets import resolve

import impl.harness
from tests.suite import ROOT, run_suite


def _cfg(target: str, **kw) -> Config:
    return Config(resolve(target, ROOT), **kw)


def test_set_lr_fills_a_tensor_lr_in_place():
    cfg = _cfg("impl.tensor_lr:TensorLrAdamW")
    run = calls.create(cfg, Setup([GroupSetup([np.ones(3)], typical_hyper())]))
    lr = run.opt.param_groups[0]["lr"]
    calls.set_lr(cfg, run, 0, 0.25)
    assert run.opt.param_groups[0]["lr"] is lr and lr.item() == 0.25
    calls.step(cfg, run, [np.full(3, 0.5)])  # refuses a float lr: it still has a tensor


def test_tensor_lr_passes_the_schedules_and_the_round_trip():
    # Before set_lr filled a tensor lr, these three failed, quoting the target's refusal.
    out = run_suite("conformance/test_schedule.py", "conformance/test_state.py",
                    "--impl=impl.tensor_lr:TensorLrAdamW")
    assert out.rc == pytest.ExitCode.OK and len(out.passed()) == 3, out.messages


def test_refusal_needs_the_control():
    refuses = _cfg("impl.harness:RefusesAmsgradOnUse")
    why = calls.refusal(refuses, {"amsgrad": True})
    assert why is not None and "refuses amsgrad=True" in why
    assert "raised RuntimeError in step()" in why and "without it the same calls succeed" in why
    assert calls.refusal(refuses, {"amsgrad": False}) is None  # the default is no use of it
    assert calls.refusal(_cfg("torch.optim.AdamW"), {"amsgrad": True}) is None
    # A target that raises with and without the option is judged, not excused.
    assert calls.refusal(_cfg("impl.broken:RaisingAdamW"), {"amsgrad": True}) is None


def test_option_refused_on_use_is_a_skip_with_the_reason(capsys):
    out = run_suite("conformance/test_exact.py::test_one_step", "conformance/test_state.py",
                    "--impl=impl.harness:RefusesAmsgradOnUse", "-rs")
    assert out.rc == pytest.ExitCode.OK, out.messages
    assert out.results["conformance/test_exact.py::test_one_step[amsgrad]"] == "skipped"
    assert out.results["conformance/test_state.py::test_round_trip"] == "passed"
    text = capsys.readouterr().out
    assert "refuses amsgrad=True: with it the implementation raised RuntimeError" in text
    assert "conformance: option skipped: " in text


def test_one_time_cost_is_paid_before_the_per_call_limit(capsys):
    impl.harness.LOADED["extension"] = False  # its first construction sleeps 1.5 s
    out = run_suite("conformance/test_exact.py::test_one_step[plain]",
                    "--impl=impl.harness:SlowFirstCall", "--impl-timeout=1")
    assert out.rc == pytest.ExitCode.OK, out.messages
    assert "conformance: one-time cost: the first creation and step took" in \
        capsys.readouterr().out


def test_both_amp_patterns_are_judged():
    # An optimizer that checks found_inf only while unscaling itself: right under scaler.step
    # alone, wrong after scaler.unscale_ (the run the kill matrix makes, reused).
    out = run_suite("conformance/test_scale.py::test_grad_scaler",
                    "--impl=impl.mutants.scale:IgnoresFoundInfAfterUnscale", reuse=True)
    assert out.results == {"conformance/test_scale.py::test_grad_scaler[step]": "passed",
                           "conformance/test_scale.py::test_grad_scaler[unscale]": "failed"}


def test_drawn_values_past_float16s_range_saturate():
    """A regime reaching past float16's 65504 (gradients of 10^7) draws its largest finite value,
    not inf: at lr = 0 a float16 ReferenceAdamW, whose float32 state holds the square, must not
    move (schedule.lr_zero failed it with the inf gradient the draw made); float32 draws are as
    they were, and an inf put in on purpose stays."""
    x = np.array([1e7, -1e7, 3.0, np.inf])
    assert list(representable(x, "float16")) == [65504.0, -65504.0, 3.0, np.inf]
    assert list(representable(x, "float32")) == [1e7, -1e7, 3.0, np.inf]
    out = run_suite("conformance/test_schedule.py::test_lr_zero",
                    "--impl=impl.reference.optimizer:ReferenceAdamW", "--dtype=float16")
    assert out.rc == 0, out.messages
