"""The device check: the conformance suite and the bound on a GPU, in one command that takes at
most five minutes, run from a clone of the repository:

    python -m adamw_conformance.devicecheck

On a machine with CUDA it runs, as parallel processes (each under its own time limit, all
within --budget):

- the catalogue (ci profile) with --device=cuda against torch.optim.AdamW's for-loop, foreach,
  fused, capturable and capturable-foreach paths, and against the repository's Triton kernel
  (impl/kernels/triton_adamw.py, compiled by Triton), in float32 and bfloat16;
- the bound on the device (adamw_conformance.devicecheck.soundness): one replayed step of each
  torch path over --elements elements per dtype in the regimes where evaluation orders differ,
  across magnitudes from 1e-30 to 1e30 and at lr = 0: elements out of bound, the tightness
  (largest err/bound), NaNs where the spec is finite, each order's own largest err/bound;

and writes reports/cuda.md (--out): the GPU, driver, CUDA, torch and Triton versions, a row
per run (passed/failed counts, failing properties, seconds), the soundness table, the wall time.

Without CUDA it prints one line saying why and exits 0, writing nothing. --device=cpu rehearses
the same plan on the CPU (torch refuses capturable=True there: those rows say so; the Triton
kernel runs in Triton's interpreter), and --plan prints the plan without running it.

It installs nothing and needs no network. Every cache a run may write (Triton's kernels,
TorchInductor's, the CUDA JIT's, Hypothesis' database, bytecode) goes to a temporary folder that
is removed at the end; a run that hangs is killed with its whole process group; the report is
the only file written. The Triton kernel is part of the repository, not of the installed
package: it is looked for under the current directory (--clone), and its row says so where it
is not found. Exit status: 0 when every run passed (and where there is no CUDA), 1 otherwise,
4 for an option it cannot read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

#: Seconds of the budget kept for the report after the runs' deadline.
REPORT_RESERVE = 15.0


def cuda_missing(device: str) -> str | None:
    """Why `device` cannot be used, or None."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA"
    if not torch.cuda.is_available():
        return (f"no CUDA device is visible (torch {torch.__version__}, built for CUDA "
                f"{torch.version.cuda})")
    index = torch.device(device).index
    if index is not None and index >= torch.cuda.device_count():
        return f"{device} does not exist ({torch.cuda.device_count()} device(s))"
    return None


def _parser() -> argparse.ArgumentParser:
    from adamw_conformance.devicecheck import plan

    parser = argparse.ArgumentParser(
        prog="python -m adamw_conformance.devicecheck",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda",
                        help="cuda (default), cuda:N, or cpu (a rehearsal of the plan)")
    parser.add_argument("--out", default=None,
                        help="the report (default reports/cuda.md in the current directory; "
                             "reports/devicecheck-cpu.md with --device=cpu)")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds for the whole check (default 300)")
    parser.add_argument("--run-timeout", type=float, default=240.0,
                        help="seconds one run may take before it is killed (default 240)")
    parser.add_argument("--jobs", type=int, default=0,
                        help="runs at a time (default: one per CPU core but one)")
    parser.add_argument("--elements", type=int, default=20_000,
                        help="soundness: elements per dtype (default 20000)")
    parser.add_argument("--dtypes", default=",".join(plan.DTYPES),
                        help="comma-separated (default float32,bfloat16)")
    parser.add_argument("--only", default=",".join(plan.LABELS),
                        help=f"comma-separated runs to keep (default all: "
                             f"{', '.join(plan.LABELS)})")
    parser.add_argument("--select", default="",
                        help="comma-separated properties (bias.step_one) or families (bias) "
                             "to run instead of the whole catalogue")
    parser.add_argument("--profile", default="ci", help="Hypothesis profile (default ci)")
    parser.add_argument("--clone", default=".",
                        help="the repository clone the Triton kernel is taken from and the "
                             "runs start in (default: the current directory)")
    parser.add_argument("--logs", default=None,
                        help="keep each run's output and result files in this folder")
    parser.add_argument("--plan", action="store_true",
                        help="print the plan (runs and commands) and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter()  # the budget counts from here: imports and the plan included
    sys.dont_write_bytecode = True
    from adamw_conformance.core.catalogue import pyargs
    from adamw_conformance.devicecheck import plan, report

    args = _parser().parse_args(argv)
    device = args.device.strip()
    clone = Path(args.clone).resolve()
    select = [pyargs(s.strip()) for s in args.select.split(",") if s.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    only = [o.strip() for o in args.only.split(",") if o.strip()]
    unknown = [o for o in only if o not in plan.LABELS] + [d for d in dtypes
                                                           if d not in plan.DTYPES]
    if unknown:
        print(f"unknown --only/--dtypes value(s) {unknown}: runs are {', '.join(plan.LABELS)}, "
              f"dtypes {', '.join(plan.DTYPES)}", file=sys.stderr)
        return 4
    rows = plan.build(device, clone, dtypes, only, args.profile, select, args.elements)
    pending = sum(r.status == "pending" for r in rows)
    jobs = args.jobs or max(1, min(pending, (os.cpu_count() or 2) - 1))
    if args.plan:
        print(f"{_runs(len(rows))} on {device}, {jobs} at a time, budget {args.budget:.0f} s, "
              f"at most {args.run_timeout:.0f} s each, from {clone}:")
        for r in rows:
            state = f"skipped: {r.reason}" if r.status == "skipped" else r.command
            print(f"  {r.label} {r.dtype}: {state}")
        return 0
    if device != "cpu":
        why = cuda_missing(device)
        if why:
            print(f"CUDA is not available: {why}. Nothing was run or written.")
            return 0
    out = Path(args.out or ("reports/cuda.md" if device != "cpu"
                            else "reports/devicecheck-cpu.md"))
    scratch = Path(tempfile.mkdtemp(prefix="adamw-devicecheck-"))
    lock = threading.Lock()

    def done(row: plan.Row) -> None:
        with lock:
            print(f"{row.label} {row.dtype}: {row.status} {_summary(row)}"
                  f"({row.seconds:.0f} s)", flush=True)

    try:
        print(f"device check on {device}: {_runs(pending)}, {jobs} at a time, "
              f"budget {args.budget:.0f} s", flush=True)
        plan.execute(rows, clone, scratch, jobs, start + args.budget - REPORT_RESERVE,
                     args.run_timeout, done)
        if device != "cpu":
            plan.triton_compiled(rows, scratch)
        if args.logs:
            shutil.copytree(scratch, args.logs, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("triton", "inductor", "nv", "cache",
                                                          "hypothesis", "matplotlib"))
        text = report.render(rows, report.machine(device, clone), time.perf_counter() - start,
                             args.budget, jobs, device)
        report.write_atomically(out, text)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"wrote {out} ({time.perf_counter() - start:.0f} s)")
    return 0 if all(r.status in ("passed", "skipped") for r in rows) else 1


def _summary(row: object) -> str:
    from adamw_conformance.devicecheck.plan import Row

    assert isinstance(row, Row)
    if row.kind == "suite" and row.status in ("passed", "failed"):
        failing = f", failing {', '.join(row.failing)}" if row.failing else ""
        return f"({row.passed} passed, {row.failed} failed{failing}) "
    return f"({row.reason}) " if row.reason else ""


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"
