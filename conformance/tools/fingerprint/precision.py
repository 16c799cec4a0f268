"""The precision probe: for bf16/fp16 parameters, the arithmetic each step is within the bound
of, what decay-only steps below half an ulp do, and whether the hyperparameters degenerate in
the parameter dtype."""

from __future__ import annotations

import numpy as np
from adamw_conformance.adapters.base import ParamState
from adamw_conformance.core.precision import LOW_DTYPES, compute_verdict, within_compute
from adamw_conformance.core.replay import read_each_state
from adamw_conformance.core.strategies import representable
from adamw_conformance.spec.formats import format_of
from adamw_conformance.spec.rounding import ulp_distance
from adamw_conformance.tools.fingerprint.answers import NOT_APPLICABLE, Answer
from adamw_conformance.tools.fingerprint.probes import PrecisionProbe
from adamw_conformance.tools.fingerprint.target import Given, Target


def judge_precision(target: Target, probe: PrecisionProbe, given: Given) -> dict[str, Answer]:
    """The three parts, in one answer: values joined by '; ', evidence by ' | '."""
    if target.dtype not in LOW_DTYPES:
        return {"precision": Answer(f"{NOT_APPLICABLE} for {target.dtype} parameters",
                                    "effective precision is probed for bfloat16/float16 "
                                    "parameters (--dtype=bfloat16 or float16)", True)}
    parts = [_compute(target, probe, given), _decay_only(target, probe, given),
             _hyperparameters(target, probe, given), _representation(target)]
    values = [p.value for p in parts if p.value]
    return {"precision": Answer("; ".join(values), " | ".join(p.evidence for p in parts),
                                all(p.confident for p in parts))}


def _representation(target: Target) -> Answer:
    """What the parameters hold beyond their dtype, as the layout probe found it from behaviour
    (core/layout.py): a Kahan compensation beside them, a stochastic rounding into them."""
    from adamw_conformance.core.layout import of

    lay = of(target.cfg)
    found = ([f"Kahan-compensated (p + state['{lay.compensation}'])"]
             if lay.compensation is not None else [])
    found += {"stochastic": ["rounds stochastically to its dtype"],
              "not nearest": ["does not round to nearest (the farther neighbour stored)"]
              }.get(lay.rounding, [])
    evidence = ("layout probe: an unnamed state within half an ulp of the parameter, nonzero "
                "after a step, is a compensation; equal elements that end apart after an "
                "equal step are rounded stochastically, alike on the farther neighbour not to "
                "nearest")
    return Answer("; ".join(found), evidence + (": " + "; ".join(found) if found
                                                else ": neither found"), True)


def _compute(target: Target, probe: PrecisionProbe, given: Given) -> Answer:
    """Is each step within the bound of float32 arithmetic, or only within that of
    arithmetic in the parameter dtype (core.precision)? Where the state is readable,
    a step whose gradient nearly cancels the first moment, g = -b1/(1-b1) m (1 +- 2^-6),
    judged from the state read back: b1*m rounded to the parameter dtype before the sum
    shows at once (the same probe as dtype.precision). Otherwise fresh steps with eps ~ |g|
    and lr >> |theta|, which only larger errors fail."""
    rng = np.random.default_rng(probe.seed)
    seen = _cancelling(target, probe, given, rng)
    readable = seen is not None
    how = "second steps with g cancelling b1*m, judged from the state read back"
    if seen is None:
        how = "fresh steps with eps ~ |g| (state not readable: a weaker probe)"
        seen = _fresh(target, probe, given, rng)
    dtype = target.dtype
    verdict = compute_verdict(seen, dtype, target.declared.precision().label())
    value = (f"computes in float32, stores {dtype}" if verdict.kind == "float32"
             else f"computes in {dtype}" if verdict.kind == dtype
             else "matches neither precision profile")
    return Answer(value, f"{how}: {verdict.text}", verdict.kind != "neither" and readable)


def _cancelling(target: Target, probe: PrecisionProbe, given: Given,
                rng: np.random.Generator) -> dict[str, int] | None:
    """Steps within each compute profile's bound, of second steps whose gradient cancels b1*m;
    None where the state is not readable."""
    model, n = target.model(given), probe.size
    seen = {"steps": 0, "float32": 0, target.dtype: 0}
    for h in probe.cancelling:
        b1 = h["beta1"]
        theta = target.x(rng.uniform(-1, 1, n))
        g1 = target.x(rng.choice([-1, 1], n) * 10 ** rng.uniform(-2, 0, n))
        run = target.create([([theta], h)])
        x1 = target.step(run, [g1])
        s1 = read_each_state(run, 1, as_stored=True)
        if s1[0] is None:
            return None
        g2 = target.x(-b1 / (1 - b1) * s1[0].m * (1 + 2.0**-6 * rng.uniform(-1, 1, n)))
        x2 = target.step(run, [g2])
        s2 = read_each_state(run, 1, as_stored=True)
        seen["steps"] += 1
        for compute in ("float32", target.dtype):
            seen[compute] += within_compute(target.declared, model, x1, s1, [g2], [h], x2, s2,
                                            compute)
    return seen


