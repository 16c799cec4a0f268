"""The derived rounding-error bounds against real kernels: sound, tight, and with power.

- Soundness: for torch.optim.AdamW (foreach=False, foreach=True, fused=True, on CPU) and the
  reference kernel, in float32, float64 and bfloat16, every in-domain element of theta, m and v is
  within the bound of the exact (mpmath) result, over inputs spanning many orders of magnitude and
  several hyperparameter sets. The error is computed exactly; the bound is the only tolerance.
  Each path is checked against the bound of its own traced order (a sharper claim: the order
  models that path), against the maximum over all orders (what `--orders=all` uses), and in
  the seed sweep against the orders its probe leaves (conformance/core/forms.py: what a
  default run of it judges by).
- Tightness: on float32 the largest observed error/bound is not far below 1 (the bound is not a
  blanket).
- Power: each seeded formula mutant (impl.mutants.formula) exceeds the bound on a concrete share
  of elements in the regime where its defect matters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
import torch
from adamw_conformance.spec.bounds import Bound
from adamw_conformance.spec.oracle import StepResult

from impl.mutants import MUTANTS
from impl.reference import adamw as reference_adamw
from tests.helpers import (
    OUTPUTS,
    Arrays,
    Case,
    Check,
    bounds,
    check_all,
    describe,
    exact,
    kernel_step,
    precision,
    torch_step,
)

DTYPES = (torch.float32, torch.float64, torch.bfloat16)

#: The implementations under test, by name.
IMPLEMENTATIONS: dict[str, Callable[[Case], Arrays]] = {
    "torch-loop": lambda c: torch_step(c, foreach=False),
    "torch-foreach": lambda c: torch_step(c, foreach=True),
    "torch-fused": lambda c: torch_step(c, fused=True),
    "reference": lambda c: kernel_step(reference_adamw, c),
}

#: The evaluation order (spec.orders) each implementation follows. The reference is written the
#: way a fused kernel is: opmath throughout, double scalars, one store per output.
OWN_ORDER = {"torch-loop": "torch_loop", "torch-foreach": "torch_foreach",
             "torch-fused": "fused", "reference": "fused"}

#: Hyperparameter sets and steps: defaults, extremes of lr/eps/wd, beta1 < 0.5 (the other branch
#: of lerp), beta2 close to 1, t = 1, small and large.
HYPERS: tuple[tuple[dict[str, float], int], ...] = (
    (dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2), 1),
    (dict(lr=1.0, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1.0), 2),
    (dict(lr=0.1, beta1=0.3, beta2=0.99, eps=1e-12, weight_decay=0.1), 3),
    (dict(lr=1e-2, beta1=0.9, beta2=0.999999, eps=1.0, weight_decay=0.0), 10**6),
    (dict(lr=3e-4, beta1=0.45, beta2=0.9999, eps=1e-6, weight_decay=1.0), 5),
    (dict(lr=0.5, beta1=0.95, beta2=0.98, eps=1e-4, weight_decay=0.3), 100),
    (dict(lr=1e-5, beta1=0.0, beta2=0.999, eps=1e-10, weight_decay=1e-4), 10**6),
    (dict(lr=1.0, beta1=0.99, beta2=0.9999999, eps=1e-3, weight_decay=0.01), 7),
)

PER_HYPER = 1500  # elements per hyperparameter set and dtype: 12,000 per dtype, 36,000 in all


def _loguniform(rng: np.random.Generator, lo: float, hi: float, n: int,
                signed: bool = True) -> np.ndarray:
    x = np.exp(rng.uniform(math.log(lo), math.log(hi), n))
    return x * rng.choice([-1.0, 1.0], n) if signed else x


def wide_inputs(rng: np.random.Generator, n: int, hyper: dict[str, float],
                t: int) -> dict[str, np.ndarray]:
    """theta, g, m, v (float64) mixing regimes element by element:

    wide: everything independent over many decades (m, v inconsistent with g);
    steady: m, v what a steady gradient g would have left after t - 1 steps, perturbed;
    near_eps: |g| within a factor 30 of eps, state steady;
    tiny: g and state down to the subnormals of float32;
    huge: |g| so large that g^2 overflows float32 (out of the bound's domain there, by design);
    plus zeros sprinkled over every input, and both signs everywhere.
    """
    b1, b2, eps = hyper["beta1"], hyper["beta2"], hyper["eps"]
    regime = rng.choice(5, n, p=[0.35, 0.25, 0.2, 0.12, 0.08])
    theta = _loguniform(rng, 1e-30, 1e30, n)
    g = np.select(
        [regime == 0, regime == 1, regime == 2, regime == 3],
        [_loguniform(rng, 1e-25, 1e18, n), _loguniform(rng, 1e-15, 1e15, n),
         eps * _loguniform(rng, 1 / 30, 30, n), _loguniform(rng, 1e-45, 1e-25, n)],
        _loguniform(rng, 1e19, 1e30, n))
    # Steady state after t - 1 steps of the same gradient (zero state at t = 1), perturbed.
    f1, f2 = 1 - b1 ** (t - 1), 1 - b2 ** (t - 1)
    m_steady = g * f1 * rng.uniform(0.5, 1.5, n)
    v_steady = g * g * f2 * rng.uniform(0.5, 2.0, n)
    m = np.where(regime == 0, _loguniform(rng, 1e-25, 1e18, n), m_steady)
    v = np.where(regime == 0, _loguniform(rng, 1e-40, 1e36, n, signed=False), v_steady)
    arrays = {"theta": theta, "g": g, "m": m, "v": v}
    for name, a in arrays.items():
        a[rng.random(n) < 0.03] = 0.0
        arrays[name] = np.where(np.isfinite(a), a, 0.0)
    return arrays


def make_case(arrays: dict[str, np.ndarray], dtype: torch.dtype, hyper: dict[str, float],
              t: int, maximize: bool = False) -> Case:
    ts = {k: torch.tensor(a, dtype=torch.float64).to(dtype) for k, a in arrays.items()}
    return Case(ts["theta"], ts["g"], ts["m"], ts["v"], dict(hyper), t, ts.get("vmax"), maximize)


@dataclass(frozen=True)
class Run:
    """One case and each implementation's checks per output, against the bound of its own order
    (`own`) and the maximum over all orders (`any`)."""

    case: Case
    own: dict[str, dict[str, Check]]
    any: dict[str, dict[str, Check]]


def _assert_within(case: Case, got: Arrays, result: StepResult, bound: dict[str, Bound],
                   checks: dict[str, Check], what: str) -> None:
    bad = {k: c.violations for k, c in checks.items() if c.violations.size}
    assert not bad, (
        f"{what} {case.dtype} {dict(case.hyper)} t={case.t}: errors beyond the bound:\n"
        + "\n".join(f"{k}: {len(i)} of {len(case)} elements\n"
                    + describe(case, got, result, bound, k, i) for k, i in bad.items()))


#: How the orders probe (conformance/core/forms.py) reaches each implementation.
PROBED = {"torch-loop": "torch-loop", "torch-foreach": "torch-foreach",
          "torch-fused": "torch-fused", "reference": "impl.reference.adamw_kernel:adamw"}


@cache
def probed(dtype: torch.dtype) -> dict[str, frozenset[str]]:
    """What the orders probe rules out on each implementation in `dtype`: a default run of it
    judges by the orders left."""
    from adamw_conformance.core import forms
    from adamw_conformance.core.config import Config
    from adamw_conformance.core.targets import resolve

    name = str(dtype).removeprefix("torch.")
    return {impl: forms.probe(Config(resolve(target), dtype=name)).ruled_out
            for impl, target in PROBED.items()}


def check_paths(case: Case, after_probe: bool = False
                ) -> tuple[dict[str, dict[str, Check]], dict[str, dict[str, Check]]]:
    """Every implementation on `case`, against its own order and all orders (`after_probe`:
    and the orders its probe leaves, what a default run of it judges by); raises on any element
    beyond any of them."""
    prec = precision(case.dtype)
    result, any_bound = exact(case), bounds(case, prec)
    own_bounds = {o: bounds(case, prec, only=[o]) for o in set(OWN_ORDER.values())}
    left = probed(case.dtype) if after_probe else {}
    after_bounds = {r: bounds(case, prec, ruled_out=r) for r in set(left.values()) if r}
    own, any_ = {}, {}
    for name, run in IMPLEMENTATIONS.items():
        got = run(case)
        own_bound = own_bounds[OWN_ORDER[name]]
        own[name] = check_all(got, result, own_bound)
        _assert_within(case, got, result, own_bound, own[name], f"{name} (own order)")
        any_[name] = check_all(got, result, any_bound)
        _assert_within(case, got, result, any_bound, any_[name], f"{name} (all orders)")
        if left.get(name):
            after = after_bounds[left[name]]
            _assert_within(case, got, result, after, check_all(got, result, after),
                           f"{name} (orders after the probe: {sorted(left[name])} ruled out)")
    return own, any_


@cache
def soundness_runs(dtype: torch.dtype) -> tuple[Run, ...]:
    """Every hyperparameter set on wide inputs, every implementation; raises on a violation."""
    rng = np.random.default_rng(20240 + DTYPES.index(dtype))
    runs = []
    for hyper, t in HYPERS:
        case = make_case(wide_inputs(rng, PER_HYPER, hyper, t), dtype, hyper, t)
        runs.append(Run(case, *check_paths(case)))
    return tuple(runs)


def _summary(runs: tuple[Run, ...], name: str, out: str,
             own: bool = False) -> tuple[float, float]:
    """(max err/bound, in-domain share) of one implementation's output over all cases."""
    checks = [(r.own if own else r.any)[name][out] for r in runs]
    dom = np.concatenate([c.in_domain for c in checks])
    return max(c.max_ratio for c in checks), float(dom.mean())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sound(dtype: torch.dtype) -> None:
    """|impl - exact| <= bound for every in-domain element (asserted inside soundness_runs), and
    the domain covers the vast majority: only elements whose intermediates overflow (g^2 beyond
    the float32 range, state that overflowed to inf) fall outside it."""
    runs = soundness_runs(dtype)
    assert sum(len(r.case) for r in runs) >= 10_000
    floor = 0.99 if dtype == torch.float64 else 0.85
    for name in IMPLEMENTATIONS:
        for out in OUTPUTS:
            ratio, share = _summary(runs, name, out)
            own = _summary(runs, name, out, own=True)[0]
            print(f"{dtype} {name:13s} {out:5s} max err/bound {ratio:.3f} "
                  f"(own order {own:.3f})  in domain {share:.1%}")
            assert share >= floor, f"{name} {out}: only {share:.1%} of elements in the domain"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sound_more_seeds(dtype: torch.dtype, seed: int) -> None:
    """The soundness sweep again, 8x the elements per seed (about 100,000 per dtype and seed),
    also against the orders each implementation's probe leaves (core/forms.py)."""
    rng = np.random.default_rng([seed, DTYPES.index(dtype)])
    for hyper, t in HYPERS:
        check_paths(make_case(wide_inputs(rng, 8 * PER_HYPER, hyper, t), dtype, hyper, t),
                    after_probe=True)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_sound_amsgrad_maximize(dtype: torch.dtype) -> None:
    """AMSGrad (PyTorch's max of raw v) with maximize: vmax sometimes above, sometimes below the
    new v, against the maximized raw_max rule and its orders."""
    rng = np.random.default_rng(77 + DTYPES.index(dtype))
    for hyper, t in (HYPERS[2], HYPERS[5]):
        arrays = wide_inputs(rng, PER_HYPER // 2, hyper, t)
        # vmax below, at, just above (near-ties: the max may flip under rounding) and above v.
        arrays["vmax"] = arrays["v"] * rng.choice([0.5, 1.0, 1.01, 3.0], arrays["v"].size)
        case = make_case(arrays, dtype, hyper, t, maximize=True)
        _, any_ = check_paths(case)
        for name, checks in any_.items():
            assert set(checks) == {"theta", "m", "v", "vmax"}, name
            assert all(c.in_domain.mean() >= 0.85 for c in checks.values())


def test_max_near_tie() -> None:
    """AMSGrad's max(vmax, v') where the exact v' is just below vmax but the computed one rounds
    above it: the computed max follows the other operand. The bound gives every operand that
    rounding could make the winner its own error (max is 1-Lipschitz), not only the exact
    winner's. Here: foreach's bf16(beta2) and two bf16 stores push v' up by more than an ulp."""
    hyper = dict(lr=0.5, beta1=0.95, beta2=0.98, eps=1e-4, weight_decay=0.3)
    arrays = {k: np.array([x]) for k, x in dict(
        theta=-9429411719806976.0, g=0.00012683868408203125, m=6.389617919921875e-05,
        v=1.0302755981683731e-08, vmax=1.0419171303510666e-08).items()}
    case = make_case(arrays, torch.bfloat16, hyper, 100, maximize=True)
    result = exact(case)
    got = torch_step(case, foreach=True)
    assert float(got["vmax"][0]) > float(case.vmax[0]) >= float(result["vmax"][0])
    check_paths(case)


def test_scalar_cast_per_use() -> None:
    """v' = beta2 v + (1 - beta2) g^2 with v close to g^2: d v'/d beta2 = v - g^2 nearly cancels,
    but the float32 cast of beta2 in v * beta2 is not cancelled by anything (1 - beta2 is computed
    in double and cast on its own). With beta2 as far from float32 as it gets, loop and fused
    exceeded their bounds when the cast was charged through beta2's total adjoint."""
    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.999 + 2**-25 - 1e-12, eps=1e-8, weight_decay=0.0)
    rng = np.random.default_rng(11)
    n = 4000
    g = _loguniform(rng, math.exp(-3), math.exp(3), n)
    arrays = {"theta": np.ones(n), "g": g, "m": g / 2,
              "v": g * g * (1 + rng.uniform(-1e-3, 1e-3, n))}
    own, _ = check_paths(make_case(arrays, torch.float32, hyper, 10**6))
    assert max(own[p]["v"].max_ratio for p in own) > 0.5  # the regime is exercised


@pytest.mark.parametrize("beta1", [0.1, 0.01, 3 * 2**-25])
def test_lerp_weight_cast(beta1: float) -> None:
    """beta1 < 1/2: ATen's lerp takes the branch end - (end - start)(1 - w), with w = 1 - beta1
    rounded to float32 first, so the coefficient's error is about u |w|, which is up to 1/beta1
    times u |beta1|. With m far from g (m = -c g) the loop's and fused's own bounds were exceeded
    by up to 2.8x on m before the order modelled that rounding (spec.markers.Opmath)."""
    hyper = dict(lr=1e-3, beta1=beta1, beta2=0.999, eps=1e-8, weight_decay=0.0)
    rng = np.random.default_rng(3)
    n = 2000
    g = _loguniform(rng, math.exp(-3), math.exp(3), n)
    arrays = {"theta": np.ones(n), "g": g, "m": -g * rng.uniform(0.3, 3, n), "v": g * g}
    own, _ = check_paths(make_case(arrays, torch.float32, hyper, 5))
    assert max(own[p]["m"].max_ratio for p in own) > 0.3  # the regime is exercised


def test_foreach_bf16_rounds_mul_scalars() -> None:
    """torch's CPU _foreach_mul_ rounds its Python scalar to the tensor dtype (Tensor.mul_ keeps it
    in float32): in bf16, foreach=True multiplies by bf16(1 - lr*wd) and bf16(beta2). Inputs made
    to expose it: 1 - lr*wd just past a bf16 midpoint (rounded by ~1 u), theta near 2, an update
    of about half an ulp in the direction the roundings already went. Of the traced orders only
    torch_foreach models those roundings: the others' bounds are exceeded. (The general order,
    which rounds every scalar operand to the tensor dtype, covers them too: it is left out.)"""
    c = 0.5 + 2**-8 + 2**-9 - 1e-7
    hyper = dict(lr=1.0, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1 - c)
    theta = np.repeat(2 - np.arange(1, 17) / 128, 64)  # the bf16 numbers just below 2
    n = theta.size
    # An update lr*m/(sqrt(v) + eps) raising theta by 0.3 to 1.2 bf16 ulps (m the state before
    # the lerp with g = 0, which scales it by beta1).
    arrays = {"theta": theta, "g": np.zeros(n), "v": np.ones(n),
              "m": -theta * 2**-8 * np.tile(np.linspace(0.3, 1.2, 64), 16) / 0.9}
    case = make_case(arrays, torch.bfloat16, hyper, 10**6)
    result = exact(case)
    got = torch_step(case, foreach=True)
    check_paths(case)
    partial = check_all(got, result, bounds(case, precision(torch.bfloat16),
                                            exclude=("torch_foreach", "general")))["theta"]
    assert partial.violations.size > 0, (
        f"torch_foreach order not needed here any more (max err/bound without it "
        f"{partial.max_ratio:.3f}); foreach and loop may have become identical")
    # The loop path keeps the scalars in float32: bitwise different from foreach here.
    assert not torch.equal(torch_step(case, foreach=False)["theta"], got["theta"])


@pytest.mark.parametrize("out", OUTPUTS)
def test_tight(out: str) -> None:
    """On float32 the worst observed error reaches a sizable fraction of the bound."""
    runs = soundness_runs(torch.float32)
    ratios = {name: round(_summary(runs, name, out)[0], 3) for name in IMPLEMENTATIONS}
    assert max(ratios.values()) >= 0.1, f"{out}: max err/bound per implementation {ratios}"


# --- power: seeded formula mutants ---------------------------------------------------------------

def _steady(rng: np.random.Generator, g: np.ndarray, hyper: dict[str, float],
            t: int) -> tuple[np.ndarray, np.ndarray]:
    n = g.size
    f1, f2 = 1 - hyper["beta1"] ** (t - 1), 1 - hyper["beta2"] ** (t - 1)
    return g * f1 * rng.uniform(0.5, 1.5, n), g * g * f2 * rng.uniform(0.5, 2.0, n)


def _regime(rng: np.random.Generator, n: int, hyper: dict[str, float], t: int,
            g_range: tuple[float, float],
            theta_range: tuple[float, float]) -> dict[str, np.ndarray]:
    g = _loguniform(rng, *g_range, n)
    m, v = _steady(rng, g, hyper, t)
    return {"theta": _loguniform(rng, *theta_range, n), "g": g, "m": m, "v": v}


#: mutant -> (why, hyperparameters, t, g range, theta range, minimum share of theta beyond the
#: bound). Each regime is where the defect matters; the shares asserted are well under what is
#: observed, so a change that weakens the bound by orders of magnitude is what trips them.
POWER = {
    "no_bias_correction": ("small t: 1 - beta^t far from 1",
                           dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2),
                           2, (1e-6, 1e3), (1e-3, 1e2), 0.9),
    "eps_inside_sqrt": ("sqrt(vh) comparable to eps",
                        dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2),
                        10, (1e-9, 1e-7), (1e-3, 1e1), 0.9),
    "decay_after_update": ("large lr*wd and a sizable update",
                           dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.5),
                           10, (1e-4, 1e2), (1e-3, 1e2), 0.9),
    "eps_doubled": ("|g| near eps",
                    dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=1e-2),
                    10, (1e-7, 1e-5), (1e-3, 1e1), 0.9),
}
POWER_N = 2000


