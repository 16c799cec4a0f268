"""scale.*: how the step responds to the scale of the gradient (and to loss scaling)."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Sequence
from dataclasses import replace

import mpmath
import numpy as np
import pytest
from adamw_conformance.adapters.base import GroupSetup, ParamState, Run, Setup, capability
from adamw_conformance.core import bits, calls, checks, replay, stochastic, trajectory
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import format_hyper
from adamw_conformance.core.rules import L2_COUPLED, state_degree
from adamw_conformance.core.strategies import (
    Regime,
    hyperparameters,
    log_uniform,
    regimes,
    representable,
    step_cases,
)
from adamw_conformance.spec.formats import Format, format_of
from hypothesis import assume, given
from hypothesis import strategies as st

pytestmark = pytest.mark.catalogue("scale")

_N = 48  # elements per tensor: several steps of two runs, each judged by the oracle


# --- scale.power_of_two -------------------------------------------------------------------------

def _log2_range(values: Sequence[np.ndarray]) -> tuple[float, float] | None:
    """log2 of the smallest and largest nonzero magnitude among `values` (None if all zero, or
    if there are none: a rule without a state that scales like g^2)."""
    if not values:
        return None
    mags = np.concatenate([np.abs(np.asarray(v, np.float64)).reshape(-1) for v in values])
    mags = mags[(mags != 0) & np.isfinite(mags)]
    if mags.size == 0:
        return None
    return float(np.log2(mags.min())), float(np.log2(mags.max()))


def _fits(rng_: tuple[float, float] | None, shift: int, fmt: Format, margin: float) -> bool:
    """Whether magnitudes in `rng_`, times 2^shift, stay normal in `fmt` with `margin` binades
    to spare at both ends: then scaling by 2^shift is exact in every rounding."""
    if rng_ is None:
        return True
    lo, hi = rng_
    return lo + shift >= fmt.emin + margin and hi + shift <= fmt.emax - margin


def _coefficient_margin(hyper: dict[str, float]) -> float:
    """Binades that an intermediate may sit below (or above) the values it is made from:
    products with (1 - beta), beta and lr, and quotients by 1 - beta^t, of which an operation
    chain combines at most two."""
    coefs = [hyper["lr"]] + [c for name in ("beta1", "beta2", "alpha", "momentum")
                             if name in hyper for c in (hyper[name], 1 - hyper[name])]
    logs = sorted((-math.log2(c) for c in coefs if c > 0), reverse=True)
    return 2 + sum(logs[:2])


@given(data=st.data())
def test_power_of_two(cfg, data):
    """g -> 2^k g with eps -> 2^k eps gives bitwise-identical parameters.

    Exact, state-free: two fresh optimizers run the same 1-4 steps, one with every gradient and
    eps scaled by 2^k; parameters must be bitwise equal after every step (and, where the state
    is readable, m and v exactly 2^k and 4^k times the other run's, counters equal). k is chosen
    so that every value the step stores or computes stays a normal number of its format in both
    runs (checked on the exact trajectory), where scaling by a power of two is exact. eps is drawn
    at the gradients' scale so that it matters. Under --conventions=eps=root (eps inside the
    square root) eps scales with 4^k, as v does.
    """
    stochastic.defer(cfg, "scale.power_of_two")
    hyper = data.draw(hyperparameters(), label="hyper")
    if "weight_decay" in hyper and cfg.model.rule_name in L2_COUPLED:
        hyper["weight_decay"] = 0.0  # L2 decay adds wd*theta to g, which does not scale
    if 0 < hyper.get("beta1", 1.0) < 2**-10:
        hyper["beta1"] = 0.0  # a beta that small only underflows products; 0 is exact
    store = format_of(cfg.dtype)
    compute = cfg.precision().compute
    narrow = store.emax - store.emin < 64  # float16: g and g^2 must both fit in 30 binades
    g_regime = data.draw(st.builds(
        Regime, center=st.floats(-0.5, 0.5) if narrow else st.floats(-6, 6),
        spread=st.sampled_from([0.0, 0.5] if narrow else [0.0, 1.0, 4.0]),
        zeros=st.sampled_from([0.0, 0.1]), signs=st.sampled_from(["mixed", "positive"])),
        label="g")
    steps = data.draw(st.integers(1, 4), label="steps")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    theta = data.draw(regimes(-4, 4, zeros=False), label="theta").sample(rng, (_N,), cfg.dtype)
    grads = [g_regime.sample(rng, (_N,), cfg.dtype) for _ in range(steps)]
    scale_g = _log2_range(grads)
    assume(scale_g is not None)
    hyper["eps"] = float(2.0 ** ((scale_g[0] + scale_g[1]) / 2)
                         * 10 ** data.draw(st.floats(-2, 1), label="eps/|g|"))
    root = cfg.model.convention.eps == "root"

    exact = cfg.model.oracle.trajectory(theta, grads, hyper)
    degree = {s.name: state_degree(cfg.model.rule_name, s.name) for s in cfg.model.rule.state}
    ms = [e.float64()[n] for e in exact for n, d in degree.items() if d == 1]
    vs = [e.float64()[n] for e in exact for n, d in degree.items() if d == 2]
    eps = np.array([hyper["eps"]])
    linear = _log2_range([*grads, *ms] + ([] if root else [eps]))
    square = _log2_range([*vs] + ([eps] if root else []))
    margin = _coefficient_margin(hyper)

    def safe(k: int) -> bool:
        return all(_fits(linear, k, fmt, m) and _fits(square, 2 * k, fmt, 2 * m)
                   for fmt, m in ((store, 1), (compute, margin)))

    ks = [k for k in range(-12, 13) if k and safe(k)]
    assume(safe(0) and ks)
    k = data.draw(st.sampled_from(ks), label="k")
    scaled_hyper = {**hyper, "eps": hyper["eps"] * 2.0 ** (2 * k if root else k)}

    runs = [calls.create(cfg, Setup([GroupSetup([theta], h)], cfg.dtype, cfg.device))
            for h in (hyper, scaled_hyper)]
    where = (f"  k={k}; hyperparameters: {format_hyper(hyper)} (scaled run: eps="
             f"{scaled_hyper['eps']!r})\n"
             f"  reproduce: {checks.reproduction(cfg, 'scale.power_of_two')}")
    for t, g in enumerate(grads, start=1):
        calls.step(cfg, runs[0], [g])
        calls.step(cfg, runs[1], [g * 2.0**k])
        a, b = runs[0].params()[0], runs[1].params()[0]
        assert bits.same(a, b), (
            f"scale.power_of_two: {cfg.adapter.name} ({cfg.dtype} on {cfg.device}): with every "
            f"gradient and eps multiplied by 2^{k} the parameters are not bitwise those of the "
            f"unscaled run at step t={t}: scaled vs unscaled "
            f"{bits.difference(b, a, bits.VERSUS)}\n{where}")
        sa, sb = replay.read_states(runs[0], 1), replay.read_states(runs[1], 1)
        if sa is None or sb is None:
            continue
        xs, ys = sa[0].as_mapping(), sb[0].as_mapping()
        for name, x, y, f in ((n, xs[n], ys[n], 2.0 ** (k * degree[n])) for n in xs
                              if n in ys and n in degree):
            assert bits.same(x * f, y), (
                f"scale.power_of_two: {cfg.adapter.name} ({cfg.dtype}): at step t={t} the scaled "
                f"run's {name} is not exactly {f:g} times the unscaled run's: "
                f"{bits.difference(y, x * f, bits.VERSUS)}\n{where}")
        assert sa[0].step == sb[0].step, f"scale.power_of_two: counters differ at t={t}\n{where}"


# --- scale.invariance ---------------------------------------------------------------------------

@given(data=st.data())
def test_invariance(cfg, data):
    """g -> c g with eps fixed moves theta by no more than the spec's eps-sensitivity plus B.

    One step, from a fresh state or (state replay) from m, v and the same state scaled to c m,
    c^2 v, which is where the scaled gradient history leads. Each run must be within its bound
    B1, B2 of its own oracle, and the implementation's change theta2 - theta1 within B1 + B2 of
    the exact change (the spec's eps-sensitivity: with eps = 0 it would be exactly zero). An
    implementation that clips or normalises gradients fails where the scaling crosses its
    threshold.
    """
    fresh = None if replay.can_replay(cfg) else True
    case = data.draw(step_cases(cfg.dtype, cfg.device, fresh=fresh), label="case")
    c = data.draw(log_uniform(1e-4, 1e4), label="c")
    theta, g, s = case.setup.groups[0].params[0], case.grads[0], case.states[0]
    g2 = representable(c * g, cfg.dtype)
    s2 = s.mapped(lambda name, x: representable(
        c ** state_degree(cfg.model.rule_name, name) * x, cfg.dtype))
    assume(all(np.all(np.isfinite(x)) for x in (g2, *s2.as_mapping().values())))
    hyper = case.hyper
    outcomes = []
    for label, grad, state in (("unscaled", g, s), (f"gradient scaled by c={c!r}", g2, s2)):
        run = replay.prepare(cfg, case.setup, [theta], [state])
        assert run is not None
        outcome = checks.judge_step(cfg, run, [theta], [state], [grad], [hyper])
        assert not outcome.mismatches, checks.failure(
            "scale.invariance", cfg, outcome, [hyper], s.step + 1, note=f"{label} run",
            repro=checks.reproduction(cfg, "scale.invariance"))
        outcomes.append(outcome)
    # The metamorphic statement itself, exactly: |(th2 - th1) - (E2 - E1)| <= B1 + B2.
    o1, o2 = outcomes
    e1, e2 = o1.exact[0]["theta"], o2.exact[0]["theta"]
    b = o1.bounds[0]["theta"].value + o2.bounds[0]["theta"].value
    for idx in np.ndindex(np.shape(theta)):
        if not (o1.bounds[0]["theta"].in_domain[idx] and o2.bounds[0]["theta"].in_domain[idx]):
            continue
        moved = mpmath.mpf(o2.params[0][idx]) - mpmath.mpf(o1.params[0][idx])
        spec = e2[idx] - e1[idx]
        assert abs(moved - spec) <= b[idx], (
            f"scale.invariance: {cfg.adapter.name} ({cfg.dtype}): scaling the gradient by "
            f"c={c!r} moved theta{list(idx)} by {mpmath.nstr(moved, 8)}; the spec moves it by "
            f"{mpmath.nstr(spec, 8)} (its eps-sensitivity), allowed B1+B2={b[idx]:.3g}\n"
            f"  hyperparameters: {format_hyper(hyper)}\n"
            f"  reproduce: {checks.reproduction(cfg, 'scale.invariance')}")


# --- scale.grad_scaler --------------------------------------------------------------------------

class _AlreadyStepped:
    """A run whose step() does nothing: judge_step then judges a step that amp_step took."""

    def __init__(self, run: Run) -> None:
        self._run = run

    def step(self, grads: Sequence[np.ndarray | None]) -> None:
        pass

    def __getattr__(self, name: str):
        return getattr(self._run, name)


#: The two ways PyTorch's AMP recipes step: scaler.step(opt) alone, and scaler.unscale_(opt),
#: gradient clipping, then scaler.step(opt) (the recipe for clipping: the optimizer then gets
#: unscaled gradients, and an optimizer that handles the scaling itself gets found_inf with no
#: grad_scale).
PATTERNS = {"step": "scaler.step(opt)",
            "unscale": "scaler.unscale_(opt), clip_grad_norm_, scaler.step(opt)"}


def _amp_step(cfg: Config, run: Run, grads: list[np.ndarray], scale: float,
              pattern: str) -> None:
    __tracebackhide__ = True
    call = (run.amp_step if pattern == "step"
            else functools.partial(run.amp_step, unscale_first=True))
    try:
        calls.guarded("step()", call, grads, scale, timeout=cfg.timeout)
    except calls.ImplementationError as e:
        if isinstance(e.__cause__, NotImplementedError):
            pytest.skip(f"{cfg.adapter.name}: {e.__cause__}")
        raise


def _takes_unscale_first(run: Run) -> bool:
    try:
        return "unscale_first" in inspect.signature(run.amp_step).parameters
    except (TypeError, ValueError):
        return False


@pytest.mark.parametrize("pattern", list(PATTERNS))
@given(data=st.data())
def test_grad_scaler(cfg, pattern, data):
    """With mixed-precision loss scaling (torch.amp.GradScaler, or a kernel's grad_scale/found_inf
    arguments) the result equals the unscaled step within B; an inf/NaN found skips the step
    entirely: parameters, state and counter untouched. Both AMP patterns: [step] scaler.step
    alone, [unscale] scaler.unscale_, gradient clipping (no limit, exact on finite gradients),
    then scaler.step, where the target gets gradients already unscaled and found_inf without
    a grad_scale.

    1-3 ordinary steps with gradients scaled by S = 2^s (as a scaled loss gives them), and one
    step, anywhere among them, whose scaled gradient holds an inf or NaN (an overflow). The
    skipped step must leave parameters and (where readable) m, v and the counter bitwise as they
    were; every other step is judged against the oracle of the unscaled gradient (state replay
    where the state is readable), and the final parameters against the exact trajectory of the
    unscaled gradients alone. Skipped for targets without loss scaling (the adapter's amp_step),
    and [unscale] for an amp_step without `unscale_first`.
    """
    hyper = data.draw(hyperparameters(), label="hyper")
    n_ok = data.draw(st.integers(1, 3), label="ordinary steps")
    skip_at = data.draw(st.integers(0, n_ok), label="overflowed step index")
    bad = data.draw(st.sampled_from([math.inf, -math.inf, math.nan]), label="overflow value")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    theta = data.draw(regimes(-4, 4, zeros=False), label="theta").sample(rng, (_N,), cfg.dtype)
    rg = data.draw(regimes(-8, 2), label="g")
    grads = [rg.sample(rng, (_N,), cfg.dtype) for _ in range(n_ok)]
    fmt = format_of(cfg.dtype)
    top = _log2_range(grads)
    room = fmt.emax - 1 - (top[1] if top else 0)  # S g must stay finite in the dtype
    assume(room >= 1)
    s = data.draw(st.integers(1, int(min(room, 24))), label="log2 S")
    scale = 2.0**s

    run = calls.create(cfg, Setup([GroupSetup([theta], hyper)], cfg.dtype, cfg.device))
    if not capability(run, "amp_step"):
        pytest.skip(f"{cfg.adapter.name}: the adapter has no amp_step (no loss scaling)")
    if pattern == "unscale" and not _takes_unscale_first(run):
        pytest.skip(f"{cfg.adapter.name}: the adapter's amp_step takes no unscale_first (the "
                    "pattern with scaler.unscale_ before scaler.step)")
    where = (f"  AMP pattern: {PATTERNS[pattern]}; loss scale S=2^{s}; hyperparameters: "
             f"{format_hyper(hyper)}\n"
             f"  reproduce: {checks.reproduction(cfg, 'scale.grad_scaler')}")
    states = [ParamState(np.zeros(_N), np.zeros(_N), 0)]
    readable = True
    t = 0
    for j in range(n_ok + 1):
        before = run.params()
        before_states = replay.read_states(run, 1)
        if j == skip_at:
            g = grads[0] * scale
            g[rng.integers(_N)] = bad
            _amp_step(cfg, run, [g], scale, pattern)
            after, after_states = run.params(), replay.read_states(run, 1)
            assert bits.same(before[0], after[0]), (
                f"scale.grad_scaler: {cfg.adapter.name} ({cfg.dtype}): a step whose scaled "
                f"gradient holds {bad} must be skipped, but it changed the parameters (after "
                f"{t} ordinary steps): after vs before "
                f"{bits.difference(after[0], before[0], bits.VERSUS)}\n{where}")
            if before_states is not None and after_states is not None:
                bs, as_ = before_states[0], after_states[0]
                xs, ys = bs.as_mapping(), as_.as_mapping()
                for name, x, y in ((n, xs[n], ys[n]) for n in xs if n in ys):
                    assert bits.same(x, y), (
                        f"scale.grad_scaler: {cfg.adapter.name}: the skipped step changed "
                        f"{name}: {bits.difference(y, x, bits.VERSUS)}\n{where}")
                assert bs.step == as_.step, (
                    f"scale.grad_scaler: {cfg.adapter.name}: the skipped step moved the "
                    f"counter from {bs.step} to {as_.step}\n{where}")
            continue
        g = grads[t]
        t += 1
        if before_states is not None:
            state = replace(before_states[0], step=t - 1)
        elif readable and t == 1:
            state = states[0]  # fresh: known without reading
        else:
            readable = False
        _amp_step(cfg, run, [g * scale], scale, pattern)
        if not readable:
            continue
        outcome = checks.judge_step(cfg, _AlreadyStepped(run), before, [state], [g], [hyper])
        assert not outcome.mismatches, checks.failure(
            "scale.grad_scaler", cfg, outcome, [hyper], t,
            note=f"gradients scaled by S=2^{s} and unscaled by the "
                 + ("target" if pattern == "step" else "scaler's unscale_ before the step")
                 + (", after a skipped step" if skip_at < j else ""),
            repro=checks.reproduction(cfg, "scale.grad_scaler"))
    worst = trajectory.mismatch(cfg, theta, grads, hyper, run.params()[0])
    assert worst is None, (
        f"scale.grad_scaler: {cfg.adapter.name} ({cfg.dtype}): after {n_ok} ordinary steps and "
        f"one skipped (index {skip_at}), theta is not the unscaled trajectory's: "
        f"{worst.describe()}\n{where}")
