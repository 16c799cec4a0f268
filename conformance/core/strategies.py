"""Hypothesis strategies for what breaks optimizers.

One example drives whole tensors: Hypothesis draws a *regime* (magnitude, spread, zeros, signs,
closeness to eps) and a seed, and the regime is expanded into hundreds of elements. Shrinking then
works on the regime, so a minimal counterexample reads "gradients near eps, t = 1", not a list of
400 floats.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp
import torch
from adamw_conformance.adapters.base import GroupSetup, ParamState, Setup
from adamw_conformance.core import context
from adamw_conformance.core.rule_table import LIKE_G, info
from adamw_conformance.core.rules import L2_COUPLED
from hypothesis import strategies as st

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
    """`x` rounded to `dtype` and back: float64 values the dtype holds exactly. A finite value
    past the dtype's range saturates at its largest finite value instead of becoming inf (only
    float16's 65504 is within the regimes' reach): a drawn tensor means finite values, and the
    properties about non-finite inputs put those in themselves."""
    big = float(torch.finfo(getattr(torch, dtype)).max)
    x = np.where(np.isfinite(x), np.clip(x, -big, big), x)
    return torch.tensor(x, dtype=torch.float64).to(getattr(torch, dtype)).double().numpy()


def regimes(lo: float = -12, hi: float = 12, zeros: bool = True) -> st.SearchStrategy[Regime]:
    return st.builds(
        Regime,
        center=st.floats(lo, hi),
        spread=st.sampled_from([0.0, 1.0, 4.0, 8.0]),
        zeros=st.sampled_from([0.0, 0.0, 0.1, 0.5]) if zeros else st.just(0.0),
        signs=st.sampled_from(["mixed", "positive", "negative"]),
    )


@dataclass(frozen=True)
class Range:
    """A hyperparameter's draws: its notable values (the first is typical), or a value from
    [lo, hi], uniform or, `log`, uniform in the exponent."""

    notable: tuple[float, ...]
    lo: float
    hi: float
    log: bool = False

    def strategy(self) -> st.SearchStrategy[float]:
        wide = log_uniform(self.lo, self.hi) if self.log else st.floats(self.lo, self.hi)
        return st.sampled_from(self.notable) | wide

    def sample(self, rng: np.random.Generator) -> float:
        """One value as `strategy` spreads them (half notable, half from the range), from a
        numpy generator: for the per-run value sets (compiled_value_sets)."""
        if rng.random() < 0.5:
            return float(self.notable[int(rng.integers(len(self.notable)))])
        if self.log:
            return float(10.0 ** rng.uniform(np.log10(self.lo), np.log10(self.hi)))
        return float(rng.uniform(self.lo, self.hi))


#: Each hyperparameter of the spec, by name, over a wide range (momentum, dampening in [0, 1),
#: [0, 1]; alpha, like beta2, close to 1). Drawn in this order, so an AdamW draw is the same
#: whatever else the table holds.
RANGES: dict[str, Range] = {
    "lr": Range((1e-3, 1e-2, 0.1, 1.0), 1e-6, 1.0, log=True),
    "beta1": Range((0.9, 0.0, 0.5, 0.99), 0.0, 0.999),
    "beta2": Range((0.999, 0.99, 0.9999, 0.95, 1 - 1e-6), 0.5, 0.99999),
    "eps": Range((1e-8, 1e-6, 1e-12, 1.0), 1e-12, 1.0, log=True),
    "weight_decay": Range((0.0, 1e-2, 0.1, 1.0), 0.0, 1.0),
    # momentum > 0: at 0 torch's SGD and RMSprop take their plain path, another rule
    "momentum": Range((0.9, 0.5, 0.99), 1e-3, 0.999),
    "dampening": Range((0.0, 0.1, 0.5, 1.0), 0.0, 1.0),
    "alpha": Range((0.99, 0.9, 0.999), 0.5, 0.9999),
    "lr_decay": Range((0.0, 1e-2, 1e-4), 1e-6, 1.0, log=True),
}
_HYPER: dict[str, st.SearchStrategy[float]] = {n: r.strategy() for n, r in RANGES.items()}
#: A decay property's weight_decay where the draw gave 0 (a decay property says nothing there).
_DECAY = Range((1e-2, 0.1, 1.0), 1e-4, 1.0, log=True)
_DECAY_STRATEGY = _DECAY.strategy()
#: Typical values, for probes that need some valid hyperparameters of the rule.
TYPICAL = {name: r.notable[0] for name, r in RANGES.items()}

#: For a target that compiles its step once per value of some hyperparameters
#: (core/compile_reuse.py): how many sets of their values a run draws from.
VALUE_SETS = 4


def value_sets(names: tuple[str, ...], seed: str | None) -> tuple[dict[str, float], ...]:
    """VALUE_SETS sets of values of `names`, the same in every process of a run: each range's
    first, second and last notable values (typical; the next; the edge: lr 1, beta2 1 - 1e-6,
    where a float32 bias correction is 1% off), then a set drawn over the ranges by the run's seed
    (a derandomized run's is fixed; another seed, another set). Their weight decays are > 0, so
    that a decay property has one in every set; a property that wants none asks for it
    (hyperparameters(decay=False)): one more value, 0."""
    ranges = {n: _DECAY if n == "weight_decay" else RANGES[n] for n in names}
    rng = np.random.default_rng(zlib.crc32((seed or "derandomized").encode()))
    fixed = [{n: r.notable[i] for n, r in ranges.items()} for i in (0, 1, -1)]
    return tuple(fixed + [{n: r.sample(rng) for n, r in ranges.items()}
                          for _ in range(VALUE_SETS - len(fixed))])


def rule_hyper_names(rule: str | None = None) -> tuple[str, ...]:
    """The hyperparameters the rule takes, in drawing order (initial_lr is derived, not drawn)."""
    from adamw_conformance.spec import registry
    names = set(registry.get(rule or context.current().rule).hyperparameter_names)
    return tuple(n for n in _HYPER if n in names)


def typical_hyper(rule: str | None = None) -> dict[str, float]:
    """Valid hyperparameters of the rule (its pinned values where the target fixes them)."""
    rule = rule or context.current().rule
    fixed = {**info(rule).fixed, **context.current().pinned}
    return {n: fixed.get(n, TYPICAL[n]) for n in rule_hyper_names(rule)}


@st.composite
def hyperparameters(draw: st.DrawFn, decay: bool = True) -> dict[str, float]:
    """Wide ranges: lr up to 1, eps 1e-12..1, wd up to 1, beta2 close to 1, large lr*wd; the
    hyperparameters of the run's rule (context.py), those the target fixes at its value.
    The context is read at draw time: the strategies are built at import, before the options
    are known."""
    now = context.current()
    fixed = {**info(now.rule).fixed, **now.pinned}
    # (drawn only for a target compiling per value: the other targets' draws stay as they were)
    chosen = draw(st.sampled_from(now.value_sets)) if now.value_sets else {}
    out: dict[str, float] = {}
    for name in rule_hyper_names():
        if name in fixed:
            out[name] = fixed[name]
        elif name == "weight_decay" and not decay:
            out[name] = 0.0
        elif name in chosen:
            out[name] = chosen[name]
        else:
            out[name] = draw(_HYPER[name])
    if 0 < out.get("weight_decay", 0.0) < 2.0**-64 and now.rule in L2_COUPLED:
        # Known gap: under L2 coupling (wd theta)^2 underflows the bound engine's float64
        # evaluation (bound 0 for a nonzero exact v); such a decay is 0 in any float format.
        out["weight_decay"] = 0.0
    return out


def nonzero_decay() -> st.SearchStrategy[float]:
    """A weight decay > 0, for a decay property whose hyperparameters() drew 0: from the run's
    value sets where the target compiles per value of it (core/compile_reuse.py)."""
    decays = [s["weight_decay"] for s in context.current().value_sets
              if s.get("weight_decay", 0.0) > 0.0]
    return st.sampled_from(decays) if decays else _DECAY_STRATEGY


steps = st.sampled_from([1, 2, 3, 10, 100, 10_000, 1_000_000]) | st.integers(1, 5000)

#: (read through `sized`, which leaves them as they are except for a target compiling per shape)
shapes = st.sampled_from([(DEFAULT_ELEMENTS,), (16, 16), (), (0,), (3, 5, 7), (1,)]).map(
    lambda s: sized(s))

#: For a target that keeps its state block-quantized (StateLayout.quantized): a small, fixed set
#: of shapes, so that a library that compiles its step per shape (torchao) reuses the compiled
#: kernels, reaching the regimes quantization acts in: whole blocks of 256 (4096, 4352 = 17 x
#: 256), a multiple of 128 only (4224 = 33 x 128: torchao's 8-bit and FP8 leave it float32,
#: its 4-bit quantizes it, bitsandbytes ends it with a partial block), no multiple (4100), and
#: one tensor below every threshold.
QUANTIZED_SHAPES = ((4096,), (4352,), (64, 66), (4100,), (DEFAULT_ELEMENTS,))
#: One element of each run of this many is an outlier (x 10^4): a block's absmax from one
#: element, the rest of the block far below it, in the map's finest codes.
OUTLIER_RUN = 128


#: For a target that compiles its step once per shape (core/compile_reuse.py): the shapes every
#: property takes, so that the compiled kernels are reused. A property's own shape keeps its
#: kind (0-dim, empty, one element, a vector, a matrix; `sized`); a step case draws from
#: SHAPE_SET's share of `shapes` (all of them but the 3-d one). Only the shapes a property
#: module holds as constants (`SizedShapes`, `shapes`) are read so: a shape written in a test's
#: body (48 elements in scale.*, 64 in exact.trajectory, the 2-element probes) stays, because
#: editing a test's source would reseed its derandomized draws for every target.
SHAPE_SET = ((), (0,), (1,), (32,), (2, 3), (DEFAULT_ELEMENTS,), (16, 16))
_STEP_SHAPES = tuple(s for s in SHAPE_SET if s not in ((32,), (2, 3)))


def sized(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a property takes for `shape`: itself, or, for a target that compiles per shape
    (the run's context), the member of SHAPE_SET of its kind (a vector of two or more elements
    is (32,), a tensor of two or more dimensions (2, 3))."""
    if not context.current().shape_set or shape in SHAPE_SET:
        return shape
    n = int(np.prod(shape))
    if n == 0:
        return (0,)
    if len(shape) >= 2:
        return (2, 3)
    return (1,) if n == 1 else (32,)


class SizedShapes(tuple):
    """A property's own shapes, each read through `sized` when the property reads it (iterating,
    indexing): as written for most targets, the shape set's for one that compiles per shape.
    A module constant, not a call in the test: Hypothesis seeds a derandomized test's draws from
    the test's source, which must not change for the other targets' draws to stay as they were."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (sized(s) for s in tuple.__iter__(self))

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        got = tuple.__getitem__(self, i)
        return SizedShapes(got) if isinstance(i, slice) else sized(got)


def shape_pool() -> st.SearchStrategy[tuple[int, ...]]:
    """The shapes a step case draws from: `shapes`, QUANTIZED_SHAPES for a target whose
    state is block-quantized, or SHAPE_SET's for one that compiles per shape (read at draw
    time, from the run's context)."""
    now = context.current()
    if now.quantized:
        return st.sampled_from(QUANTIZED_SHAPES)
    return st.sampled_from(_STEP_SHAPES) if now.shape_set else shapes


def uniform_fill(x: np.ndarray, rng: np.random.Generator, dtype: str) -> np.ndarray:
    """`x`'s largest magnitude times uniform values in [-1, 1] ([0, 1] where x is never
    negative): every code of a map's top decades is met by some element of a block (a drawn
    magnitude is log-uniform, which leaves a single corrupted code among them unseen)."""
    top = float(np.max(np.abs(x))) if x.size else 0.0
    low = 0.0 if x.size and float(np.min(x)) >= 0 else -1.0
    return representable(top * rng.uniform(low, 1.0, x.shape), dtype)


def with_outliers(x: np.ndarray, rng: np.random.Generator, dtype: str) -> np.ndarray:
    """`x` with one element of each OUTLIER_RUN scaled by 10^4."""
    flat = x.reshape(-1).copy()
    for start in range(0, flat.size, OUTLIER_RUN):
        k = start + int(rng.integers(0, min(OUTLIER_RUN, flat.size - start)))
        flat[k] = (flat[k] or 1.0) * 1e4
    return representable(flat.reshape(x.shape), dtype)


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

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # Hypothesis prints dataclasses field by field otherwise


@st.composite
def step_cases(draw: st.DrawFn, dtype: str = "float32", device: str = "cpu",
               options: dict | None = None, decay: bool = True, fresh: bool | None = None,
               shape: tuple[int, ...] | None = None) -> StepCase:
    """A parameter, its gradient and a state (fresh or replayed) with hyperparameters and t."""
    hyper = draw(hyperparameters(decay=decay))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = shape if shape is not None else draw(shape_pool())
    r = {"theta": draw(regimes(-6, 6, zeros=False)), "g": draw(regimes(-10, 8))}
    is_fresh = draw(st.booleans()) if fresh is None else fresh
    t = 1 if is_fresh else draw(replay_steps())
    theta = r["theta"].sample(rng, shape, dtype)
    g = r["g"].sample(rng, shape, dtype)
    if is_fresh:
        state = ParamState.of({name: np.zeros(shape) for name in _state_names()}, 0)
    else:
        ranges = info(context.current().rule).state
        r.update({name: draw(regimes(*ranges[name].replay)) for name in _state_names()})
        state = sample_state(r, rng, shape, dtype, t - 1)
    # (drawn only for a quantized target: the other targets' draws stay as they were)
    if context.current().quantized and draw(st.booleans()):
        g = with_outliers(g, rng, dtype)
        if state.m is not None and not is_fresh:
            state.m = with_outliers(state.m, rng, dtype)
    elif context.current().quantized and draw(st.booleans()):
        g = uniform_fill(g, rng, dtype)
        for name in ("m", "v"):
            if getattr(state, name, None) is not None and not is_fresh:
                setattr(state, name, uniform_fill(getattr(state, name), rng, dtype))
    if (options or {}).get("amsgrad"):
        v = state.v if state.v is not None else np.zeros(shape)
        state.vmax = np.zeros(shape) if is_fresh else np.maximum(
            v, np.abs(r["v"].sample(rng, shape, dtype)))
    setup = Setup([GroupSetup([theta], hyper)], dtype, device, dict(options or {}))
    # The stored counter is the previous step: the implementation advances it to t.
    return StepCase(setup, [g], [state], seed, r)


def _state(rule: str | None = None) -> tuple[sp.Symbol, ...]:
    """The rule's own state that is drawn (the rule table's replay ranges; vmax, AMSGrad's,
    comes with the amsgrad option), in the spec rule's order: the order of the draws."""
    entry = info(rule or context.current().rule)
    return tuple(s for s in entry.rule().state if entry.state[s.name].replay is not None)


def _state_names(rule: str | None = None) -> tuple[str, ...]:
    return tuple(s.name for s in _state(rule))


def first_step_creates_state() -> bool:
    """Whether the rule's t = 1 is its own branch (PyTorch's momentum buffer is created by the
    first step): a replayed state then stands at t >= 2."""
    from adamw_conformance.spec import registry
    from adamw_conformance.spec.symbols import t as t_symbol
    rule = registry.get(context.current().rule)
    return any(e.has(sp.Piecewise) and e.has(t_symbol) for e in rule.update.values())


def replay_steps() -> st.SearchStrategy[int]:
    """The t of a step from a replayed state (see first_step_creates_state)."""
    return steps.map(lambda t: max(t, 2)) if first_step_creates_state() else steps


def state_regimes(first: Regime, second: Regime) -> dict[str, Regime]:
    """Regimes for the session's rule's state: `first` for those replayed over the gradient's
    range (m, buf, gavg), `second` for the squares (v, accum), as properties that draw an m and
    a v regime use them."""
    return {name: first if s.replay == LIKE_G else second
            for name, s in info(context.current().rule).state.items() if s.replay is not None}


def sample_state(r: dict[str, Regime], rng: np.random.Generator, shape: tuple[int, ...],
                 dtype: str, step: int, rule: str | None = None) -> ParamState:
    """A reachable state of the rule, its arrays drawn from the regimes in `r` (by state name):
    squares nonnegative, and centered RMSProp's gradient average within sqrt(v) (reachable
    states have gavg^2 <= v, so that v - gavg^2 stays a square)."""
    values: dict[str, np.ndarray] = {}
    for s in _state(rule):
        x = r[s.name].sample(rng, shape, dtype)
        values[s.name] = np.abs(x) if s.is_nonnegative else x
    if "gavg" in values:
        share = rng.uniform(0.0, 0.9, shape) * np.sign(values["gavg"])
        values["gavg"] = representable(share * np.sqrt(values["v"]), dtype)
    return ParamState.of(values, step)
