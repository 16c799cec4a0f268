"""Run the conformance suite in-process, the way a user would from the repository root."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Outcome:
    """What one run of the suite produced: exit code and the outcome of each test id."""

    rc: int
    results: dict[str, str] = field(default_factory=dict)  # nodeid -> passed/failed/skipped
    messages: dict[str, str] = field(default_factory=dict)  # nodeid -> failure text
    seconds: dict[str, float] = field(default_factory=dict)  # nodeid -> duration of the call
    examples: dict[str, int] = field(default_factory=dict)  # nodeid -> Hypothesis test cases run

    def failed(self) -> list[str]:
        return [k for k, v in self.results.items() if v == "failed"]

    def passed(self) -> list[str]:
        return [k for k, v in self.results.items() if v == "passed"]


class _Collector:
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            self.outcome.seconds[report.nodeid] = report.duration
        # Hypothesis' pytest plugin leaves its statistics text on the teardown report.
        stats = report.__dict__.get("_hypothesis_stats")
        if stats:
            self.outcome.examples[report.nodeid] = sum(
                int(a) + int(b) for a, b in re.findall(r"(\d+) passing, (\d+) failing", stats))
        if report.when == "call" or report.outcome != "passed":
            if report.nodeid in self.outcome.results and report.when != "call":
                return
            self.outcome.results[report.nodeid] = report.outcome
            if report.failed:
                self.outcome.messages[report.nodeid] = report.longreprtext


#: Outcomes of the runs asked for with reuse=True, by (args, profile): see run_suite.
_REUSED: dict[tuple[tuple[str, ...], str], Outcome] = {}


def run_suite(*args: str, profile: str = "ci", reuse: bool = False,
              root_cause: bool = False) -> Outcome:
    """pytest conformance <args> --hypothesis-profile=<profile>, in this process.

    With reuse=True, a run with the same arguments and profile that an earlier test of this
    process asked for with reuse=True is not run again: its outcome is returned. For tests that
    judge the same run differently (the kill matrix's named-property kill and the message it
    gives); a test that reads the run's printed output (capsys) must not reuse.

    The root-cause summary (a fingerprint, ~0.7 s per failing run) is off unless `root_cause`:
    the tests that read it ask for it, the others judge verdicts and messages.
    """
    key = (args, profile)
    if reuse and key in _REUSED:
        return _REUSED[key]
    outcome = Outcome(0)
    targets = [a for a in args if a.startswith("conformance")] or ["conformance"]
    options = [a for a in args if not a.startswith("conformance")]
    # no:unraisableexception: that plugin ends each session with full garbage collections
    # (0.3-1 s in this process's heap, more than a one-property run costs); an unraisable
    # exception in the nested run still reaches the outer session's hook, which reports it.
    argv = [*(str(ROOT / t) for t in targets), *options, f"--hypothesis-profile={profile}",
            "-q", "-p", "no:cacheprovider", "-p", "no:unraisableexception", f"--rootdir={ROOT}",
            *([] if root_cause else ["--no-root-cause"])]
    rc = pytest.main(argv, plugins=[_Collector(outcome)])
    outcome.rc = int(rc)
    if reuse:
        _REUSED[key] = outcome
    return outcome
