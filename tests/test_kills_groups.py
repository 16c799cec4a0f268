"""groups.* kill every group mutant; the reference and torch.optim.AdamW pass."""

from __future__ import annotations

import pytest

from tests.suite import run_suite

FILE = "conformance/test_groups.py"
KILLS = {  # mutant -> the property designated to kill it
    "DefaultWeightDecay": "test_no_decay",
    "DefaultLR": "test_no_decay",
    "NoneAsZero": "test_none_grad",
    "SkipsZeroGradient": "test_none_grad",
    "SharedCounter": "test_order",
}


@pytest.mark.parametrize("impl", ["impl.reference.optimizer:ReferenceAdamW", "torch.optim.AdamW"])
def test_correct_passes(impl: str) -> None:
    out = run_suite(FILE, f"--impl={impl}")
    assert out.rc == pytest.ExitCode.OK, out.messages


@pytest.mark.parametrize("name", sorted(KILLS))
def test_mutant_killed(name: str) -> None:
    out = run_suite(f"{FILE}::{KILLS[name]}", f"--impl=impl.mutants.groups:{name}")
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    [message] = out.messages.values()
    assert f"groups.{KILLS[name].removeprefix('test_')}" in message


def test_foreign_optimizer_degrades() -> None:
    """A target whose state is unknown is judged by behaviour, without crashing."""
    out = run_suite(FILE, "--impl=impl.foreign:ForeignAdamW")
    assert out.rc == pytest.ExitCode.OK, out.messages
