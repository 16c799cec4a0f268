"""bias.step_one and bias.counter kill their mutants, and pass the reference."""

from __future__ import annotations

import pytest

from tests.suite import run_suite

STEP_ONE = "conformance/test_bias.py::test_step_one"
COUNTER = "conformance/test_bias.py::test_counter"
REFERENCE = "--impl=impl.reference.optimizer:ReferenceAdamW"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_reference_passes(dtype: str) -> None:
    out = run_suite("conformance/test_bias.py", REFERENCE, f"--dtype={dtype}")
    assert out.rc == pytest.ExitCode.OK, out.messages
    assert len(out.passed()) == 5


@pytest.mark.parametrize("name", ["NoBiasCorrection", "CounterStartsAtOne"])
def test_step_one_kills(name: str) -> None:
    out = run_suite(STEP_ONE, f"--impl=impl.mutants.bias:{name}")
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    [message] = out.messages.values()
    assert "bias.step_one" in message and "t=1" in message


@pytest.mark.parametrize("name", ["AdvancesWithoutGradient", "GlobalCounter"])
def test_late_start_kills(name: str) -> None:
    out = run_suite(f"{COUNTER}[late-start]", f"--impl=impl.mutants.bias:{name}")
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    [message] = out.messages.values()
    assert "bias.counter" in message and "had no gradient" in message


def test_global_counter_passes_when_declared() -> None:
    """A per-optimizer counter is a convention, not a bug, once the user names it."""
    out = run_suite(f"{COUNTER}[late-start]", "--impl=impl.mutants.bias:GlobalCounter",
                    "--conventions=counter=global")
    assert out.rc == pytest.ExitCode.OK, out.messages


@pytest.mark.parametrize(("name", "part"), [("Bfloat16Counter", "past-256"),
                                            ("Float16Counter", "past-2048")])
def test_low_precision_counter_kills(name: str, part: str) -> None:
    out = run_suite(f"{COUNTER}[{part}]", f"--impl=impl.mutants.bias:{name}")
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    [message] = out.messages.values()
    assert "bias.counter" in message and "stored counter now reads" in message


def test_float16_counter_is_exact_below_2048() -> None:
    """The fp16 counter is right at 2^8: the property fails where the counter is wrong only."""
    out = run_suite(f"{COUNTER}[past-256]", "--impl=impl.mutants.bias:Float16Counter")
    assert out.rc == pytest.ExitCode.OK, out.messages
