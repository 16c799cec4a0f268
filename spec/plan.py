"""The bound engine compiled: one straight-line numpy function per (graph, outputs, precisions).

`spec.bounds.reference_bound` interprets the expression DAG for every call: a dict lookup, a kind
dispatch and zero/inf guards (`np.where`) per node and per edge, for every order and every output.
Here the same computation is written out once as Python source (the values, the partials that the
asked outputs need, one reverse sweep per output, the rounding terms) and compiled with `exec`. The
arithmetic is the reference's, operation for operation and in the same order, so the results are
bit-identical, with three differences in what is computed, none in how:

- no zero guards on the adjoint products. A guard changes a product only where one side is 0 and
  the other inf or nan, and there the unguarded product is nan, which reaches the total (a term with
  a zero error contributes 0 either way). Elements whose total (or a sensitivity) comes out nan are
  recomputed by the reference engine, so the result is the reference's everywhere;
- several precision profiles share one evaluation: the values, partials and adjoints depend only
  on the order and the inputs, the rounding weights on the profile (the float64 filter and the
  implementation's bound of the same order are one pass);
- only what is asked: outputs, the domain, the sensitivities.

Graphs with a `max` node (AMSGrad) have partials that depend on the profile's own error terms;
they are left to the reference engine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy as sp
from adamw_conformance.spec.formats import FLOAT64, Format


@dataclass(frozen=True, eq=False)
class Weighting:
    """A precision profile as the rounding terms see it: the profile and the order's scalar
    format (where hyperparameter-only arithmetic rounds)."""

    prec: Any  # spec.bounds.Precision (not imported: bounds imports this module)
    scalar: Format

    @property
    def key(self) -> tuple:
        p = self.prec
        return (p.param, p.state, p.compute, p.hyper, tuple(sorted(p.ulps.items())), self.scalar)


@dataclass
class Result:
    """One output under one weighting, before the nan fix-up: see `spec.bounds.Bound`."""

    value: np.ndarray
    in_domain: np.ndarray | None
    sensitivity: dict[str, np.ndarray]
    center: np.ndarray | None
    #: Where the unguarded total is nan (None without a domain): the reference redoes those.
    nan: np.ndarray | None


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
    """A compiled plan: `run(env)` -> {output: [Result per weighting]}."""

    def __init__(self, source: str, namespace: dict[str, Any], leaves: list[sp.Symbol]) -> None:
        self.source = source
        self.leaves = leaves
        code = compile(source, "<spec.plan>", "exec")
        exec(code, namespace)  # noqa: S102 - our own generated source, from the spec's DAG
        self._fn = namespace["_plan"]

    def run(self, env: Mapping[sp.Symbol, Any], shape: tuple[int, ...]) -> Any:
        with np.errstate(all="ignore"):
            return self._fn(env, shape, *[env[s] for s in self.leaves])


def supported(graph: Any) -> bool:
    """Whether the compiled engine handles this graph (no profile-dependent partials)."""
    return all(n.kind != "max" for n in graph.nodes.values())


_PLANS: dict[tuple, Compiled] = {}


def compile_plan(graph: Any, names: tuple[str, ...], weightings: tuple[Wanted, ...],
                 sensitivity: bool) -> Compiled:
    """The plan for `graph`'s outputs `names` under `weightings`, generated once."""
    key = (graph, names, tuple(w.key for w in weightings), sensitivity)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = _generate(graph, names, weightings, sensitivity)
    return plan


