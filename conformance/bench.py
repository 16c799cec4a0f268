"""Wall time of the conformance suite: `python -m conformance.bench` writes reports/benchmarks.md.

Each run is a fresh `pytest conformance` process, as a CI gate runs it, so import time counts.
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("torch-loop", "torch-foreach", "torch-fused")


def run(impl: str, dtype: str, profile: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "pytest", "conformance", f"--impl={impl}", f"--dtype={dtype}",
           f"--hypothesis-profile={profile}", "-q", "-p", "no:cacheprovider"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    tail = [line for line in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    return seconds, tail[-1].strip("= ") if tail else f"exit {proc.returncode}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="ci")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--out", default=str(ROOT / "reports" / "benchmarks.md"))
    args = parser.parse_args(argv)
    import torch

    rows = []
    for dtype in args.dtypes.split(","):
        for impl in TARGETS:
            seconds, summary = run(impl, dtype, args.profile)
            rows.append(f"| `{impl}` | {dtype} | {args.profile} | {seconds:.1f} | {summary} |")
            print(rows[-1], flush=True)
    text = "\n".join([
        "# Benchmarks",
        "",
        "Wall time of `pytest conformance --impl=IMPL --dtype=DTYPE --hypothesis-profile=PROFILE`",
        "in a fresh process (import time included), written by `python -m conformance.bench`.",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"{__import__('os').cpu_count()} cores.",
        "",
        "| impl | dtype | profile | seconds | result |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
