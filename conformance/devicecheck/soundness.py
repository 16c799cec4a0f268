"""The bound against torch.optim.AdamW's paths on a device: every element of one replayed step
within the bound the suite judges that path by, and how close to it (the tightness).

    python -m adamw_conformance.devicecheck.soundness --device cuda --dtype bfloat16 --out s.json

Inputs are drawn in the regimes where evaluation orders differ most (those of
`adamw_conformance.tools.tightness`: t = 1, beta2 near 1, lr * wd near 1, tiny v, a decay-only
step, beta1 < 1/2, typical), over magnitudes from 1e-30 to 1e30, and at lr = 0 with zero moments
(the capturable branch divides by a step size of -0 there). Each path takes one step from that
state on the device; its theta, m and v are judged against the exact oracle and the bound of the
`Model` and precision the suite builds for the same `--impl` (`core.judge.Model.expect`, the
orders the target declares: the capturable ones for capturable=True), with the suite's own
comparison (`core.judge.compare`): no formula and no tolerance of this module's own.

Per path it reports the elements out of bound (count, worst err/bound and that element's inputs),
the largest err/bound of all (the tightness), outputs that are NaN or inf where the spec's value
is finite (the bound does not judge them: an order that divides by a zero step size has no domain
there), and each evaluation order's own largest err/bound: an order above 1 does not describe the
path, which is how the orders modelled from source (capturable, fused) are checked on a device.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

OUTPUTS = ("theta", "m", "v")
DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class PathSpec:
    """A path of torch.optim.AdamW: the keywords that select it, the `--impl` text the suite
    resolves for its bound, and why it is not run here (or None)."""

    name: str
    options: dict[str, bool]
    note: str = ""
    skip: str | None = None

    @property
    def impl(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"torch.optim.AdamW({args})"


def capturable_devices() -> list[str]:
    """The device types torch accepts capturable=True on (cuda among them)."""
    try:
        from torch.optim.optimizer import _get_capturable_supported_devices
        return list(_get_capturable_supported_devices())
    except Exception:  # noqa: BLE001 - a private helper; the check only names them
        return ["cuda"]


def paths(device: str) -> list[PathSpec]:
    """torch.optim.AdamW's paths on `device`. On the CPU, capturable=True is refused by torch;
    differentiable=True takes the same single-tensor branch there, and the capturable foreach
    path has no stand-in."""
    kind = device.split(":")[0]
    out = [PathSpec("torch-loop", {"foreach": False}),
           PathSpec("torch-foreach", {"foreach": True}),
           PathSpec("torch-fused", {"fused": True})]
    if kind in capturable_devices():
        return [*out, PathSpec("torch-capturable", {"capturable": True, "foreach": False}),
                PathSpec("torch-capturable-foreach", {"capturable": True, "foreach": True})]
    refused = (f"torch refuses capturable=True on {kind} (it takes "
               f"{', '.join(capturable_devices())})")
    return [*out,
            PathSpec("torch-capturable", {"differentiable": True, "foreach": False},
                     note=f"on {kind}: differentiable=True, the same branch"),
            PathSpec("torch-capturable-foreach", {"capturable": True, "foreach": True},
                     skip=refused)]


# --- the drawn steps -------------------------------------------------------------------------

@dataclass(frozen=True)
class Drawn:
    regime: str
    hyper: dict[str, float]
    t: int
    arrays: dict[str, np.ndarray]


#: Hyperparameter sets of the wide-magnitude regime: defaults, lr * wd = 1, beta1 < 1/2 with a
#: tiny eps, beta2 = 1 - 1e-6 far into training, beta1 = 0.
WIDE = ((dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2), 1),
        (dict(lr=1.0, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1.0), 2),
        (dict(lr=0.1, beta1=0.3, beta2=0.99, eps=1e-12, weight_decay=0.1), 3),
        (dict(lr=1e-2, beta1=0.9, beta2=0.999999, eps=1.0, weight_decay=0.0), 10**6),
        (dict(lr=1e-5, beta1=0.0, beta2=0.999, eps=1e-10, weight_decay=1e-4), 10**6))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int,
                 signed: bool = True) -> np.ndarray:
    x = np.exp(rng.uniform(math.log(lo), math.log(hi), n))
    return x * rng.choice([-1.0, 1.0], n) if signed else x


def _wide(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """theta over 1e-30..1e30, g over 1e-25..1e18, m and v independent of g over as many decades
    (v up to 1e36), 3% zeros in each; what overflows a format is outside the bound's domain."""
    out = {"theta": _log_uniform(rng, 1e-30, 1e30, n), "g": _log_uniform(rng, 1e-25, 1e18, n),
           "m": _log_uniform(rng, 1e-25, 1e18, n), "v": _log_uniform(rng, 1e-40, 1e36, n, False)}
    for a in out.values():
        a[rng.random(n) < 0.03] = 0.0
    return out


