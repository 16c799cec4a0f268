"""The suite under pytest-xdist (`-n 2`) gives the same outcome per test as a serial run, for a
mutant (passed and failed tests both) and, under -m slow, for a correct target (so that big
audits can use `-n auto`)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.suite import ROOT, run_suite

pytest.importorskip("xdist")

FILE = "conformance/test_schedule.py"

#: -rA's words for an outcome, as the in-process run records it (an xfail is a skip there)
_OUTCOME = {"PASSED": "passed", "FAILED": "failed", "SKIPPED": "skipped", "XFAIL": "skipped",
            "ERROR": "error"}


def _parallel(impl: str) -> dict[str, str]:
    cmd = [sys.executable, "-m", "pytest", FILE, f"--impl={impl}", "--hypothesis-profile=ci",
           "-q", "-rA", "-p", "no:cacheprovider", "-n", "2", "--no-root-cause"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600).stdout
    found = {m.group(2): _OUTCOME[m.group(1)] for m in
             re.finditer(r"^(PASSED|FAILED|SKIPPED|XFAIL|ERROR) (\S+)", out, re.M)}
    assert found, out[-2000:]
    return found


@pytest.mark.parametrize("impl", [pytest.param("torch.optim.AdamW", marks=pytest.mark.slow),
                                  "impl.mutants.schedule:DecayUsesInitialLR"])
def test_same_outcomes_under_xdist(impl: str) -> None:
    # The serial run in this process (the same pytest.main a subprocess would run), the parallel
    # one end to end: xdist's workers are processes anyway.
    serial = run_suite(FILE, f"--impl={impl}").results
    assert _parallel(impl) == serial
    if "mutants" in impl:
        assert "failed" in serial.values()
