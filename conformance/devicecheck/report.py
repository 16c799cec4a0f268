"""The device check's report: the machine (GPU, driver, CUDA, torch, Triton), the catalogue's
verdict per path and dtype, the bound's soundness and tightness on the device; written
atomically (a reader never sees half a report)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from adamw_conformance.devicecheck.plan import Row


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _driver() -> str:
    """The NVIDIA driver version: nvidia-smi where it is, else the kernel module's own line."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=5)
            first = out.stdout.strip().splitlines()
            if out.returncode == 0 and first:
                return f"{first[0].strip()} (nvidia-smi)"
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        line = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
        return f"{line.split('Kernel Module')[-1].split()[0]} (/proc/driver/nvidia/version)"
    except (OSError, IndexError):
        return "unknown (no nvidia-smi, no /proc/driver/nvidia/version)"


def machine(device: str, clone: Path) -> list[tuple[str, str]]:
    """What the report says the check ran on."""
    import torch

    rows: list[tuple[str, str]] = []
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        rows += [("GPU", f"{props.name} (device {index} of {torch.cuda.device_count()}, "
                         f"compute capability {props.major}.{props.minor}, "
                         f"{props.total_memory / 2**30:.0f} GiB)"),
                 ("driver", _driver()),
                 ("CUDA (torch's build)", str(torch.version.cuda))]
    else:
        rows.append(("device", f"{device} ({platform.processor() or platform.machine()}, "
                               f"{os.cpu_count()} cores): a rehearsal of the plan without a GPU"))
    rows += [("torch", torch.__version__), ("Triton", _version("triton")),
             ("Python", platform.python_version()), ("adamw-conformance", _commit(clone)),
             ("numpy / Hypothesis", f"{_version('numpy')} / {_version('hypothesis')}"),
             ("host", f"{platform.platform()}, {os.cpu_count()} cores")]
    return rows


