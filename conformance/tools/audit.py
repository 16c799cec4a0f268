"""The committed audit reports: `python -m adamw_conformance.tools.audit` regenerates reports/*/ and
reports/README.md.

Each audit is a fresh `pytest conformance --impl=IMPL --dtype=DTYPE --hypothesis-profile=ci
--report=NAME` process, as a user would run it. A target that cannot be run here (its framework
is not installed, its adapter does not resolve) is listed in the README as "not run: <reason>"
and the others go on. `--readme-only` rewrites the README from the JSON files already there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The clone the committed reports belong to (this file is conformance/tools/audit.py in it).
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Audit:
    name: str  # the folder under reports/
    impl: str
    dtype: str
    what: str  # one line for the README
    args: tuple[str, ...] = ()  # further suite options (declared conventions)


AUDITS = (
    Audit("torch-loop-float32", "torch-loop", "float32", "torch.optim.AdamW(foreach=False)"),
    Audit("torch-foreach-float32", "torch-foreach", "float32", "torch.optim.AdamW(foreach=True)"),
    Audit("torch-fused-float32", "torch-fused", "float32", "torch.optim.AdamW(fused=True)"),
    Audit("torch-loop-bfloat16", "torch-loop", "bfloat16", "torch.optim.AdamW(foreach=False)"),
    Audit("torch-foreach-bfloat16", "torch-foreach", "bfloat16",
          "torch.optim.AdamW(foreach=True)"),
    Audit("torch-fused-bfloat16", "torch-fused", "bfloat16", "torch.optim.AdamW(fused=True)"),
    Audit("optax-adamw-float32", "optax-adamw", "float32", "optax.adamw (JAX)"),
    Audit("keras-adamw-float32", "keras-adamw", "float32", "keras.optimizers.AdamW (Keras 3)"),
    Audit("keras-adamw-float32-declared", "keras-adamw", "float32",
          "keras.optimizers.AdamW, its conventions declared (eps=hat, counter=group), judged in "
          "its own evaluation order; its known deviations (conformance/xfails/keras.txt: no "
          "hyperparameter checks, float32 betas within 2^-25 of 1) expected to fail",
          ("--conventions=eps=hat,counter=group", "--xfails=conformance/xfails/keras.txt")),
    Audit("optax-adamw-bfloat16", "optax-adamw", "bfloat16", "optax.adamw (JAX)"),
    Audit("keras-adamw-bfloat16", "keras-adamw", "bfloat16",
          "keras.optimizers.AdamW, its conventions declared (eps=hat, counter=group)",
          ("--conventions=eps=hat,counter=group",)),
    # block-quantized optimizer states (the optional extra `.[quantized]`, not in CI)
    Audit("torchao-adamw8bit-float32", "torchao.optim.AdamW8bit", "float32",
          "torchao.optim.AdamW8bit (0.18.0): 8-bit block-quantized moments"),
    Audit("torchao-adamw4bit-float32", "torchao.optim.AdamW4bit", "float32",
          "torchao.optim.AdamW4bit (0.18.0): 4-bit block-quantized moments"),
    Audit("torchao-adamwfp8-float32", "torchao.optim.AdamWFp8", "float32",
          "torchao.optim.AdamWFp8 (0.18.0): float8 e4m3 block-quantized moments"),
    Audit("torchao-adamw8bit-bfloat16", "torchao.optim.AdamW8bit", "bfloat16",
          "torchao.optim.AdamW8bit (0.18.0): 8-bit block-quantized moments, bfloat16 parameters"),
    Audit("bnb-adamw8bit-float32", "bitsandbytes.optim.AdamW8bit", "float32",
          "bitsandbytes.optim.AdamW8bit (0.50.0, its CPU kernel): 8-bit blockwise moments"),
    # the precision techniques (docs/precision-techniques.md); optional libraries, not in .[all]
    Audit("optimi-adamw-bfloat16", "optimi.AdamW(triton=False)", "bfloat16",
          "optimi.AdamW (torch-optimi 0.3.3): Kahan summation, on by default for bfloat16; its "
          "counter and moments declared (counter=global, moments=debiased); triton=False (its "
          "Triton path is picked on CPU tensors: reports/third-party.md)",
          ("--conventions=counter=global,moments=debiased",)),
    Audit("torchao-adamw-sr-bfloat16", "torchao.optim._AdamW(bf16_stochastic_round=True)",
          "bfloat16", "torchao.optim._AdamW(bf16_stochastic_round=True) (torchao 0.18.0): "
          "stochastic rounding of the bfloat16 parameters; its step torch.compile'd"),
    # sharded engines on torch.distributed, 2 ranks on this machine (reports/sharded-audit.md)
    Audit("zero-adamw-float32", "zero:torch.optim.AdamW", "float32",
          "torch.optim.AdamW through torch.distributed.optim.ZeroRedundancyOptimizer, 2 ranks "
          "(gloo)"),
    Audit("fsdp2-adamw-float32", "fsdp2:torch.optim.AdamW", "float32",
          "torch.optim.AdamW under FSDP2 (fully_shard), 2 ranks (gloo)"),
    # DeepSpeed is an optional extra, not in .[all]; run with DS_ACCELERATOR=cpu
    Audit("deepspeed-zero1-adamw-float32", "deepspeed-zero1:torch.optim.AdamW", "float32",
          "torch.optim.AdamW as the client optimizer of DeepSpeed ZeRO-1 (0.19.8, "
          "DS_ACCELERATOR=cpu, gradient clipping off), 2 ranks (gloo)"),
    Audit("deepspeed-zero2-adamw-float32", "deepspeed-zero2:torch.optim.AdamW", "float32",
          "torch.optim.AdamW as the client optimizer of DeepSpeed ZeRO-2 (0.19.8, "
          "DS_ACCELERATOR=cpu, gradient clipping off), 2 ranks (gloo)"),
)


def _reason(output: str, rc: int) -> str:
    """Why pytest wrote no report, in one line: its usage error if it printed one."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("ERROR:"):
            return line.removeprefix("ERROR:").strip()
    return (lines[-1] if lines else "no output") + f" (exit {rc})"


