"""The device check (`python -m adamw_conformance.devicecheck`, docs/cuda.md) on the CPU: what
it can do without a GPU is checked here, so that it is ready the first time one is lent.

- Without CUDA it says why in one line and exits 0, writing nothing; --plan prints the plan.
- The plan: the catalogue against torch's five AdamW paths and the Triton kernel, in float32 and
  bfloat16, with --device=cuda and the ci profile; on the CPU, the capturable rows skipped with
  torch's reason; the Triton row skipped, saying why, outside a clone.
- Subprocesses: a run that hangs is killed with everything it started and becomes a timeout row;
  one that raises becomes an error row with what it died of; a failing run's properties are read
  from its junit XML; none stops the others; a run that cannot start within the budget says so;
  the caches a run may write go to the check's temporary folder, which is removed.
- The soundness sweep: torch's paths on the CPU within the suite's bound over wide inputs; a
  step moved off the spec (or NaN) is caught with the element's inputs.
- The report: the machine, every row with its reason, written atomically.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from adamw_conformance import devicecheck
from adamw_conformance.devicecheck import plan, report, soundness

ROOT = Path(__file__).resolve().parent.parent


# --- without CUDA; the plan ------------------------------------------------------------------

def test_cuda_missing_names_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "built without CUDA" in devicecheck.cuda_missing("cuda")
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA device is visible" in devicecheck.cuda_missing("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert "cuda:3 does not exist (1 device(s))" in devicecheck.cuda_missing("cuda:3")
    assert devicecheck.cuda_missing("cuda:0") is None


def test_without_cuda_one_line_exit_0_nothing_written(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(devicecheck, "cuda_missing", lambda device: "torch 9 is built without CUDA")
    assert devicecheck.main([]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["CUDA is not available: torch 9 is built without CUDA. Nothing was run or "
                   "written."]
    assert list(tmp_path.iterdir()) == []


def test_plan_on_cuda() -> None:
    rows = plan.build("cuda", ROOT)
    suite = [r for r in rows if r.kind == "suite"]
    assert {(r.label, r.dtype) for r in suite} == {
        (label, dtype) for label in (*plan.TORCH_PATHS, plan.TRITON) for dtype in plan.DTYPES}
    assert [r.dtype for r in rows if r.kind == "soundness"] == list(plan.DTYPES)
    for r in suite:
        assert {"--device=cuda", "--hypothesis-profile=ci", f"--dtype={r.dtype}",
                f"--impl={r.impl}"} <= set(r.argv), r.argv
        assert r.argv[:3] == [sys.executable, "-m", "adamw_conformance"]
    impls = {r.label: r.impl for r in suite}
    assert impls["torch-capturable"] == "torch.optim.AdamW(capturable=True, foreach=False)"
    assert impls["torch-capturable-foreach"] == "torch.optim.AdamW(capturable=True, foreach=True)"
    triton = next(r for r in suite if r.label == plan.TRITON)
    if plan.triton_missing(ROOT) is None:
        assert triton.status == "pending" and triton.note == "compiled by Triton"
    assert all(r.status == "pending" for r in rows if r.label != plan.TRITON)
    assert "--device=cuda" in next(r for r in rows if r.kind == "soundness").argv


def test_plan_on_cpu_and_outside_a_clone(tmp_path: Path) -> None:
    rows = {(r.label, r.dtype): r for r in plan.build("cpu", tmp_path, ["float32"])}
    for label in ("torch-capturable", "torch-capturable-foreach"):
        assert rows[label, "float32"].status == "skipped"
        assert "refuses capturable=True on cpu" in rows[label, "float32"].reason
    assert rows["torch-fused", "float32"].status == "pending"
    triton = rows[plan.TRITON, "float32"]
    assert triton.status == "skipped"
    assert "triton" in triton.reason and ("clone" in triton.reason
                                          or "not installed" in triton.reason)


def test_plan_option_prints_and_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    assert devicecheck.main(["--plan", "--clone", str(ROOT), "--only", "torch-fused"]) == 0
    out = capsys.readouterr().out
    assert "2 runs on cuda" in out and "torch-fused bfloat16: python -m adamw_conformance" in out
    assert list(tmp_path.iterdir()) == []
    assert devicecheck.main(["--plan", "--only", "nonsense"]) == 4


# --- subprocesses ------------------------------------------------------------------------------

#: A run that starts a grandchild (as a compiler or a worker would) and hangs.
HANG = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    open(sys.argv[1], "w").write(str(child.pid))
    time.sleep(600)
""")

