"""Per-element rounding-error bounds derived from the spec's expressions.

First-order (1 + delta) model (docs/tolerance-model.md): every rounding i perturbs its exact
result x_i to x_i (1 + delta_i) + e_i with |delta_i| <= k_i u_i and |e_i| <= eta_i / 2
(underflow). To first order the output moves by sum_i delta_i x_i (d out / d x_i), so

    B = margin * sum_i (k_i u_i |x_i| + eta_i / 2) |d out / d x_i|

The derivative is the node's adjoint, found by one reverse sweep over the expression DAG, evaluated
in float64 for whole arrays at once. Which node rounds to which format comes from the evaluation
order (`spec.orders`) and the precision profile (`Precision`):

- tensor operations round to `compute` (PyTorch's opmath: float32 for bf16/fp16 tensors);
- `StoreParam` / `StoreState` markers and every output round to the parameter / state format;
- hyperparameter-only ("scalar") arithmetic rounds to the order's scalar format (double for Python
  floats), and a scalar entering a tensor operation is cast to `compute`;
- `hyper`, if set, is a format every hyperparameter is rounded to before use (a kernel that takes
  them as fp32 or bf16 tensors).

The same DAG node used twice is one rounding: a deterministic kernel computes it identically.
Products and quotients are order-free to first order (every rounding in a chain perturbs the whole
chain relatively); n-ary sums are bounded by their largest possible partial sum. Elements where an
intermediate overflows its format, or is not finite, are outside the model: their bound is inf and
`in_domain` is False, so they are never judged by it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import sympy as sp
from adamw_conformance.spec import plan
from adamw_conformance.spec.formats import FLOAT32, FLOAT64, Format, format_of, opmath
from adamw_conformance.spec.markers import Opmath, StoreParam, StoreState
from adamw_conformance.spec.orders import Order
from adamw_conformance.spec.rounding import as_float64
from adamw_conformance.spec.symbols import SCALARS, t

#: Accuracy budget per operation kind, in units of u (1 = correctly rounded, 2 = faithful).
#: sqrt is faithful, not correctly rounded: PyTorch's CPU float32/float64 sqrt goes through MKL's
#: vectorised sqrt, which is 1 ulp off for about a fifth of float32 inputs. pow is libm's.
IEEE_ULPS: Mapping[str, float] = {
    "add": 1, "mul": 1, "div": 1, "sqrt": 2, "pow": 2, "store": 1, "cast": 1,
}


@dataclass(frozen=True)
class Precision:
    """How an implementation stores and computes: the formats the bound's roundings use."""

    param: Format = FLOAT32
    state: Format = FLOAT32
    compute: Format = FLOAT32
    hyper: Format | None = None
    ulps: Mapping[str, float] = field(default_factory=lambda: dict(IEEE_ULPS))

    @classmethod
    def of(cls, dtype: Any, state: Any = None, compute: Any = None, **kw: Any) -> Precision:
        """PyTorch's convention: state in the parameter dtype, arithmetic in its opmath type."""
        p = format_of(dtype)
        s = format_of(state) if state is not None else p
        c = format_of(compute) if compute is not None else opmath(p)
        return cls(p, s, c, **kw)

    def label(self) -> str:
        parts = [f"param={self.param}", f"state={self.state}", f"compute={self.compute}"]
        if self.hyper is not None:
            parts.append(f"hyper={self.hyper}")
        return ",".join(parts)


@dataclass(frozen=True)
class Bound:
    """Per-element bound on |implementation - exact| for one output."""

    value: np.ndarray
    in_domain: np.ndarray
    #: |d output / d input| for the tensor inputs (theta, g, m, v, ...): propagates earlier errors.
    sensitivity: Mapping[str, np.ndarray] = field(default_factory=dict)
    #: The output as this order evaluates it in float64 (None for a maximum over orders): with a
    #: float64 precision profile, `value` bounds its distance from the exact result (spec.filter).
    center: np.ndarray | None = None

    @staticmethod
    def maximum(bounds: Iterable[Bound]) -> Bound:
        bounds = list(bounds)
        value = np.maximum.reduce([b.value for b in bounds])
        in_domain = np.logical_and.reduce([b.in_domain for b in bounds])
        sens = {k: np.maximum.reduce([b.sensitivity[k] for b in bounds if k in b.sensitivity])
                for k in bounds[0].sensitivity}
        return Bound(np.where(in_domain, value, np.inf), in_domain, sens)


