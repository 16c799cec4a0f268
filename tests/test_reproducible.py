"""The `ci` profile draws the same examples in every process: what the process imported before
(the fingerprint of a root-cause summary, a user's modules, an earlier in-process run) does not
change them (Hypothesis would otherwise mix constants of every local module into its draws)."""

from __future__ import annotations

import importlib
import sys

import pytest

from tests.suite import ROOT, Outcome, _Collector, run_suite

TARGET = ("conformance/test_dtype.py::test_precision",
          "--impl=impl.mutants.dtype:Bfloat16Arithmetic", "--dtype=bfloat16")


def _texts(messages: dict[str, str]) -> list[str]:
    return [m for m in messages.values()]


def test_draws_do_not_depend_on_what_was_imported(tmp_path, monkeypatch) -> None:
    before = run_suite(*TARGET)
    # A local module full of unusual constants, as a user's repository has.
    (tmp_path / "odd_constants.py").write_text(
        "VALUES = [3.1224728614163555e-158, 2.225073858507203e-309, 1e300, -7.5e-45, 65504.0]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("odd_constants")
    importlib.import_module("adamw_conformance.tools.fingerprint.judges")
    try:
        after = run_suite(*TARGET)
    finally:
        sys.modules.pop("odd_constants", None)
    assert before.rc == after.rc == 1, (before.results, after.results)
    assert _texts(before.messages) == _texts(after.messages)


def test_the_suite_draws_no_local_constants(tmp_path, monkeypatch) -> None:
    """The mechanism: once a run of the suite is configured, Hypothesis is given no constants
    of local modules to mix in, however many the process has imported."""
    from hypothesis.internal.conjecture import providers

    (tmp_path / "more_constants.py").write_text("X = [1.2345e-200, 9.875e250, 123456789]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("more_constants")
    try:
        run_suite("conformance/test_input.py::test_validation")
        assert len(providers._get_local_constants()) == 0
    finally:
        sys.modules.pop("more_constants", None)


def test_each_run_in_a_process_uses_its_own_profile() -> None:
    """A test module imported by an earlier run keeps no profile of that run: ci's 8 examples,
    then dev's 25, then ci's 8 again, in one process."""
    node = "conformance/test_exact.py::test_trajectory"
    counts = [run_suite(node, profile=p).examples for p in ("ci", "dev", "ci")]
    assert [sum(c.values()) for c in counts] == [8, 25, 8], counts


def test_a_parametrized_property_draws_the_same_from_any_rootdir(tmp_path) -> None:
    """Hypothesis keys a parametrized test by its node id, which changes with the rootdir and
    with how the test is addressed (`--pyargs` of the package or of one module); the suite keys
    its properties by module and name, so a reproduce line redraws the run's examples."""
    node = "conformance/test_exact.py::test_one_step[plain]"
    args = ("--impl=impl.mutants.scale:EpsInsideSqrt", "--hypothesis-profile=ci", "-q",
            "-p", "no:cacheprovider", "-p", "no:unraisableexception", "--no-root-cause")
    here = run_suite(node, *args[:1])
    elsewhere = Outcome(0)
    rc = pytest.main([str(ROOT / node), *args, f"--rootdir={tmp_path}"],
                     plugins=[_Collector(elsewhere)])
    assert here.rc == rc == pytest.ExitCode.TESTS_FAILED, (here.results, elsewhere.results)
    [mine], [theirs] = here.messages.values(), elsewhere.messages.values()
    got = [line for line in mine.splitlines() if ": got " in line]
    assert got and got == [line for line in theirs.splitlines() if ": got " in line]
