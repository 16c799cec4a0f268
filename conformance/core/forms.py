"""The evaluation orders in play, narrowed from behaviour: what the target shows it does not do
is left out of its bound.

The verdict's bound is the maximum over every order a correct implementation may follow
(spec/orders.py). Two of them are far looser than the others where they matter, and both are
legitimate, so they stay in the bound unless the target's behaviour rules them out
(docs/tolerance-model.md, "Orders from behaviour"):

- the decay expanded, `theta - (lr wd) theta` (transformers, fairseq): where lr wd is near 1 it
  rounds about u |theta|, lr wd / (1 - lr wd) times what the factored `theta (1 - lr wd)` rounds;
- intermediates stored to bf16/fp16 op by op (torch's for-loop and foreach paths): where the
  update cancels most of theta, each stored intermediate costs u |update|, not u |theta'|.

Each is probed once per run before any test, as the state layout is (core/layout.py), at the
regime where the forms differ most, and ruled out only on conclusive evidence: every element of
every probed step within the narrower bound, where that bound is many times tighter than the
wider one (an implementation in the wider form then lands outside it on nearly every element).
A probe that does not apply, fails to run, or is not conclusive keeps the order. Declared
routes win: `--compute-dtype` skips the stores probe, declared orders (`orders = (...)` on an
adapter) are never dropped, and `--orders=all` keeps every order.

The assumption, stated: a target computes in one form whatever the hyperparameters and the
state. One that switches forms (factored where lr wd is near 1, expanded elsewhere) fools the
probe and is judged by the narrower bound where it uses the wider form (tests/test_forms.py has
such a target); it is judged correctly with `--orders=all`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from adamw_conformance.adapters.base import GroupSetup, Setup
from adamw_conformance.core import calls, record, replay
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import Model, compare
from adamw_conformance.core.rule_table import DECOUPLED, info
from adamw_conformance.spec.bounds import Bound
from adamw_conformance.spec.orders_general import EAGER_STORES, EXPANDED_DECAY
from adamw_conformance.spec.rules.adam import _decay_rate
from adamw_conformance.spec.symbols import initial_lr, lr, weight_decay

#: The decay probe's steps: (lr, 1 - rate), rate the convention's decay rate (lr * wd by
#: default), wd chosen to make it. lr * wd near 1 split three ways, none of the values exact in
#: binary: an implementation that forms 1 - lr * wd in float32 is off by far more than the
#: factored bound allows, and is not taken for a factored one.
DECAY_POINTS = ((0.9999997, 1.3e-7), (0.5000001, 2.9e-6), (0.0031, 1.7e-4))
#: The stores probe's hyperparameters (two steps of one constant gradient, the second one
#: cancelling theta to 2^-7..2^-4 of the update): eps near |g| (its rounding to bf16 shows),
#: beta2 whose bf16 value is not itself, and a decay, so that every scalar and intermediate
#: torch's eager paths round to the parameter dtype moves theta after the second step.
STORES_HYPER = {"lr": 0.25, "beta1": 0.9, "beta2": 0.95, "eps": 0.3, "weight_decay": 0.37}
ELEMENTS = 64
#: How many times the wider bound must exceed the narrower one for a probe step to tell the
#: forms apart: on every element for the decay, on the median element for the stores.
DECAY_APART, STORES_APART = 16.0, 8.0
_SEED = 20261


@dataclass(frozen=True)
class Finding:
    """What one probe found: the order it rules out (`spec.orders_general.RULED_OUT`), None
    where it keeps the order; `label`, that in a few words; `text`, the evidence."""

    rules_out: str | None
    label: str
    text: str
    #: a call into the target did not return: the probes after it are not run
    hung: bool = False


@dataclass(frozen=True)
class Forms:
    """The probes' findings for one target; `off`: --orders=all, nothing probed."""

    findings: tuple[Finding, ...] = ()
    off: bool = False

    @property
    def ruled_out(self) -> frozenset[str]:
        return frozenset(f.rules_out for f in self.findings if f.rules_out)

    def describe(self, names: list[str], evidence: bool = False) -> str:
        """One line for the header (`evidence`: for the report): the orders in play and how
        they were chosen."""
        if self.off:
            why = "every order: --orders=all"
        elif not self.findings:
            why = "every order: no probe applies"
        else:
            why = "from behaviour: " + "; ".join(
                f"{f.label} ({f.text})" if evidence else f.label for f in self.findings)
        return f"{', '.join(names)} ({why})"


