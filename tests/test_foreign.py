"""An optimizer the suite does not know (impl/foreign.py: its own state names and constructor
defaults, no amsgrad/maximize) is judged by behaviour alone: the whole catalogue runs on it
without a crash or a false failure, with state replay degraded to fresh-state and trajectory
checks, and a defect in it is still caught."""

from __future__ import annotations

import numpy as np
import pytest
from adamw_conformance.adapters.base import GroupSetup, Setup
from adamw_conformance.core import replay
from adamw_conformance.core.config import Config
from adamw_conformance.core.targets import resolve

from tests.suite import run_suite

FOREIGN = "impl.foreign:ForeignAdamW"


def test_state_is_unreadable_so_replay_degrades() -> None:
    cfg = Config(resolve(FOREIGN), impl_text=FOREIGN)
    run = cfg.adapter.create(Setup([GroupSetup([np.ones(3)], {
        "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0})]))
    run.step([np.ones(3)])
    assert replay.read_states(run, 1) is None
    assert not replay.can_replay(cfg)


# bfloat16 under -m slow: what is foreign here (state names, no replay) is the same in any dtype.
@pytest.mark.parametrize("dtype", ["float32", pytest.param("bfloat16", marks=pytest.mark.slow)])
def test_whole_catalogue_passes(dtype: str) -> None:
    out = run_suite(f"--impl={FOREIGN}", f"--dtype={dtype}")
    assert out.rc == pytest.ExitCode.OK, "\n\n".join(f"{k}:\n{v}"
                                                     for k, v in out.messages.items())
    assert len(out.passed()) >= 5, out.results


def test_a_defect_is_still_caught_without_replay() -> None:
    out = run_suite("conformance/test_exact.py", "--impl=impl.foreign:ForeignUncoupledDecay")
    assert out.rc == pytest.ExitCode.TESTS_FAILED
    assert any("test_exact.py" in k for k in out.failed()), out.results