# --- the DAG -------------------------------------------------------------------------------------

@dataclass
class _Node:
    expr: sp.Basic
    kind: str  # leaf, const, add, mul, sqrt, rsqrt, recip, square, pow, abs, max, select, store
    children: list[sp.Basic]
    scalar: bool  # depends on hyperparameters and t only
    integer: bool  # exact integer arithmetic on t (exponents such as t - 1)
    roundings: int = 0  # how many roundings this node performs
    role: str = ""  # for stores: "param" or "state"
    denominators: int = 0  # for mul: how many trailing children are divisors
    constant: float = 1.0  # for mul: the product of numeric factors


def _is_pow2(c: float) -> bool:
    m, _ = np.frexp(abs(c))
    return c != 0 and m == 0.5


class _Graph:
    def __init__(self, outputs: Mapping[str, sp.Expr]) -> None:
        self.outputs = dict(outputs)
        self.nodes: dict[sp.Basic, _Node] = {}
        self.order: list[sp.Basic] = []
        for e in self.outputs.values():
            self._visit(e)

    def _visit(self, e: sp.Basic) -> None:
        stack: list[tuple[sp.Basic, bool]] = [(e, False)]
        while stack:
            x, done = stack.pop()
            if x in self.nodes:
                continue
            if done:
                node = self._make(x)
                self.nodes[x] = node
                self.order.append(x)
                continue
            stack.append((x, True))
            for c in reversed(self._children(x)):
                if c not in self.nodes:
                    stack.append((c, False))

    @staticmethod
    def _children(x: sp.Basic) -> list[sp.Basic]:
        if isinstance(x, sp.Mul):
            out = []
            for a in x.args:
                if isinstance(a, sp.Pow) and a.exp == -1:
                    out.append(a.base)
                elif not a.is_Number:
                    out.append(a)
            return out
        if isinstance(x, sp.Piecewise):
            return [a.expr for a in x.args]
        if isinstance(x, sp.Pow):
            return [x.base, x.exp]
        if x.is_Atom:
            return []
        return list(x.args)

    def _make(self, x: sp.Basic) -> _Node:
        free = x.free_symbols
        scalar = free <= SCALARS
        integer = free <= {t} and (x.is_integer is True)
        children = self._children(x)
        if x.is_Number:
            return _Node(x, "const", [], True, bool(x.is_integer))
        if isinstance(x, sp.Symbol):
            return _Node(x, "leaf", [], scalar, x == t)
        if isinstance(x, sp.Add):
            return _Node(x, "add", children, scalar, integer, len(children) - 1)
        if isinstance(x, sp.Mul):
            nums = [a for a in x.args if not a.is_Number and not (isinstance(a, sp.Pow)
                                                                  and a.exp == -1)]
            dens = [a.base for a in x.args if isinstance(a, sp.Pow) and a.exp == -1]
            const = float(sp.Mul(*[a for a in x.args if a.is_Number]))
            r = max(len(nums) - 1, 0) + len(dens) + (0 if _is_pow2(const) else 1)
            node = _Node(x, "mul", nums + dens, scalar, integer, r)
            node.denominators, node.constant = len(dens), const
            return node
        if isinstance(x, sp.Pow):
            e = x.exp
            kind = {sp.S.Half: "sqrt", -sp.S.Half: "rsqrt", sp.S.NegativeOne: "recip",
                    sp.Integer(2): "square"}.get(e, "pow")
            return _Node(x, kind, children, scalar, integer, 2 if kind == "rsqrt" else 1)
        if isinstance(x, sp.Abs):
            return _Node(x, "abs", children, scalar, integer)
        if isinstance(x, sp.Max):
            return _Node(x, "max", children, scalar, integer)
        if isinstance(x, sp.Piecewise):
            node = _Node(x, "select", children, scalar, integer)
            return node
        if isinstance(x, (StoreParam, StoreState)):
            role = "param" if isinstance(x, StoreParam) else "state"
            return _Node(x, "store", children, scalar, integer, 1, role)
        if isinstance(x, Opmath):
            return _Node(x, "store", children, scalar, integer, 1, "compute")
        raise NotImplementedError(f"no rounding model for {type(x).__name__}: {x}")


@cache
def _graph(outputs_key: tuple[tuple[str, sp.Expr], ...]) -> _Graph:
    return _Graph(dict(outputs_key))


# --- evaluation ----------------------------------------------------------------------------------

