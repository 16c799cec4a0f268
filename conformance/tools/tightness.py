"""How much looser the verdict's bound is than the order an implementation really uses:
`python -m adamw_conformance.tools.tightness` writes reports/tightness.md.

The verdict judges an element against the maximum of the bounds of every evaluation order in
play (docs/tolerance-model.md). For torch's three paths, whose own orders are traced
(`spec.orders`: torch_loop, torch_foreach, fused), the ratio

    verdict's bound / bound of the path's own order

says how much a defect of that path could hide under the other orders' allowance: for the
verdict a default run of the path judges by (the orders its behaviour leaves, core/forms.py,
probed on the path here), and for every order in play (`--orders=all`). It is measured
per element, per output (theta, m, v), in the regimes where orders differ most (lr * wd near 1,
beta2 near 1, t = 1, tiny v, a decay-only step, beta1 < 1/2) and in a typical one, in float32 and
bfloat16; the report gives its distribution (median, 99th percentile, maximum), the order whose
bound is the maximum where the ratio is largest, and, as a check that the regime is judged
soundly, the largest err/bound of the path itself (torch on CPU) against the verdict's bound.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent
OUTPUTS = ("theta", "m", "v")
DTYPES = ("float32", "bfloat16")

#: torch's paths and the traced order each follows (spec.orders).
PATHS: dict[str, tuple[str, dict[str, bool]]] = {
    "torch-loop": ("torch_loop", {"foreach": False}),
    "torch-foreach": ("torch_foreach", {"foreach": True}),
    "torch-fused": ("fused", {"fused": True}),
}

#: Real orders: torch's paths, and the expanded decay of transformers and fairseq
#: (spec/orders.py: expanded; in float32 and float64, see `measure`). The verdict is compared
#: with the loosest of them too.
REAL = ("torch_loop", "torch_foreach", "fused", "expanded")

BASE = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2}


@dataclass(frozen=True)
class Case:
    """One drawn step: hyperparameters, the counter, and float64 inputs (theta, g, m, v)."""

    hyper: dict[str, float]
    t: int
    arrays: dict[str, np.ndarray]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int,
                 signed: bool = True) -> np.ndarray:
    x = np.exp(rng.uniform(math.log(lo), math.log(hi), n))
    return x * rng.choice([-1.0, 1.0], n) if signed else x


def _steady(rng: np.random.Generator, n: int, hyper: dict[str, float], t: int,
            g_range: tuple[float, float] = (1e-4, 1e1),
            theta_range: tuple[float, float] = (1e-3, 1e2)) -> dict[str, np.ndarray]:
    """g over `g_range`; m, v what a steady g leaves after t - 1 steps, perturbed."""
    g = _log_uniform(rng, *g_range, n)
    f1, f2 = 1 - hyper["beta1"] ** (t - 1), 1 - hyper["beta2"] ** (t - 1)
    return {"theta": _log_uniform(rng, *theta_range, n), "g": g,
            "m": g * f1 * rng.uniform(0.5, 1.5, n) * rng.choice([1.0, -0.5], n, p=[0.8, 0.2]),
            "v": g * g * f2 * rng.uniform(0.5, 2.0, n)}


def _hypers(base: dict[str, float], *changes: dict[str, float]) -> list[dict[str, float]]:
    return [{**base, **c} for c in changes]


def regimes(n: int) -> dict[str, Callable[[np.random.Generator], list[Case]]]:
    """Named regimes, each drawing a few hyperparameter sets of `n` elements."""

    def steady(hypers: list[dict[str, float]], ts: tuple[int, ...], **kw: Any):
        def draw(rng: np.random.Generator) -> list[Case]:
            return [Case(h, t, _steady(rng, n, h, t, **kw)) for h in hypers for t in ts]
        return draw

    def decay_only(rng: np.random.Generator) -> list[Case]:
        out = []
        for lr, wd in ((1e-3, 1e-2), (0.5, 1.0), (0.9, 1.0), (0.9995, 1.0), (1.0, 0.99999)):
            h = {**BASE, "lr": lr, "weight_decay": wd}
            z = np.zeros(n)
            out.append(Case(h, 5, {"theta": _log_uniform(rng, 1e-3, 1e2, n), "g": z, "m": z,
                                   "v": z}))
        return out

    return {
        "typical": steady(_hypers(BASE, {}, {"lr": 1e-2, "weight_decay": 0.1},
                                  {"lr": 3e-4, "beta2": 0.95, "weight_decay": 0.05}), (10, 1000)),
        "t = 1": steady(_hypers(BASE, {}, {"lr": 1.0, "weight_decay": 0.5},
                                {"beta2": 0.99999, "eps": 1e-12}), (1,)),
        "lr*wd near 1": steady(_hypers(BASE, {"lr": 0.9995, "weight_decay": 1.0},
                                       {"lr": 1.0, "weight_decay": 0.99},
                                       {"lr": 0.999, "weight_decay": 0.999}), (1, 7),
                               g_range=(1e-6, 1e1)),
        "decay only": decay_only,
        "beta2 near 1": steady(_hypers(BASE, {"beta2": 0.99999}, {"beta2": 1 - 1e-6},
                                       {"beta2": 0.9999, "lr": 0.1}), (1, 3, 100)),
        "tiny v": steady(_hypers(BASE, {"eps": 1e-12}, {"eps": 1e-10, "lr": 0.1}, {}), (2, 10),
                         g_range=(1e-30, 1e-18)),
        "beta1 < 1/2": steady(_hypers(BASE, {"beta1": 0.1}, {"beta1": 0.3, "lr": 0.1}),
                              (2, 10)),
    }


def representable(arrays: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    import torch
    return {k: torch.tensor(a, dtype=torch.float64).to(getattr(torch, dtype)).double().numpy()
            for k, a in arrays.items()}


def torch_step(case: Case, dtype: str, options: dict[str, bool]) -> dict[str, np.ndarray]:
    """One torch.optim.AdamW step from the case's state (replayed: written before the step)."""
    import torch
    h, tdt = case.hyper, getattr(torch, dtype)
    a = {k: torch.tensor(x, dtype=torch.float64).to(tdt) for k, x in case.arrays.items()}
    p = torch.nn.Parameter(a["theta"].clone())
    opt = torch.optim.AdamW([p], lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"],
                            weight_decay=h["weight_decay"], **options)
    opt.state[p] = {"step": torch.tensor(float(case.t - 1)), "exp_avg": a["m"].clone(),
                    "exp_avg_sq": a["v"].clone()}
    p.grad = a["g"].clone()
    opt.step()
    s = opt.state[p]
    return {"theta": p.detach().double().numpy(), "m": s["exp_avg"].double().numpy(),
            "v": s["exp_avg_sq"].double().numpy()}


