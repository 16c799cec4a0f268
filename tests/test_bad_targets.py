"""Bad targets as a user meets them: a usage error for an --impl that cannot be driven (exit 4,
what was tried and the accepted forms, no traceback); readable per-test failures for an
implementation that raises, hangs or returns NaN, with the rest of the run going on.

The implementations that misbehave, and one usage error of each origin (the target, an import
that raises, an option), run end to end (`python -m pytest conformance --impl=...` in a
subprocess). The other usage errors and the --conventions=auto headers come from the same
`pytest.main` in this process (tests.suite.run_suite), read from the captured output: what a
subprocess adds is only its start, ~3 s each."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.suite import ROOT, run_suite


@dataclass
class Result:
    rc: int
    output: str
    cases: dict[str, str]  # test name -> "passed" | "skipped" | failure message

    def failed(self) -> dict[str, str]:
        return {k: v for k, v in self.cases.items() if v not in ("passed", "skipped")}


def suite(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
          targets: tuple[str, ...] = ("conformance",)) -> Result:
    junit = tmp_path / "junit.xml"
    # No limit of its own that a verdict could depend on: the timeout only ends a run that would
    # never end (a hang the suite failed to cut short).
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *targets, *args, "--hypothesis-profile=ci",
         "-p", "no:cacheprovider", "-q", f"--junitxml={junit}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, **(env or {})})
    cases: dict[str, str] = {}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            bad = case.find("failure")
            if bad is None:
                bad = case.find("error")
            message = "" if bad is None else (bad.get("message") or "") + (bad.text or "")
            cases[name] = ("skipped" if case.find("skipped") is not None else
                           "passed" if bad is None else message)
    return Result(proc.returncode, proc.stdout + proc.stderr, cases)


def in_process(capsys: pytest.CaptureFixture[str], *args: str,
               targets: tuple[str, ...] = ("conformance",)) -> Result:
    """`suite` without the subprocess: the same pytest.main, its output read from capsys."""
    capsys.readouterr()
    out = run_suite(*targets, *args)
    text = capsys.readouterr()
    cases = {k: out.messages.get(k, v) if v == "failed" else v for k, v in out.results.items()}
    return Result(out.rc, text.out + text.err, cases)


# --- --impl that cannot be driven: a usage error -------------------------------------------------

UNUSABLE = [
    ("nosuch_package.Optimizer", "Tried: import nosuch_package"),
    ("torch.optim.NoSuchAdamW", "torch.optim has no attribute NoSuchAdamW"),
    ("math.pi", "is a float, which the suite cannot drive"),
    ("justaword", "is not a path"),
    ("torch.optim.AdamW(foreach=maybe)", "cannot read the keyword overrides"),
    ("torch.optim.AdamW(nosuch=1)", "takes no keyword(s) ['nosuch']"),
]


def _assert_unusable(r: Result, impl: str, says: str) -> None:
    assert r.rc == pytest.ExitCode.USAGE_ERROR, r.output
    assert f"--impl={impl!r}" in r.output and says in r.output, r.output
    assert "Traceback" not in r.output and "INTERNALERROR" not in r.output, r.output
    if impl in ("nosuch_package.Optimizer", "math.pi", "justaword"):
        assert "Accepted:" in r.output and "torch-fused" in r.output \
            and "pkg.mod:Attr" in r.output, r.output


@pytest.mark.parametrize(("impl", "says"), UNUSABLE)
def test_unusable_impl_is_a_usage_error(capsys: pytest.CaptureFixture[str], impl: str,
                                        says: str) -> None:
    _assert_unusable(in_process(capsys, f"--impl={impl}"), impl, says)


def test_unusable_impl_is_a_usage_error_end_to_end(tmp_path: Path) -> None:
    impl, says = UNUSABLE[0]
    _assert_unusable(suite(tmp_path, f"--impl={impl}"), impl, says)


def test_impl_whose_import_raises_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "broken_on_import.py").write_text(
        "raise RuntimeError('no backend for this machine')\n")
    r = suite(tmp_path, "--impl=broken_on_import:AdamW",
              env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert r.rc == pytest.ExitCode.USAGE_ERROR, r.output
    assert "importing broken_on_import raised RuntimeError: no backend" in r.output, r.output
    assert "Traceback" not in r.output, r.output


# --- implementations that misbehave: readable failures, the run goes on --------------------------

def _assert_each_failure_says(r: Result, says: str) -> None:
    failed = r.failed()
    assert failed, r.output
    for name, message in failed.items():
        assert says in message, f"{name}:\n{message}"
    assert "INTERNALERROR" not in r.output, r.output


def test_raising_step_fails_every_test_readably(tmp_path: Path) -> None:
    r = suite(tmp_path, "--impl=impl.broken:RaisingAdamW")
    assert r.rc == pytest.ExitCode.TESTS_FAILED, r.output
    # Every test that steps the optimizer fails on its own; the rest still ran.
    assert len(r.failed()) >= 3, r.cases
    _assert_each_failure_says(r, "the implementation raised RuntimeError in step(): "
                                 "RaisingAdamW: deliberate failure")
    assert any(v == "passed" for v in r.cases.values()), r.cases  # input.validation, say


def test_raising_constructor_fails_readably(tmp_path: Path) -> None:
    r = suite(tmp_path, "--impl=impl.broken:RaisingConstructor")
    assert r.rc == pytest.ExitCode.TESTS_FAILED, r.output
    failed = r.failed()
    assert len(failed) >= 3, r.cases
    for name, message in failed.items():
        assert "raised ImportError" in message and "backend not available" in message, \
            f"{name}:\n{message}"


def test_hanging_step_times_out_and_the_run_goes_on(tmp_path: Path) -> None:
    # HangingAdamW's step() never returns: that the run ended at all shows that nothing waited
    # for a hung call. Each hung test waits the limit twice (Hypothesis replays the failing
    # example): six waits of 2 s here.
    targets = ("conformance/test_exact.py::test_trajectory", "conformance/test_state.py",
               "conformance/test_schedule.py::test_lr_zero", "conformance/test_input.py")
    r = suite(tmp_path, "--impl=impl.broken:HangingAdamW", "--impl-timeout=2",
              "-k", "not nonfinite", targets=targets)
    assert r.rc == pytest.ExitCode.TESTS_FAILED, r.output
    assert len(r.failed()) >= 3, r.cases
    _assert_each_failure_says(r, "did not return from")
    assert "within 2 s (set --impl-timeout to allow more)" in r.output
    # Validation never steps: it passed, after the hung tests before it.
    assert any(k.endswith("test_validation[lr]") and v == "passed" for k, v in r.cases.items())


def test_nan_result_fails_with_got_and_oracle(tmp_path: Path) -> None:
    r = suite(tmp_path, "--impl=impl.broken:NaNAdamW",
              targets=("conformance/test_exact.py", "conformance/test_state.py"))
    assert r.rc == pytest.ExitCode.TESTS_FAILED, r.output
    failed = r.failed()
    assert any("exact.one_step" in m for m in failed.values()), failed
    for name, message in failed.items():
        assert "got nan" in message and "oracle" in message, f"{name}:\n{message}"
    # A NaN-producing optimizer is still deterministic: its save/load round trip holds.
    assert any(k.endswith("test_round_trip") and v == "passed" for k, v in r.cases.items())


# --- optimizers and adapters nobody named (impl/unknown.py, reports/unknown-optimizers.md) ------

def test_wrong_shapes_fail_readably(tmp_path: Path) -> None:
    r = suite(tmp_path, "--impl=impl.unknown:WrongShapeAdapter",
              targets=("conformance/test_exact.py",))
    assert r.rc == pytest.ExitCode.TESTS_FAILED, r.output
    _assert_each_failure_says(r, "params() gave parameter 0 with shape")


def test_a_module_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    r = in_process(capsys, "--impl=torch.optim")
    assert r.rc == pytest.ExitCode.USAGE_ERROR, r.output
    assert "torch.optim is a module, which the suite cannot drive" in r.output, r.output
    assert "Traceback" not in r.output


def test_nonpositive_impl_timeout_is_a_usage_error(tmp_path: Path) -> None:
    r = suite(tmp_path, "--impl-timeout=-1", targets=("conformance/test_input.py",))
    assert r.rc == pytest.ExitCode.USAGE_ERROR and "--impl-timeout=-1" in r.output, r.output


# -v: the header (not shown with -q) says what --conventions=auto found.
def test_conventions_auto_on_another_rule_keeps_the_defaults(
        capsys: pytest.CaptureFixture[str]) -> None:
    r = in_process(capsys, "--impl=torch.optim.SGD", "--conventions=auto", "-k", "one_step",
                   "-v", targets=("conformance/test_exact.py",))
    assert r.rc == pytest.ExitCode.OK, r.output
    assert "rule=sgd conventions=default (auto; rule sgd has no conventions" in r.output


def test_conventions_auto_on_a_raising_target_says_why(
        capsys: pytest.CaptureFixture[str]) -> None:
    r = in_process(capsys, "--impl=impl.broken:RaisingAdamW", "--conventions=auto", "-v",
                   targets=("conformance/test_exact.py",))
    assert r.rc == pytest.ExitCode.TESTS_FAILED, r.output
    assert "(auto; fingerprint: could not drive the target: the implementation raised " \
           "RuntimeError in step()" in r.output, r.output
    _assert_each_failure_says(r, "RaisingAdamW: deliberate failure")


def test_conventions_auto_on_an_unknown_optimizer_names_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    r = in_process(capsys, "--impl=torch.optim.Adamax", "--conventions=auto", "-x", "-v",
                   targets=("conformance/test_exact.py",))
    assert r.rc == pytest.ExitCode.TESTS_FAILED, r.output
    assert "(auto; fingerprint: not an Adam-family rule" in r.output, r.output
    assert "is outside the spec's bound" in r.output and "INTERNALERROR" not in r.output


def test_conventions_auto_judges_the_rule_the_behaviour_shows(
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("optax")
    r = in_process(capsys, "--impl=optax.adam", "--conventions=auto", "-v", "-k", "step_one",
                   targets=("conformance/test_bias.py",))
    assert "rule=adam conventions=default (auto; fingerprint: Adam (no weight decay)" \
        in r.output, r.output
    assert r.rc == pytest.ExitCode.OK, r.output
