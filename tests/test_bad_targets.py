"""Bad targets as a user meets them: a usage error for an --impl that cannot be driven (exit 4,
what was tried and the accepted forms, no traceback); readable per-test failures for an
implementation that raises, hangs or returns NaN, with the rest of the run going on.

One usage error of each origin (the target, an import that raises, an option) and the
implementation that hangs run end to end (`python -m pytest conformance --impl=...` in a
subprocess: a hung call's thread must not outlive the run in this process). The other targets
that misbehave, the other usage errors and the headers come from the same `pytest.main` in this
process (tests.suite.run_suite), read from the captured output: what a subprocess adds is only
its start, ~3 s each."""

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
               targets: tuple[str, ...] = ("conformance",), root_cause: bool = False) -> Result:
    """`suite` without the subprocess: the same pytest.main, its output read from capsys."""
    capsys.readouterr()
    out = run_suite(*targets, *args, root_cause=root_cause)
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


def test_raising_step_fails_every_test_readably(capsys: pytest.CaptureFixture[str]) -> None:
    r = in_process(capsys, "--impl=impl.broken:RaisingAdamW")
    assert r.rc == pytest.ExitCode.TESTS_FAILED, r.output
    # Every test that steps the optimizer fails on its own; the rest still ran.
    assert len(r.failed()) >= 3, r.cases
    _assert_each_failure_says(r, "the implementation raised RuntimeError in step(): "
                                 "RaisingAdamW: deliberate failure")
    assert any(v == "passed" for v in r.cases.values()), r.cases  # input.validation, say


def test_raising_constructor_fails_readably(capsys: pytest.CaptureFixture[str]) -> None:
    r = in_process(capsys, "--impl=impl.broken:RaisingConstructor")
    assert r.rc == pytest.ExitCode.TESTS_FAILED, r.output
    failed = r.failed()
    assert len(failed) >= 3, r.cases
    for name, message in failed.items():
        assert "raised ImportError" in message and "backend not available" in message, \
            f"{name}:\n{message}"


def test_hanging_step_times_out_and_the_run_goes_on(tmp_path: Path) -> None:
    # HangingAdamW's step() never returns: that the run ended at all shows that nothing waited
    # for a hung call. Each hung test waits the limit twice (Hypothesis replays the failing
    # example): six waits of 1 s here, after the warm-up's one wait of 5 x 1 s (calls.warm_up).
    targets = ("conformance/test_exact.py::test_trajectory", "conformance/test_state.py",
               "conformance/test_schedule.py::test_lr_zero", "conformance/test_input.py")
    r = suite(tmp_path, "--impl=impl.broken:HangingAdamW", "--impl-timeout=1",
              "-k", "not nonfinite", targets=targets)
    assert r.rc == pytest.ExitCode.TESTS_FAILED, r.output
    assert len(r.failed()) >= 3, r.cases
    _assert_each_failure_says(r, "did not return from")
    assert "within 1 s (set --impl-timeout to allow more)" in r.output
    # Validation never steps: it passed, after the hung tests before it.
    assert any(k.endswith("test_validation[lr]") and v == "passed" for k, v in r.cases.items())


def test_nan_result_fails_with_got_and_oracle(capsys: pytest.CaptureFixture[str]) -> None:
    r = in_process(capsys, "--impl=impl.broken:NaNAdamW",
              targets=("conformance/test_exact.py", "conformance/test_state.py"))
    assert r.rc == pytest.ExitCode.TESTS_FAILED, r.output
    failed = r.failed()
    assert any("exact.one_step" in m for m in failed.values()), failed
    for name, message in failed.items():
        assert "got nan" in message and "oracle" in message, f"{name}:\n{message}"
    # A NaN-producing optimizer is still deterministic: its save/load round trip holds.
    assert any(k.endswith("test_round_trip") and v == "passed" for k, v in r.cases.items())


# --- optimizers and adapters nobody named (impl/unknown.py, reports/unknown-optimizers.md) ------