@dataclass
class Row:
    """One regime and path: per output, the ratios over every element, where the largest is
    attained and by which order, and the path's own largest err/bound under the verdict."""

    regime: str
    path: str
    ratios: dict[str, np.ndarray]
    argmax: dict[str, str]
    err: dict[str, float]
    #: verdict / the largest bound of the real orders (REAL), per element
    real: dict[str, np.ndarray]
    #: the same after the orders probe (core/forms.py) on the path: the verdict a run of the
    #: path judges by, over the path's own order; where it is largest; the path's err/bound
    after: dict[str, np.ndarray] = field(default_factory=dict)
    after_argmax: dict[str, str] = field(default_factory=dict)
    after_err: dict[str, float] = field(default_factory=dict)


def probed(dtype: str) -> dict[str, frozenset[str]]:
    """What the orders probe rules out on each torch path in `dtype` (run on the path)."""
    from adamw_conformance.core import forms
    from adamw_conformance.core.config import Config
    from adamw_conformance.core.targets import resolve

    return {path: forms.probe(Config(resolve(path), dtype=dtype, impl_text=path)).ruled_out
            for path in PATHS}


def measure(dtype: str, n: int, seed: int, with_errors: bool = True) -> Iterator[Row]:
    from adamw_conformance.core.judge import Model, ratios
    from adamw_conformance.spec.bounds import Bound, Precision, bound, environment
    from adamw_conformance.spec.orders import expanded

    model, prec = Model(), Precision.of(dtype)
    orders = model.orders(prec)
    narrowed = {path: replace(model, ruled_out=r).orders(prec)
                for path, r in probed(dtype).items()}
    # The expanded decay's order stores m * beta1 and the decay in the parameter's dtype, which
    # in bfloat16 is bf16 arithmetic as far as a bound can tell: it is judged there under
    # --compute-dtype=bfloat16, so it is a real order of the default profile only where its
    # stores are exact.
    extra = expanded()
    real = [o for o in orders if o.name in REAL]
    if prec.param == prec.compute:
        real.append(extra)
    for r, (name, draw) in enumerate(regimes(n).items()):
        cases = draw(np.random.default_rng([seed, r, DTYPES.index(dtype)]))
        acc: dict[str, dict[str, list[np.ndarray]]] = {p: {k: [] for k in OUTPUTS} for p in PATHS}
        worst: dict[str, dict[str, tuple[float, str]]] = {p: {k: (0.0, "") for k in OUTPUTS}
                                                          for p in PATHS}
        err: dict[str, dict[str, float]] = {p: dict.fromkeys(OUTPUTS, 0.0) for p in PATHS}
        over_real: dict[str, list[np.ndarray]] = {k: [] for k in OUTPUTS}
        acc_after = {p: {k: [] for k in OUTPUTS} for p in PATHS}
        worst_after = {p: {k: (0.0, "") for k in OUTPUTS} for p in PATHS}
        err_after = {p: dict.fromkeys(OUTPUTS, 0.0) for p in PATHS}
        for case in cases:
            arrays = representable(case.arrays, dtype)
            case = Case(case.hyper, case.t, arrays)
            state = {"m": arrays["m"], "v": arrays["v"]}
            env = environment(model.rule.inputs, arrays["theta"], arrays["g"], state,
                              case.hyper, case.t, model.rule.defaults)
            every = {o.name: o for o in (*orders, extra, *(o for v in narrowed.values()
                                                          for o in v))}
            each = {name: bound(o, env, prec) for name, o in every.items()}
            exact = bounds = None
            if with_errors:
                exact, bounds = model.expect(arrays["theta"], arrays["g"], state, case.hyper,
                                             case.t, prec)
            shape = arrays["theta"].shape
            for k in OUTPUTS:
                stack = np.stack([np.broadcast_to(each[o.name][k].value, arrays["theta"].shape)
                                  for o in orders])
                verdict = stack.max(axis=0)
                top = stack.argmax(axis=0)
                ok = np.all(np.isfinite(stack), axis=0)
                loosest = np.max([np.broadcast_to(each[o.name][k].value, verdict.shape)
                                  for o in real], axis=0)
                keep = ok & (loosest > 0)
                over_real[k].append(verdict[keep] / loosest[keep])
                for path, (own, _) in PATHS.items():
                    own_b = np.broadcast_to(each[own][k].value, verdict.shape)
                    keep = ok & (own_b > 0)
                    ratio = verdict[keep] / own_b[keep]
                    acc[path][k].append(ratio)
                    if ratio.size and ratio.max() > worst[path][k][0]:
                        i = int(np.argmax(ratio))
                        worst[path][k] = (float(ratio[i]), orders[int(top[keep][i])].name)
                    mine = narrowed[path]
                    after = np.stack([np.broadcast_to(each[o.name][k].value, shape)
                                      for o in mine])
                    ratio = after.max(axis=0)[keep] / own_b[keep]
                    acc_after[path][k].append(ratio)
                    if ratio.size and ratio.max() > worst_after[path][k][0]:
                        i = int(np.argmax(ratio))
                        worst_after[path][k] = (float(ratio[i]),
                                                mine[int(after.argmax(axis=0)[keep][i])].name)
            if with_errors:
                for path, (_, options) in PATHS.items():
                    got = torch_step(case, dtype, options)
                    for k in OUTPUTS:
                        rr = ratios(got[k], exact[k], bounds[k])
                        if np.any(np.isfinite(rr)):
                            err[path][k] = max(err[path][k], float(np.nanmax(rr)))
                        b = Bound.maximum(each[o.name][k] for o in narrowed[path])
                        rr = ratios(got[k], exact[k], b)
                        if np.any(np.isfinite(rr)):
                            err_after[path][k] = max(err_after[path][k], float(np.nanmax(rr)))
        for path in PATHS:
            yield Row(name, path, {k: np.concatenate(acc[path][k]) for k in OUTPUTS},
                      {k: worst[path][k][1] for k in OUTPUTS}, err[path],
                      {k: np.concatenate(over_real[k]) for k in OUTPUTS},
                      {k: np.concatenate(acc_after[path][k]) for k in OUTPUTS},
                      {k: worst_after[path][k][1] for k in OUTPUTS}, err_after[path])