def _commit(clone: Path) -> str:
    version = _version("adamw-conformance")
    git = shutil.which("git")
    if git and (clone / ".git").exists():
        try:
            out = subprocess.run([git, "-C", str(clone), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, timeout=5)
            if out.returncode == 0:
                return f"{version} (commit {out.stdout.strip()})"
        except (OSError, subprocess.SubprocessError):
            pass
    return version


def _suite_table(rows: Sequence[Row]) -> list[str]:
    out = ["| path | dtype | status | passed | failed | skipped | failing | seconds |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        failing = ", ".join(f"`{f}`" for f in r.failing) or ("-" if not r.reason
                                                              else r.reason)
        label = f"{r.label} ({r.note})" if r.note else r.label
        counts = (f"{r.passed} | {r.failed} | {r.skipped}"
                  if r.status in ("passed", "failed") else "- | - | -")
        out.append(f"| {label} | {r.dtype} | {r.status} | {counts} | {failing} | "
                   f"{r.seconds:.0f} |")
    return out


def _failures(rows: Sequence[Row]) -> list[str]:
    out: list[str] = []
    for r in rows:
        for prop, message in r.messages.items():
            lines = [ln for ln in message.splitlines() if ln.strip()][:4]
            out += [f"- {r.label} {r.dtype} `{prop}`:", "", "      " + "\n      ".join(lines)
                    if lines else "      (no message)", ""]
    return out


def _element(e: dict[str, Any] | None) -> str:
    if not e:
        return "-"
    inputs = ", ".join(f"{k}={v!r}" for k, v in e["inputs"].items())
    hyper = ", ".join(f"{k}={v!r}" for k, v in e["hyper"].items())
    return (f"{e['output']} at {inputs}; {hyper}, t={e['t']} ({e['regime']}): got "
            f"{e['got']!r}, exact {e['exact']}, bound {e['bound']:.3g}")


def _soundness(rows: Sequence[Row]) -> list[str]:
    done = [r for r in rows if r.data is not None]
    out: list[str] = []
    for r in rows:
        if r.data is None:
            out.append(f"- {r.dtype}: {r.status}: {r.reason or 'no result'}")
    if not done:
        return out
    first = done[0].data or {}
    out += ["", f"{first['elements']} elements per dtype, the same for every path, in the "
            f"regimes {', '.join(first['regimes'])}.", "",
            "| dtype | path | elements (judged) | out of bound | max err/bound (tightness) | "
            "NaN/inf where the spec is finite | lr = 0, zero moments: NaN | seconds |",
            "|---|---|---|---|---|---|---|---|"]
    details: list[str] = []
    #: (dtype, tightest element) -> the paths it is the tightest of (paths that compute alike
    #: share it: one line for them)
    same: dict[tuple[str, str], list[str]] = {}
    orders: list[str] = []
    for r in done:
        assert r.data is not None
        for p in r.data["paths"]:
            name = f"{p['name']} ({p['note']})" if p["note"] else p["name"]
            if p["skip"] or p["error"]:
                out.append(f"| {r.dtype} | {name} | {p['skip'] or p['error']} "
                           "| - | - | - | - | - |")
                continue
            bad = sum(p["violations"].values())
            nonfinite = sum(p["nonfinite"].values())
            judged = min(p["judged"].values()) if p["judged"] else 0
            regimes = ", ".join(f"{k}: {v}" for k, v in p["nonfinite"].items())
            out.append(f"| {r.dtype} | {name} | {p['elements']} ({judged}) | {bad} | "
                       f"{p['tightness']:.3g} | {nonfinite}{f' ({regimes})' if regimes else ''}"
                       f" | {p['lr0_nan']} of {p['lr0_zero_v']} | {p['seconds']:.1f} |")
            if bad:
                details.append(f"- {r.dtype} {p['name']}: worst out of bound, "
                               f"{p['worst_violation']['ratio']:.3g} x: "
                               f"{_element(p['worst_violation'])}")
            tightest = f"tightest, {p['tightness']:.3g} x: {_element(p['tightest'])}"
            same.setdefault((r.dtype, tightest), []).append(p["name"])
            orders.append(f"| {r.dtype} | {p['name']} | "
                          + ", ".join(f"{k} {v:.3g}" for k, v in p["orders"].items()) + " |")
    details += [f"- {dtype} {', '.join(names)}: {text}" for (dtype, text), names in same.items()]
    out += ["", *details, "", "Each evaluation order's bound alone (largest err/bound; above 1: "
            "that order does not describe the path, the verdict takes the maximum over them):",
            "", "| dtype | path | order: largest err/bound |", "|---|---|---|", *orders]
    return out


def render(rows: Sequence[Row], info: Sequence[tuple[str, str]], seconds: float, budget: float,
           jobs: int, device: str) -> str:
    suite = [r for r in rows if r.kind == "suite"]
    sound = [r for r in rows if r.kind == "soundness"]
    bad = [r for r in rows if r.status not in ("passed", "skipped")]
    verdict = ("every run passed" if not bad else
               "not all passed: " + ", ".join(f"{r.label} {r.dtype} {r.status}" for r in bad))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Device check: {device}", "",
             f"Written by `python -m adamw_conformance.devicecheck` on {when}: {seconds:.0f} s "
             f"wall for the whole check (budget {budget:.0f} s), {jobs} "
             f"{'run' if jobs == 1 else 'runs'} at a time, each in a process of its own. "
             f"Verdict: {verdict}.", "",
             "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in info), "",
             "## The catalogue on the device", "",
             "Each row is one run of the suite, "
             f"`python -m adamw_conformance --impl=... --dtype=... --device={device} "
             "--hypothesis-profile=ci`; `failing` lists its failing properties (or why it gave "
             "no verdict).", "", *_suite_table(suite)]
    failures = _failures(suite)
    if failures:
        lines += ["", "### Failure messages (first lines)", "", *failures]
    lines += ["", "## The bound on the device", "",
              "`python -m adamw_conformance.devicecheck.soundness`: torch.optim.AdamW's paths "
              f"take one replayed step on {device}; theta, m and v are judged against the exact "
              "oracle and the bound the suite uses for the same `--impl` (the capturable paths "
              "with the capturable orders they declare). `out of bound` counts elements beyond "
              "it; the tightness is the largest err/bound of all. A NaN where the spec's value "
              "is finite is outside the bound's domain and counted on its own.", "",
              *_soundness(sound), "", "## Commands", ""]
    lines += [f"- {r.label} {r.dtype}: `{r.command}`" for r in rows]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
