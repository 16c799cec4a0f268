"""input.validation and input.nonfinite kill their mutants, and pass the reference."""

from __future__ import annotations

import pytest

from tests.suite import run_suite

VALIDATION = "conformance/test_input.py::test_validation"
NONFINITE = "conformance/test_input.py::test_nonfinite"


def test_reference_passes() -> None:
    out = run_suite("conformance/test_input.py", "--impl=impl.reference.optimizer:ReferenceAdamW")
    assert out.rc == pytest.ExitCode.OK, out.messages
    assert len(out.passed()) == 6


def test_no_validation_is_killed_for_every_hyperparameter() -> None:
    out = run_suite(VALIDATION, "--impl=impl.mutants.input:NoValidation")
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    assert len(out.failed()) == 5, out.results
    assert all("accepted it: a ValueError is expected" in m for m in out.messages.values())


def test_wrong_exception_type_is_named() -> None:
    out = run_suite(VALIDATION, "--impl=impl.mutants.input:AssertValidation")
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    assert len(out.failed()) == 5, out.results
    assert all("raised AssertionError" in m and "instead of ValueError" in m
               for m in out.messages.values())


@pytest.mark.parametrize(("name", "says"), [
    ("ZeroNonFinite", "not be replaced by a finite number"),
    ("NormClipped", "other elements left the spec's bound"),
])
def test_nonfinite_kills(name: str, says: str) -> None:
    out = run_suite(NONFINITE, f"--impl=impl.mutants.input:{name}")
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    [message] = out.messages.values()
    assert "input.nonfinite" in message and says in message


@pytest.mark.parametrize("name", ["ZeroNonFinite", "NormClipped"])
def test_nonfinite_mutants_are_correct_on_finite_input(name: str) -> None:
    """They differ from the reference only where a gradient is non-finite: exact.* passes."""
    out = run_suite("conformance/test_exact.py", f"--impl=impl.mutants.input:{name}")
    assert out.rc == pytest.ExitCode.OK, out.messages
