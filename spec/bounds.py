"""Per-element rounding-error bounds derived from the spec's expressions: the engine's entry points.

The model (`spec.rounding_model`: which node rounds to which format, the first-order terms, the
domain, the margin) is computed by two engines over the expression DAG (`spec.expression_graph`):
the interpreted definition `spec.reference_bound` and the compiled `spec.plan`, bit-identical to
it. `bound` and `evaluate` run the compiled engine and fall back to the reference for the graphs
and elements it leaves out; `max_over_orders` gives the bound for "any of these orders", computed
in tiers when a verdict only needs to accept elements (`LazyMaximum`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import sympy as sp
from adamw_conformance.spec import plan, plan_runner
from adamw_conformance.spec.expression_graph import graph_of
from adamw_conformance.spec.orders import Order
from adamw_conformance.spec.reference_bound import reference_bound
from adamw_conformance.spec.rounding import as_float64
from adamw_conformance.spec.rounding_model import IEEE_ULPS, Bound, Precision


def bound(order: Order, env: Mapping[sp.Symbol, Any], prec: Precision,
          outputs: Iterable[str] | None = None) -> dict[str, Bound]:
    """The bound for each output of `order` at the inputs `env` (symbol -> value or array)."""
    names = tuple(outputs) if outputs is not None else tuple(order.tree)
    return evaluate(order, env, (prec,), names, names)[0]


def evaluate(order: Order, env: Mapping[sp.Symbol, Any], precs: Sequence[Precision],
             graph_names: Sequence[str], names: Sequence[str], *, sensitivity: bool = True,
             lower: Iterable[int] = (), guarded: bool = False) -> list[dict[str, Bound]]:
    """`reference_bound(order, env, p, graph_names)` restricted to `names`, for every p in
    `precs`, from one evaluation of the values and adjoints (`spec.plan`).

    For the profiles whose index is in `lower`, `value` is a lower value of the bound instead
    (`spec.plan.Wanted`), with no domain: enough to accept elements, not to judge them.
    `guarded`: the plan with the reference's zero guards (`spec.plan.compile_plan`), which
    needs no second pass; the elements the unguarded plan flags are redone with it."""
    tree = order.tree
    graph = graph_of(tuple((k, tree[k]) for k in graph_names))
    env = {s: as_float64(v, copy=False) for s, v in env.items()}
    shape = np.broadcast(*[np.asarray(v) for v in env.values()]).shape
    if not plan.supported(graph):
        return [{k: r[k] for k in names}
                for r in (reference_bound(order, env, p, graph_names) for p in precs)]
    lower = set(lower)
    wanted = tuple(plan.Wanted(plan.Weighting(p, order.scalar), domain=i not in lower,
                               lower=i in lower) for i, p in enumerate(precs))
    compiled = plan.compile_plan(graph, tuple(names), wanted, sensitivity, guarded)
    raw = plan_runner.run_plan(compiled, env, shape, names, len(wanted))
    out: list[dict[str, Bound]] = []
    for w, prec in enumerate(precs):
        result: dict[str, Bound] = {}
        redo: dict[str, np.ndarray] = {}
        for name in names:
            r = raw[name][w]
            result[name] = Bound(r.value, r.in_domain if r.in_domain is not None
                                 else np.ones(shape, dtype=bool), r.sensitivity, r.center)
            if w not in lower and not guarded:
                # Where the unguarded sweep met 0 * inf, the guarded plan decides (spec.plan).
                bad = r.nan
                for sens in r.sensitivity.values():
                    bad = bad | np.isnan(sens)
                if np.any(bad):
                    redo[name] = np.broadcast_to(bad, shape)
        if redo:
            result.update(_redo(order, env, prec, graph_names, result, redo, shape,
                                sensitivity))
        out.append(result)
    return out


def _redo(order: Order, env: Mapping[sp.Symbol, Any], prec: Precision,
          graph_names: Sequence[str], result: dict[str, Bound], redo: dict[str, np.ndarray],
          shape: tuple[int, ...], sensitivity: bool) -> dict[str, Bound]:
    """The guarded plan's bound at the flagged elements, patched into `result`."""
    mask = np.logical_or.reduce(list(redo.values()))
    flat = np.flatnonzero(mask)
    sub = restrict(env, shape, flat)
    [ref] = evaluate(order, sub, (prec,), graph_names, tuple(redo), sensitivity=sensitivity,
                     guarded=True)
    fixed = {}
    for name in redo:
        b, r = result[name], ref[name]
        value = np.array(np.broadcast_to(b.value, shape))
        dom = np.array(np.broadcast_to(b.in_domain, shape))
        value.reshape(-1)[flat] = np.broadcast_to(r.value, flat.shape)
        dom.reshape(-1)[flat] = np.broadcast_to(r.in_domain, flat.shape)
        sens = {}
        for k, arr in b.sensitivity.items():
            full = np.array(np.broadcast_to(arr, shape))
            full.reshape(-1)[flat] = np.broadcast_to(r.sensitivity[k], flat.shape)
            sens[k] = full
        fixed[name] = Bound(value, dom, sens, b.center)
    return fixed


def restrict(env: Mapping[sp.Symbol, Any], shape: tuple[int, ...],
             flat: np.ndarray) -> dict[sp.Symbol, Any]:
    """`env` at the elements `flat` (flat indices into `shape`): arrays become 1-d, 0-d values
    (hyperparameters, a common t) stay as they are."""
    out = {}
    for s, v in env.items():
        a = np.asarray(v)
        out[s] = a if a.ndim == 0 else np.broadcast_to(a, shape).reshape(-1)[flat]
    return out