def _generate(graph: Any, names: tuple[str, ...], weightings: tuple[Wanted, ...],
              sensitivity: bool) -> Compiled:
    from adamw_conformance.spec import (
        bounds as B,  # the reference's rules: which node rounds where, budgets
    )

    index = {x: i for i, x in enumerate(graph.order)}
    ns: dict[str, Any] = {"np": np, "inf": np.inf, "_select": B._select,
                          "_conditions": B._conditions, "_scaled": _scaled, "_full": _full}
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

    # --- values (spec.bounds._values) --------------------------------------------------------
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
                emit(f"{name} = np.sign({c[0]})")
            elif n.kind == "select":
                if x not in selects:
                    selects[x] = f"m{i}"
                    emit(f"m{i} = _conditions({const(x)}, env)")
                emit(f"{name} = m{i}[{j}].astype(np.float64)")
            else:
                raise NotImplementedError(n.kind)

    # --- the terms of each weighting, and which adjoints they need --------------------------
    per_w = [_terms(graph, w.weighting, B) for w in weightings]
    base: set[sp.Basic] = set()
    for (terms, _, _), w in zip(per_w, weightings, strict=True):
        for x, _rel, _eta, _nary, edges in terms:
            if w.lower:
                continue  # only terms whose adjoint is the root's: no sweep needed
            base.update([p for p, _ in edges] if edges is not None else [x])
    if sensitivity:
        base.update(x for x in leaves if not graph.nodes[x].scalar)
    useful: set[sp.Basic] = set()
    for x in graph.order:  # children first: a node is useful if it or a descendant is
        if x in base or any(c in useful for c in graph.nodes[x].children):
            useful.add(x)

    # --- adjoints (spec.bounds._adjoints, unguarded), one sweep per asked output. The root's
    # adjoint is 1 (None here): 1 * p = p exactly, so products with it are left out.
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
                contribution = _times(adj[x], partial[x, j])
                target = f"a{o}_{index[child]}"
                if child in adj:
                    emit(f"{target} = {_one(adj[child], ns)} + {_par(_one(contribution, ns), 2)}")
                    adj[child] = target
                elif contribution is None or "*" not in contribution:
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
        terms, count, worst_u = per_w[w]
        errs: list[tuple[sp.Basic, str, bool, tuple | None]] = []  # (node, err, scalar, edges)
        for t_i, (x, rel, eta, nary, edges) in enumerate(terms):
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
        if len(names) == 1:
            covered = {x for x, _e, scalar, edges in errs
                       if edges is None and not scalar and x in adjoint[names[0]]
                       and not (graph.nodes[x].kind == "add" and len(graph.nodes[x].children) > 2)}
        if wt.domain:
            emit(f"d{w} = True")
            groups: dict[float, list[str]] = {}
            for x in graph.order:
                n = graph.nodes[x]
                limit = FLOAT64.max if n.scalar else weighting.prec.compute.max
                if n.kind == "store":
                    limit = min(limit, {"param": weighting.prec.param,
                                        "state": weighting.prec.state,
                                        "compute": weighting.prec.compute}[n.role].max)
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
                    along = [_one(_times(adj[p], partial[p, j]), ns)
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
                    term = f"{e} * {a}"
                emit(f"{tot} = {term}" if first else f"{tot} = {tot} + {term}")
                first = False
            if first:
                emit(f"{tot} = np.zeros(shape)")
            root = graph.outputs[name]
            out_fmt = weighting.prec.param if name == "theta" else weighting.prec.state
            n_total, u_total = count, worst_u
            if (graph.nodes[root].kind != "store"
                    and out_fmt.precision < weighting.prec.compute.precision):
                n_total += 1
                u_total = max(u_total, out_fmt.u)
                if not wt.lower:
                    rel = weighting.prec.ulps.get("store", 1) * out_fmt.u
                    emit(_err_line(f"r{w}_{o}", mag(root), rel, out_fmt.eta, False))
                    emit(f"{tot} = {tot} + r{w}_{o}")
            margin = (1 + 2 * n_total * u_total) * (1 + 2.0**-40)
            if wt.domain:
                emit(f"ok{w}_{o} = _full(d{w} & ({mag(root)} <= {out_fmt.max!r})"
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
    """err = where(mag == 0, 0, rel * mag + eta / 2), without a where where that is exact."""
    half = eta / 2
    if half == 0.0:  # float64: rel * mag is 0 where mag is (and nan where mag is)
        return f"{name} = {rel!r} * {m}"
    if scalar:
        return f"{name} = np.where({m} == 0, 0.0, {rel!r} * {m} + {half!r})"
    return f"{name} = {rel!r} * {m} + ({m} != 0) * {half!r}"


def reachable(graph: Any, root: sp.Basic) -> set[sp.Basic]:
    """The nodes of `graph` that `root` depends on (itself included)."""
    reach: set[sp.Basic] = set()
    stack = [root]
    while stack:
        x = stack.pop()
        if x in reach:
            continue
        reach.add(x)
        stack.extend(graph.nodes[x].children)
    return reach


def _terms(graph: Any, weighting: Weighting, B: Any) -> tuple[list[tuple], int, float]:
    """The reference's rounding terms (spec.bounds.reference_bound), in its order, without their
    values: (node, relative budget, eta, n-ary add magnitude?, cast edges or None)."""
    prec, scalar_fmt = weighting.prec, weighting.scalar
    hyper_unit = max((f.u for f in (prec.hyper, scalar_fmt) if f is not None and f != FLOAT64),
                     default=0.0)
    terms: list[tuple] = []
    count, worst_u = 0, 0.0
    cast: dict[sp.Basic, list[tuple[sp.Basic, int]]] = {}
    for x in graph.order:
        n = graph.nodes[x]
        if n.kind == "leaf" and n.scalar and not n.integer and hyper_unit:
            terms.append((x, hyper_unit, (prec.hyper or scalar_fmt).eta, False, None))
            count += 1
            worst_u = max(worst_u, hyper_unit)
            continue
        fmt = B._unit_for(n, scalar_fmt, prec)
        if fmt is not None:
            budget = prec.ulps.get(B._KIND_BUDGET.get(n.kind, "add"), 1) * n.roundings
            nary = n.kind == "add" and len(n.children) > 2
            terms.append((x, budget * fmt.u, n.roundings * fmt.eta, nary, None))
            count += n.roundings
            worst_u = max(worst_u, fmt.u)
        if not n.scalar and n.kind != "store":
            for i, a in enumerate(n.children):
                ca = graph.nodes[a]
                if (ca.scalar and not ca.integer and ca.kind != "const"
                        and ca.role != "compute"
                        and prec.compute.precision < scalar_fmt.precision):
                    cast.setdefault(a, []).append((x, i))
    for a, edges in cast.items():
        terms.append((a, prec.ulps.get("cast", 1) * prec.compute.u, prec.compute.eta, False,
                      tuple(edges)))
        count += 1
        worst_u = max(worst_u, prec.compute.u)
    return terms, count, worst_u


#: Elements per pass of a plan. A plan makes ~100 temporaries; at 4096 float64 (32 KiB) each,
#: those alive at once stay in the core's L2, and each numpy operation runs 2-3x faster than on
#: arrays streamed from memory (measured: 200k elements, 4096: 41 ms, 8192: 107 ms, one pass:
#: 100 ms CPU). The per-chunk Python overhead is a few microseconds per operation.
CHUNK = 4096


def run_plan(compiled: Compiled, env: Mapping[sp.Symbol, Any], shape: tuple[int, ...],
             names: Sequence[str], n_weightings: int) -> dict[str, list[Result]]:
    """Run `compiled` on `env` (of broadcast `shape`), in chunks of CHUNK elements."""
    size = int(np.prod(shape, dtype=np.int64))
    if size <= CHUNK:
        return _collect(compiled.run(env, shape), names, n_weightings)
    flat_env = {s: (a if np.ndim(a) == 0 else _flat(np.asarray(a), shape)) for s, a in env.items()}
    out: list[list] = []
    for start in range(0, size, CHUNK):
        stop = min(start + CHUNK, size)
        part = {s: (a if np.ndim(a) == 0 else a[start:stop]) for s, a in flat_env.items()}
        rows = compiled.run(part, (stop - start,))
        if not out:
            out = [[name, w, *(_empty(x, size) for x in arrays)]
                   for name, w, *arrays in rows]
        for row, (_name, _w, *arrays) in zip(out, rows, strict=True):
            for target, x in zip(row[2:], arrays, strict=True):
                _fill(target, x, start, stop)
    reshaped = [[name, w, *(_shaped(x, shape) for x in arrays)] for name, w, *arrays in out]
    return _collect(reshaped, names, n_weightings)


def _flat(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if a.shape != shape:
        a = np.broadcast_to(a, shape)
    return np.ascontiguousarray(a).reshape(-1)


def _empty(x: Any, size: int) -> Any:
    if x is None:
        return None
    if isinstance(x, dict):
        return {k: _empty(v, size) for k, v in x.items()}
    return np.empty(size, dtype=np.asarray(x).dtype)


def _fill(target: Any, x: Any, start: int, stop: int) -> None:
    if target is None:
        return
    if isinstance(target, dict):
        for k, v in target.items():
            _fill(v, x[k], start, stop)
        return
    target[start:stop] = x


def _shaped(x: Any, shape: tuple[int, ...]) -> Any:
    if x is None:
        return None
    if isinstance(x, dict):
        return {k: v.reshape(shape) for k, v in x.items()}
    return x.reshape(shape)


def _collect(rows: Any, names: Sequence[str], n_weightings: int) -> dict[str, list[Result]]:
    out: dict[str, list[Result]] = {name: [None] * n_weightings for name in names}  # type: ignore
    for name, w, value, ok, sens, center, nan in rows:
        out[name][w] = Result(value, ok, sens, center if center is not None
                              else out[name][0].center, nan)
    return out