#: Findings by target: (adapter, dtype, device, compute, hyper, model) -> (adapter, Forms); the
#: adapter is kept in the value, so that a key's id() is never reused by another object.
_FOUND: dict[tuple[Any, ...], tuple[Any, Forms]] = {}


def of(cfg: Config) -> Forms:
    """What the target's behaviour rules out under `cfg`'s model (probed once per target)."""
    model = replace(cfg.model, ruled_out=frozenset())
    key = (id(cfg.adapter), cfg.dtype, cfg.device, cfg.compute, cfg.hyper, model)
    known = _FOUND.get(key)
    if known is None or known[0] is not cfg.adapter:
        known = (cfg.adapter, probe(replace(cfg, model=model)))
        _FOUND[key] = known
    return known[1]


def settle(cfg: Config, enabled: bool = True) -> Forms:
    """Judge the run's `cfg` by the orders its target's behaviour leaves (once; `enabled`
    False: --orders=all)."""
    done = getattr(cfg, "_forms", None)
    if done is None:
        done = of(cfg) if enabled else Forms(off=True)
        cfg.model = replace(cfg.model, ruled_out=done.ruled_out)
        cfg._forms = done  # type: ignore[attr-defined]
    return done


def describe(cfg: Config, evidence: bool = False) -> str:
    """The orders `cfg` is judged by and why (after `settle`; before it, every order)."""
    names = [o.name for o in cfg.model.orders(cfg.precision())]
    forms = getattr(cfg, "_forms", None)
    if forms is None:
        return f"{', '.join(names)} (every order: not probed)"
    return forms.describe(names, evidence)


def probe(cfg: Config) -> Forms:
    """Run the probes that apply to `cfg`'s target, each under what the earlier ones found."""
    findings: list[Finding] = []
    ruled: frozenset[str] = frozenset()
    warm = calls.warm_up(cfg)
    if warm is not None and warm.error is not None:  # raised or hung: nothing to learn here
        return Forms((Finding(None, "every order", "the target's first creation and step did "
                                                   "not complete"),))
    for run in (_decay, _stores):
        found = run(cfg, ruled)
        if found is not None:
            findings.append(found)
            ruled |= {found.rules_out} if found.rules_out else set()
            if found.hung:
                break
    return Forms(tuple(findings))


def _narrows(cfg: Config, ruled: frozenset[str], more: str) -> bool:
    """Whether ruling `more` out changes the orders `cfg`'s bound takes the maximum over."""
    prec = cfg.precision()
    names = [[o.name for o in replace(cfg.model, ruled_out=r).orders(prec)]
             for r in (ruled, ruled | {more})]
    return names[0] != names[1]


def _hyper(cfg: Config, values: dict[str, float]
           ) -> tuple[dict[str, float], dict[str, float]] | None:
    """(what the target is given, what the step is judged with): `values` for the rule's
    hyperparameters, typical ones for the rest; initial_lr, where the convention's decay needs
    it, is the lr the group was created with. None where the target pins one of `values`."""
    from adamw_conformance.core.strategies import typical_hyper

    typical = typical_hyper(cfg.model.rule_name)
    if any(k in cfg.caps.pinned and cfg.caps.pinned[k] != v for k, v in values.items()
           if k in typical):
        return None
    given = {k: values.get(k, v) for k, v in typical.items()}
    names = set(cfg.model.rule.hyperparameter_names)
    return given, {**given, **({"initial_lr": given["lr"]} if "initial_lr" in names else {})}


def _zeros(model: Model, n: int) -> dict[str, np.ndarray]:
    return {s.name: np.zeros(n) for s in model.rule.state}


def _key(cfg: Config, ruled: frozenset[str]) -> tuple[Any, ...]:
    """What the target-independent part of a probe (its inputs, how far apart the bounds are
    on them) depends on: computed once per process."""
    return (replace(cfg.model, ruled_out=ruled), cfg.dtype, cfg.compute, cfg.hyper,
            tuple(sorted(cfg.caps.pinned.items())))


_INPUTS: dict[tuple[Any, ...], Any] = {}


def _once(name: str, key: tuple[Any, ...], make: Any) -> Any:
    if (name, key) not in _INPUTS:
        _INPUTS[name, key] = make()
    return _INPUTS[name, key]


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


# --- the decay -------------------------------------------------------------------------------