def test_wrong_shapes_fail_readably(capsys: pytest.CaptureFixture[str]) -> None:
    r = in_process(capsys, "--impl=impl.unknown:WrongShapeAdapter",
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
    assert "rule=sgd (auto: the class is torch.optim.SGD)" in r.output, r.output
    assert "conventions=default (auto; rule sgd has no conventions" in r.output


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
    r = in_process(capsys, "--impl=torch.optim.NAdam", "--conventions=auto", "-x", "-v",
                   targets=("conformance/test_exact.py",))
    assert r.rc == pytest.ExitCode.TESTS_FAILED, r.output
    assert "(auto; fingerprint: not an Adam-family rule" in r.output, r.output
    assert "is outside the spec's bound" in r.output and "INTERNALERROR" not in r.output


def test_conventions_auto_judges_the_rule_the_behaviour_shows(
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("optax")
    r = in_process(capsys, "--impl=optax.adam", "--conventions=auto", "-v", "-k", "step_one",
                   targets=("conformance/test_bias.py",))
    assert "rule=adam (auto: behaviour (--conventions=auto's fingerprint)" in r.output, r.output
    assert "conventions=default (auto; fingerprint: Adam (no weight decay)" in r.output, r.output
    assert r.rc == pytest.ExitCode.OK, r.output


# --- bad options: each a usage error (exit 4, one line naming option, value, accepted values) ---

def _in_process(*args: str) -> tuple[int, str]:
    """pytest on one catalogue module, collect only, in this process: (exit code, output)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from hypothesis import settings

    profile = settings._current_profile  # noqa: SLF001 - the run loads its own; put ours back
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            rc = pytest.main([str(ROOT / "conformance" / "test_input.py"), *args,
                              "--collect-only", "-q", "-p", "no:cacheprovider",
                              f"--rootdir={ROOT}"])
    finally:
        if profile:
            settings.load_profile(profile)
    return int(rc), out.getvalue() + err.getvalue()


@pytest.mark.parametrize(("option", "says"), [
    ("--device=tpu", "--device='tpu': unknown device; accepted: cpu, cuda, cuda:N"),
    ("--xfails=/nonexistent", "--xfails='/nonexistent': no such file, and not the key of a "
                              "packaged list; accepted: a file of test ids, or one of keras, "
                              "torch-float64, torch-sgd"),
    ("--xfails=nosuchkey", "--xfails='nosuchkey': no such file"),
    ("--hypothesis-profile=nonsense", "--hypothesis-profile='nonsense': unknown profile; "
                                      "registered profiles: ci, "),
    ("--dtype=float8", "argument --dtype: invalid choice: 'float8' (choose from"),
    ("--compute-dtype=int8", "argument --compute-dtype: invalid choice: 'int8' (choose from"),
    ("--conventions=eps=nonsense", "--conventions='eps=nonsense': convention eps='nonsense' is "
                                   "not one of after, hat, root"),
    ("--conventions=foo", "--conventions='foo': bad convention 'foo': expected NAME=VALUE"),
    ("--rule=nonsense", "--rule='nonsense': unknown rule 'nonsense'; known rules: auto, "),
    ("--impl-timeout=0", "--impl-timeout=0: give a positive number of seconds"),
])
def test_bad_option_is_a_usage_error(option: str, says: str) -> None:
    rc, output = _in_process(option)
    assert rc == pytest.ExitCode.USAGE_ERROR, output
    assert says in output, output
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    assert "failed" not in output, output  # nothing blamed on the implementation


def test_unwritable_report_dir_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    where = tmp_path / "a-file" / "reports"
    rc, output = _in_process("--report=r", f"--report-dir={where}")
    assert rc == pytest.ExitCode.USAGE_ERROR, output
    assert f"--report-dir={str(where)!r}: cannot write a report there" in output, output
    assert "accepted: a writable directory" in output and "Traceback" not in output


def test_a_bad_profile_in_the_environment_is_a_usage_error(monkeypatch) -> None:
    monkeypatch.setenv("CONFORMANCE_PROFILE", "nonsense")
    rc, output = _in_process()
    assert rc == pytest.ExitCode.USAGE_ERROR, output
    assert "CONFORMANCE_PROFILE='nonsense': unknown profile" in output, output


def test_packaged_xfails_list_by_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = in_process(capsys, "--impl=torch.optim.SGD", "--xfails=torch-sgd", "-k", "validation",
                   f"--junitxml={tmp_path / 'junit.xml'}", targets=("conformance/test_input.py",))
    assert r.rc == pytest.ExitCode.OK, r.output
    assert 'message="listed in torch-sgd"' in (tmp_path / "junit.xml").read_text(), r.output


# --- what a run is judged under, said in its header and at its end ------------------------------

ADAM_SUBCLASS = '''import torch


class DecoupledAdam(torch.optim.Adam):
    """A correct AdamW written as a subclass of Adam (a common pattern)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=True)
'''


def test_a_subclass_of_adam_that_decouples_is_judged_as_adamw(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "myadam.py").write_text(ADAM_SUBCLASS)
    monkeypatch.syspath_prepend(str(tmp_path))
    r = in_process(capsys, "--impl=myadam:DecoupledAdam", "-v", "-k", "step_one or one_step",
                   targets=("conformance/test_bias.py", "conformance/test_exact.py"))
    assert r.rc == pytest.ExitCode.OK, r.output
    assert "rule=adamw (auto: behaviour; the class derives from torch.optim.Adam)" in r.output
    assert "conformance: judged as rule adamw, the rule its behaviour shows" in r.output


def test_conventions_auto_says_what_it_judged_under_and_the_root_cause(
        capsys: pytest.CaptureFixture[str]) -> None:
    r = in_process(capsys, "--impl=impl.mutants.scale:EpsInsideSqrt", "--conventions=auto", "-v",
                   "-k", "step_one", targets=("conformance/test_bias.py",), root_cause=True)
    assert r.rc == pytest.ExitCode.OK, r.output
    said = ("judged under non-default conventions (found by --conventions=auto): eps=root (eps "
            "inside the square root")
    header, end = r.output.split("collected", 1)
    assert said in header and said in end, r.output
    assert "not AdamW as PyTorch defines it" in end


def test_a_failing_run_ends_with_the_root_cause(capsys: pytest.CaptureFixture[str]) -> None:
    r = in_process(capsys, "--impl=impl.mutants.scale:EpsInsideSqrt", "-k", "step_one",
                   targets=("conformance/test_bias.py",), root_cause=True)
    assert r.rc == pytest.ExitCode.TESTS_FAILED, r.output
    cause = r.output.split("conformance: root cause", 1)[1]
    assert "1 failed test in 1 property: bias.step_one" in cause, cause
    assert "the target follows eps=root, where the run judged eps=after" in cause, cause
    assert "eps=root: eps inside the square root" in cause
    assert "--conventions=eps=root" in cause
