"""The sharded verdict's benchmark: `python -m adamw_conformance.tools.shardbench` writes the
last section of reports/benchmarks.md (`## The sharded verdict`, replaced where it is there;
tools/bench keeps it).

One full AdamW step (torch.optim.AdamW under FSDP2, float32, from the state a first step made)
of a model with GPT-2 small's shapes (124,439,808 parameters), judged element by element
(theta, m and v against the oracle, within the derived bound) where each shard lives, on 1 and
on 2 ranks (`adamw_conformance.sharded.verdict`): the judging's wall time, elements per second,
and the peak memory (resident set) of each rank's process.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from adamw_conformance.sharded import pool
from adamw_conformance.tools.bench import SHARDED_HEADING

ROOT = Path(__file__).resolve().parent.parent
HYPER = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2}


def gpt2_small(layers: int = 12, width: int = 768, vocab: int = 50257,
               positions: int = 1024) -> list[tuple[int, ...]]:
    """The parameter shapes of GPT-2 small (tied embedding counted once)."""
    shapes: list[tuple[int, ...]] = [(vocab, width), (positions, width)]
    for _ in range(layers):
        shapes += [(width,), (width,),                       # ln_1
                   (width, 3 * width), (3 * width,),         # attn.c_attn
                   (width, width), (width,),                 # attn.c_proj
                   (width,), (width,),                       # ln_2
                   (width, 4 * width), (4 * width,),         # mlp.c_fc
                   (4 * width, width), (width,)]             # mlp.c_proj
    return shapes + [(width,), (width,)]                     # ln_f


def measure(world: int, shapes: list[tuple[int, ...]], limit: float) -> list[dict]:
    workers = pool.pool(world, start_timeout=300.0)
    try:
        return workers.call("function", 0, ("adamw_conformance.sharded.verdict", "bench_rank",
                                             (shapes, 0, HYPER)), "the benchmark", limit)
    finally:
        pool.close_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--layers", type=int, default=12,
                        help="transformer blocks (12: GPT-2 small; fewer for a quick look)")
    parser.add_argument("--out", default=str(ROOT.parent / "reports" / "benchmarks.md"))
    parser.add_argument("--limit", type=float, default=3600.0, help="seconds per world size")
    args = parser.parse_args(argv)
    shapes = gpt2_small(args.layers)
    n = sum(int(_prod(s)) for s in shapes)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [SHARDED_HEADING + ": one AdamW step of GPT-2 small judged element by element", "",
             "Written by `python -m adamw_conformance.tools.shardbench` "
             f"({platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} at the "
             "start). torch.optim.AdamW under FSDP2 (gloo, CPU), float32, one step from the "
             f"state a first step made, on a model of {len(shapes)} parameters with GPT-2 "
             f"small's shapes: {n:,} elements. Each rank judges the elements of its own "
             "shards (theta, m and v, each against the oracle within the derived bound, through "
             "the float64 filter, in chunks of 2^21 elements) and the ranks gather their "
             "verdicts. `judge` is the judging's wall time on the slowest rank, gathering "
             "included; `elements/s` counts every parameter element once (each with its three "
             "outputs); `peak RSS` is each rank's process at its peak (the model, the "
             "optimizer, the copies judged and the verdict's temporaries).", "",
             "| ranks | elements | judge (s) | elements/s | per rank: elements, judge (s), "
             "peak RSS (MiB) | verdict |", "|---|---|---|---|---|---|"]
    for world in args.ranks:
        start = time.perf_counter()
        out = measure(world, shapes, args.limit)
        total = time.perf_counter() - start
        slowest = max(o["wall_s"] for o in out)
        combined = out[0]["combined"]
        verdict = ("passed" if combined["passed"] else
                   f"FAILED: {combined['outside']} elements out of bound")
        per = "; ".join(f"rank {o['rank']}: {o['elements']:,}, {o['judge_s']:.1f}, "
                        f"{o['peak_rss_mb']:,.0f}" for o in out)
        lines.append(f"| {world} | {combined['elements']:,} | {slowest:.1f} | "
                     f"{combined['elements'] / slowest:,.0f} | {per} | {verdict} |")
        print(lines[-1], f"(whole run, workers' start included: {total:.0f} s)", flush=True)
    out = Path(args.out)
    old = out.read_text() if out.exists() else ""
    kept = old.split(SHARDED_HEADING, 1)[0].rstrip("\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text((kept + "\n\n" if kept else "") + "\n".join(lines) + "\n")
    print(f"wrote the sharded verdict's section of {out}")
    return 0


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


if __name__ == "__main__":
    raise SystemExit(main())