def _decay(cfg: Config, ruled: frozenset[str]) -> Finding | None:
    """Decay-only steps (zero gradient from fresh state: the moments and the Adam step are 0
    under every convention) at lr * wd near 1, judged against the bound without the expanded
    decay, of parameters of many magnitudes with random mantissas."""
    if not _narrows(cfg, ruled, EXPANDED_DECAY):
        return None
    made = _once("decay", _key(cfg, ruled), lambda: _decay_points(cfg, ruled))
    if made is None:
        return Finding(None, "expanded decay kept", "the target pins lr or weight_decay, and "
                                                    "the probe needs lr*wd near 1")
    points, apart = made
    if apart < DECAY_APART:
        return Finding(None, "expanded decay kept", f"at {cfg.precision().label()} the probe "
                                                    f"cannot tell it from the factored one: "
                                                    f"bounds at most {apart:.3g}x apart")
    try:
        for point in points:
            run = calls.create(cfg, Setup([GroupSetup([point.theta.copy()], point.given)],
                                          cfg.dtype, cfg.device))
            calls.step(cfg, run, [np.zeros_like(point.theta)])
            got = run.params()[0]
            with record.suspended():
                bad = compare("theta", got, point.exact, point.bound, cfg.dtype)
            if bad is not None:
                return Finding(None, "expanded decay kept",
                               f"{bad.count} of {bad.total} elements of a decay-only step at "
                               f"lr*wd = 1 - {point.gap:.2g} outside the factored forms' bound")
    except calls.ImplementationError as e:
        return Finding(None, "expanded decay kept",
                       f"the probe did not complete: {_first_line(e)}",
                       isinstance(e, calls.TimedOut))
    n = sum(point.theta.size for point in points)
    return Finding(EXPANDED_DECAY, "decay factored",
                   f"{n} elements of decay-only steps at lr*wd near 1 within the factored forms' "
                   f"bound, up to {apart:.3g}x tighter than the expanded form's")


@dataclass(frozen=True)
class _Point:
    """One decay-only probe step, as far as it does not depend on the target: the
    hyperparameters given and judged, the parameters, their exact decayed values and the bound
    without the expanded decay."""

    given: dict[str, float]
    judged: dict[str, float]
    theta: np.ndarray
    gap: float
    exact: Any
    bound: Bound


def _decay_points(cfg: Config, ruled: frozenset[str]) -> tuple[list[_Point], float] | None:
    """Each point, and the most, over the points, that the bound with the expanded decay
    exceeds the one without it on every element; None where the target pins lr or wd."""
    from adamw_conformance.core.strategies import representable

    narrow = replace(cfg.model, ruled_out=ruled | {EXPANDED_DECAY})
    wide = replace(cfg.model, ruled_out=ruled)
    rng, prec = np.random.default_rng(_SEED), cfg.precision()
    rate = _decay_rate(cfg.model.convention)
    points, apart = [], 0.0
    for lr_value, gap in DECAY_POINTS:
        per_wd = float(rate.subs({weight_decay: 1, initial_lr: lr_value, lr: lr_value}))
        hypers = _hyper(cfg, {"lr": lr_value, "weight_decay": (1 - gap) / per_wd})
        if hypers is None:
            return None
        # magnitudes whose decayed values are normal numbers, 2^-8..2^8 where the format allows
        lo = max(2.0**-8, 4 * prec.param.tiny / gap)
        hi = min(max(2.0**8, 16 * lo), prec.param.max / 4)
        theta = representable(np.exp(rng.uniform(np.log(lo), np.log(hi), ELEMENTS))
                              * rng.choice([-1.0, 1.0], ELEMENTS), cfg.dtype)
        zero = np.zeros_like(theta)
        exact, bound = narrow.expect(theta, zero, _zeros(narrow, theta.size), hypers[1], 1,
                                     prec)
        wider = wide.bounds(theta, zero, _zeros(wide, theta.size), hypers[1], 1, prec)
        b = bound["theta"]
        if np.all(b.in_domain):
            apart = max(apart, float(np.min(wider["theta"].value / b.value)))
        points.append(_Point(*hypers, theta, gap, exact["theta"], b))
    return points, apart


# --- intermediates stored to the parameter dtype -----------------------------------------------