def run(audit: Audit, out: Path, profile: str) -> str | None:
    """Run one audit; None if its report was written, else the reason it was not."""
    cmd = [sys.executable, "-m", "pytest", "conformance", f"--impl={audit.impl}",
           f"--dtype={audit.dtype}", f"--hypothesis-profile={profile}",
           f"--report={audit.name}", *audit.args, "-q", "-p", "no:cacheprovider"]
    if out.resolve() != (ROOT / "reports").resolve():
        cmd.append(f"--report-dir={out}")
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    report = out / audit.name / "report.json"
    if report.exists() and report.stat().st_mtime >= started:
        return None
    return _reason(proc.stderr + "\n" + proc.stdout, proc.returncode)


def _worst(props: dict[str, Any]) -> tuple[str, str, Any] | None:
    """The (property, output, err/bound) closest to or furthest past the bound."""
    best: tuple[str, str, Any] | None = None
    for cid, p in props.items():
        for output, s in p["outputs"].items():
            w = s["worst"]
            if w is None:
                continue
            key = float("inf") if w == "inf" else w
            if best is None or key > (float("inf") if best[2] == "inf" else best[2]):
                best = (cid, output, w)
    return best


def finding(data: dict[str, Any]) -> list[str]:
    """What one audit found, as README bullet lines."""
    res = data["results"]
    props = res["properties"]
    bad = {cid: p for cid, p in props.items() if p["outcome"] in ("failed", "error")}
    xfail = [cid for cid, p in props.items() if p["outcome"] == "xfailed"]
    skipped = [cid for cid, p in props.items() if p["outcome"] == "skipped"]
    counts = ", ".join(f"{n} {o}" for o, n in res["summary"].items() if n)
    lines = [f"- tests: {counts}; {res['elements_judged']} elements judged against the bound"]
    if bad:
        lines.append(f"- **fails {len(bad)} of {len(props)} properties:**")
        for cid, _p in sorted(bad.items()):
            first = next(t for t in res["tests"]
                         if t["catalogue"] == cid and t["outcome"] in ("failed", "error"))
            lines.append(f"  - `{cid}`: {first['message']}")
    else:
        lines.append(f"- passes every property it was run on ({len(props) - len(skipped)} of "
                     f"{len(props)}; {len(xfail)} expected failures)")
    if xfail:
        lines.append("- expected failures: " + ", ".join(f"`{c}`" for c in sorted(xfail)))
    if skipped:
        reasons = sorted({t["message"] for t in res["tests"]
                          if t["catalogue"] in skipped and t["message"]})
        lines.append("- skipped: " + ", ".join(f"`{c}`" for c in sorted(skipped))
                     + (f" ({'; '.join(reasons)})" if reasons else ""))
    worst = _worst(props)
    if worst:
        cid, output, w = worst
        lines.append(f"- largest err/bound: {w} (`{cid}`, {output})")
    fp = res["fingerprint"]
    lines.append(f"- fingerprint: {fp['conventions'] if fp['available'] else fp['note']}")
    return lines


