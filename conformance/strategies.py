"""Hypothesis strategies for what breaks optimizers.

One example drives whole tensors: Hypothesis draws a *regime* (magnitude, spread, zeros, signs,
closeness to eps) and a seed, and the regime is expanded into hundreds of elements. Shrinking then
works on the regime, so a minimal counterexample reads "gradients near eps, t = 1", not a list of
400 floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from hypothesis import strategies as st

from conformance.adapters.base import GroupSetup, ParamState, Setup

DEFAULT_ELEMENTS = 256


def log_uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(np.log10(lo), np.log10(hi)).map(lambda e: float(10.0**e))


@dataclass(frozen=True)
class Regime:
    """How to fill a tensor: |x| ~ 10**(center +- spread/2), a share of exact zeros, signs."""

    center: float = 0.0
    spread: float = 2.0
    zeros: float = 0.0
    signs: str = "mixed"  # mixed | positive | negative

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...],
               dtype: str) -> np.ndarray:
        n = int(np.prod(shape))
        mag = 10.0 ** (self.center + self.spread * (rng.random(n) - 0.5))
        sign = {"positive": 1.0, "negative": -1.0}.get(self.signs)
        x = mag * (sign if sign is not None else rng.choice([-1.0, 1.0], n))
        x[rng.random(n) < self.zeros] = 0.0
        return representable(x.reshape(shape), dtype)


def representable(x: np.ndarray, dtype: str) -> np.ndarray:
    """`x` rounded to `dtype` and back: float64 values the dtype holds exactly."""
    return torch.tensor(x, dtype=torch.float64).to(getattr(torch, dtype)).double().numpy()


def regimes(lo: float = -12, hi: float = 12, zeros: bool = True) -> st.SearchStrategy[Regime]:
    return st.builds(
        Regime,
        center=st.floats(lo, hi),
        spread=st.sampled_from([0.0, 1.0, 4.0, 8.0]),
        zeros=st.sampled_from([0.0, 0.0, 0.1, 0.5]) if zeros else st.just(0.0),
        signs=st.sampled_from(["mixed", "positive", "negative"]),
    )


@st.composite
def hyperparameters(draw: st.DrawFn, decay: bool = True) -> dict[str, float]:
    """Wide ranges: lr up to 1, eps 1e-12..1, wd up to 1, beta2 close to 1, large lr*wd."""
    lr = draw(st.sampled_from([1e-3, 1e-2, 0.1, 1.0]) | log_uniform(1e-6, 1.0))
    beta1 = draw(st.sampled_from([0.9, 0.0, 0.5, 0.99]) | st.floats(0.0, 0.999))
    beta2 = draw(st.sampled_from([0.999, 0.99, 0.9999, 0.95, 1 - 1e-6])
                 | st.floats(0.5, 0.99999))
    eps = draw(st.sampled_from([1e-8, 1e-6, 1e-12, 1.0]) | log_uniform(1e-12, 1.0))
    wd = draw(st.sampled_from([0.0, 1e-2, 0.1, 1.0]) | st.floats(0.0, 1.0)) if decay else 0.0
    return {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": wd}


steps = st.sampled_from([1, 2, 3, 10, 100, 10_000, 1_000_000]) | st.integers(1, 5000)

shapes = st.sampled_from([(DEFAULT_ELEMENTS,), (16, 16), (), (0,), (3, 5, 7), (1,)])


@dataclass
class StepCase:
    """One step from a given state: what state replay feeds to an implementation."""

    setup: Setup
    grads: list[np.ndarray]
    states: list[ParamState]
    seed: int
    regimes: dict[str, Regime] = field(default_factory=dict)

    @property
    def hyper(self) -> dict[str, float]:
        return self.setup.groups[0].hyper

    def __repr__(self) -> str:  # what Hypothesis prints for a falsifying example
        st0 = self.states[0]
        shapes_ = [p.shape for g in self.setup.groups for p in g.params]
        return (f"StepCase(hyper={self.hyper}, t={st0.step}, shapes={shapes_}, seed={self.seed}, "
                f"regimes={self.regimes})")


@st.composite
def step_cases(draw: st.DrawFn, dtype: str = "float32", device: str = "cpu",
               options: dict | None = None, decay: bool = True, fresh: bool | None = None,
               shape: tuple[int, ...] | None = None) -> StepCase:
    """A parameter, its gradient and a state (fresh or replayed) with hyperparameters and t."""
    hyper = draw(hyperparameters(decay=decay))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = shape if shape is not None else draw(shapes)
    r = {"theta": draw(regimes(-6, 6, zeros=False)), "g": draw(regimes(-10, 8))}
    is_fresh = draw(st.booleans()) if fresh is None else fresh
    t = 1 if is_fresh else draw(steps)
    theta = r["theta"].sample(rng, shape, dtype)
    g = r["g"].sample(rng, shape, dtype)
    if is_fresh:
        m = np.zeros(shape)
        v = np.zeros(shape)
    else:
        r["m"] = draw(regimes(-10, 8))
        r["v"] = draw(regimes(-20, 16))
        m = r["m"].sample(rng, shape, dtype)
        v = np.abs(r["v"].sample(rng, shape, dtype))
    vmax = None
    if (options or {}).get("amsgrad"):
        vmax = np.zeros(shape) if is_fresh else np.maximum(
            v, np.abs(r["v"].sample(rng, shape, dtype)))
    setup = Setup([GroupSetup([theta], hyper)], dtype, device, dict(options or {}))
    # The stored counter is the previous step: the implementation advances it to t.
    return StepCase(setup, [g], [ParamState(m, v, t - 1, vmax)], seed, r)
