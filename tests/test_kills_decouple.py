"""decouple.* kill every decoupling mutant and torch.optim.Adam(weight_decay>0) offered as an
AdamW, with a message that names the coupling; torch.optim.AdamW and the reference pass."""

from __future__ import annotations

import pytest

from tests.suite import run_suite

FILE = "conformance/test_decouple.py"
KILLS = {  # mutant -> the property designated to kill it
    "L2InGradient": "test_moments",
    "DecayWithoutLR": "test_decay_only",
    "DecayedMoments": "test_moments",
    "DecayInNumerator": "test_uniform",
}


@pytest.mark.parametrize("impl", ["impl.reference.optimizer:ReferenceAdamW", "torch.optim.AdamW"])
def test_correct_passes(impl: str) -> None:
    out = run_suite(FILE, f"--impl={impl}")
    assert out.rc == pytest.ExitCode.OK, out.messages


@pytest.mark.parametrize("name", sorted(KILLS))
def test_mutant_killed(name: str) -> None:
    out = run_suite(f"{FILE}::{KILLS[name]}", f"--impl=impl.mutants.decouple:{name}")
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    [message] = out.messages.values()
    assert f"decouple.{KILLS[name].removeprefix('test_')}" in message


@pytest.mark.parametrize("prop", ["test_moments", "test_uniform", "test_decay_only"])
def test_adam_l2_is_not_adamw(prop: str) -> None:
    """torch.optim.Adam with weight_decay > 0 couples the decay: judged as an AdamW
    (--rule=adamw; by default it is judged as the Adam+L2 it is) it must fail, and say so."""
    out = run_suite(f"{FILE}::{prop}", "--impl=torch.optim.Adam", "--rule=adamw")
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    [message] = out.messages.values()
    assert "weight decay reached the moments" in message
    assert "Adam+L2 (coupled decay" in message


def test_unreadable_state_degrades() -> None:
    """Without readable state the properties judge behaviour: a correct unknown optimizer passes,
    the same one decaying by weight_decay alone fails."""
    ok = run_suite(FILE, "--impl=impl.foreign:ForeignAdamW")
    assert ok.rc == pytest.ExitCode.OK, ok.messages
    bad = run_suite(f"{FILE}::test_decay_only", "--impl=impl.foreign:ForeignUncoupledDecay")
    assert bad.rc == pytest.ExitCode.TESTS_FAILED
