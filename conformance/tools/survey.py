"""The fingerprint and the suite on optimizers that the project names nowhere, and on garbage.

    python -m adamw_conformance.tools.survey [--only TARGET ...] [--modes fp32,bf16,suite,auto]
        [--jobs N]
                                 [--output reports/unknown-optimizers.md] [--update]

The results also go to a JSON file next to the output (unknown-optimizers.json); `--update`
re-runs only the --only targets and --modes given and keeps every other row from it.

Each target runs, in its own process with a wall-clock limit, as a user would run it:

- `fp32`:  python -m adamw_conformance.tools.fingerprint --impl=TARGET
- `bf16`:  python -m adamw_conformance.tools.fingerprint --impl=TARGET --dtype=bfloat16
- `suite`: pytest conformance --impl=TARGET -x -q --hypothesis-profile=ci
- `auto`:  the same with --conventions=auto

and the table records the exit code, the fingerprint's verdict line or the suite's first failure,
and whether any output showed a Python traceback or a pytest INTERNALERROR (a defect: bad input
must give a readable failure that names its cause). Every run passes --impl-timeout so that a
hanging target costs seconds, not minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the clone: conformance/tools/ is two below it

#: (group, --impl): none of them is AdamW with the default conventions.
TARGETS: tuple[tuple[str, str], ...] = (
    ("torch", "torch.optim.NAdam"),
    ("torch", "torch.optim.NAdam(decoupled_weight_decay=True)"),
    ("torch", "torch.optim.RAdam"),
    ("torch", "torch.optim.RAdam(decoupled_weight_decay=True)"),
    ("torch", "torch.optim.Adamax"),
    ("torch", "torch.optim.Adadelta"),
    ("torch", "torch.optim.ASGD"),
    ("torch", "torch.optim.Rprop"),
    ("torch", "torch.optim.SparseAdam"),
    ("torch", "torch.optim.LBFGS"),
    ("torch", "torch.optim.Adafactor"),
    ("torch", "torch.optim.SGD"),
    ("torch", "torch.optim.SGD(momentum=0.9)"),
    ("torch", "torch.optim.Adagrad"),
    ("torch", "torch.optim.RMSprop"),
    ("torch", "torch.optim.Adam(amsgrad=True)"),
    ("torch", "impl.unknown:LionLike"),
    ("optax", "optax.adam"),
    ("optax", "optax.adamw(nesterov=True)"),
    ("optax", "impl.unknown:masked_adamw"),
    ("optax", "impl.unknown:chained_adam_l2"),
    ("optax", "optax.lion"),
    ("optax", "optax.adafactor"),
    ("optax", "optax.sgd"),
    ("optax", "optax.adagrad"),
    ("optax", "optax.rmsprop"),
    ("optax", "optax.yogi"),
    ("optax", "optax.lamb"),
    ("optax", "optax.adabelief"),
    ("optax", "optax.radam"),
    ("optax", "optax.nadamw"),
    ("keras", "keras.optimizers.Adam"),
    ("keras", "keras.optimizers.Lion"),
    ("keras", "keras.optimizers.Adafactor"),
    ("keras", "keras.optimizers.Nadam"),
    ("keras", "keras.optimizers.Adamax"),
    ("keras", "keras.optimizers.SGD"),
    ("keras", "keras.optimizers.RMSprop"),
    ("keras", "keras.optimizers.AdamW(use_ema=True)"),
    ("keras", "keras.optimizers.AdamW(amsgrad=True)"),
    ("garbage", "math.sqrt"),
    ("garbage", "nonexistent.module"),
    ("garbage", "torch.optim"),
    ("garbage", "torch.optim.Optimizer"),
    ("garbage", "impl.broken:RaisingAdamW"),
    ("garbage", "impl.broken:RaisingConstructor"),
    ("garbage", "impl.broken:NaNAdamW"),
    ("garbage", "impl.unknown:InfAdamW"),
    ("garbage", "impl.broken:HangingAdamW"),
    ("garbage", "impl.unknown:FrozenOptimizer"),
    ("garbage", "impl.unknown:WrongShapeAdapter"),
    ("garbage", "impl.unknown:NoParamsAdapter"),
    ("garbage", "impl.unknown:StringParamsAdapter"),
)

MODES = ("fp32", "bf16", "suite", "auto")

#: What the committed run showed (CPU, torch 2.13, optax 0.2.8, Keras 3.15): kept with the code
#: that renders it; re-read it against the tables when the targets or the versions change.
FINDINGS = """## What it shows