def draw(elements: int, seed: int, dtype: str) -> list[Drawn]:
    """At least `elements` elements in all, spread over the regimes, exactly representable in
    `dtype`."""
    from adamw_conformance.tools import tightness

    drawers = tightness.regimes(1)
    per = max(1, -(-elements // (_count(drawers) + len(WIDE) + 3)))
    rng = np.random.default_rng([seed, DTYPES.index(dtype) if dtype in DTYPES else 9])
    raw: list[Drawn] = []
    for name, fn in tightness.regimes(per).items():
        raw += [Drawn(name, dict(c.hyper), c.t, c.arrays) for c in fn(rng)]
    raw += [Drawn("wide magnitudes", dict(h), t, _wide(rng, per)) for h, t in WIDE]
    # lr = 0 (a warm-up's first step): a quarter of the elements with zero gradient and zero
    # moments, where the capturable branch computes 0 / -0.
    for c in [*tightness.regimes(per)["typical"](rng)[:2],
              *tightness.regimes(per)["t = 1"](rng)[:1]]:
        zero = rng.random(per) < 0.25
        arrays = {k: np.where(zero, 0.0, a) if k != "theta" else a for k, a in c.arrays.items()}
        raw.append(Drawn("lr = 0", {**c.hyper, "lr": 0.0}, c.t, arrays))
    return [Drawn(d.regime, d.hyper, d.t, tightness.representable(d.arrays, dtype)) for d in raw]


def _count(drawers: dict[str, Any]) -> int:
    rng = np.random.default_rng(0)
    return sum(len(fn(rng)) for fn in drawers.values())


# --- one step on the device ----------------------------------------------------------------

def step(spec: PathSpec, drawn: Drawn, dtype: str, device: str) -> dict[str, np.ndarray]:
    """One torch.optim.AdamW step of `spec`'s path on `device` from the drawn state (replayed:
    written before the step). The counter lives where torch puts it: on the device for capturable
    and fused, on the CPU otherwise."""
    import torch

    tdt, h = getattr(torch, dtype), drawn.hyper
    a = {k: torch.tensor(x, dtype=torch.float64).to(tdt).to(device)
         for k, x in drawn.arrays.items()}
    p = a["theta"].clone()
    opt = torch.optim.AdamW([p], lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"],
                            weight_decay=h["weight_decay"], **spec.options)
    on_device = spec.options.get("capturable") or spec.options.get("fused")
    counter = torch.tensor(float(drawn.t - 1), dtype=torch.float32,
                           device=device if on_device else "cpu")
    opt.state[p] = {"step": counter, "exp_avg": a["m"].clone(), "exp_avg_sq": a["v"].clone()}
    p.grad = a["g"].clone()
    opt.step()
    state = opt.state[p]
    if float(state["step"]) != drawn.t:
        raise RuntimeError(f"{spec.name}: the replayed step counter was not taken")
    return {"theta": p.detach().to("cpu", torch.float64).numpy(),
            "m": state["exp_avg"].to("cpu", torch.float64).numpy(),
            "v": state["exp_avg_sq"].to("cpu", torch.float64).numpy()}


# --- judging ----------------------------------------------------------------------------------

@dataclass
class Element:
    """One element and the step it belongs to: what a reader needs to reproduce it."""

    ratio: float
    output: str
    regime: str
    hyper: dict[str, float]
    t: int
    inputs: dict[str, float]
    got: float
    exact: str
    bound: float


@dataclass
class PathResult:
    name: str
    impl: str
    note: str = ""
    skip: str | None = None
    error: str | None = None
    elements: int = 0
    #: per output: elements the bound judges (in its domain)
    judged: dict[str, int] = field(default_factory=dict)
    #: per output: elements outside the bound (the suite's exact verdict)
    violations: dict[str, int] = field(default_factory=dict)
    worst_violation: Element | None = None
    #: the largest err/bound over every judged element (below 1: within)
    tightness: float = 0.0
    tightest: Element | None = None
    #: outputs NaN or inf where the spec's value is finite, per regime
    nonfinite: dict[str, int] = field(default_factory=dict)
    #: at lr = 0: theta elements with zero gradient and zero moments, and how many came back NaN
    lr0_zero_v: int = 0
    lr0_nan: int = 0
    #: each order of the bound alone: the largest err/bound over the elements it judges
    orders: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def _element(ratio: float, k: str, drawn: Drawn, i: int, got: np.ndarray, exact: Any,
             bound: float) -> Element:
    import mpmath
    idx = np.unravel_index(i, got.shape)
    return Element(float(ratio), k, drawn.regime, drawn.hyper, drawn.t,
                   {n: float(a[idx]) for n, a in drawn.arrays.items()}, float(got[idx]),
                   mpmath.nstr(exact.at(tuple(int(j) for j in idx)), 17), float(bound))


def _spec_finite(exact: Any, flat: np.ndarray) -> np.ndarray:
    """Whether the spec's value is finite at the elements `flat`: from the float64 filter where
    it vouches for its estimate, from mpmath elsewhere."""
    import mpmath
    est = exact.estimate
    out = np.zeros(flat.shape, dtype=bool)
    for j, i in enumerate(flat):
        if est is not None and bool(np.broadcast_to(est.ok, exact.shape).flat[i]):
            out[j] = bool(np.isfinite(np.broadcast_to(est.value, exact.shape).flat[i]))
        else:
            out[j] = bool(mpmath.isfinite(exact.at(np.unravel_index(int(i), exact.shape))))
    return out


def _config(spec: PathSpec, dtype: str, device: str) -> Any:
    """The suite's Config for `spec`'s --impl: its Model declares the orders the target does."""
    from adamw_conformance.adapters.base import declared_hyper
    from adamw_conformance.core.config import Config
    from adamw_conformance.core.judge import Model
    from adamw_conformance.core.targets import capabilities, resolve

    adapter = resolve(spec.impl)
    caps = capabilities(adapter)
    return Config(adapter, Model("adamw", declared_orders=caps.orders), dtype, device,
                  impl_text=spec.impl, hyper=declared_hyper(caps, dtype))


@dataclass
class _Expected:
    """One drawn step under one model: the exact result, the verdict's bound, each order's."""

    exact: Any
    bound: dict[str, Any]
    orders: dict[str, dict[str, Any]]


def _expected(cfg: Any, drawn: Drawn) -> _Expected:
    from adamw_conformance.spec.bounds import bound, environment

    a, model, prec = drawn.arrays, cfg.model, cfg.precision()
    state = {"m": a["m"], "v": a["v"]}
    exact, bnd = model.expect(a["theta"], a["g"], state, drawn.hyper, drawn.t, prec)
    env = environment(model.rule.inputs, a["theta"], a["g"], state, drawn.hyper, drawn.t,
                      model.rule.defaults)
    return _Expected(exact, bnd, {o.name: bound(o, env, prec) for o in model.orders(prec)})


def _judge_step(res: PathResult, drawn: Drawn, got: dict[str, np.ndarray], want: _Expected,
                dtype: str) -> None:
    """One step of a path against its model's expectation, accumulated into `res`."""
    from adamw_conformance.core.judge import compare, ratios

    a, exact, bnd = drawn.arrays, want.exact, want.bound
    res.elements += a["theta"].size
    for k in OUTPUTS:
        mm = compare(k, got[k], exact[k], bnd[k], dtype)
        r = ratios(got[k], exact[k], bnd[k])
        res.judged[k] = res.judged.get(k, 0) + int(np.count_nonzero(~np.isnan(r)))
        res.violations.setdefault(k, 0)
        if mm is not None:
            res.violations[k] += mm.count
            flat = int(np.ravel_multi_index(mm.index, got[k].shape))
            ratio = float(r.flat[flat]) if np.isfinite(r.flat[flat]) else math.inf
            if res.worst_violation is None or ratio > res.worst_violation.ratio:
                res.worst_violation = _element(ratio, k, drawn, flat, got[k], exact[k],
                                               mm.bound)
        finite = np.where(np.isfinite(r), r, np.nan)
        if np.any(~np.isnan(finite)):
            i = int(np.nanargmax(finite))
            if finite.flat[i] > res.tightness:
                res.tightness = float(finite.flat[i])
                res.tightest = _element(res.tightness, k, drawn, i, got[k], exact[k],
                                        float(np.broadcast_to(bnd[k].value,
                                                              got[k].shape).flat[i]))
        for name, b in want.orders.items():
            own = ratios(got[k], exact[k], b[k])
            res.orders.setdefault(name, 0.0)
            if np.any(~np.isnan(own)):
                res.orders[name] = max(res.orders[name], float(np.nanmax(own)))
        bad = np.flatnonzero(~np.isfinite(got[k]))
        if bad.size:
            n = int(np.count_nonzero(_spec_finite(exact[k], bad)))
            if n:
                res.nonfinite[drawn.regime] = res.nonfinite.get(drawn.regime, 0) + n
    if drawn.hyper["lr"] == 0.0:
        zero = (a["g"] == 0) & (a["m"] == 0) & (a["v"] == 0)
        res.lr0_zero_v += int(np.count_nonzero(zero))
        res.lr0_nan += int(np.count_nonzero(zero & np.isnan(got["theta"])))


def judge(specs: list[PathSpec], cases: list[Drawn], dtype: str,
          device: str) -> list[PathResult]:
    """Every drawn step of each path of `specs` on `device`, against the suite's bound for it.
    The exact result and the bounds are computed once per step and model (the paths that
    declare no order share one); a path that raises is reported with what it raised, and the
    others go on."""
    results = [PathResult(s.name, s.impl, s.note, s.skip) for s in specs]
    live = [(s, r, _config(s, dtype, device)) for s, r in zip(specs, results, strict=True)
            if not s.skip]
    for drawn in cases:
        wanted: dict[tuple[str, ...], _Expected] = {}
        for spec, res, cfg in live:
            if res.error is not None:
                continue
            start = time.perf_counter()
            try:
                got = step(spec, drawn, dtype, device)
            except Exception as e:  # noqa: BLE001 - reported as the path's row
                res.error = f"{type(e).__name__}: {e}"
                continue
            key = cfg.model.declared_orders
            if key not in wanted:
                wanted[key] = _expected(cfg, drawn)
            _judge_step(res, drawn, got, wanted[key], dtype)
            res.seconds += time.perf_counter() - start
    return results


def run(device: str, dtype: str, elements: int, seed: int = 0,
        regimes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Every path of `paths(device)` on the same drawn steps (of `regimes` only, if given)."""
    start = time.perf_counter()
    cases = [d for d in draw(elements, seed, dtype) if regimes is None or d.regime in regimes]
    results = judge(paths(device), cases, dtype, device)
    return {"device": device, "dtype": dtype, "seed": seed,
            "elements": sum(d.arrays["theta"].size for d in cases),
            "regimes": sorted({d.regime for d in cases}),
            "paths": [asdict(r) for r in results], "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adamw_conformance.devicecheck.soundness",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--elements", type=int, default=20_000,
                        help="elements per dtype, spread over the regimes (default 20000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    result = run(args.device, args.dtype, args.elements, args.seed)
    for r in result["paths"]:
        state = r["skip"] or r["error"] or (
            f"violations {sum(r['violations'].values())}, max err/bound {r['tightness']:.3g}, "
            f"non-finite {sum(r['nonfinite'].values())}, lr=0 NaN {r['lr0_nan']}/"
            f"{r['lr0_zero_v']}, {r['seconds']:.1f} s")
        print(f"{args.dtype} {r['name']}: {state}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
