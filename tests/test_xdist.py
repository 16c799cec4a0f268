"""The suite under pytest-xdist (`-n 2`) gives the same outcome per test as a serial run, for a
mutant (passed and failed tests both) and, under -m slow, for a correct target (so that big
audits can use `-n auto`)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.suite import ROOT

pytest.importorskip("xdist")

FILE = "conformance/test_schedule.py"


def _outcomes(impl: str, *extra: str) -> dict[str, str]:
    cmd = [sys.executable, "-m", "pytest", FILE, f"--impl={impl}", "--hypothesis-profile=ci",
           "-q", "-rA", "-p", "no:cacheprovider", *extra]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600).stdout
    found = dict((m.group(2), m.group(1)) for m in
                 re.finditer(r"^(PASSED|FAILED|SKIPPED|XFAIL|ERROR) (\S+)", out, re.M))
    assert found, out[-2000:]
    return found


@pytest.mark.parametrize("impl", [pytest.param("torch.optim.AdamW", marks=pytest.mark.slow),
                                  "impl.mutants.schedule:DecayUsesInitialLR"])
def test_same_outcomes_under_xdist(impl: str) -> None:
    serial = _outcomes(impl)
    parallel = _outcomes(impl, "-n", "2")
    assert parallel == serial
    if "mutants" in impl:
        assert "FAILED" in serial.values()