_KIND_BUDGET = {"add": "add", "mul": "mul", "sqrt": "sqrt", "rsqrt": "sqrt", "recip": "div",
                "square": "mul", "pow": "pow", "store": "store"}


def _values(graph: _Graph, env: Mapping[sp.Symbol, np.ndarray]) -> dict[sp.Basic, np.ndarray]:
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
            val[x] = _select(x, env, c)
        else:  # store
            val[x] = c[0]
    return val


@cache
def _condition_function(cond: sp.Basic) -> tuple[list[sp.Symbol], Any]:
    # lambdify compiles Python source: once per condition, not once per element array.
    syms = sorted(cond.free_symbols, key=str)
    return syms, sp.lambdify(syms, cond, "numpy")


def _conditions(x: sp.Piecewise, env: Mapping[sp.Symbol, np.ndarray]) -> list[np.ndarray]:
    """Which branch of a Piecewise each element takes (conditions are on exact scalars)."""
    taken: list[np.ndarray] = []
    remaining: Any = True
    for pair in x.args:
        cond = pair.cond
        if cond is sp.true:
            now = np.asarray(True)
        else:
            syms, f = _condition_function(cond)
            now = np.asarray(f(*[env[s] for s in syms]), dtype=bool)
        taken.append(np.logical_and(remaining, now))
        remaining = np.logical_and(remaining, np.logical_not(now))
    return taken


def _select(x: sp.Piecewise, env, branches: list[np.ndarray]) -> np.ndarray:
    out = np.zeros(np.broadcast(*branches).shape)
    for mask, b in zip(_conditions(x, env), branches, strict=True):
        out = np.where(mask, b, out)
    return out


def _partials(graph: _Graph, x: sp.Basic, val, env) -> list[np.ndarray]:
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
            return [np.sign(c[0])]
        if n.kind == "max":
            b = np.broadcast_arrays(*c)
            first = b[0] >= b[1]
            return [first.astype(np.float64), (~first).astype(np.float64)]
        if n.kind == "select":
            return [m.astype(np.float64) for m in _conditions(x, env)]
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


def _unit(n: _Node, order: Order, prec: Precision) -> Format | None:
    """The format node n's result is rounded to, or None if it is exact."""
    return _unit_for(n, order.scalar, prec)


def _unit_for(n: _Node, scalar: Format, prec: Precision) -> Format | None:
    if n.kind in ("leaf", "const", "abs", "max", "select") or n.integer or n.roundings == 0:
        return None
    if n.kind == "store" and n.role == "compute":
        # A scalar taken into the compute type: one rounding, unless scalars are no finer.
        if n.scalar and prec.compute.precision < scalar.precision:
            return prec.compute
        return None
    if n.kind == "store":
        target = prec.param if n.role == "param" else prec.state
        # Storing a value already rounded to a format at least as coarse is exact.
        return target if target.precision < prec.compute.precision else None
    return scalar if n.scalar else prec.compute