def _stats(x: np.ndarray) -> str:
    if not x.size:
        return "n/a"
    return f"{np.median(x):.2f} / {np.quantile(x, 0.99):.2f} / {x.max():.3g}"


def _largest(rows: list[Row], k: str, pick) -> str:
    best = max(rows, key=lambda r: pick(r)[k].max() if pick(r)[k].size else 0.0)
    x = pick(best)[k]
    return f"{x.max():.3g} ({best.regime})" if x.size else "n/a"


def report(rows_by_dtype: dict[str, list[Row]], n: int, seed: int,
           outcomes: dict[str, dict[str, frozenset[str]]] | None = None) -> str:
    import torch
    from adamw_conformance.core.judge import Model
    from adamw_conformance.spec.bounds import Precision

    names = ", ".join(o.name for o in Model().orders(Precision.of("float32")))
    lines = ["# Tightness: the verdict's bound against the orders real implementations use", "",
             f"Written by `python -m adamw_conformance.tools.tightness` (torch {torch.__version__},"
             f" {n} elements per hyperparameter set and step, seed {seed}).", "",
             f"Every order in play ({names}: the default convention, no order declared) is "
             "the verdict's bound under `--orders=all`. By default a run first probes the target "
             "(conformance/core/forms.py) and leaves out the orders its behaviour rules out: "
             "the expanded decay, where its decay-only steps at lr*wd near 1 are as accurate "
             "as the factored forms allow, and torch's eager orders (bf16 stores op by op), "
             "where two steps whose second cancels theta are within the bound of float32 "
             "compute between stores. Three ratios, per element:", "",
             "- `after the probe / own`: the verdict's bound in a default run of the path (the "
             "orders its probe leaves) over the bound of the order the path follows "
             "(torch-loop: torch_loop, torch-foreach: torch_foreach, torch-fused: fused): how "
             "much more the verdict allows that path than its own arithmetic needs;",
             "- `all orders / own`: the same for every order in play (`--orders=all`, and any "
             "target whose probe rules nothing out);",
             "- `all orders / real`: every order over the largest bound of the real orders "
             f"({', '.join(REAL)}): how much more the verdict allows than the loosest real "
             "implementation needs (the general order's price for covering orders nobody "
             "traced).", "",
             "Cells give median / 99th percentile / maximum over the regime's elements. `max at`:"
             " the order whose bound is the verdict's where the ratio is largest. "
             "`err/bound`: the path's own largest error over the verdict's bound (below 1: "
             "within it). docs/tolerance-model.md (\"Evaluation orders\") says why each regime "
             "shows the factor it shows.", ""]
    if outcomes:
        lines += ["What the probe rules out on each path:", "",
                  "| dtype | path | ruled out | orders after the probe |", "|---|---|---|---|"]
        for dtype, paths in outcomes.items():
            for path, ruled in paths.items():
                after = Model(ruled_out=ruled).orders(Precision.of(dtype))
                lines.append(f"| {dtype} | {path} | {', '.join(sorted(ruled)) or 'nothing'} | "
                             f"{', '.join(o.name for o in after)} |")
        lines.append("")
    lines += ["## Largest ratios", "",
              "| dtype | path | after the probe / own: theta | m | v | all orders / own: theta "
              "| m | v | all orders / real: theta | m | v |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for dtype, rows in rows_by_dtype.items():
        for path in PATHS:
            mine = [r for r in rows if r.path == path]
            lines.append(f"| {dtype} | {path} | "
                         + " | ".join(_largest(mine, k, lambda r: r.after) for k in OUTPUTS)
                         + " | "
                         + " | ".join(_largest(mine, k, lambda r: r.ratios) for k in OUTPUTS)
                         + " | " + " | ".join(_largest(mine, k, lambda r: r.real)
                                              for k in OUTPUTS) + " |")
    for dtype, rows in rows_by_dtype.items():
        lines += ["", f"## {dtype}", "", "After the probe (a default run of the path):", "",
                  "| regime | path | after the probe / own: theta | m | v | max at (theta, m, v) "
                  "| err/bound (theta, m, v) |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r.regime} | {r.path} | "
                         + " | ".join(_stats(r.after[k]) for k in OUTPUTS)
                         + f" | {', '.join(r.after_argmax[k] or '-' for k in OUTPUTS)} | "
                         + ", ".join(f"{r.after_err[k]:.2f}" for k in OUTPUTS) + " |")
        lines += ["", "Every order (`--orders=all`):", "",
                  "| regime | path | all orders / own: theta | m | v | max at (theta, m, v) | "
                  "err/bound (theta, m, v) |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r.regime} | {r.path} | "
                         + " | ".join(_stats(r.ratios[k]) for k in OUTPUTS)
                         + f" | {', '.join(r.argmax[k] or '-' for k in OUTPUTS)} | "
                         + ", ".join(f"{r.err[k]:.2f}" for k in OUTPUTS) + " |")
        lines += ["", "| regime | all orders / real: theta | m | v |", "|---|---|---|---|"]
        for r in rows:
            if r.path == next(iter(PATHS)):
                lines.append(f"| {r.regime} | "
                             + " | ".join(_stats(r.real[k]) for k in OUTPUTS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=2000,
                        help="elements per hyperparameter set and step (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--no-errors", action="store_true",
                        help="bounds only: do not run torch and the oracle")
    parser.add_argument("--out", default=str(ROOT / "reports" / "tightness.md"))
    args = parser.parse_args(argv)
    rows, outcomes = {}, {}
    for dtype in args.dtypes.split(","):
        rows[dtype], outcomes[dtype] = [], probed(dtype)
        for row in measure(dtype, args.elements, args.seed, not args.no_errors):
            rows[dtype].append(row)
            print(f"{dtype} {row.regime:14s} {row.path:14s} "
                  + "  ".join(f"{k} {_stats(row.ratios[k])}" for k in OUTPUTS)
                  + "  real " + " ".join(f"{row.real[k].max() if row.real[k].size else 0:.3g}"
                                         for k in OUTPUTS)
                  + "  err/bound " + ", ".join(f"{row.err[k]:.2f}" for k in OUTPUTS)
                  + "  after the probe " + " ".join(f"{_stats(row.after[k])}" for k in OUTPUTS),
                  flush=True)
    text = report(rows, args.elements, args.seed, outcomes)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