- No run crashed: every fingerprint printed its table and one `verdict:` line, every suite run
  ended in passes, readable failures (the property, the element, got vs oracle vs bound) or a
  usage error naming the cause.
- The rule probe places each target from four plain steps: torch's SGD, Adagrad and RMSprop and
  optax.sgd follow the spec's `sgd`, `adagrad`, `rmsprop`; NAdam, RAdam, Adamax, Adadelta, ASGD,
  Rprop, LBFGS, Lion (torch-style and optax), optax's adafactor, yogi, lamb, adabelief, radam,
  nadamw, adamw(nesterov=True), adagrad (initial accumulator 0.1) and rmsprop (decay 0.9 by
  default), Keras' Nadam and Adamax follow no rule of the spec (the nearest named, from about
  350 to 8e5 times its bound), so no convention is claimed for them; `optax.adam` and
  `impl.unknown:masked_adamw` are Adam without decay, `impl.unknown:chained_adam_l2`
  (add_decayed_weights before scale_by_adam) is Adam+L2, `torch.optim.Adam(amsgrad=True)` and
  Keras' AdamW(amsgrad=True) are the Adam family.
- Could not drive (exit 3, with the target's own error): torch's SparseAdam (dense gradients) and
  Adafactor (eps is a pair), `torch.optim.Optimizer` itself, Keras' Lion, Adafactor, SGD and
  RMSprop (the Keras adapter passes beta_1/beta_2/epsilon they do not take), Keras' Nadam in
  bfloat16 (its own `_foreach_div` TypeError on the torch backend), the raising, hanging (the
  per-call limit) and number-less targets.
- Keras' Adam and AdamW(use_ema=True) are AdamW of Keras' conventions whose float32
  hyperparameters put decay_target and moments just outside the bound (nearest within 8x), the
  known Keras deviation (docs/adapters.md, "Keras 3").
"""
# The first call into torch.optim can take seconds on a loaded machine (lazy imports).
IMPL_TIMEOUT = 30.0


def command(mode: str, impl: str) -> list[str]:
    py = [sys.executable, "-m"]
    limit = f"--impl-timeout={IMPL_TIMEOUT:g}"
    if mode in ("fp32", "bf16"):
        dtype = "float32" if mode == "fp32" else "bfloat16"
        return py + ["adamw_conformance.tools.fingerprint", f"--impl={impl}", f"--dtype={dtype}",
                     limit]
    extra = ["--conventions=auto"] if mode == "auto" else []
    return py + ["pytest", "conformance", f"--impl={impl}", "-x", "-q",
                 "--hypothesis-profile=ci", "-p", "no:cacheprovider", limit, *extra]


def shown(mode: str, impl: str) -> str:
    args = command(mode, impl)[2:]
    head = "python -m " if args[0].startswith("conformance") else ""
    return head + " ".join(f"'{a}'" if "(" in a else a for a in args
                           if a not in ("-p", "no:cacheprovider"))


@dataclass
class Outcome:
    rc: int | str
    summary: str
    crashed: bool
    seconds: float


_CRASH = re.compile(r"^Traceback \(most recent call last\)|INTERNALERROR", re.MULTILINE)


def summarize(mode: str, out: str) -> str:
    """The line that says what happened: the fingerprint's verdict or usage error, the
    suite's first failure (its message's first line) or its summary line."""
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    if mode in ("fp32", "bf16"):
        for key in ("verdict:", "error:", "conventions:"):
            hit = [ln for ln in lines if ln.startswith(key)]
            if hit:
                return hit[0]
        return lines[-1] if lines else "(no output)"
    usage = [ln for ln in lines if ln.startswith("ERROR:")]
    if usage:
        return usage[0]
    failed = [ln for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
    summary = lines[-1] if lines else "(no output)"
    return (failed[0] + " | " if failed else "") + summary


def run_one(mode: str, impl: str, limit: float) -> Outcome:
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    try:
        proc = subprocess.run(command(mode, impl), cwd=ROOT, capture_output=True, text=True,
                              timeout=limit, env=env)
    except subprocess.TimeoutExpired:
        return Outcome("timeout", f"no answer within {limit:g} s", True,
                       time.monotonic() - start)
    out = proc.stdout + proc.stderr
    return Outcome(proc.returncode, summarize(mode, out), bool(_CRASH.search(out)),
                   time.monotonic() - start)


def _cell(text: str, width: int = 220) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[:width - 1] + "…"


def render(results: dict[tuple[str, str], Outcome], targets: Sequence[tuple[str, str]],
           modes: Sequence[str]) -> str:
    crashes = sum(o.crashed for o in results.values())
    lines = [
        "# The fingerprint and the suite on optimizers nobody named",
        "",
        "Written by `python -m adamw_conformance.tools.survey` (see its docstring). "
        "Each target below is "
        "neither AdamW with the default conventions nor named by the suite; the garbage rows "
        "are not optimizers at all. For each, in its own process:",
        "",
    ]
    for m in modes:
        lines.append(f"- `{m}`: `{shown(m, 'TARGET')}`")
    lines += [
        "",
        "Exit codes: the fingerprint 0 (AdamW as PyTorch defines it), 1 (driven, but not "
        "AdamW: another rule, or a property that fits no named convention), 2 (usage error: "
        "the --impl cannot be resolved), 3 (could not drive the target: it raises, hangs or "
        "returns no numbers), 4 (AdamW under other named conventions); pytest 0 (passed), "
        "1 (a test failed), 4 (usage error). "
        "`crash` marks a Python traceback or an INTERNALERROR in the output, or no answer "
        "within the wall-clock limit.",
        "",
        f"Runs: {len(results)}; crashes: {crashes}.",
        "",
        FINDINGS,
        "",
    ]
    for mode in modes:
        lines += [f"## {mode}: `{shown(mode, 'TARGET')}`", "",
                  "| group | target | exit | crash | seconds | what it says |",
                  "|---|---|---|---|---|---|"]
        for group, impl in targets:
            o = results.get((mode, impl))
            if o is None:
                continue
            lines.append(f"| {group} | `{impl}` | {o.rc} | {'**yes**' if o.crashed else 'no'} "
                         f"| {o.seconds:.0f} | {_cell(o.summary)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adamw_conformance.tools.survey",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=None, metavar="TARGET")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--limit", type=float, default=600.0,
                        help="wall-clock seconds per run (default 600)")
    parser.add_argument("--output", default=str(ROOT / "reports" / "unknown-optimizers.md"))
    parser.add_argument("--update", action="store_true",
                        help="keep the other rows of the JSON file next to --output")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        parser.error(f"unknown mode(s) {bad}; known: {', '.join(MODES)}")
    targets = [t for t in TARGETS if not args.only or t[1] in args.only]
    targets += [("other", t) for t in args.only or () if t not in {x[1] for x in TARGETS}]
    jobs = [(m, impl) for _, impl in targets for m in modes]
    results: dict[tuple[str, str], Outcome] = {}
    store = Path(args.output).with_suffix(".json")
    if args.update and store.exists():
        for row in json.loads(store.read_text()):
            results[(row["mode"], row["impl"])] = Outcome(row["rc"], row["summary"],
                                                           row["crashed"], row["seconds"])
        targets = list(TARGETS) + [t for t in targets if t not in TARGETS]
        modes = list(MODES)
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = {key: pool.submit(run_one, *key, args.limit) for key in jobs}
        for key, fut in futures.items():
            results[key] = fut.result()
            o = results[key]
            print(f"{key[0]:5} {key[1]:55} rc={o.rc!s:8} {'CRASH ' if o.crashed else ''}"
                  f"{o.seconds:5.0f}s  {o.summary[:150]}", flush=True)
    Path(args.output).write_text(render(results, targets, modes) + "\n")
    store.write_text(json.dumps([{"mode": m, "impl": i, "rc": o.rc, "summary": o.summary,
                                  "crashed": o.crashed, "seconds": round(o.seconds, 1)}
                                 for (m, i), o in results.items()], indent=1) + "\n")
    print(f"wrote {args.output}")
    return 1 if any(o.crashed for o in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
