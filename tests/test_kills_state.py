"""state.round_trip kills every state mutant, and passes the reference (the mutants' base)."""

from __future__ import annotations

import pytest

from impl.mutants.state import MUTANTS
from tests.suite import run_suite

TEST = "conformance/test_state.py::test_round_trip"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_reference_passes(dtype: str) -> None:
    out = run_suite(TEST, "--impl=impl.reference.optimizer:ReferenceAdamW", f"--dtype={dtype}")
    assert out.rc == pytest.ExitCode.OK, out.messages


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_round_trip_kills(name: str) -> None:
    out = run_suite(TEST, f"--impl=impl.mutants.state:{name}")
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    [message] = out.messages.values()
    assert "state.round_trip" in message and "load_state_dict" in message