SCHEMA = """\
## report.json schema (schema_version 1)

Keys are sorted and floats are rounded to 4 significant digits, so that regenerating a report
changes only what changed. Everything that varies from run to run on its own (date, duration,
command line, versions of the environment) is under `metadata`; `results` holds what the run found.

- `schema_version`: 1; bumped when a key changes meaning or disappears.
- `name`: the report's folder name (`--report=NAME`).
- `metadata.date`: UTC time the report was written (ISO 8601); `metadata.command`, `.seconds`,
  `.platform`, `.executable`: how, how long, where; `metadata.versions`: python, torch, numpy,
  jax, optax, keras, hypothesis, mpmath, sympy, matplotlib (`not installed` where absent);
  `metadata.plots`: how many histograms were drawn, or why none were.
- `results.target`: `impl` (the --impl text), `name` and `version` of the implementation,
  `device`, `dtype`, `precision` (the profile it is judged at), `rule`, `conventions`.
- `results.settings`: `hypothesis_profile`, `hypothesis_seed` (`derandomized` for ci),
  `compute_dtype` (declared; null: the opmath default), `xfails`, `impl_timeout`.
- `results.summary`: number of tests per outcome: `error`, `failed`, `xpassed`, `xfailed`,
  `passed`, `skipped`.
- `results.elements_judged`: elements compared against a derived bound, over all properties.
- `results.tests[]`: one per test, sorted by `id` (the pytest node id): `catalogue` (property
  id), `outcome`, `message` (the skip reason or the first line of the failure; null when passed),
  `detail` (the failure message, at most 4000 characters), `reason` (xfail entries only).
- `results.properties.<id>`: `outcome` (the worst of its tests'), `tests` (count per outcome),
  `worst` (largest err/bound; null when no element was judged by a bound: bitwise and
  behavioural properties), `elements`, and `outputs.<theta|m|v|vmax>` with `elements`, `exact`
  (err = 0), `over_bound` (err/bound > 1), `worst`, `median`, `p99`.
- `results.fingerprint`: `available`; if true, `answers` (per convention: value, evidence,
  confident), `table` (Markdown) and `conventions` (one line); if false, `note` says why.

An err/bound is the string `"inf"` where the bound is 0 and the error is not (exact results
required, e.g. a bitwise property judged through the bound).
"""


