"""The device check's plan (which runs, with which command) and its execution: each run is a
subprocess of its own, in its own process group, under a time limit; one that fails, raises or
hangs becomes a row that says so, and nothing it started outlives it."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: torch.optim.AdamW's paths through the catalogue: label -> --impl.
TORCH_PATHS = {
    "torch-loop": "torch.optim.AdamW(foreach=False)",
    "torch-foreach": "torch.optim.AdamW(foreach=True)",
    "torch-fused": "torch.optim.AdamW(fused=True)",
    "torch-capturable": "torch.optim.AdamW(capturable=True, foreach=False)",
    "torch-capturable-foreach": "torch.optim.AdamW(capturable=True, foreach=True)",
}
TRITON = "triton"
TRITON_IMPL = "impl.kernels.triton_adamw:adamw"
TRITON_FILE = Path("impl", "kernels", "triton_adamw.py")
SOUNDNESS = "soundness"
DTYPES = ("float32", "bfloat16")
LABELS = (*TORCH_PATHS, TRITON, SOUNDNESS)

#: A run is not started with less time than this left in the budget: it could not finish.
MIN_START = 20.0


@dataclass
class Row:
    """One run of the plan and what it gave."""

    label: str
    dtype: str
    kind: str  # "suite" or "soundness"
    argv: list[str]
    impl: str = ""
    note: str = ""
    #: the reason it is not run (set at planning) or did not give a verdict (set by `execute`)
    reason: str = ""
    status: str = "pending"  # pending, skipped, passed, failed, error, timeout, not run
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failing: list[str] = field(default_factory=list)
    messages: dict[str, str] = field(default_factory=dict)
    skip_reason: str = ""  # the first skipped test's reason
    seconds: float = 0.0
    data: dict[str, Any] | None = None  # the soundness run's JSON
    output: Path | None = None  # where its stdout and stderr went
    result: Path | None = None  # its junit XML or JSON

    @property
    def command(self) -> str:
        """The command as a user would type it (the check adds where its result goes)."""
        shown = ["python" if a == sys.executable else a for a in self.argv]
        return " ".join(f"'{a}'" if "(" in a or " " in a else a for a in shown)


def triton_missing(clone: Path) -> str | None:
    """Why the Triton kernel cannot run from `clone`, or None."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install -e '.[triton]')"
    if not (clone / TRITON_FILE).is_file():
        return (f"{TRITON_FILE} is not under {clone}: the kernel is in the repository, not in "
                "the installed package; run the check from a clone")
    return None


def build(device: str, clone: Path, dtypes: Sequence[str] = DTYPES,
          only: Sequence[str] = LABELS, profile: str = "ci", select: Sequence[str] = (),
          elements: int = 20_000) -> list[Row]:
    """The runs of the check on `device`, longest first (the Triton kernel compiles; the
    soundness sweep judges every element), skipped ones with their reason."""
    from adamw_conformance.devicecheck.soundness import capturable_devices

    kind = device.split(":")[0]
    rows: list[Row] = []
    for dtype in dtypes:
        if SOUNDNESS in only:
            rows.append(Row(SOUNDNESS, dtype, "soundness", [
                sys.executable, "-m", "adamw_conformance.devicecheck.soundness",
                f"--device={device}", f"--dtype={dtype}", f"--elements={elements}"]))
    suite = [(TRITON, TRITON_IMPL)] + list(TORCH_PATHS.items())
    for label, impl in suite:
        for dtype in dtypes:
            if label not in only:
                continue
            row = Row(label, dtype, "suite", [
                sys.executable, "-m", "adamw_conformance", *select, f"--impl={impl}",
                f"--dtype={dtype}", f"--device={device}", f"--hypothesis-profile={profile}",
                "-q", "-p", "no:cacheprovider", "--no-root-cause"], impl)
            if label == TRITON:
                row.reason = triton_missing(clone) or ""
                row.note = "compiled by Triton" if kind != "cpu" else "Triton's interpreter"
            elif "capturable" in label and kind not in capturable_devices():
                row.reason = (f"torch refuses capturable=True on {kind} (it takes "
                              f"{', '.join(capturable_devices())})")
            if row.reason:
                row.status = "skipped"
            rows.append(row)
    return rows


