"""Stochastic rounding of the parameters: found from behaviour, judged by statistics, not by a
bound (docs/precision-techniques.md).

A target that rounds its float32 result x to a bfloat16 parameter stochastically must store the
upper neighbour of x with probability (x - lower) / (upper - lower), independently per element
and step: the expected stored value is x, and an update far below half an ulp, which rounding
to nearest loses, is kept on average. dtype.stochastic_rounding tests exactly that with binomial
tests at the false-alarm rate `ALPHA` for the whole run (Bonferroni over its tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from adamw_conformance.adapters.base import GroupSetup, ParamState, Setup
from adamw_conformance.core import calls
from adamw_conformance.core.config import Config
from adamw_conformance.core.representation import neighbours
from adamw_conformance.spec.formats import Format, format_of

#: The probability that dtype.stochastic_rounding fails a correct stochastic rounding in one run
#: (all its tests together: each is run at ALPHA / their number).
ALPHA = 1e-6


def rounds_stochastically(cfg: Config) -> bool:
    """Whether the layout probe found the target rounding its parameters stochastically."""
    return rounding(cfg) == "stochastic"


def rounding(cfg: Config) -> str:
    """How the layout probe found the target rounding its parameters: "nearest", "stochastic",
    or "not nearest" (core/technique_probe.py)."""
    from adamw_conformance.core import layout
    return layout.of(cfg).rounding


def defer(cfg: Config, prop: str) -> None:
    """Skip a property that compares runs bitwise on a target that rounds stochastically: two
    runs of it differ by design; dtype.stochastic_rounding judges its rounding instead."""
    import pytest

    if rounds_stochastically(cfg):
        pytest.skip(f"{prop} compares runs bitwise, and {cfg.adapter.name} rounds its "
                    f"{cfg.dtype} parameters stochastically (found from behaviour): two runs "
                    "differ by design; dtype.stochastic_rounding judges the rounding")


# --- binomial tests -----------------------------------------------------------------------------

def _log_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p))


def _tail(ks: range, n: int, p: float) -> float:
    logs = [_log_pmf(k, n, p) for k in ks]
    top = max(logs, default=-math.inf)
    if top == -math.inf:
        return 0.0
    return min(1.0, math.exp(top) * sum(math.exp(x - top) for x in logs))


def p_value(k: int, n: int, p_lo: float, p_hi: float) -> float:
    """Two-sided binomial p-value of k successes in n trials, for a success probability known
    to lie in [p_lo, p_hi] (the fraction's own rounding): at the end nearest k / n."""
    p = min(max(k / n, p_lo), p_hi) if n else p_lo
    if p_lo <= k / max(n, 1) <= p_hi:
        return 1.0
    return min(1.0, 2 * min(_tail(range(0, k + 1), n, p), _tail(range(k, n + 1), n, p)))


# --- the experiment -----------------------------------------------------------------------------

#: Element classes: a value in the middle of each of five binades, either sign, stepped up or
#: down (gradient -1 or +1), so that the fraction differs by class; and a zero-gradient class,
#: whose exactly representable result must never move. [16, 32) puts the fraction just below
#: 1/256: a rounding that draws fewer random bits than its dtype drops (8 of bfloat16's 16)
#: never keeps it, which only that class's expectation test can see, and only with 8 x 1024
#: trials (30 upper neighbours expected, none stored: p ~ 1e-13).
_CENTRES = (0.75, 1.5, 3.0, 6.0, 24.0)
CLASS_SIZE = 1024
STEPS = 8
#: The step, lr g / (|g| + eps) ~ lr: below half an ulp in every class (rounding to nearest
#: keeps none of it), 15/16 of a power of two so that no fraction is a multiple of 1/256 (a
#: probability taken from too few bits is then off).
LR = 15 * 2.0**-15


@dataclass
class Finding:
    """One test of the experiment that failed (or, with `ok`, passed) and why."""

    test: str
    ok: bool
    text: str


def _classes() -> list[tuple[float, float]]:
    return [(s * c, g) for c in _CENTRES for s in (1.0, -1.0) for g in (1.0, -1.0)]


def experiment(cfg: Config) -> tuple[list[Finding], int]:
    """Run the target STEPS steps on CLASS_SIZE elements per class (update ~ LR, from 15/128 to
    15/4096 of a bfloat16 ulp) and test its rounding: the findings, and how many tests were
    run (their Bonferroni count)."""
    from adamw_conformance.core import replay
    from adamw_conformance.core.strategies import typical_hyper

    fmt = format_of(cfg.dtype)
    classes = _classes()
    hyper = {**typical_hyper(cfg.model.rule_name), "lr": LR}
    if "weight_decay" in hyper:  # the step then does not depend on theta (see _exact)
        hyper["weight_decay"] = 0.0
    theta = np.concatenate([np.full(CLASS_SIZE, c) for c, _ in classes]
                           + [np.linspace(-6.0, 6.0, CLASS_SIZE)])
    grads = np.concatenate([np.full(CLASS_SIZE, g) for _, g in classes]
                           + [np.zeros(CLASS_SIZE)])
    theta = np.array([float(x) for x in _representable(theta, fmt)])
    setup = Setup([GroupSetup([theta], hyper)], cfg.dtype, cfg.device)
    run = calls.create(cfg, setup)
    state = ParamState.of({s.name: np.zeros_like(theta) for s in cfg.model.rule.state}, 0)
    pos = theta
    ups: list[np.ndarray] = []
    fractions: list[tuple[np.ndarray, np.ndarray]] = []
    findings: list[Finding] = []
    for t in range(1, STEPS + 1):
        x, width = _exact(cfg, pos, grads, state, hyper, t, len(classes) + 1)
        lower, upper = neighbours(x, fmt)
        calls.step(cfg, run, [grads])
        got = run.params()[0]
        gap = np.where(upper > lower, upper - lower, 1.0)
        lo = np.clip((x - width - lower) / gap, 0.0, 1.0)
        hi = np.clip((x + width - lower) / gap, 0.0, 1.0)
        exact_point = upper == lower
        stray = ~((got == lower) | (got == upper))
        if stray.any():
            i = int(np.argmax(stray))
            findings.append(Finding("neighbours", False,
                                    f"step {t}: element {i} stored {got[i]!r}, not one of the two "
                                    f"{cfg.dtype} numbers around its float32 result "
                                    f"{x[i]!r} ({lower[i]!r}, {upper[i]!r}); {int(stray.sum())} "
                                    "such"))
            return findings, 1
        moved = exact_point & (got != x)
        if moved.any():
            i = int(np.argmax(moved))
            findings.append(Finding("representable", False,
                                    f"step {t}: element {i}'s result {x[i]!r} is a {cfg.dtype} "
                                    f"number, and it stored {got[i]!r}"))
            return findings, 1
        ups.append((got == upper) & ~exact_point)
        fractions.append((lo, hi))
        pos = got
        read = replay.read_states(run, 1) if t < STEPS else None
        if read is None and t < STEPS:
            break
        if read is not None:
            state = read[0]
    return _binomial(cfg, classes, ups, fractions), _count(classes, len(ups))


def _representable(x: np.ndarray, fmt: Format) -> np.ndarray:
    lower, _ = neighbours(x, fmt)
    return lower


def _exact(cfg: Config, pos: np.ndarray, grads: np.ndarray, state: ParamState,
           hyper: dict[str, float], t: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The spec's result of the step from where the target stands (float64) and how far the
    target's own arithmetic may put it: the bound without the final store to the parameter's
    dtype (what the fraction is known to). The oracle runs on one element per class: with
    weight_decay 0 the step does not depend on theta, and a class shares its gradient and
    state, so each element moves by its class's step."""
    reps = np.arange(n_classes) * CLASS_SIZE
    prec = cfg.precision(state.dtype)
    compute_only = replace(prec, param=prec.compute)
    rep_state = {k: v[reps] for k, v in state.as_mapping().items()}
    exact, bounds = cfg.model.expect(pos[reps], grads[reps], rep_state, hyper, t, compute_only)
    step = np.array([float(v) for v in exact["theta"]]) - pos[reps]
    width = np.broadcast_to(bounds["theta"].value, step.shape)
    return pos + np.repeat(step, CLASS_SIZE), np.repeat(width, CLASS_SIZE)


def _count(classes: Sequence[tuple[float, float]], steps: int) -> int:
    """Per class: probability, expectation, and independence of each two consecutive steps."""
    return len(classes) * (2 + max(steps - 1, 0))


def _binomial(cfg: Config, classes: Sequence[tuple[float, float]], ups: list[np.ndarray],
              fractions: list[tuple[np.ndarray, np.ndarray]]) -> list[Finding]:
    level = ALPHA / _count(classes, len(ups))
    out: list[Finding] = []
    for c, (value, g) in enumerate(classes):
        sl = slice(c * CLASS_SIZE, (c + 1) * CLASS_SIZE)
        label = f"theta={value:g}, gradient {g:+g}"
        # each class's elements share one fraction per step (equal spacing, equal update)
        q = [(float(lo[sl].min()), float(hi[sl].max())) for lo, hi in fractions]
        k1 = int(ups[0][sl].sum())
        p1 = p_value(k1, CLASS_SIZE, *q[0])
        out.append(Finding("probability", p1 >= level,
                           f"{label}: step 1 stored the upper neighbour for {k1} of "
                           f"{CLASS_SIZE} elements, probability {_q(q[0])} expected "
                           f"(p = {p1:.2g}, level {level:.2g})"))
        total = sum(int(u[sl].sum()) for u in ups)
        n = CLASS_SIZE * len(ups)
        lo_sum, hi_sum = sum(a for a, _ in q), sum(b for _, b in q)
        pt = p_value(total, n, lo_sum / len(q), hi_sum / len(q))
        out.append(Finding("expectation", pt >= level,
                           f"{label}: over {len(ups)} steps an element stored the upper "
                           f"neighbour {total / CLASS_SIZE:.4g} times on average, "
                           f"{lo_sum:.4g}..{hi_sum:.4g} expected, so that the mean change is "
                           f"the update's (p = {pt:.2g}, level {level:.2g}); rounding to "
                           "nearest stores the nearer neighbour every time"))
        # every two consecutive steps: a draw reused from one step to the next, at any step,
        # puts ~CLASS_SIZE q elements up at both where CLASS_SIZE q^2 are expected
        for t in range(1, len(ups)):
            both = int((ups[t - 1][sl] & ups[t][sl]).sum())
            (a_lo, a_hi), (b_lo, b_hi) = q[t - 1], q[t]
            pb = p_value(both, CLASS_SIZE, a_lo * b_lo, a_hi * b_hi)
            out.append(Finding("independence", pb >= level,
                               f"{label}: {both} of {CLASS_SIZE} elements stored the upper "
                               f"neighbour at both steps {t} and {t + 1}, "
                               f"{CLASS_SIZE * a_lo * b_lo:.3g} expected of independent "
                               f"draws (p = {pb:.2g}, level {level:.2g})"))
    return out


def _q(interval: tuple[float, float]) -> str:
    lo, hi = interval
    return f"{lo:.6g}" if lo == hi else f"{lo:.6g}..{hi:.6g}"