def readme(audits: tuple[Audit, ...], out: Path, not_run: dict[str, str], profile: str) -> str:
    lines = [
        "# Audit reports",
        "",
        "Each folder holds one audit: `report.html` (self-contained page, open it in a "
        "browser), `report.md`, `report.json` and `plots/` (histograms of log10(err/bound) per "
        "property). Regenerate all of them, and this file, with",
        "",
        "    python -m adamw_conformance.tools.audit",
        "",
        f"which runs `pytest conformance --impl=IMPL --dtype=DTYPE --hypothesis-profile={profile}"
        " --report=NAME` for each audit below in a fresh process (`--only NAME` for some, "
        "`--readme-only` to rewrite this file from the JSON files). One report by hand: add "
        "`--report=NAME` to any `pytest conformance` run.",
        "",
        "`benchmarks.md` (wall times) is written by `python -m adamw_conformance.tools.bench`; "
        "its last section (the sharded verdict on GPT-2 small's shapes, 1 and 2 ranks) by "
        "`python -m adamw_conformance.tools.shardbench`.",
        "",
        "`sharded-audit.md` (ZeroRedundancyOptimizer, FSDP2 and DeepSpeed ZeRO through the whole "
        "catalogue, what the suite finds in each with its evidence, the plain-torch model of "
        "DeepSpeed's flat layout and its mutants) is written by hand from the runs its commands "
        "give and the three sharded audits below.",
        "",
        "`tightness.md` (the verdict's bound against the orders torch's paths and other real "
        "implementations use, per regime) is written by "
        "`python -m adamw_conformance.tools.tightness`.",
        "",
        "`third-party.md` (the suite on nine third-party libraries' optimizers, before and after "
        "issue 13's work, each failure's reason checked against the library's source) is written "
        "by hand from `--report` runs; its commands are at its top.",
        "",
        "`unknown-optimizers.md` (the fingerprint and the suite on some fifty optimizers the "
        "project names nowhere, and on garbage targets: exit codes, verdicts, first failures, "
        "crashes) is written by `python -m adamw_conformance.tools.survey`.",
        "",
        "## What each audit found",
        "",
    ]
    for audit in audits:
        path = out / audit.name / "report.json"
        lines.append(f"### {audit.name}: {audit.what}, {audit.dtype}")
        lines.append("")
        if audit.name in not_run:
            lines.append(f"- not run: {not_run[audit.name]}")
        elif not path.exists():
            lines.append("- not run: no report yet "
                         "(`python -m adamw_conformance.tools.audit --only "
                         f"{audit.name}`)")
        else:
            data = json.loads(path.read_text())
            t = data["results"]["target"]
            lines.append(f"- [report.html]({audit.name}/report.html) · "
                         f"[report.md]({audit.name}/report.md) · "
                         f"[report.json]({audit.name}/report.json); {t['name']} {t['version']}, "
                         f"{t['device']}, judged at {t['precision']}; "
                         f"{data['metadata']['date'][:10]}")
            lines += finding(data)
        lines.append("")
    return "\n".join(lines) + "\n" + SCHEMA


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None, metavar="NAME",
                        help="run only these audits: " + ", ".join(a.name for a in AUDITS))
    parser.add_argument("--profile", default="ci", help="Hypothesis profile (default ci)")
    parser.add_argument("--out", default=str(ROOT / "reports"), help="default reports/")
    parser.add_argument("--readme-only", action="store_true",
                        help="rewrite README.md from the report.json files already there")
    args = parser.parse_args(argv)
    out = Path(args.out)
    names = {a.name for a in AUDITS}
    unknown = sorted(set(args.only or ()) - names)
    if unknown:
        parser.error(f"unknown audit(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    not_run: dict[str, str] = {}
    if not args.readme_only:
        for audit in AUDITS:
            if args.only is not None and audit.name not in args.only:
                continue
            start = time.perf_counter()
            reason = run(audit, out, args.profile)
            took = time.perf_counter() - start
            if reason:
                not_run[audit.name] = reason
                print(f"{audit.name}: not run: {reason}", flush=True)
            else:
                print(f"{audit.name}: wrote {out / audit.name} ({took:.0f} s)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text(readme(AUDITS, out, not_run, args.profile))
    print(f"wrote {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
