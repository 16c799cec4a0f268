"""The bound engine compiled: one straight-line numpy function per (graph, outputs, precisions).

`spec.reference_bound` interprets the expression DAG for every call: a dict lookup, a kind
dispatch and zero/inf guards (`np.where`) per node and per edge, for every order and every output.
Here the same computation is written out once as Python source (the values, the partials that the
asked outputs need, one reverse sweep per output, the rounding terms) and compiled with `exec`. The
rounding terms, final stores, margins and domain limits are `spec.rounding_model`'s, as the
reference's are; the arithmetic is the reference's, operation for operation and in the same order,
so the results are bit-identical, with three differences in what is computed, none in how:

- no zero guards on the adjoint products. A guard changes a product only where one side is 0 and
  the other inf or nan, and there the unguarded product is nan, which reaches the total (a term with
  a zero error contributes 0 either way). Elements whose total (or a sensitivity) comes out nan are
  recomputed by the guarded plan (the same source with the reference's guards), so the result is
  the reference's everywhere;
- several precision profiles share one evaluation: the values, partials and adjoints depend only
  on the order and the inputs, the rounding weights on the profile (the float64 filter and the
  implementation's bound of the same order are one pass);
- only what is asked: outputs, the domain, the sensitivities.

A plan is run over a step's arrays in cache-sized chunks by `spec.plan_runner`.

Graphs with a `max` node (AMSGrad) have partials that depend on the profile's own error terms;
they are left to the reference engine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy as sp
from adamw_conformance.spec.expression_graph import Graph, conditions, reachable, select
from adamw_conformance.spec.formats import FLOAT64, Format
from adamw_conformance.spec.rounding_model import (
    Precision,
    Terms,
    domain_limit,
    output_model,
    rounding_terms,
)


@dataclass(frozen=True, eq=False)
class Weighting:
    """A precision profile as the rounding terms see it: the profile and the order's scalar
    format (where hyperparameter-only arithmetic rounds)."""

    prec: Precision
    scalar: Format

    @property
    def key(self) -> tuple:
        p = self.prec
        return (p.param, p.state, p.compute, p.hyper, tuple(sorted(p.ulps.items())), self.scalar)


@dataclass(frozen=True, eq=False)
class Wanted:
    """A weighting and what to compute under it. `lower`: only the relative terms of the tensor
    operations whose adjoint is the output's own, 1 (the output's rounding and those of the
    operands summed into it: for AdamW's theta, 99.9% of a torch step's elements are accepted by
    them alone), and no domain: a value that is never above the full one (fewer nonnegative
    terms, each no larger, summed in the same order), for accepting elements early."""

    weighting: Weighting
    domain: bool = True
    lower: bool = False

    @property
    def key(self) -> tuple:
        return (self.weighting.key, self.domain, self.lower)


class Compiled:
    """A compiled plan: `run(env, shape)` -> one row (output, weighting index, value, domain,
    sensitivities, centre, nan) per asked output and weighting (`spec.plan_runner` collects them
    into `Result`s, chunk by chunk)."""

    def __init__(self, source: str, namespace: dict[str, Any], leaves: list[sp.Symbol]) -> None:
        self.source = source
        self.leaves = leaves
        code = compile(source, "<spec.plan>", "exec")
        exec(code, namespace)  # noqa: S102 - our own generated source, from the spec's DAG
        self._fn = namespace["_plan"]

    def run(self, env: Mapping[sp.Symbol, Any], shape: tuple[int, ...]) -> Any:
        with np.errstate(all="ignore"):
            return self._fn(env, shape, *[env[s] for s in self.leaves])


def supported(graph: Graph) -> bool:
    """Whether the compiled engine handles this graph (no profile-dependent partials)."""
    return all(n.kind != "max" for n in graph.nodes.values())


_PLANS: dict[tuple, Compiled] = {}


def compile_plan(graph: Graph, names: tuple[str, ...], weightings: tuple[Wanted, ...],
                 sensitivity: bool, guarded: bool = False) -> Compiled:
    """The plan for `graph`'s outputs `names` under `weightings`, generated once.

    `guarded`: with the reference's zero guards on every adjoint product and error term (and
    every node's domain checked), so that no element comes out nan for a 0 * inf: the plan
    `spec.bounds.evaluate` runs on the elements the unguarded one flags, instead of the
    interpreted reference (the same numbers, a few times faster)."""
    key = (graph, names, tuple(w.key for w in weightings), sensitivity, guarded)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = _generate(graph, names, weightings, sensitivity, guarded)
    return plan


def _generate(graph: Graph, names: tuple[str, ...], weightings: tuple[Wanted, ...],
              sensitivity: bool, guarded: bool) -> Compiled:
    index = {x: i for i, x in enumerate(graph.order)}
    ns: dict[str, Any] = {"np": np, "inf": np.inf, "_select": select,
                          "_conditions": conditions, "_scaled": _scaled, "_full": _full,
                          "_guard": _guard}
    times = _guarded_times if guarded else _times
    lines: list[str] = []
    emit = lines.append
    leaves = [x for x in graph.order if graph.nodes[x].kind == "leaf"]

    alias: dict[sp.Basic, str] = {}  # stores: the value is the child's (no copy)

    def v(x: sp.Basic) -> str:
        return alias.get(x, f"v{index[x]}")

    def const(value: Any) -> str:
        name = f"K{len(ns)}"
        ns[name] = value
        return name

    # --- values (spec.reference_bound._values) -----------------------------------------------
    rhs: dict[str, str] = {}  # a value's expression -> its variable (values are assigned once)
    for x in graph.order:
        n = graph.nodes[x]
        c = [v(a) for a in n.children]
        i = index[x]
        if n.kind == "const":
            emit(f"v{i} = {const(np.float64(float(x)))}")
        elif n.kind == "leaf":
            continue  # an argument of _plan
        elif n.kind == "add":
            emit(f"v{i} = " + " + ".join(c))
        elif n.kind == "mul":
            k = len(c) - n.denominators
            num = " * ".join(c[:k]) if k else const(np.float64(1.0))
            expr = num if n.constant == 1.0 else f"{const(n.constant)} * {_par(num, k)}"
            if n.denominators:
                expr = f"({expr}) / {_par(' * '.join(c[k:]), n.denominators)}"
            emit(f"v{i} = {expr}")
            rhs.setdefault(expr, f"v{i}")
        elif n.kind in ("sqrt", "rsqrt", "recip", "square", "pow"):
            emit(f"v{i} = np.power({c[0]}, {c[1]})")
        elif n.kind == "abs":
            emit(f"v{i} = np.abs({c[0]})")
        elif n.kind == "select":
            emit(f"v{i} = _select({const(x)}, env, [{', '.join(c)}])")
        elif n.kind == "store":
            alias[x] = c[0]
        else:
            raise NotImplementedError(n.kind)

    # --- partials, only along edges some asked output's sweep crosses -------------------------
    reach = {name: reachable(graph, graph.outputs[name]) for name in names}
    needed = set().union(*reach.values())
    partial: dict[tuple[sp.Basic, int], str | None] = {}  # None: the partial is 1 (pass through)
    selects: dict[sp.Basic, str] = {}
    for x in graph.order:
        if x not in needed:
            continue
        n = graph.nodes[x]
        c = [v(a) for a in n.children]
        i = index[x]
        for j in range(len(c)):
            name = f"p{i}_{j}"
            if n.kind in ("add", "store"):
                partial[x, j] = None
                continue
            partial[x, j] = name
            if n.kind == "mul":
                k = len(c) - n.denominators
                others = [c[o] for o in range(k) if o != j]
                prod = " * ".join(others) if others else const(np.float64(1.0))
                expr = (prod if n.constant == 1.0
                        else f"{const(n.constant)} * {_par(prod, len(others))}")
                for d in c[k:]:
                    expr = f"({expr}) / {d}"
                    # The same operations as a value already computed: the same number.
                    expr = rhs.get(expr, expr)
                if j >= k:
                    # -(p) / c; for a scalar c, p / (-c) is the same number (IEEE division is
                    # symmetric in sign) and negates a scalar instead of an array.
                    expr = (f"({expr}) / (-{c[j]})" if graph.nodes[n.children[j]].scalar
                            else f"-({expr}) / {c[j]}")
                emit(f"{name} = {expr}")
            elif n.kind == "sqrt":
                emit(f"{name} = 0.5 / np.sqrt({c[0]})" if j == 0 else f"{name} = {_ZERO(ns)}")
            elif n.kind == "rsqrt":
                emit(f"{name} = -0.5 * {c[0]} ** -1.5" if j == 0 else f"{name} = {_ZERO(ns)}")
            elif n.kind == "recip":
                emit(f"{name} = -1.0 / ({c[0]} * {c[0]})" if j == 0 else f"{name} = {_ZERO(ns)}")
            elif n.kind == "square":
                emit(f"{name} = 2.0 * {c[0]}" if j == 0 else f"{name} = {_ZERO(ns)}")
            elif n.kind == "pow":
                emit(f"{name} = {c[1]} * np.power({c[0]}, {c[1]} - 1)" if j == 0
                     else f"{name} = {_ZERO(ns)}")
            elif n.kind == "abs":
                emit(f"{name} = np.copysign(1.0, {c[0]})")
            elif n.kind == "select":
                if x not in selects:
                    selects[x] = f"m{i}"
                    emit(f"m{i} = _conditions({const(x)}, env)")
                emit(f"{name} = m{i}[{j}].astype(np.float64)")
            else:
                raise NotImplementedError(n.kind)

    # --- the terms of each weighting, and which adjoints they need --------------------------
    per_w: list[Terms] = [rounding_terms(graph, w.weighting.prec, w.weighting.scalar)
                          for w in weightings]
    base: set[sp.Basic] = set()
    for terms, w in zip(per_w, weightings, strict=True):
        for x, _rel, _eta, _nary, edges in terms.roundings:
            if w.lower:
                continue  # only terms whose adjoint is the root's: no sweep needed
            base.update([p for p, _ in edges] if edges is not None else [x])
    if sensitivity:
        base.update(x for x in leaves if not graph.nodes[x].scalar)
    useful: set[sp.Basic] = set()
    for x in graph.order:  # children first: a node is useful if it or a descendant is
        if x in base or any(c in useful for c in graph.nodes[x].children):
            useful.add(x)

    # --- adjoints (spec.reference_bound._adjoints, unguarded), one sweep per asked output. The
    # root's adjoint is 1 (None here): 1 * p = p exactly, so products with it are left out.
    adjoint: dict[str, dict[sp.Basic, str | None]] = {}
    for o, name in enumerate(names):
        root = graph.outputs[name]
        adj: dict[sp.Basic, str | None] = {root: None}
        for x in reversed(graph.order):
            if x not in reach[name] or x not in adj:
                continue
            for j, child in enumerate(graph.nodes[x].children):
                if child not in useful:
                    continue
                contribution = times(adj[x], partial[x, j])
                target = f"a{o}_{index[child]}"
                if child in adj:
                    emit(f"{target} = {_one(adj[child], ns)} + {_par(_one(contribution, ns), 2)}")
                    adj[child] = target
                elif contribution is None or _NAME.fullmatch(contribution):
                    adj[child] = contribution  # an alias: add/store pass the adjoint through
                else:
                    emit(f"{target} = {contribution}")
                    adj[child] = target
        adjoint[name] = adj

    # --- magnitudes |x| and |adjoint|, shared by the terms, the weightings and the domain ----
    mags: dict[str, str] = {}

    def mag(x: sp.Basic) -> str:
        name = v(x)
        if name not in mags:
            mags[name] = "g" + name[1:]
            emit(f"{mags[name]} = np.abs({name})")
        return mags[name]

    abs_adj: dict[str, str] = {}

    def absolute(o: int, x: sp.Basic) -> str | None:
        a = adjoint[names[o]][x]
        if a is None:
            return None
        if a not in abs_adj:
            abs_adj[a] = "h" + a
            emit(f"h{a} = np.abs({a})")
        return abs_adj[a]

    # --- per weighting: terms, totals, domain -----------------------------------------------
    ret: list[str] = []
    for w, wt in enumerate(weightings):
        weighting = wt.weighting
        terms = per_w[w]
        errs: list[tuple[sp.Basic, str, bool, tuple | None]] = []  # (node, err, scalar, edges)
        for t_i, (x, rel, eta, nary, edges) in enumerate(terms.roundings):
            n = graph.nodes[x]
            if wt.lower and (edges is not None or n.scalar
                             or any(adjoint[name].get(x, 0) is not None for name in names)):
                continue  # a lower value: leaving nonnegative terms out of the sum
            if edges is None and not any(x in adjoint[name] for name in names):
                continue
            e = f"e{w}_{t_i}"
            if nary:
                emit(f"s{w}_{t_i} = " + " + ".join(mag(a) for a in n.children))
                m_name = f"s{w}_{t_i}"
            else:
                m_name = mag(x)
            emit(_err_line(e, m_name, rel, 0.0 if wt.lower else eta, n.scalar))
            errs.append((x, e, n.scalar, edges))
        # A node whose own term is in the (only) output's total and whose range is float64's
        # needs no domain check: a non-finite value makes its term, hence the total, non-finite
        # (inf * 0 is nan), and the total's finiteness is part of the domain.
        covered: set[sp.Basic] = set()
        if len(names) == 1 and not guarded:  # guarded: inf * 0 is 0, so check every node
            covered = {x for x, _e, scalar, edges in errs
                       if edges is None and not scalar and x in adjoint[names[0]]
                       and not (graph.nodes[x].kind == "add" and len(graph.nodes[x].children) > 2)}
        if wt.domain:
            emit(f"d{w} = True")
            groups: dict[float, list[str]] = {}
            for x in graph.order:
                n = graph.nodes[x]
                limit = domain_limit(n, weighting.prec)
                if n.scalar or n.kind == "const":
                    emit(f"d{w} = d{w} & ({mag(x)} <= {limit!r})")
                elif not (x in covered and limit == FLOAT64.max):
                    groups.setdefault(limit, []).append(mag(x))
            # |x| <= limit fails for nan and inf: one running maximum per limit (np.maximum
            # propagates nan) decides every node of that limit at once.
            for limit, members in groups.items():
                members = list(dict.fromkeys(members))
                emit(f"q{w} = {members[0]}")
                for mm in members[1:]:
                    emit(f"q{w} = np.maximum(q{w}, {mm})")
                emit(f"d{w} = d{w} & (q{w} <= {limit!r})")
        for o, name in enumerate(names):
            adj = adjoint[name]
            tot = f"t{w}_{o}"
            first = True
            for x, e, scalar, edges in errs:
                if edges is None:
                    if x not in adj:
                        continue
                    a = absolute(o, x)
                else:
                    along = [_one(times(adj[p], partial[p, j]), ns)
                             for p, j in edges if p in adj]
                    if not along:
                        continue
                    a = f"np.abs({' + '.join(_par(s, 2) for s in along)})"
                # A 0-d error (a scalar node) that is 0 contributes 0 even against an infinite
                # adjoint, as the reference's where(err == 0, 0, err * a) has it.
                if a is None:
                    term = e  # err * |1| = err
                elif scalar:
                    term = f"({e} * {a} if {e}.ndim == 0 and {e} != 0 else _scaled({e}, {a}))"
                else:
                    term = f"_scaled({e}, {a})" if guarded else f"{e} * {a}"
                emit(f"{tot} = {term}" if first else f"{tot} = {tot} + {term}")
                first = False
            if first:
                emit(f"{tot} = np.zeros(shape)")
            root = graph.outputs[name]
            out = output_model(graph, name, weighting.prec, terms)
            if out.store is not None and not wt.lower:
                emit(_err_line(f"r{w}_{o}", mag(root), out.store.rel, out.store.eta, False))
                emit(f"{tot} = {tot} + r{w}_{o}")
            margin = out.margin
            if wt.domain:
                emit(f"ok{w}_{o} = _full(d{w} & ({mag(root)} <= {out.fmt.max!r})"
                     f" & np.isfinite({tot}), shape)")
                emit(f"b{w}_{o} = np.where(ok{w}_{o}, {tot} * {margin!r}, inf)")
                # Where the unguarded sweep met 0 * inf (spec.bounds.evaluate redoes those).
                emit(f"n{w}_{o} = np.isnan({tot})")
            else:
                emit(f"ok{w}_{o} = None")
                emit(f"b{w}_{o} = _full({tot} * {margin!r}, shape)")
                emit(f"n{w}_{o} = None")
            sens = []
            if sensitivity and not wt.lower:
                for x in adj:
                    if isinstance(x, sp.Symbol) and not graph.nodes[x].scalar:
                        a = absolute(o, x)
                        sens.append(f"{x.name!r}: _full({a or 1.0}, shape) * {margin!r}")
            center = f"_full({v(root)}, shape)" if w == 0 else "None"
            ret.append(f"({name!r}, {w}, b{w}_{o}, ok{w}_{o}, {{{', '.join(sens)}}}, "
                       f"{center}, n{w}_{o})")
    args = ", ".join(v(x) for x in leaves)
    local = {v(x) for x in leaves} | {ln.split(" = ", 1)[0] for ln in lines if " = " in ln}
    body = "\n".join("    " + line for line in _free_dead(lines, ", ".join(ret), local))
    source = (f"def _plan(env, shape, {args}):\n{body}\n"
              f"    return [{', '.join(ret)}]\n")
    return Compiled(source, ns, leaves)


_NAME = re.compile(r"(?<![.\w])[a-z][a-z0-9_]*\b")


def _free_dead(lines: list[str], returned: str, local: set[str]) -> list[str]:
    """`lines` with a `del` after each variable's last use: the arrays go back to the allocator
    while still in cache, instead of hundreds of them living (and faulting in fresh pages)
    until the plan returns."""
    last: dict[str, int] = {}
    for i, line in enumerate(lines):
        for name in _NAME.findall(line):
            last[name] = i
    keep = set(_NAME.findall(returned))
    out: list[str] = []
    for i, line in enumerate(lines):
        out.append(line)
        dead = sorted({n for n in _NAME.findall(line) if last.get(n) == i and n not in keep}
                      & local)
        if dead:
            out.append("del " + ", ".join(dead))
    return out


def _times(adj: str | None, p: str | None) -> str | None:
    """adjoint * partial as source; None stands for 1."""
    if adj is None:
        return p
    return adj if p is None else f"{adj} * {p}"


def _guarded_times(adj: str | None, p: str | None) -> str | None:
    """adjoint * partial as source, with the reference's zero guard (`_guard`)."""
    if adj is None or p is None:
        return _times(adj, p)
    return f"_guard({adj}, {p})"