@pytest.mark.parametrize("mutant", list(POWER))
def test_power(mutant: str) -> None:
    why, hyper, t, g_range, theta_range, floor = POWER[mutant]
    rng = np.random.default_rng(sorted(POWER).index(mutant))
    case = make_case(_regime(rng, POWER_N, hyper, t, g_range, theta_range), torch.float32,
                     hyper, t)
    result, bound = exact(case), bounds(case, precision(torch.float32))
    # The same inputs are fine for the reference: the failures are the mutant's.
    ref = check_all(kernel_step(reference_adamw, case), result, bound)
    assert all(c.violations.size == 0 for c in ref.values()), f"reference fails: {mutant} regime"
    got = check_all(kernel_step(MUTANTS[mutant], case), result, bound)
    share = got["theta"].exceed_share()
    print(f"{mutant}: theta beyond the bound on {share:.1%} ({why}); "
          f"median err/bound {np.nanmedian(got['theta'].ratio):.3g}")
    assert share >= floor, (f"{mutant} ({why}): theta beyond the bound on only {share:.1%} of "
                            f"elements, expected at least {floor:.0%}")
    # Moments are untouched by these defects: exactly as within bound as the reference's.
    for out in ("m", "v"):
        assert got[out].violations.size == 0, f"{mutant} changed {out}"
