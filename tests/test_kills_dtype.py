"""dtype.precision kills bf16 arithmetic without upcast, reports what it sees, and passes the
reference."""

from __future__ import annotations

import pytest

from tests.suite import run_suite

PRECISION = "conformance/test_dtype.py::test_precision"
MUTANT = "--impl=impl.mutants.dtype:Bfloat16Arithmetic"


def test_reference_passes_and_is_reported_as_float32_compute(capsys) -> None:
    out = run_suite(PRECISION, "--impl=impl.reference.optimizer:ReferenceAdamW",
                    "--dtype=bfloat16", "-rA")
    assert out.rc == pytest.ExitCode.OK, out.messages
    assert "computes in float32 and stores bfloat16" in capsys.readouterr().out


def test_bf16_arithmetic_is_killed() -> None:
    out = run_suite(PRECISION, MUTANT, "--dtype=bfloat16")
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    [message] = out.messages.values()
    assert "dtype.precision" in message and "compute=float32" in message


def test_bf16_arithmetic_passes_when_declared_and_is_reported(capsys) -> None:
    out = run_suite(PRECISION, MUTANT, "--dtype=bfloat16", "--compute-dtype=bfloat16", "-rA")
    assert out.rc == pytest.ExitCode.OK, out.messages
    assert "computes in bfloat16:" in capsys.readouterr().out


def test_skips_float32() -> None:
    out = run_suite(PRECISION, MUTANT)
    assert out.rc == pytest.ExitCode.OK and not out.passed(), out.results
