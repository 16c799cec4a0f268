"""schedule.* kill every schedule mutant (and the decay that ignores lr); the reference and
torch.optim.AdamW pass."""

from __future__ import annotations

import pytest

from tests.suite import run_suite

FILE = "conformance/test_schedule.py"
KILLS = {  # mutant -> the property designated to kill it
    "impl.mutants.schedule:DecayUsesInitialLR": "test_current_lr",
    "impl.mutants.schedule:StepUsesInitialLR": "test_current_lr",
    "impl.mutants.schedule:LrFoldedIntoDenominator": "test_lr_zero",
    "impl.mutants.decouple:DecayWithoutLR": "test_lr_zero",
}


@pytest.mark.parametrize("impl", ["impl.reference.optimizer:ReferenceAdamW", "torch.optim.AdamW",
                                  "impl.foreign:ForeignAdamW"])
def test_correct_passes(impl: str) -> None:
    out = run_suite(FILE, f"--impl={impl}")
    assert out.rc == pytest.ExitCode.OK, out.messages


@pytest.mark.parametrize("impl", sorted(KILLS))
def test_mutant_killed(impl: str) -> None:
    out = run_suite(f"{FILE}::{KILLS[impl]}", f"--impl={impl}")
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    [message] = out.messages.values()
    assert f"schedule.{KILLS[impl].removeprefix('test_')}" in message
