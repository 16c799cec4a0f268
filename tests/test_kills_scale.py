"""scale.power_of_two, scale.invariance and scale.grad_scaler kill their mutants, and pass the
reference optimizer and the reference kernel."""

from __future__ import annotations

import pytest

from tests.suite import run_suite

POWER = "conformance/test_scale.py::test_power_of_two"
INVARIANCE = "conformance/test_scale.py::test_invariance"
SCALER = "conformance/test_scale.py::test_grad_scaler"


@pytest.mark.parametrize("impl", ["impl.reference.optimizer:ReferenceAdamW",
                                  "impl.reference.adamw_kernel:adamw"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_references_pass(impl: str, dtype: str) -> None:
    out = run_suite("conformance/test_scale.py", f"--impl={impl}", f"--dtype={dtype}")
    assert out.rc == pytest.ExitCode.OK, out.messages
    assert len(out.passed()) == 3


def test_power_of_two_kills_eps_inside_sqrt() -> None:
    out = run_suite(POWER, "--impl=impl.mutants.scale:EpsInsideSqrt")
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    [message] = out.messages.values()
    assert "scale.power_of_two" in message and "not bitwise" in message


def test_eps_inside_sqrt_passes_when_declared() -> None:
    """Under the eps=root convention eps scales with 4^k, and the mutant is that convention."""
    out = run_suite(POWER, "--impl=impl.mutants.scale:EpsInsideSqrt", "--conventions=eps=root")
    assert out.rc == pytest.ExitCode.OK, out.messages


def test_invariance_kills_clipping() -> None:
    out = run_suite(INVARIANCE, "--impl=impl.mutants.scale:GradNormClipped")
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    [message] = out.messages.values()
    assert "scale.invariance" in message


@pytest.mark.parametrize("impl", ["impl.mutants.scale:DecaysSkippedSteps",
                                  "impl.mutants.scale:ignores_found_inf"])
def test_grad_scaler_kills(impl: str) -> None:
    out = run_suite(SCALER, f"--impl={impl}")
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    [message] = out.messages.values()
    assert "scale.grad_scaler" in message and "must be skipped" in message