def environment(scratch: Path) -> dict[str, str]:
    """The runs' environment: every cache a run may write (Triton's kernels, TorchInductor's,
    the CUDA JIT's, Hypothesis' database, bytecode) in `scratch`, which the check removes; one
    thread per process (the runs go in parallel); nothing of the caller's that changes what runs
    (TRITON_INTERPRET would interpret the kernel, PYTEST_ADDOPTS add options)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRITON_INTERPRET", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    env.update(
        TRITON_HOME=str(scratch), TRITON_CACHE_DIR=str(scratch / "triton"),
        TORCHINDUCTOR_CACHE_DIR=str(scratch / "inductor"),
        CUDA_CACHE_PATH=str(scratch / "nv"), XDG_CACHE_HOME=str(scratch / "cache"),
        HYPOTHESIS_STORAGE_DIRECTORY=str(scratch / "hypothesis"),
        MPLCONFIGDIR=str(scratch / "matplotlib"), PYTHONDONTWRITEBYTECODE="1",
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def triton_compiled(rows: Sequence[Row], scratch: Path) -> None:
    """Note on the Triton rows how many kernels Triton compiled into the runs' shared cache:
    the evidence that the kernel ran compiled, not in the interpreter (which compiles none)."""
    cache = scratch / "triton"
    n = sum(1 for _ in cache.rglob("*.cubin")) if cache.is_dir() else 0
    for row in rows:
        if row.label == TRITON and row.status in ("passed", "failed"):
            row.note = (f"compiled by Triton: {n} kernels in its cache" if n else
                        "no compiled kernel in Triton's cache: it did not run compiled")


def _exited(pid: int) -> bool:
    """Whether `pid` (our child) has exited, without reaping it: while it is a zombie its
    process group id cannot be taken by another process, so the group can still be killed."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_one(row: Row, cwd: Path, env: dict[str, str], timeout: float, scratch: Path) -> None:
    """Run `row` in a new process group for at most `timeout` seconds; fill in its result."""
    stem = f"{row.label}-{row.dtype}"
    row.output = scratch / f"{stem}.log"
    if row.kind == "suite":
        row.result = scratch / f"{stem}.xml"
        argv = [*row.argv, f"--junitxml={row.result}", "-o", "junit_family=xunit1"]
    else:
        row.result = scratch / f"{stem}.json"
        argv = [*row.argv, f"--out={row.result}"]
    start = time.perf_counter()
    with open(row.output, "wb") as log:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    timed_out = False
    while not _exited(proc.pid):
        if time.perf_counter() - start > timeout:
            timed_out = True
            _kill_group(proc.pid, signal.SIGTERM)
            grace = time.perf_counter()
            while not _exited(proc.pid) and time.perf_counter() - grace < 5:
                time.sleep(0.05)
            break
        time.sleep(0.05)
    # Whatever the run left in its group (a compiler, a worker) goes with it.
    _kill_group(proc.pid, signal.SIGKILL)
    rc = proc.wait()
    row.seconds = time.perf_counter() - start
    if timed_out:
        row.status, row.reason = "timeout", f"killed after {timeout:.0f} s (its time limit)"
        _read_result(row)  # a junit file is written only at the end: usually absent
        return
    if not _read_result(row):
        row.status = "error"
        row.reason = f"exit {rc} without a result: {last_line(row.output)}"
        return
    if row.kind == "suite":
        row.status = "passed" if rc == 0 and not row.failed else "failed"
        if not row.passed and not row.failed:
            # Every test skipped (the suite skips them all where the device is missing):
            # not a pass.
            row.status = "error"
            row.reason = f"no test ran: {row.skipped} skipped ({row.skip_reason or 'no reason'})"
        elif rc not in (0, 1):
            row.status, row.reason = "error", f"exit {rc}: {last_line(row.output)}"
    else:
        assert row.data is not None
        errors = [p for p in row.data["paths"] if p["error"]]
        bad = any(sum(p["violations"].values()) or sum(p["nonfinite"].values())
                  for p in row.data["paths"])
        row.status = "failed" if bad or errors else "passed"


def _read_result(row: Row) -> bool:
    import json

    if row.result is None or not row.result.is_file():
        return False
    try:
        if row.kind == "soundness":
            row.data = json.loads(row.result.read_text())
            return True
        read_junit(row, row.result)
        return row.passed + row.failed + row.skipped > 0
    except (ValueError, ET.ParseError) as e:
        row.reason = f"unreadable result {row.result.name}: {e}"
        return False


def read_junit(row: Row, path: Path) -> None:
    """Counts and failing property ids (`family.name[param]`) from pytest's junit XML."""
    from adamw_conformance.core.catalogue import of

    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        name = case.get("name", "")
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            row.failed += 1
            prop = of(f"{module}.py::{name}") + (name[name.index("["):] if "[" in name else "")
            row.failing.append(prop)
            row.messages[prop] = (bad.get("message") or bad.text or "").strip()
        elif (skip := case.find("skipped")) is not None:
            row.skipped += 1
            row.skip_reason = row.skip_reason or (skip.get("message") or "").strip()
        else:
            row.passed += 1


def last_line(path: Path | None) -> str:
    """The last non-blank line a run printed (what it died of), shortened."""
    if path is None or not path.is_file():
        return "no output"
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return (lines[-1][:300] if lines else "no output")


def execute(rows: Sequence[Row], cwd: Path, scratch: Path, jobs: int, deadline: float,
            run_timeout: float, done: Callable[[Row], None] | None = None) -> None:
    """Every pending row, `jobs` at a time; each gets `run_timeout` seconds or what is left
    before `deadline` (time.perf_counter()), and is not started with less than MIN_START.
    `done(row)` is called as each finishes."""
    env = environment(scratch)

    def one(row: Row) -> None:
        left = deadline - time.perf_counter()
        if left < MIN_START:
            row.status = "not run"
            row.reason = f"the time budget was spent before it could start ({left:.0f} s left)"
        else:
            try:
                run_one(row, cwd, env, min(run_timeout, left), scratch)
            except Exception as e:  # noqa: BLE001 - one run's trouble is its row, not the check's
                row.status, row.reason = "error", f"{type(e).__name__}: {e}"
        if done is not None:
            done(row)

    todo = [r for r in rows if r.status == "pending"]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, todo))
