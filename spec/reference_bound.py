"""The bound interpreted node by node: the definition of `spec.rounding_model`'s B.

`reference_bound` walks the expression DAG (`spec.expression_graph`) for every call: the values
and partials of every node at the exact inputs in float64, one reverse sweep per output for the
adjoints, and the rounding terms of `spec.rounding_model` weighted by them, with zero guards on
every product (a zero on either side means "no sensitivity", even against an infinite other
side). The compiled engine (`spec.plan`) reproduces it bit for bit; it is that engine's fallback
for the elements and graphs it leaves out (`spec.bounds.evaluate`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import sympy as sp
from adamw_conformance.spec.expression_graph import Graph, conditions, graph_of, reachable, select
from adamw_conformance.spec.orders import Order
from adamw_conformance.spec.rounding import as_float64
from adamw_conformance.spec.rounding_model import (
    Bound,
    Precision,
    domain_limit,
    output_model,
    rounding_error,
    rounding_terms,
)


def _values(graph: Graph, env: Mapping[sp.Symbol, np.ndarray]) -> dict[sp.Basic, np.ndarray]:
    val: dict[sp.Basic, np.ndarray] = {}
    for x in graph.order:
        n = graph.nodes[x]
        c = [val[a] for a in n.children]
        if n.kind == "const":
            val[x] = np.float64(float(x))
        elif n.kind == "leaf":
            val[x] = env[x]
        elif n.kind == "add":
            val[x] = sum(c[1:], c[0])
        elif n.kind == "mul":
            k = len(c) - n.denominators
            num = np.prod(np.broadcast_arrays(*c[:k]), axis=0) if k else np.float64(1.0)
            den = np.prod(np.broadcast_arrays(*c[k:]), axis=0) if n.denominators else 1.0
            val[x] = n.constant * num / den
        elif n.kind in ("sqrt", "rsqrt", "recip", "square", "pow"):
            val[x] = np.power(c[0], c[1])
        elif n.kind == "abs":
            val[x] = np.abs(c[0])
        elif n.kind == "max":
            val[x] = np.maximum.reduce(np.broadcast_arrays(*c))
        elif n.kind == "select":
            val[x] = select(x, env, c)
        else:  # store
            val[x] = c[0]
    return val


def _partials(graph: Graph, x: sp.Basic, val, env) -> list[np.ndarray]:
    """d x / d child, for each child, at the exact values."""
    n = graph.nodes[x]
    c = [val[a] for a in n.children]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if not c:
            return []
        if n.kind == "add":
            return [_ONE] * len(c)
        if n.kind == "mul":
            k = len(c) - n.denominators
            out = []
            for i in range(len(c)):
                others = [c[j] for j in range(k) if j != i]
                dens = c[k:]
                p = n.constant * (np.prod(np.broadcast_arrays(*others), axis=0)
                                  if others else np.float64(1.0))
                for d in dens:
                    p = p / d
                out.append(p if i < k else -p / c[i])
            return out
        if n.kind == "sqrt":
            return [0.5 / np.sqrt(c[0]), np.float64(0.0)]
        if n.kind == "rsqrt":
            return [-0.5 * c[0] ** -1.5, np.float64(0.0)]
        if n.kind == "recip":
            return [-1.0 / (c[0] * c[0]), np.float64(0.0)]
        if n.kind == "square":
            return [2.0 * c[0], np.float64(0.0)]
        if n.kind == "pow":
            # The exponent (t, t - 1, an integer) is exact: no sensitivity flows into it.
            return [c[1] * np.power(c[0], c[1] - 1), np.float64(0.0)]
        if n.kind == "abs":
            return [np.copysign(1.0, c[0])]  # |x| at 0: the slope of the side a rounding may take
        if n.kind == "max":
            b = np.broadcast_arrays(*c)
            first = b[0] >= b[1]
            return [first.astype(np.float64), (~first).astype(np.float64)]
        if n.kind == "select":
            return [m.astype(np.float64) for m in conditions(x, env)]
        return [_ONE]  # store


#: The partial of add and store nodes: _mul_adjoint passes the adjoint through unchanged.
_ONE = np.float64(1.0)


def _mul_adjoint(adj: np.ndarray, partial: np.ndarray) -> np.ndarray:
    # A zero on either side means "no sensitivity", even against an infinite other side
    # (sqrt at an exact zero that no perturbation can reach).
    if partial is _ONE:
        return adj
    with np.errstate(invalid="ignore", over="ignore"):
        prod = adj * partial
    return np.where((adj == 0) | (partial == 0), 0.0, prod)


def reference_bound(order: Order, env: Mapping[sp.Symbol, Any], prec: Precision,
                    outputs: Iterable[str] | None = None) -> dict[str, Bound]:
    """`spec.bounds.bound`, interpreted node by node: the definition the compiled engine
    (`spec.plan`) reproduces bit for bit, and its fallback for the elements and graphs it
    leaves out."""
    tree = order.tree
    names = list(outputs) if outputs is not None else list(tree)
    graph = graph_of(tuple((k, tree[k]) for k in names))
    env = {s: as_float64(v) for s, v in env.items()}
    shape = np.broadcast(*[np.asarray(v) for v in env.values()]).shape
    with np.errstate(all="ignore"):
        val = _values(graph, env)
        partials = {x: _partials(graph, x, val, env) for x in graph.order}

    # Each rounding's error (k u |x| + eta / 2) once, not once per output it reaches.
    model = rounding_terms(graph, prec, order.scalar)
    terms: list[_Term] = []
    for x, rel, eta, nary, edges in model.roundings:
        if nary:
            mag = sum((np.abs(val[a]) for a in graph.nodes[x].children), np.zeros(shape))
        else:
            mag = np.abs(val[x])
        terms.append((x, rounding_error(rel, eta, mag), edges))

    # Domain: every intermediate finite and inside the range of the format it lives in.
    in_domain = np.ones(shape, dtype=bool)
    for x in graph.order:
        limit = domain_limit(graph.nodes[x], prec)
        in_domain &= np.broadcast_to(np.isfinite(val[x]) & (np.abs(val[x]) <= limit), shape)

    # max is 1-Lipschitz but has no derivative at a tie: where the operands' own rounding errors
    # could reorder them, the computed max may take the operand that is not the exact maximum.
    # There every operand that could win gets weight 1: |max(a', b') - max(a, b)| <=
    # max(|a' - a|, |b' - b|), which the sum of their bounds covers.
    for x in graph.order:
        if graph.nodes[x].kind == "max":
            children = graph.nodes[x].children
            errs = [_first_order(graph, c, partials, terms, shape) * model.margin
                    for c in children]
            vals = np.broadcast_arrays(*[val[c] for c in children])
            top = np.maximum.reduce(vals)
            winner = [p != 0 for p in partials[x]]
            active = np.select(winner, errs, 0.0)
            with np.errstate(invalid="ignore"):
                partials[x] = [np.where(w | (top - vi <= ei + active), 1.0, 0.0)
                               for w, vi, ei in zip(winner, vals, errs, strict=True)]

    result: dict[str, Bound] = {}
    for name in names:
        root = tree[name]
        out = output_model(graph, name, prec, model)
        adj = _adjoints(graph, root, partials)
        total = _first_order(graph, root, partials, terms, shape, adj)
        if out.store is not None:
            total = total + rounding_error(out.store.rel, out.store.eta, np.abs(val[root]))
        root_ok = in_domain & np.broadcast_to(np.abs(val[root]) <= out.fmt.max, shape)
        value = np.where(root_ok & np.isfinite(total), total * out.margin, np.inf)
        sens = {x.name: np.broadcast_to(np.abs(adj[x]), shape) * out.margin for x in adj
                if isinstance(x, sp.Symbol) and not graph.nodes[x].scalar}
        result[name] = Bound(value, root_ok & np.isfinite(total), sens,
                             np.broadcast_to(val[root], shape))
    return result


#: (node, error k u |x| + eta / 2, edges the error flows along or None).
_Term = tuple[sp.Basic, np.ndarray, tuple[tuple[sp.Basic, int], ...] | None]


def _first_order(graph: Graph, root: sp.Basic, partials, terms: list[_Term], shape,
                 adj: dict[sp.Basic, np.ndarray] | None = None) -> np.ndarray:
    """sum_i (k_i u_i |x_i| + eta_i / 2) |d root / d x_i| over the roundings that reach root."""
    if adj is None:
        adj = _adjoints(graph, root, partials)
    total = np.zeros(shape)
    for x, err, edges in terms:
        if edges is None:
            if x not in adj:
                continue
            a = np.abs(adj[x])
        else:
            along = [_mul_adjoint(adj[p], partials[p][i]) for p, i in edges if p in adj]
            if not along:
                continue
            a = np.abs(sum(along[1:], along[0]))
        with np.errstate(invalid="ignore", over="ignore"):
            total = total + np.where(err == 0, 0.0, err * a)
    return total


def _adjoints(graph: Graph, root: sp.Basic, partials) -> dict[sp.Basic, np.ndarray]:
    reach = reachable(graph, root)
    adj: dict[sp.Basic, np.ndarray] = {root: np.float64(1.0)}
    for x in reversed(graph.order):
        if x not in reach or x not in adj:
            continue
        for child, p in zip(graph.nodes[x].children, partials[x], strict=True):
            contribution = _mul_adjoint(adj[x], p)
            adj[child] = adj[child] + contribution if child in adj else contribution
    return adj


__all__ = ["reference_bound"]