#: A run that writes pytest's junit XML where the check asks (--junitxml=...) and fails.
JUNIT = textwrap.dedent("""
    import sys
    path = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--junitxml="))
    open(path, "w").write('''<testsuites><testsuite>
      <testcase classname="test_bias" name="test_step_one"/>
      <testcase classname="test_schedule" name="test_lr_zero"/>
      <testcase classname="test_bias" name="test_counter[past-256]">
        <failure message="bias.counter: outside the bound">details</failure></testcase>
      <testcase classname="test_scale" name="test_grad_scaler[unscale]"><skipped/></testcase>
    </testsuite></testsuites>''')
    sys.exit(1)
""")


#: A run whose every test skipped, as the suite's are where --device=cuda finds no GPU.
ALL_SKIPPED = textwrap.dedent("""
    import sys
    path = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--junitxml="))
    open(path, "w").write('''<testsuites><testsuite>
      <testcase classname="test_bias" name="test_step_one">
        <skipped message="--device=cuda but no CUDA device is available here"/></testcase>
    </testsuite></testsuites>''')
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_runs_hang_raise_fail_skip_and_none_stops_the_others(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    rows = [plan.Row("hang", "float32", "suite", [sys.executable, "-c", HANG, str(pidfile)]),
            plan.Row("raise", "float32", "suite",
                     [sys.executable, "-c", "raise RuntimeError('boom on the device')"]),
            plan.Row("junit", "bfloat16", "suite", [sys.executable, "-c", JUNIT]),
            plan.Row("skipped", "float32", "suite", [sys.executable, "-c", ALL_SKIPPED])]
    seen: list[str] = []
    start = time.perf_counter()
    plan.execute(rows, tmp_path, tmp_path, jobs=4, deadline=start + 60, run_timeout=2.0,
                 done=lambda r: seen.append(r.label))
    assert time.perf_counter() - start < 15
    assert sorted(seen) == ["hang", "junit", "raise", "skipped"]
    hang, boom, junit, skipped = rows
    assert hang.status == "timeout" and "killed after 2 s" in hang.reason
    grandchild = int(pidfile.read_text())
    for _ in range(100):  # it is reaped by init once killed
        if not _alive(grandchild):
            break
        time.sleep(0.05)
    assert not _alive(grandchild), "the hanging run's grandchild outlived it"
    assert boom.status == "error" and "exit 1" in boom.reason
    assert "RuntimeError: boom on the device" in boom.reason
    assert junit.status == "failed"
    assert (junit.passed, junit.failed, junit.skipped) == (2, 1, 1)
    assert junit.failing == ["bias.counter[past-256]"]
    assert junit.messages["bias.counter[past-256]"] == "bias.counter: outside the bound"
    assert skipped.status == "error"
    assert skipped.reason == ("no test ran: 1 skipped (--device=cuda but no CUDA device is "
                              "available here)")


def test_a_run_the_budget_cannot_hold_is_not_started(tmp_path: Path) -> None:
    row = plan.Row("late", "float32", "suite", [sys.executable, "-c", "pass"])
    plan.execute([row], tmp_path, tmp_path, jobs=1, deadline=time.perf_counter() + 5,
                 run_timeout=60)
    assert row.status == "not run" and "budget" in row.reason


def test_runs_write_their_caches_in_the_scratch_folder(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    env = plan.environment(tmp_path)
    for key in ("TRITON_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "CUDA_CACHE_PATH",
                "HYPOTHESIS_STORAGE_DIRECTORY", "XDG_CACHE_HOME"):
        assert Path(env[key]).is_relative_to(tmp_path), key
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and "TRITON_INTERPRET" not in env


def test_main_writes_the_report_and_removes_its_scratch(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    monkeypatch.setattr("tempfile.mkdtemp", lambda prefix="": (scratch.mkdir(), str(scratch))[1])
    writes_cache = ("import os, pathlib; p = pathlib.Path(os.environ['TRITON_CACHE_DIR']); "
                    "p.mkdir(parents=True); (p / 'kernel').write_text('x')")
    monkeypatch.setattr(plan, "build", lambda *a, **k: [
        plan.Row("torch-fused", "float32", "suite", [sys.executable, "-c", JUNIT]),
        plan.Row("triton", "float32", "suite", [sys.executable, "-c", writes_cache])])
    out = tmp_path / "out" / "cuda.md"
    rc = devicecheck.main(["--device", "cpu", "--out", str(out), "--jobs", "2"])
    assert rc == 1
    assert not scratch.exists()
    text = out.read_text()
    assert "| torch-fused | float32 | failed | 2 | 1 | 1 | `bias.counter[past-256]` |" in text
    assert "| triton | float32 | error |" in text and "exit 0 without a result" in text
    assert [p.name for p in out.parent.iterdir()] == ["cuda.md"]


# --- the soundness sweep -----------------------------------------------------------------------

#: The regimes the default run sweeps (the whole draw is slow: test_soundness_every_regime).
FEW = ("lr = 0", "wide magnitudes")


@pytest.fixture(scope="module")
def swept() -> dict:
    return soundness.run("cpu", "float32", elements=1000, seed=3, regimes=FEW)


def test_soundness_on_cpu(swept: dict) -> None:
    _sound_on_cpu(swept)
    assert set(swept["regimes"]) == set(FEW) and swept["elements"] >= 150


@pytest.mark.slow
def test_soundness_every_regime() -> None:
    """The whole draw, 10,000 elements per dtype, as the device check runs it."""
    for dtype in soundness.DTYPES:
        swept = soundness.run("cpu", dtype, elements=10_000, seed=0)
        assert swept["elements"] >= 10_000
        assert {"lr = 0", "wide magnitudes", "t = 1", "beta2 near 1", "lr*wd near 1", "tiny v",
                "decay only", "beta1 < 1/2", "typical"} == set(swept["regimes"])
        _sound_on_cpu(swept)


def _sound_on_cpu(swept: dict) -> None:
    by = {p["name"]: p for p in swept["paths"]}
    for name in ("torch-loop", "torch-foreach", "torch-fused"):
        p = by[name]
        assert p["error"] is None and p["elements"] == swept["elements"]
        assert sum(p["violations"].values()) == 0 and not p["nonfinite"], p
        assert 0 < p["tightness"] <= 1 and p["tightest"]["inputs"].keys() == {"theta", "g", "m",
                                                                                "v"}
        assert min(p["judged"].values()) > 0.9 * p["elements"]
    capturable = by["torch-capturable"]  # differentiable=True: the same branch on the CPU
    assert capturable["error"] is None and "differentiable=True" in capturable["note"]
    assert {"torch_capturable", "torch_capturable_foreach"} <= capturable["orders"].keys()
    assert capturable["orders"]["torch_capturable"] <= 1
    assert capturable["lr0_zero_v"] > 0
    assert capturable["nonfinite"].get("lr = 0", 0) >= capturable["lr0_nan"]
    assert "refuses capturable=True on cpu" in by["torch-capturable-foreach"]["skip"]


def test_soundness_catches_a_step_off_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    real = soundness.step

    def off(spec: soundness.PathSpec, drawn: soundness.Drawn, dtype: str, device: str):
        got = real(spec, drawn, dtype, device)
        theta = got["theta"] * (1 + 2.0**-12)  # ~2^11 ulps of float32 away
        theta[:1] = np.nan
        return {**got, "theta": theta}

    monkeypatch.setattr(soundness, "step", off)
    cases = [d for d in soundness.draw(300, 5, "float32") if d.regime == "typical"][:2]
    spec = soundness.PathSpec("torch-fused", {"fused": True})
    res = soundness.judge([spec], cases, "float32", "cpu")[0]
    assert res.violations["theta"] > 0 and res.violations["m"] == 0
    assert res.worst_violation is not None and res.worst_violation.ratio > 100
    assert res.worst_violation.output == "theta" and res.worst_violation.regime == "typical"
    assert res.nonfinite == {"typical": 2}


# --- the report --------------------------------------------------------------------------------

def test_report_renders_every_row_and_is_written_atomically(tmp_path: Path, swept: dict) -> None:
    ok = plan.Row("torch-loop", "float32", "suite", ["x"], status="passed", passed=28,
                  skipped=4, seconds=21.0)
    bad = plan.Row("torch-capturable", "bfloat16", "suite", ["x"], status="failed", passed=26,
                   failed=1, failing=["schedule.lr_zero"],
                   messages={"schedule.lr_zero": "schedule.lr_zero: NaN at lr = 0\nmore"})
    hung = plan.Row("triton", "float32", "suite", ["x"], status="timeout",
                    reason="killed after 240 s (its time limit)", note="compiled by Triton")
    sound = plan.Row("soundness", "float32", "soundness", ["x"], status="failed", data=swept)
    info = [("GPU", "NVIDIA Test (compute capability 9.0)"), ("driver", "555.1")]
    text = report.render([sound, ok, bad, hung], info, 123.0, 300.0, 8, "cuda")
    assert "| GPU | NVIDIA Test (compute capability 9.0) |" in text
    assert "| torch-loop | float32 | passed | 28 | 0 | 4 | - | 21 |" in text
    assert "`schedule.lr_zero`" in text and "NaN at lr = 0" in text
    assert "| triton (compiled by Triton) | float32 | timeout | - | - | - | killed after" in text
    assert "| float32 | torch-fused | " in text and "torch_capturable 0." in text
    assert "not all passed" in text and "123 s" in text
    out = tmp_path / "reports" / "cuda.md"
    out.parent.mkdir()
    out.write_text("old")
    report.write_atomically(out, text)
    assert out.read_text() == text and [p.name for p in out.parent.iterdir()] == ["cuda.md"]


def test_machine_lines_without_a_gpu() -> None:
    info = dict(report.machine("cpu", ROOT))
    assert info["torch"] == torch.__version__ and "Triton" in info
    assert isinstance(report._driver(), str)  # no nvidia-smi here: says so, does not raise


@pytest.mark.slow
def test_cpu_rehearsal_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real plan on the CPU, two runs: one property of the catalogue and the sweep."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "cpu.md"
    rc = devicecheck.main(["--device", "cpu", "--only", "torch-fused,soundness", "--dtypes",
                           "float32", "--select", "schedule.lr_zero", "--elements", "1000",
                           "--out", str(out), "--jobs", "2"])
    text = out.read_text()
    assert rc in (0, 1), text
    assert "| torch-fused | float32 | passed | 1 | 0 | 0 |" in text
    assert "| float32 | torch-fused | 10" in text  # the sweep's row, read from its JSON


def test_triton_rows_say_whether_triton_compiled(tmp_path: Path) -> None:
    row = plan.Row(plan.TRITON, "float32", "suite", ["x"], status="passed")
    plan.triton_compiled([row], tmp_path)
    assert "no compiled kernel" in row.note
    (tmp_path / "triton" / "abc").mkdir(parents=True)
    (tmp_path / "triton" / "abc" / "_adamw_body.cubin").write_bytes(b"")
    plan.triton_compiled([row], tmp_path)
    assert row.note == "compiled by Triton: 1 kernels in its cache"