def _stores(cfg: Config, ruled: frozenset[str]) -> Finding | None:
    """Two steps of one constant gradient from fresh state, the second judged from the state
    read back, with theta0 chosen (from the exact trajectory, which is affine in theta0) so
    that the second step's theta is 2^-7..2^-4 of its update: against the bound without
    torch's eager orders, which is then many times tighter than theirs."""
    prec = cfg.precision()
    if cfg.compute is not None or prec.param.precision >= prec.compute.precision:
        return None  # declared, or nothing is lost by a store
    if info(cfg.model.rule_name).decay not in (DECOUPLED, None):
        return None  # an L2 gradient depends on theta: the trajectory is not affine in it
    if not _narrows(cfg, ruled, EAGER_STORES):
        return None
    inputs = _once("stores", _key(cfg, ruled), lambda: _stores_inputs(cfg))
    if inputs is None:
        return Finding(None, "intermediate stores kept",
                       "the target pins a hyperparameter the probe sets")
    apart = _once("stores apart", _key(cfg, ruled), lambda: _stores_apart(cfg, ruled, inputs))
    if apart < STORES_APART:
        return Finding(None, "intermediate stores kept", f"the probe cannot tell them apart: "
                                                         f"bounds {apart:.3g}x apart on the "
                                                         f"median element")
    given, judged, g, theta0, _ = inputs
    narrow = replace(cfg.model, ruled_out=ruled | {EAGER_STORES})
    try:
        run = calls.create(cfg, Setup([GroupSetup([theta0.copy()], given)], cfg.dtype,
                                      cfg.device))
        before, start, t = theta0, _zeros(narrow, g.size), 1
        for k in (1, 2):
            calls.step(cfg, run, [g])
            after = run.params()[0]
            now = replay.read_states(run, 1)
            if now is None:
                return Finding(None, "intermediate stores kept",
                               "the probe reads the state back, and it cannot be read")
            state = now[0]
            with record.suspended():
                exact, bound = narrow.expect(before, g, start, judged, t,
                                             cfg.precision(state.dtype))
                got = {"theta": after, **state.as_mapping()}
                for name, value in got.items():
                    fmt = cfg.dtype if name == "theta" else (state.dtype or cfg.dtype)
                    bad = (compare(name, value, exact[name], bound[name], fmt)
                           if name in bound else None)
                    if bad is not None:
                        return Finding(None, "intermediate stores kept",
                                       f"{bad.count} of {bad.total} elements of {name} after "
                                       f"step {k} of the probe outside the bound of compute "
                                       f"in {prec.compute} between stores")
            before, start, t = after, state.as_mapping(), state.step + 1
    except calls.ImplementationError as e:
        return Finding(None, "intermediate stores kept",
                       f"the probe did not complete: {_first_line(e)}",
                       isinstance(e, calls.TimedOut))
    return Finding(EAGER_STORES, f"no intermediate stored in {cfg.dtype}",
                   f"two steps whose second cancels theta within the bound of compute in "
                   f"{prec.compute} between stores, {apart:.3g}x tighter than op-by-op stores' "
                   f"(median)")


def _stores_inputs(cfg: Config) -> Any:
    """(hyperparameters given, judged, the gradient, theta0, the exact first step rounded to
    the dtype); None where the target pins one of STORES_HYPER."""
    from adamw_conformance.core.strategies import representable

    hypers = _hyper(cfg, STORES_HYPER)
    if hypers is None:
        return None
    given, judged = hypers
    rng, n, oracle = np.random.default_rng(_SEED + 1), ELEMENTS, cfg.model.oracle
    g = representable(np.exp(rng.uniform(np.log(0.06), np.log(30.0), n))
                      * rng.choice([-1.0, 1.0], n), cfg.dtype)
    ends = oracle.trajectory(np.concatenate([np.zeros(n), np.ones(n)]), [np.tile(g, 2)] * 2,
                             judged)[-1]["theta"]
    offset = np.array([float(x) for x in ends[:n]])
    slope = np.array([float(x) for x in ends[n:]]) - offset
    depth = 2.0 ** rng.uniform(-7, -4, n) * rng.choice([-1.0, 1.0], n)
    theta0 = representable(-offset / slope * (1 + depth), cfg.dtype)
    first = oracle.step(theta0, g, {}, judged, 1)
    rounded = {k: representable(np.array([float(x) for x in first[k]]), cfg.dtype)
               for k in cfg.model.rule.outputs}
    return given, judged, g, theta0, rounded


def _stores_apart(cfg: Config, ruled: frozenset[str], inputs: Any) -> float:
    """How far apart the bounds with and without the eager orders are on the probe's second
    step (from the exact first step, rounded), on the median element."""
    _, judged, g, _, first = inputs
    state = {k: v for k, v in first.items() if k != "theta"}
    b = [replace(cfg.model, ruled_out=r).bounds(first["theta"], g, state, judged, 2,
                                                cfg.precision())["theta"]
         for r in (ruled | {EAGER_STORES}, ruled)]
    return float(np.median(b[1].value / b[0].value))


__all__ = ["DECAY_POINTS", "Finding", "Forms", "describe", "of", "probe", "settle"]
