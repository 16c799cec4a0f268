"""Detection power, measured: `python -m adamw_conformance.tools.detection` writes
reports/detection.md.

- The kill matrix: the whole catalogue (ci profile) against every mutant of the zoo
  (`impl.mutants.ZOO`): which properties killed it, whether the one its registry entry names is
  among them, and how many Hypothesis examples and seconds that property took to fail.
- False alarms: every correct implementation (`impl.equivalent.CORRECT`) through the whole
  catalogue once with the ci profile and once per seed with the `sweep` profile (the ci profile's
  examples, drawn from `--hypothesis-seed`), counting runs with any failure, and the largest
  err/bound the judge saw on each (`adamw_conformance.core.record`).

Each run is the suite in a worker process (`--jobs` of them), the way `tests/suite.py` runs it.

    python -m adamw_conformance.tools.detection                      # everything, 20 seeds
    python -m adamw_conformance.tools.detection --seeds 5 --jobs 2   # a smaller sweep
    python -m adamw_conformance.tools.detection --only EpsHat --only torch-loop --output /tmp/d.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from adamw_conformance.core import catalogue

ROOT = Path(__file__).resolve().parents[2]  # the clone: conformance/tools/ is two below it
REPORT = ROOT / "reports" / "detection.md"


@dataclass
class Task:
    """One suite run: a mutant (kind 'mutant') or a correct implementation ('correct')."""

    kind: str
    name: str
    argv: list[str]
    profile: str = "ci"
    seed: int | None = None
    kills: str = ""  # mutants: the catalogue id that must be among the failures


@dataclass
class Result:
    task: Task
    rc: int
    results: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    examples: dict[str, int] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0


def _run(task: Task) -> Result:
    """In a worker: the suite in-process, with the err/bound recorder on."""
    sys.path.insert(0, str(ROOT))
    from adamw_conformance.core.record import recording

    from tests.suite import run_suite

    argv = list(task.argv)
    if task.seed is not None:
        argv.append(f"--hypothesis-seed={task.seed}")
    start = time.perf_counter()
    # pytest's terminal output is not wanted, but its reporter must exist: Hypothesis hands its
    # statistics (examples run) to the reports only when there is one.
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), recording() as seen:
        out = run_suite(*argv, profile=task.profile)
    # Messages are kept short: the report quotes first lines only.
    messages = {k: "\n".join(v.splitlines()[:3]) for k, v in out.messages.items()}
    return Result(task, out.rc, dict(out.results), dict(out.seconds), dict(out.examples),
                  messages, dict(seen.by_output), time.perf_counter() - start)


def tasks(seeds: int, only: list[str]) -> list[Task]:
    from impl.equivalent import CORRECT
    from impl.mutants import ZOO

    out = [Task("mutant", m.name, m.argv(), kills=m.kills) for m in ZOO
           if not only or m.name in only]
    for c in CORRECT:
        if (only and c.name not in only) or not c.available():
            continue
        out.append(Task("correct", c.name, c.argv()))
        out += [Task("correct", c.name, c.argv(), "sweep", seed) for seed in range(1, seeds + 1)]
    return out


# --- the report ---------------------------------------------------------------------------------

def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else ("inf" if x == float("inf") else f"{x:.3g}")


def _mutant_row(r: Result) -> tuple[bool, str]:
    failed = [k for k, v in r.results.items() if v == "failed"]
    ids = sorted({catalogue.of(k) for k in failed})
    named = [k for k in r.results if catalogue.of(k) == r.task.kills]
    first = next((k for k in named if r.results[k] == "failed"), None)
    killed = first is not None
    if killed:
        upto = named[:named.index(first) + 1]
        seconds = f"{sum(r.seconds.get(k, 0.0) for k in upto):.2f}"
        examples = str(r.examples.get(first, "n/a"))
    else:
        seconds = examples = "-"
    others = ", ".join(f"`{i}`" for i in ids if i != r.task.kills) or "-"
    args = " ".join(a for a in r.task.argv if not a.startswith("--impl="))
    row = (f"| `{r.task.name}` {args} | `{r.task.kills}` | {'yes' if killed else '**no**'} | "
           f"{examples} | {seconds} | {others} |")
    return killed, row


def render(results: list[Result], seeds: int, jobs: int, wall: float, only: list[str]) -> str:
    import torch

    mutants = [r for r in results if r.task.kind == "mutant"]
    correct = [r for r in results if r.task.kind == "correct"]
    rows = [_mutant_row(r) for r in mutants]
    killed = sum(k for k, _ in rows)
    command = "python -m adamw_conformance.tools.detection" \
        + (f" --seeds {seeds}" if seeds != 20 else "") \
        + "".join(f" --only {o}" for o in only)
    lines = [
        "# Detection power",
        "",
        f"Written by `{command}` (jobs={jobs}) on "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC in {wall / 60:.1f} "
        f"min. Machine: {platform.machine()}, Python {platform.python_version()}, torch "
        f"{torch.__version__}, {os.cpu_count()} cores.",
        "",
        f"Mutants: the whole catalogue, `ci` profile (derandomized, 8 examples, no shrinking), "
        f"float32 unless the row says otherwise. Correct implementations: the whole catalogue "
        f"once with `ci` and once per seed 1..{seeds} with the `sweep` profile (the ci profile's "
        f"examples drawn from `--hypothesis-seed`).",
        "",
        "## Mutation score",
        "",
        f"**{killed} / {len(mutants)}** mutants killed by the property their registry entry names "
        f"({100.0 * killed / max(len(mutants), 1):.0f}%); "
        f"{sum(r.rc != 0 for r in mutants)} / {len(mutants)} fail the suite at all.",
        "",
        "Examples and seconds: Hypothesis test cases run by the named property's test until it "
        "first failed (its first failing parametrization), and the wall time of that property's "
        "tests up to that failure.",
        "",
        "| mutant | named property | killed by it | examples to failure | seconds to failure "
        "| also killed by |",
        "|---|---|---|---|---|---|",
        *(row for _, row in rows),
        "",
    ]
    by_impl: dict[str, list[Result]] = {}
    for r in correct:
        by_impl.setdefault(r.task.name, []).append(r)
    alarms = sum(r.rc != 0 for r in correct)
    lines += [
        "## False alarms",
        "",
        f"**{alarms}** false alarms in {len(correct)} runs of {len(by_impl)} correct "
        f"implementations (a run with any failing test counts as one).",
        "",
        "| implementation | runs | false alarms | tests passed / skipped (ci run) "
        "| largest err/bound (theta, m, v, ...) |",
        "|---|---|---|---|---|",
    ]
    for name, rs in by_impl.items():
        worst: dict[str, float] = {}
        for r in rs:
            for k, v in r.ratios.items():
                worst[k] = max(worst.get(k, 0.0), v)
        ci = next((r for r in rs if r.task.profile == "ci"), rs[0])
        passed = sum(v == "passed" for v in ci.results.values())
        skipped = sum(v == "skipped" for v in ci.results.values())
        bad = [r for r in rs if r.rc != 0]
        shown = ", ".join(f"{k} {_fmt_ratio(v)}" for k, v in sorted(worst.items())) or "-"
        args = " ".join(a for a in ci.task.argv if not a.startswith("--impl="))
        lines.append(f"| `{name}` {args} | {len(rs)} | {len(bad)} | {passed} / {skipped} | "
                     f"{shown} |")
    from impl.equivalent import CORRECT
    missing = [c.target for c in CORRECT if not c.available() and (not only or c.name in only)]
    if missing:
        lines += ["", "Not run (module not importable here): "
                  + ", ".join(f"`{t}`" for t in missing) + "."]
    details = [r for r in correct if r.rc != 0]
    if details:
        lines += ["", "### False alarms in detail", ""]
        for r in details:
            lines.append(f"- `{r.task.name}` profile={r.task.profile} seed={r.task.seed}: "
                         + "; ".join(f"{k}: {m.splitlines()[0] if m else ''}"
                                     for k, m in r.messages.items()))
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20,
                        help="seeds of the false-alarm sweep per correct implementation (20)")
    parser.add_argument("--only", action="append", default=[],
                        help="run only this mutant or correct implementation (repeatable)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    todo = tasks(args.seeds, args.only)
    if not todo:
        parser.error(f"--only {args.only}: no such mutant or correct implementation")
    start = time.perf_counter()
    results: list[Result] = []
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        for i, r in enumerate(pool.map(_run, todo), 1):
            results.append(r)
            print(f"[{i}/{len(todo)}] {r.task.kind} {r.task.name} profile={r.task.profile} "
                  f"seed={r.task.seed}: rc={r.rc} {r.wall:.1f}s", flush=True)
    text = render(results, args.seeds, args.jobs, time.perf_counter() - start, args.only)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