def reference_bound(order: Order, env: Mapping[sp.Symbol, Any], prec: Precision,
                    outputs: Iterable[str] | None = None) -> dict[str, Bound]:
    """`bound`, interpreted node by node: the definition the compiled engine (`spec.plan`)
    reproduces bit for bit, and its fallback for the elements and graphs it leaves out."""
    tree = order.tree
    names = list(outputs) if outputs is not None else list(tree)
    graph = _graph(tuple((k, tree[k]) for k in names))
    env = {s: as_float64(v) for s, v in env.items()}
    shape = np.broadcast(*[np.asarray(v) for v in env.values()]).shape
    with np.errstate(all="ignore"):
        val = _values(graph, env)
        partials = {x: _partials(graph, x, val, env) for x in graph.order}

    # Roundings: (node, relative budget, eta, magnitude, edges) whose error is scaled by the
    # node's adjoint; or, where edges is not None, by the adjoint along those (parent, index)
    # edges only (see the casts below).
    hyper_unit = max((f.u for f in (prec.hyper, order.scalar) if f is not None and f != FLOAT64),
                     default=0.0)
    terms: list[_Term] = []
    count, worst_u = 0, 0.0
    cast: dict[sp.Basic, list[tuple[sp.Basic, int]]] = {}
    for x in graph.order:
        n = graph.nodes[x]
        v = np.abs(val[x])
        if n.kind == "leaf" and n.scalar and not n.integer and hyper_unit:
            eta = (prec.hyper or order.scalar).eta
            terms.append((x, hyper_unit, eta, v, None))
            count += 1
            worst_u = max(worst_u, hyper_unit)
            continue
        fmt = _unit(n, order, prec)
        if fmt is not None:
            budget = prec.ulps.get(_KIND_BUDGET.get(n.kind, "add"), 1) * n.roundings
            mag = v
            if n.kind == "add" and len(n.children) > 2:
                mag = sum((np.abs(val[a]) for a in n.children), np.zeros(shape))
            terms.append((x, budget * fmt.u, n.roundings * fmt.eta, mag, None))
            count += n.roundings
            worst_u = max(worst_u, fmt.u)
        # A scalar operand of a tensor operation is cast to the compute format first. The cast
        # is one deterministic rounding, but it perturbs only the tensor operations that take
        # the scalar: scalar arithmetic on it (1 - beta2 next to v * beta2) uses the exact
        # double. Its error therefore flows along those edges only, not through the scalar's
        # total adjoint, where the uses can cancel (d v'/d beta2 = v - g^2).
        if not n.scalar and n.kind != "store":
            for i, a in enumerate(n.children):
                ca = graph.nodes[a]
                if (ca.scalar and not ca.integer and ca.kind != "const"
                        and ca.role != "compute"
                        and prec.compute.precision < order.scalar.precision):
                    cast.setdefault(a, []).append((x, i))
    for a, edges in cast.items():
        terms.append((a, prec.ulps.get("cast", 1) * prec.compute.u, prec.compute.eta,
                      np.abs(val[a]), tuple(edges)))
        count += 1
        worst_u = max(worst_u, prec.compute.u)

    # Each rounding's error (k u |x| + eta / 2) once, not once per output it reaches.
    with np.errstate(invalid="ignore", over="ignore"):
        terms = [(x, rel, eta, np.where(mag == 0, 0.0, rel * mag + eta / 2), edges)
                 for x, rel, eta, mag, edges in terms]

    # Domain: every intermediate finite and inside the range of the format it lives in.
    in_domain = np.ones(shape, dtype=bool)
    for x in graph.order:
        n = graph.nodes[x]
        limit = FLOAT64.max if n.scalar else prec.compute.max
        if n.kind == "store":
            limit = min(limit, {"param": prec.param, "state": prec.state,
                                "compute": prec.compute}[n.role].max)
        in_domain &= np.broadcast_to(np.isfinite(val[x]) & (np.abs(val[x]) <= limit), shape)

    # max is 1-Lipschitz but has no derivative at a tie: where the operands' own rounding errors
    # could reorder them, the computed max may take the operand that is not the exact maximum.
    # There every operand that could win gets weight 1: |max(a', b') - max(a, b)| <=
    # max(|a' - a|, |b' - b|), which the sum of their bounds covers.
    margin_all = (1 + 2 * count * worst_u) * (1 + 2.0**-40)
    for x in graph.order:
        if graph.nodes[x].kind == "max":
            children = graph.nodes[x].children
            errs = [_first_order(graph, c, partials, terms, shape) * margin_all for c in children]
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
        out_fmt = prec.param if name == "theta" else prec.state
        adj = _adjoints(graph, root, partials)
        total = _first_order(graph, root, partials, terms, shape, adj)
        n_total, u_total = count, worst_u
        # The final store to the output's format, unless the order already stored it there.
        if graph.nodes[root].kind != "store" and out_fmt.precision < prec.compute.precision:
            r = np.abs(val[root])
            total = total + np.where(r == 0, 0.0, prec.ulps.get("store", 1) * out_fmt.u * r
                                     + out_fmt.eta / 2)
            n_total += 1
            u_total = max(u_total, out_fmt.u)
        root_ok = in_domain & np.broadcast_to(np.abs(val[root]) <= out_fmt.max, shape)
        # Second-order terms are at most (sum of the deltas) times the first-order ones.
        margin = (1 + 2 * n_total * u_total) * (1 + 2.0**-40)
        value = np.where(root_ok & np.isfinite(total), total * margin, np.inf)
        sens = {x.name: np.broadcast_to(np.abs(adj[x]), shape) * margin for x in adj
                if isinstance(x, sp.Symbol) and not graph.nodes[x].scalar}
        result[name] = Bound(value, root_ok & np.isfinite(total), sens,
                             np.broadcast_to(val[root], shape))
    return result