def environment(rule_inputs: Iterable[sp.Symbol], params: Any, grad: Any,
                state: Mapping[str, Any], hyper: Mapping[str, float], t_value: Any,
                defaults: Mapping[str, float] | None = None) -> dict[sp.Symbol, Any]:
    """Bind a rule's symbols to arrays and hyperparameter values (by name)."""
    named = {"theta": params, "g": grad, "t": t_value, **(defaults or {}), **state, **hyper}
    env = {}
    for s in rule_inputs:
        env[s] = named.get(s.name, 0.0)
    return env


def max_over_orders(orders: Iterable[Order], env: Mapping[sp.Symbol, Any],
                    prec: Precision, first: Callable[[str], np.ndarray | None] | None = None
                    ) -> dict[str, Bound]:
    """The bound for "any of these orders": the elementwise maximum, computed when first read.

    Each output's `Bound` is a `LazyMaximum`: reading `value`, `in_domain` or `sensitivity`
    computes every order (all outputs at once); a verdict that only needs to know which elements
    are surely within the bound uses `accepts` and `at` instead, which compute one order first
    and the others only for the elements it leaves open. `first(name)`, if given, supplies the
    first order's values from a pass done anyway (the float64 filter's, `spec.filter`)."""
    source = _Maximum(tuple(orders), env, prec, first)
    return {k: LazyMaximum(source, k) for k in source.names}


class _Maximum:
    """The orders, the inputs and the profile of one step's bound; what has been computed."""

    def __init__(self, orders: tuple[Order, ...], env: Mapping[sp.Symbol, Any], prec: Precision,
                 first: Callable[[str], np.ndarray | None] | None) -> None:
        self.orders, self.prec, self._first_source = orders, prec, first
        self.env = {s: as_float64(v, copy=False) for s, v in env.items()}
        self.shape = np.broadcast(*[np.asarray(v) for v in self.env.values()]).shape
        self.names = tuple(orders[0].tree)
        self._full: dict[str, Bound] | None = None
        self._first: dict[str, np.ndarray] = {}

    def full(self) -> dict[str, Bound]:
        if self._full is None:
            per_order = [bound(o, self.env, self.prec) for o in self.orders]
            self._full = {k: Bound.maximum(b[k] for b in per_order) for k in self.names}
        return self._full

    def first(self, name: str) -> np.ndarray:
        """A lower value of the maximum for output `name`: one order's bound (inf outside its
        domain not applied: accepting by it is sound, rejecting is not)."""
        if name not in self._first:
            value = self._first_source(name) if self._first_source is not None else None
            if value is None:
                value = evaluate(self.orders[0], self.env, (self.prec,), self.names, (name,),
                                 sensitivity=False, lower=(0,))[0][name].value
            self._first[name] = np.broadcast_to(value, self.shape)
        return self._first[name]

    def at(self, name: str, flat: np.ndarray) -> Bound:
        """The maximum over the orders at the elements `flat` only (flat indices)."""
        if self._full is not None:
            b = self._full[name]
            sens = {k: np.broadcast_to(a, self.shape).reshape(-1)[flat]
                    for k, a in b.sensitivity.items()}
            return Bound(np.broadcast_to(b.value, self.shape).reshape(-1)[flat],
                         np.broadcast_to(b.in_domain, self.shape).reshape(-1)[flat], sens)
        sub = restrict(self.env, self.shape, flat)
        per_order = [evaluate(o, sub, (self.prec,), self.names, (name,))[0] for o in self.orders]
        b = Bound.maximum(q[name] for q in per_order)
        # A 0-d step (one scalar parameter) stays 0-d through `restrict`: one element.
        return Bound(np.broadcast_to(b.value, flat.shape), np.broadcast_to(b.in_domain, flat.shape),
                     {k: np.broadcast_to(a, flat.shape) for k, a in b.sensitivity.items()})


class LazyMaximum(Bound):
    """One output's maximum over orders (see `max_over_orders`): a `Bound` whose arrays are
    computed when read."""

    def __init__(self, source: _Maximum, name: str) -> None:  # noqa: D107
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "name", name)

    @property
    def value(self) -> np.ndarray:  # type: ignore[override]
        return self.source.full()[self.name].value

    @property
    def in_domain(self) -> np.ndarray:  # type: ignore[override]
        return self.source.full()[self.name].in_domain

    @property
    def sensitivity(self) -> Mapping[str, np.ndarray]:  # type: ignore[override]
        return self.source.full()[self.name].sensitivity

    @property
    def center(self) -> None:  # type: ignore[override]
        return None

    @property
    def computed(self) -> bool:
        return self.source._full is not None

    def accepts(self, upper: np.ndarray) -> np.ndarray:
        """Elements where `upper` (>= |got - exact|) is surely within the bound: those within
        one order's bound, without computing the others."""
        if self.computed:
            with np.errstate(invalid="ignore"):
                return np.broadcast_to(self.value, self.source.shape) >= upper
        with np.errstate(invalid="ignore"):
            return self.source.first(self.name) >= upper

    def at(self, flat: np.ndarray) -> Bound:
        """The bound at the elements `flat` (flat indices): value, in_domain, sensitivity."""
        return self.source.at(self.name, flat)

    def __repr__(self) -> str:
        return f"LazyMaximum({self.name}, computed={self.computed})"

    __eq__ = object.__eq__
    __hash__ = object.__hash__


# Bound, Precision, IEEE_ULPS (spec.rounding_model) and reference_bound (spec.reference_bound) are
# defined there and exported here too: this module is where callers get the bound from.
__all__ = ["Bound", "LazyMaximum", "Precision", "IEEE_ULPS", "bound", "evaluate",
           "reference_bound", "max_over_orders", "environment", "restrict"]