def _fresh(target: Target, probe: PrecisionProbe, given: Given,
           rng: np.random.Generator) -> dict[str, int]:
    """Steps within each compute profile's bound, of fresh steps with eps ~ |g|."""
    model, n = target.model(given), probe.size
    seen = {"steps": 0, "float32": 0, target.dtype: 0}
    for h in probe.fresh:
        theta = target.x(rng.uniform(-0.05, 0.05, n))
        g = target.x(rng.choice([-1, 1], n) * 10 ** rng.uniform(-2, 0, n))
        run = target.create([([theta], h)])
        after = target.step(run, [g])
        start = [ParamState(np.zeros(n), np.zeros(n), 0)]
        seen["steps"] += 1
        for compute in ("float32", target.dtype):
            seen[compute] += within_compute(target.declared, model, [theta], start, [g], [h],
                                            after, None, compute)
    return seen


def _hyperparameters(target: Target, probe: PrecisionProbe, given: Given) -> Answer:
    """One fresh step with the usual beta2=0.999, eps=1e-8 and a zero gradient element: the
    exact step is finite. Rounded to the parameter dtype, beta2 becomes 1.0 in bf16 (v stays
    0 and 1 - beta2^t = 0) and eps becomes 0 in fp16 (0/0 where g = 0): non-finite or
    frozen parameters then say the hyperparameters were rounded."""
    h, dtype = probe.rounded_hypers, target.dtype
    theta, g = target.x(probe.rounded_theta), target.x(probe.rounded_grad)
    run = target.create([([theta], h)])
    after = target.step(run, [g])[0]
    rounded = {k: float(target.x([v])[0]) for k, v in h.items() if k != "initial_lr"}
    degenerate = [f"{k}={h[k]!r} -> {v!r}" for k, v in rounded.items()
                  if (k.startswith("beta") and v == 1.0) or (k != "weight_decay" and v == 0.0)]
    exact = target.model(given).oracle.step(theta, g, {}, h, 1)["theta"]
    moves = np.array([float(e) for e in exact]) != theta
    evidence = (f"hyperparameters: one fresh step at lr=1e-2, beta2=0.999, eps=1e-8 with a "
                f"zero gradient element; in {dtype} they round to "
                + ", ".join(f"{k}={v!r}" for k, v in rounded.items()))
    broken = ~np.isfinite(after) | (moves & (after == theta) & (g != 0))
    if np.any(broken):
        why = ("; ".join(degenerate) if degenerate else "no hyperparameter degenerates")
        return Answer(f"hyperparameters degenerate in {dtype} ({why}): "
                      f"{int(broken.sum())} of {after.size} elements non-finite or frozen",
                      evidence + f"; got {after.tolist()} (the hyperparameter itself is "
                      f"rounded, or an intermediate holding it is stored in {dtype})",
                      bool(degenerate))
    return Answer("", evidence + "; the step is finite and moves: no sign of rounded "
                                 "hyperparameters", True)


def _decay_only(target: Target, probe: PrecisionProbe, given: Given) -> Answer:
    """100 zero-gradient steps with lr*wd = 1e-4 on theta = 1: each exact step is below
    half an ulp of 1 in bf16/fp16, so correctly rounded steps are lost one by one, while
    the exact trajectory moves theta to 0.99005."""
    if given.rule != "adamw":
        return Answer("", f"decay-only steps: {NOT_APPLICABLE} (decay not decoupled)", True)
    n, h, dtype = probe.decay_steps, probe.decay_hypers, target.dtype
    theta = target.x(probe.decay_theta)
    zero = np.zeros_like(theta)
    run = target.create([([theta], h)])
    for _ in range(n):
        after = target.step(run, [zero])[0]
    exact = target.model(given).oracle.trajectory(theta, [zero] * n, h)[-1]["theta"]
    exact64 = np.array([float(e) for e in exact])
    expected = ulp_distance(representable(exact64, dtype), theta, dtype)
    moved = ulp_distance(after, theta, dtype)
    evidence = (f"decay-only steps: {n} zero-gradient steps with lr*wd=1e-4 on "
                f"theta={theta.tolist()} ({format_of(dtype)}); moved "
                f"{np.asarray(moved).tolist()} ulps, the exact trajectory "
                f"{np.asarray(expected).tolist()} ulps")
    if not np.all(np.isfinite(after)):
        return Answer("decay-only steps give non-finite parameters", evidence, True)
    if np.all(after == theta) and np.any(expected != 0):
        return Answer("decay-only steps lost to rounding (as correct rounding does)",
                      evidence, True)
    if all(_near(a, e, dtype) for a, e in zip(after, exact64, strict=True)):
        return Answer("decay-only steps accumulated (parameters follow the exact "
                      "trajectory: higher-precision master copy or stochastic rounding)",
                      evidence, True)
    return Answer("decay-only steps partly kept", evidence, False)


def _near(got: float, exact: float, dtype: str) -> bool:
    """`got` is one of the two values of `dtype` that bracket `exact` (faithful rounding)."""
    down = float(representable(np.array([exact]), dtype)[0])
    if down == exact:
        return got == exact
    import torch
    t = torch.tensor([down], dtype=getattr(torch, dtype))
    other = torch.nextafter(t, torch.tensor([np.inf if exact > down else -np.inf],
                                            dtype=t.dtype)).double().item()
    return got in (down, other)
