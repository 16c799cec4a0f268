"""--report writes report.md/json/html (self-contained, plots embedded) for a correct optimizer and
for a mutant, records what the verdicts judged, and still writes without matplotlib; the audit
command records a target it cannot run instead of crashing."""

from __future__ import annotations

import json
import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from adamw_conformance.core import record
from adamw_conformance.report.writer import fingerprint_section
from adamw_conformance.tools import audit

from tests.suite import run_suite

ONE_STEP = "conformance/test_exact.py::test_one_step"
MOMENTS = "conformance/test_decouple.py::test_moments"


def _report(tmp_path, *args: str) -> tuple[int, dict, str, str]:
    out = run_suite(*args, "--report=r", f"--report-dir={tmp_path}")
    folder = tmp_path / "r"
    data = json.loads((folder / "report.json").read_text())
    return out.rc, data, (folder / "report.md").read_text(), (folder / "report.html").read_text()


def test_reference_report(tmp_path) -> None:
    rc, data, md, page = _report(tmp_path, ONE_STEP, MOMENTS,
                                 "--impl=impl.reference.optimizer:ReferenceAdamW")
    assert rc == pytest.ExitCode.OK
    assert data["schema_version"] == 1 and data["name"] == "r"
    res = data["results"]
    assert set(res) == {"target", "settings", "summary", "elements_judged", "properties",
                        "tests", "fingerprint", "root_cause"}
    assert res["summary"]["passed"] == 4 and res["summary"]["failed"] == 0
    one = res["properties"]["exact.one_step"]
    assert one["outcome"] == "passed" and one["tests"] == {"passed": 3}
    assert set(one["outputs"]) >= {"theta", "m", "v"}
    assert 0 <= one["worst"] <= 1 and one["elements"] > 0
    assert res["elements_judged"] == sum(p["elements"] for p in res["properties"].values())
    assert res["settings"]["hypothesis_profile"] == "ci"
    assert res["target"]["dtype"] == "float32" and '"date":' not in json.dumps(res)
    assert "date" in data["metadata"] and "torch" in data["metadata"]["versions"]
    # sorted keys, finite numbers only: a stable, strict JSON
    text = (tmp_path / "r" / "report.json").read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=1) + "\n"
    assert "NaN" not in text and "Infinity" not in text
    assert "| `exact.one_step` | passed |" in md and "![exact.one_step](plots/" in md
    assert (tmp_path / "r" / "plots" / "exact.one_step.png").stat().st_size < 100_000
    assert "data:image/png;base64," in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page)
    assert "<script" not in page and "<link" not in page
    assert not record.active()  # the recorder is off again once the report is written


def test_mutant_report(tmp_path) -> None:
    rc, data, md, page = _report(tmp_path, MOMENTS, "--impl=impl.mutants.decouple:L2InGradient")
    assert rc == pytest.ExitCode.TESTS_FAILED
    [test] = data["results"]["tests"]
    assert test["outcome"] == "failed" and test["catalogue"] == "decouple.moments"
    assert test["message"].startswith("decouple.moments")
    assert data["results"]["properties"]["decouple.moments"]["outcome"] == "failed"
    assert test["message"] in md and "failed" in page


def test_skip_and_xfail_outcomes(tmp_path) -> None:
    xfails = tmp_path / "xfails.txt"
    xfails.write_text("exact.trajectory\n")
    rc, data, _, _ = _report(tmp_path, "conformance/test_dtype.py",
                             "conformance/test_exact.py::test_trajectory",
                             "--impl=impl.mutants.decouple:L2InGradient", f"--xfails={xfails}")
    outcomes = {t["catalogue"]: t for t in data["results"]["tests"]}
    assert outcomes["dtype.precision"]["outcome"] == "skipped"  # float32: nothing lower to detect
    assert outcomes["dtype.precision"]["message"]
    assert outcomes["exact.trajectory"]["outcome"] in ("xfailed", "xpassed")


def test_without_matplotlib(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    rc, data, md, page = _report(tmp_path, f"{ONE_STEP}[plain]",
                                 "--impl=impl.reference.optimizer:ReferenceAdamW")
    assert rc == pytest.ExitCode.OK
    assert "Plots unavailable" in md and "Plots unavailable" in page
    assert "data:image/png" not in page and not (tmp_path / "r" / "plots").exists()
    assert data["results"]["properties"]["exact.one_step"]["elements"] > 0


def test_bad_report_name(tmp_path) -> None:
    out = run_suite(f"{ONE_STEP}[plain]", "--report=../x", f"--report-dir={tmp_path}")
    assert out.rc == pytest.ExitCode.USAGE_ERROR


def test_recorder_is_off_without_report() -> None:
    assert not record.active()
    record.note("theta", np.ones(3))  # a no-op, not an error
    with record.recording() as rec, record.current("exact.one_step"):
        record.note("theta", np.array([0.5, np.nan]))
        with record.suspended():
            record.note("theta", np.array([1e9]))
    assert rec.ratios("exact.one_step", "theta").tolist()[0] == 0.5
    assert rec.ratios("exact.one_step", "theta").size == 2


class _Fingerprint:
    def as_dict(self) -> dict:
        return {"eps": {"value": "after", "evidence": "e", "confident": True}}

    def table(self) -> str:
        return "| convention | value |\n|---|---|\n| eps | after |"

    def conventions_text(self) -> str:
        return "eps=after"


def test_fingerprint_section() -> None:
    adapter = SimpleNamespace(name="x")
    ok = fingerprint_section(adapter, "float32", "cpu", 1.0, lambda *a, **k: _Fingerprint())
    assert ok["available"] and ok["conventions"] == "eps=after" and "eps" in ok["answers"]

    def broken(*args, **kwargs):
        raise RuntimeError("cannot read state\nmore")

    bad = fingerprint_section(adapter, "float32", "cpu", 1.0, broken)
    assert not bad["available"]
    assert bad["note"] == "fingerprint failed: RuntimeError: cannot read state"
    # with the real module (or its absence) a section is always produced
    assert "available" in fingerprint_section(adapter, "float32", "cpu", 1.0)


def test_audit_runs_from_the_clone_and_writes_its_reports() -> None:
    assert (audit.ROOT / "conformance" / "plugin.py").is_file()
    assert (audit.ROOT / "reports" / "README.md").is_file()


def test_audit_records_unrunnable_target(tmp_path) -> None:
    bogus = audit.Audit("bogus-float32", "no_such_pkg.Optim", "float32", "a missing target")
    reason = audit.run(bogus, tmp_path, "ci")
    assert reason and "no_such_pkg" in reason
    text = audit.readme((bogus,), tmp_path, {bogus.name: reason}, "ci")
    assert f"- not run: {reason}" in text and "schema_version 1" in text