def _guard(adj: np.ndarray, partial: np.ndarray) -> np.ndarray:
    # spec.reference_bound._mul_adjoint: a zero on either side means "no sensitivity", even
    # against an infinite other side.
    return np.where((adj == 0) | (partial == 0), 0.0, adj * partial)


def _one(expr: str | None, ns: dict[str, Any]) -> str:
    if expr is None:
        ns["ONE"] = np.float64(1.0)
        return "ONE"
    return expr


def _full(x: Any, shape: tuple[int, ...]) -> np.ndarray:
    """x broadcast to shape (a view), skipping numpy's broadcast_to where it already is."""
    return x if getattr(x, "shape", None) == shape else np.broadcast_to(x, shape)


def _scaled(e: Any, a: np.ndarray) -> Any:
    if np.ndim(e) == 0:
        return e * a if e != 0 else 0.0
    return np.where(e == 0, 0.0, e * a)


def _par(expr: str, factors: int) -> str:
    return f"({expr})" if factors > 1 else expr


def _ZERO(ns: dict[str, Any]) -> str:
    ns["ZERO"] = np.float64(0.0)
    return "ZERO"


def _err_line(name: str, m: str, rel: float, eta: float, scalar: bool) -> str:
    """`spec.rounding_model.rounding_error` as source: err = where(mag == 0, 0, rel * mag +
    eta / 2), without a where where that is exact."""
    half = eta / 2
    if half == 0.0:  # float64: rel * mag is 0 where mag is (and nan where mag is)
        return f"{name} = {rel!r} * {m}"
    if scalar:
        return f"{name} = np.where({m} == 0, 0.0, {rel!r} * {m} + {half!r})"
    return f"{name} = {rel!r} * {m} + ({m} != 0) * {half!r}"