#: (node, relative budget, eta, error k u |x| + eta / 2, edges the error flows along or None).
_Term = tuple[sp.Basic, float, float, np.ndarray, tuple[tuple[sp.Basic, int], ...] | None]


def _first_order(graph: _Graph, root: sp.Basic, partials, terms: list[_Term], shape,
                 adj: dict[sp.Basic, np.ndarray] | None = None) -> np.ndarray:
    """sum_i (k_i u_i |x_i| + eta_i / 2) |d root / d x_i| over the roundings that reach root."""
    if adj is None:
        adj = _adjoints(graph, root, partials)
    total = np.zeros(shape)
    for x, _rel, _eta, err, edges in terms:
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


def _adjoints(graph: _Graph, root: sp.Basic, partials) -> dict[sp.Basic, np.ndarray]:
    reach = plan.reachable(graph, root)
    adj: dict[sp.Basic, np.ndarray] = {root: np.float64(1.0)}
    for x in reversed(graph.order):
        if x not in reach or x not in adj:
            continue
        for child, p in zip(graph.nodes[x].children, partials[x], strict=True):
            contribution = _mul_adjoint(adj[x], p)
            adj[child] = adj[child] + contribution if child in adj else contribution
    return adj


def bound(order: Order, env: Mapping[sp.Symbol, Any], prec: Precision,
          outputs: Iterable[str] | None = None) -> dict[str, Bound]:
    """The bound for each output of `order` at the inputs `env` (symbol -> value or array)."""
    names = tuple(outputs) if outputs is not None else tuple(order.tree)
    return evaluate(order, env, (prec,), names, names)[0]


def evaluate(order: Order, env: Mapping[sp.Symbol, Any], precs: Sequence[Precision],
             graph_names: Sequence[str], names: Sequence[str], *, sensitivity: bool = True,
             lower: Iterable[int] = ()) -> list[dict[str, Bound]]:
    """`reference_bound(order, env, p, graph_names)` restricted to `names`, for every p in
    `precs`, from one evaluation of the values and adjoints (`spec.plan`).

    For the profiles whose index is in `lower`, `value` is a lower value of the bound instead
    (`spec.plan.Wanted`), with no domain: enough to accept elements, not to judge them."""
    tree = order.tree
    graph = _graph(tuple((k, tree[k]) for k in graph_names))
    env = {s: as_float64(v, copy=False) for s, v in env.items()}
    shape = np.broadcast(*[np.asarray(v) for v in env.values()]).shape
    if not plan.supported(graph):
        return [{k: r[k] for k in names}
                for r in (reference_bound(order, env, p, graph_names) for p in precs)]
    lower = set(lower)
    wanted = tuple(plan.Wanted(plan.Weighting(p, order.scalar), domain=i not in lower,
                               lower=i in lower) for i, p in enumerate(precs))
    compiled = plan.compile_plan(graph, tuple(names), wanted, sensitivity)
    raw = plan.run_plan(compiled, env, shape, names, len(wanted))
    out: list[dict[str, Bound]] = []
    for w, prec in enumerate(precs):
        result: dict[str, Bound] = {}
        redo: dict[str, np.ndarray] = {}
        for name in names:
            r = raw[name][w]
            result[name] = Bound(r.value, r.in_domain if r.in_domain is not None
                                 else np.ones(shape, dtype=bool), r.sensitivity, r.center)
            if w not in lower:
                # Where the unguarded sweep met 0 * inf, the reference decides (see spec.plan).
                bad = r.nan
                for sens in r.sensitivity.values():
                    bad = bad | np.isnan(sens)
                if np.any(bad):
                    redo[name] = np.broadcast_to(bad, shape)
        if redo:
            result.update(_redo(order, env, prec, graph_names, result, redo, shape))
        out.append(result)
    return out


def _redo(order: Order, env: Mapping[sp.Symbol, Any], prec: Precision,
          graph_names: Sequence[str], result: dict[str, Bound], redo: dict[str, np.ndarray],
          shape: tuple[int, ...]) -> dict[str, Bound]:
    """The reference engine's bound at the flagged elements, patched into `result`."""
    mask = np.logical_or.reduce(list(redo.values()))
    flat = np.flatnonzero(mask)
    sub = restrict(env, shape, flat)
    ref = reference_bound(order, sub, prec, graph_names)
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


__all__ = ["Bound", "LazyMaximum", "Precision", "IEEE_ULPS", "bound", "evaluate",
           "reference_bound", "max_over_orders", "environment",
           "FLOAT32"]
