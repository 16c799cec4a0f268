"""Speed of the conformance suite: `python -m adamw_conformance.tools.bench` writes
reports/benchmarks.md.

Sections: wall time of a profile against torch's three paths (each a fresh `pytest conformance`
process, as a CI gate runs it, so import time counts); throughput of the verdict for one AdamW
step, raw (every element in mpmath) and through the float64 filter, with the share of elements
that fall back to mpmath per regime; and, once the mutant zoo exists (`impl.mutants.ZOO`, entries
with the `--impl` target and the catalogue id that kills it), each mutant's time to its first
failure. Without a zoo that section says so.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]  # the clone: conformance/tools/ is two below it
TARGETS = ("torch-loop", "torch-foreach", "torch-fused")
#: The heading of the section tools/shardbench writes (the last of the file).
SHARDED_HEADING = "## The sharded verdict"
HYPER = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2}


def run(impl: str, dtype: str, profile: str, extra: tuple[str, ...] = ()) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "pytest", "conformance", f"--impl={impl}", f"--dtype={dtype}",
           f"--hypothesis-profile={profile}", "-q", "-p", "no:cacheprovider", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    tail = [line for line in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    return seconds, tail[-1].strip("= ") if tail else f"exit {proc.returncode}"


def import_time() -> float:
    """Seconds to import the plugin (torch, SymPy, Hypothesis included) in a fresh process."""
    code = "import time; s = time.perf_counter(); import adamw_conformance.plugin; " \
           "print(time.perf_counter() - s)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    return float(out.stdout.strip() or "nan")


def _regimes(n: int, rng: np.random.Generator) -> dict[str, tuple]:
    f32 = np.float32
    normal = rng.standard_normal(n).astype(f32).astype(np.float64)
    state = {"m": (normal * 0.1).astype(f32).astype(np.float64),
             "v": (normal**2 * 0.01).astype(f32).astype(np.float64)}
    tiny = np.ldexp(normal, -130).astype(f32).astype(np.float64)
    return {
        "normal, t=7": (normal, normal, state, HYPER, 7),
        "fresh state, t=1": (normal, normal, {}, HYPER, 1),
        "subnormal": (tiny, tiny, {"m": tiny, "v": np.abs(tiny)}, HYPER, 3),
        "beta2 = 1 - 2^-40, t=2": (normal, normal, state, dict(HYPER, beta2=1 - 2.0**-40), 2),
        "huge t = 2^40": (normal, normal, state, HYPER, 2**40),
    }


def _verdict(model: Any, prec: Any, inputs: tuple, mode: str,
             reps: int = 1) -> tuple[list[float], list[float], float, float]:
    """(wall and CPU seconds of each repetition of the whole verdict, share of elements accepted
    by the first order's bound alone, share that falls back to mpmath).

    The verdict is `Model.expect` + `compare` of theta, as a property test runs it; `got` (a
    correct float32 implementation: the result rounded to float32) is made before the timing."""
    from adamw_conformance.core.judge import compare
    from adamw_conformance.spec.formats import FLOAT32
    from adamw_conformance.spec.rounding import round_array

    theta, g, state, hyper, t = inputs
    os.environ["CONFORMANCE_ORACLE"] = mode
    exact, bnd = model.expect(theta, g, state, hyper, t, prec)
    est = exact["theta"].estimate if mode == "filtered" else None
    got = (est.value.astype(np.float32).astype(np.float64) if est is not None
           else round_array(exact["theta"], FLOAT32))
    times, cpu = [], []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        exact, bnd = model.expect(theta, g, state, hyper, t, prec)
        compare("theta", got, exact["theta"], bnd["theta"], "float32")
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    first = share = 1.0
    if est is not None:  # after the timing: these read the bound of every order
        est = exact["theta"].estimate
        first = float(np.mean(est.within(got, bnd["theta"].source.first("theta"))))
        inside, outside = est.decide(got, bnd["theta"].value)
        share = float(np.mean(~(inside | outside)))
    return times, cpu, first, share


def oracle_section(n_filtered: int, n_raw: int, reps: int = 5) -> list[str]:
    from adamw_conformance.core.judge import Model
    from adamw_conformance.spec.bounds import Precision, environment, max_over_orders
    from adamw_conformance.spec.lazy_oracle import lazy_step

    model, prec = Model(), Precision.of("float32")
    rng = np.random.default_rng(0)
    lines = ["## Oracle throughput (one AdamW step, float32, theta judged)", "",
             "`raw`: every element through mpmath (`CONFORMANCE_ORACLE=exact`); `filtered`: the",
             "float64 filter, mpmath only for the elements it cannot decide. `verdict` counts the",
             "whole `Model.expect` + `compare` (bound engine included), in one warm process; for",
             f"`filtered` the best and the median of {reps} repetitions, in wall time and in this",
             "process's CPU time (what a shared machine's load does not add). `first order`: share",
             "of elements accepted by the bound of the spec's own order alone (the other orders",
             "are computed only for the rest); `fallback`: share that needs mpmath.", "",
             "| path | elements | verdict el/s (best) | verdict el/s (median) | "
             "verdict el/s (CPU, best) | first order | fallback share |",
             "|---|---|---|---|---|---|---|"]
    model.expect(np.ones(8), np.ones(8), {}, HYPER, 1, prec)  # warm the caches
    for mode, n in (("exact", n_raw), ("filtered", n_filtered)):
        inputs = _regimes(n, rng)["normal, t=7"]
        times, cpu, first, share = _verdict(model, prec, inputs, mode,
                                            1 if mode == "exact" else reps)
        label = "raw (mpmath)" if mode == "exact" else "filtered"
        best, median = min(times), sorted(times)[len(times) // 2]
        lines.append(f"| {label} | {n} | {n / best:,.0f} | {n / median:,.0f} | "
                     f"{n / max(min(cpu), 1e-9):,.0f} | "
                     f"{'n/a' if mode == 'exact' else f'{first:.2%}'} | {share:.2%} |")
        print(lines[-1], flush=True)
    # The parts on their own, on many elements: the filter's float64 estimate with its error
    # bound (one pass, which also gives the first order's bound), and the bound of every order
    # for every output (what reports and multi-step checks read).
    theta, g, state, hyper, t = _regimes(n_filtered, rng)["normal, t=7"]
    est_s = all_s = np.inf
    for _ in range(reps):
        start = time.perf_counter()
        res = lazy_step(model.oracle, theta, g, state, hyper, t, companion=prec)
        _ = res["theta"].estimate
        est_s = min(est_s, time.perf_counter() - start)
        env = environment(model.rule.inputs, theta, g, state, hyper, t, model.rule.defaults)
        start = time.perf_counter()
        _ = max_over_orders(model.orders(prec), env, prec)["theta"].value
        all_s = min(all_s, time.perf_counter() - start)
    lines += ["", f"Float64 estimate with its error bound alone: {n_filtered / est_s:,.0f} "
              "elements/s. The bound of all five orders for all outputs (theta, m, v): "
              f"{n_filtered / all_s:,.0f} elements/s.", "",
              "### Fallback share per regime (filtered, float32)", "",
              "| regime | elements | first order | fallback to mpmath |", "|---|---|---|---|"]
    for name, inputs in _regimes(4096, rng).items():
        _, _, first, share = _verdict(model, prec, inputs, "filtered")
        lines.append(f"| {name} | 4096 | {first:.2%} | {share:.2%} |")
        print(lines[-1], flush=True)
    os.environ.pop("CONFORMANCE_ORACLE", None)
    return lines + [""]


def zoo_section(profile: str) -> list[str]:
    """Time to first failure per mutant: its killing property alone, fresh process, `-x`."""
    try:
        mutants = importlib.import_module("impl.mutants")
    except ImportError:
        mutants = None
    zoo = getattr(mutants, "ZOO", None)
    lines = ["## Time to first failure per mutant", ""]
    if not zoo:
        return lines + ["Not measured: `impl.mutants.ZOO` (the mutant registry) does not exist",
                        "in this checkout yet; this section fills in once it does.", ""]
    lines += ["| mutant | killed by | seconds | result |", "|---|---|---|---|"]
    entries = zoo.values() if isinstance(zoo, dict) else zoo
    for entry in entries:
        impl = getattr(entry, "impl", None) or getattr(entry, "target", None)
        kill = getattr(entry, "kills", None) or getattr(entry, "catalogue_id", None)
        if impl is None or kill is None:
            continue
        kill = kill if isinstance(kill, str) else next(iter(kill))
        family, name = kill.split(".", 1)
        extra = ("-x", f"conformance/test_{family}.py", "-k", name)
        seconds, summary = run(impl, "float32", profile, extra)
        lines.append(f"| `{impl}` | `{kill}` | {seconds:.1f} | {summary} |")
        print(lines[-1], flush=True)
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profiles", default="ci", help="comma-separated, e.g. ci,dev")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--elements", type=int, default=200_000,
                        help="elements for the filtered throughput (raw uses 1/100 of them)")
    parser.add_argument("--note", default="", help="a line about the machine's load")
    parser.add_argument("--out", default=str(ROOT / "reports" / "benchmarks.md"))
    parser.add_argument("--oracle-only", action="store_true",
                        help="only the oracle throughput section: printed, and put in place of "
                             "that section of an existing report (the rest is kept)")
    parser.add_argument("--reps", type=int, default=5,
                        help="repetitions of the filtered verdict (best and median reported)")
    args = parser.parse_args(argv)
    if args.oracle_only:
        section = oracle_section(args.elements, max(args.elements // 100, 200), args.reps)
        out = Path(args.out)
        if out.exists():
            text = out.read_text()
            pattern = re.compile(r"## Oracle throughput.*?(?=^## )", re.S | re.M)
            if pattern.search(text):
                out.write_text(pattern.sub(lambda _: "\n".join(section) + "\n", text, count=1))
                print(f"replaced the oracle section of {out}")
        return 0
    import torch

    rows = []
    for profile in args.profiles.split(","):
        for dtype in args.dtypes.split(","):
            for impl in TARGETS:
                seconds, summary = run(impl, dtype, profile)
                m = re.search(r"(\d+) passed", summary)
                examples = {"ci": 8, "dev": 25, "thorough": 300}.get(profile, 0)
                rate = (f"{int(m.group(1)) * examples / seconds:.0f}" if m and examples
                        else "n/a")
                rows.append(f"| `{impl}` | {dtype} | {profile} | {seconds:.1f} | {rate} | "
                            f"{summary} |")
                print(rows[-1], flush=True)
    text = [
        "# Benchmarks", "",
        "Written by `python -m adamw_conformance.tools.bench`. " + args.note, "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, torch "
        f"{torch.__version__}, {os.cpu_count()} cores.", "",
        "## Wall time of the suite", "",
        "`pytest conformance --impl=IMPL --dtype=DTYPE --hypothesis-profile=PROFILE` in a fresh",
        "process (import time included). Examples/s: passed tests x the profile's examples per",
        "test, over the wall time (an upper estimate: some tests draw fewer).", "",
        f"Import of the plugin (torch, SymPy, Hypothesis): {import_time():.1f} s.", "",
        "| impl | dtype | profile | seconds | examples/s | result |", "|---|---|---|---|---|---|",
        *rows, "",
        *oracle_section(args.elements, max(args.elements // 100, 200), args.reps),
        *zoo_section("ci"),
    ]
    # The sharded verdict's section is written by tools/shardbench (minutes, several processes):
    # kept as it is.
    old = Path(args.out).read_text() if Path(args.out).exists() else ""
    if SHARDED_HEADING in old:
        text += ["", SHARDED_HEADING + old.split(SHARDED_HEADING, 1)[1].rstrip("\n")]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(text))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
