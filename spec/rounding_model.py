"""The rounding-error model both bound engines compute: written here once.

First-order (1 + delta) model (docs/tolerance-model.md): every rounding i perturbs its exact
result x_i to x_i (1 + delta_i) + e_i with |delta_i| <= k_i u_i and |e_i| <= eta_i / 2
(underflow). To first order the output moves by sum_i delta_i x_i (d out / d x_i), so

    B = margin * sum_i (k_i u_i |x_i| + eta_i / 2) |d out / d x_i|

with u_i the unit roundoff of the format x_i is rounded to, eta_i its smallest subnormal, and k_i
the operation's budget in units of u (`IEEE_ULPS`, per `Precision`). The derivative is the node's
adjoint in the expression DAG (`spec.expression_graph`); the engines that evaluate it are
`spec.reference_bound` (interpreted, the definition) and `spec.plan` (compiled, bit-identical).
This module says which node rounds to which format (`unit`), how often (`rounding_count`), the terms
of an order under a profile (`rounding_terms`), each output's final store and margin
(`output_model`), and the range every intermediate must stay in (`domain_limit`):

- tensor operations round to `compute` (PyTorch's opmath: float32 for bf16/fp16 tensors);
- `StoreParam` / `StoreState` markers and every output round to the parameter / state format;
- hyperparameter-only ("scalar") arithmetic rounds to the order's scalar format (double for Python
  floats), and a scalar entering a tensor operation is cast to `compute`;
- `hyper`, if set, is a format every hyperparameter is rounded to before use (a kernel that takes
  them as fp32 or bf16 tensors).

Products and quotients are order-free to first order (every rounding in a chain perturbs the whole
chain relatively); n-ary sums are bounded by their largest possible partial sum. Elements where an
intermediate overflows its format, or is not finite, are outside the model: their bound is inf and
`in_domain` is False, so they are never judged by it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import sympy as sp
from adamw_conformance.spec.expression_graph import Graph, Node
from adamw_conformance.spec.formats import FLOAT32, FLOAT64, Format, format_of, opmath

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


# --- which node rounds where ---------------------------------------------------------------------

def _is_pow2(c: float) -> bool:
    m, _ = np.frexp(abs(c))
    return c != 0 and m == 0.5


def rounding_count(n: Node) -> int:
    """How many roundings node n performs (wherever its result lives, see `unit`)."""
    if n.kind == "add":
        return len(n.children) - 1
    if n.kind == "mul":
        # Each product after the first and each quotient, and the numeric factor unless it is a
        # power of two (exact).
        factors = len(n.children) - n.denominators
        return max(factors - 1, 0) + n.denominators + (0 if _is_pow2(n.constant) else 1)
    if n.kind == "rsqrt":
        return 2  # a sqrt and a reciprocal
    if n.kind in ("sqrt", "recip", "square", "pow", "store"):
        return 1
    return 0  # leaf, const, abs, max, select: exact


def unit(n: Node, scalar: Format, prec: Precision) -> Format | None:
    """The format node n's result is rounded to under `prec`, with scalar arithmetic in `scalar`
    (the order's), or None if it is exact."""
    if n.kind in ("leaf", "const", "abs", "max", "select") or n.integer or rounding_count(n) == 0:
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


# --- the first-order terms -----------------------------------------------------------------------

_KIND_BUDGET = {"add": "add", "mul": "mul", "sqrt": "sqrt", "rsqrt": "sqrt", "recip": "div",
                "square": "mul", "pow": "pow", "store": "store"}


class Rounding(NamedTuple):
    """One term of the sum, without its values: its error is k u |x| + eta / 2 (`rounding_error`),
    with |x| the node's value, or for an n-ary add (`nary`) the sum of its operands' magnitudes.
    The error is weighted by the node's adjoint; or, where `edges` is not None, by the adjoint
    along those (parent, operand index) edges only (a cast of a scalar operand)."""

    node: sp.Basic
    rel: float  # k u
    eta: float
    nary: bool
    edges: tuple[tuple[sp.Basic, int], ...] | None


@dataclass(frozen=True)
class Terms:
    """The roundings of an order under one profile, and what the margin needs of them."""

    roundings: tuple[Rounding, ...]
    count: int  # how many roundings in all
    worst_u: float  # the largest unit roundoff among them

    @property
    def margin(self) -> float:
        """The margin of these roundings alone (without an output's final store)."""
        return margin(self.count, self.worst_u)


def store_budget(prec: Precision, role: str) -> float:
    """The budget of a store to the parameter's format (`role` "param") or the state's: a
    profile may give the parameter's its own ("store_param": a stochastic rounding's 2, one ulp
    either way), else both take "store"."""
    store = prec.ulps.get("store", 1)
    return prec.ulps.get("store_param", store) if role == "param" else store


def _budget(prec: Precision, n: Node) -> float:
    if n.kind == "store" and n.role in ("param", "state"):
        return store_budget(prec, n.role)
    return prec.ulps.get(_KIND_BUDGET.get(n.kind, "add"), 1)


def rounding_terms(graph: Graph, prec: Precision, scalar: Format) -> Terms:
    """Every rounding of `graph` under `prec`, with scalar arithmetic in `scalar`, in graph order
    (the casts of scalar operands last): the order both engines sum them in."""
    hyper_unit = max((f.u for f in (prec.hyper, scalar) if f is not None and f != FLOAT64),
                     default=0.0)
    terms: list[Rounding] = []
    count, worst_u = 0, 0.0
    cast: dict[sp.Basic, list[tuple[sp.Basic, int]]] = {}
    for x in graph.order:
        n = graph.nodes[x]
        if n.kind == "leaf" and n.scalar and not n.integer and hyper_unit:
            terms.append(Rounding(x, hyper_unit, (prec.hyper or scalar).eta, False, None))
            count += 1
            worst_u = max(worst_u, hyper_unit)
            continue
        fmt = unit(n, scalar, prec)
        if fmt is not None:
            r = rounding_count(n)
            budget = _budget(prec, n) * r
            nary = n.kind == "add" and len(n.children) > 2
            terms.append(Rounding(x, budget * fmt.u, r * fmt.eta, nary, None))
            count += r
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
                        and prec.compute.precision < scalar.precision):
                    cast.setdefault(a, []).append((x, i))
    for a, edges in cast.items():
        terms.append(Rounding(a, prec.ulps.get("cast", 1) * prec.compute.u, prec.compute.eta,
                              False, tuple(edges)))
        count += 1
        worst_u = max(worst_u, prec.compute.u)
    return Terms(tuple(terms), count, worst_u)


def rounding_error(rel: float, eta: float, mag: np.ndarray) -> np.ndarray:
    """k u |x| + eta / 2, and 0 where x is exactly 0 (a zero rounds to itself)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(mag == 0, 0.0, rel * mag + eta / 2)


# --- outputs: the final store and the margin -----------------------------------------------------

def margin(count: int, worst_u: float) -> float:
    """The factor on the first-order sum that covers the second-order terms: those are at most
    (the sum of the deltas, <= count * worst_u) times the first-order ones; the second factor
    covers the float64 arithmetic of the bound itself."""
    return (1 + 2 * count * worst_u) * (1 + 2.0**-40)


def output_format(name: str, prec: Precision) -> Format:
    """The format output `name` is stored in: the parameter's for theta, the state's otherwise."""
    return prec.param if name == "theta" else prec.state


@dataclass(frozen=True)
class OutputModel:
    """An output's own rounding and margin under one profile."""

    fmt: Format  # the format it is stored in (its range is part of the domain)
    store: Rounding | None  # the final store to `fmt`, unless the order already stored it there
    margin: float


def output_model(graph: Graph, name: str, prec: Precision, terms: Terms) -> OutputModel:
    """Output `name`'s final store (a rounding of the root, weighted by 1) and margin."""
    root = graph.outputs[name]
    fmt = output_format(name, prec)
    count, worst_u = terms.count, terms.worst_u
    store = None
    if graph.nodes[root].kind != "store" and fmt.precision < prec.compute.precision:
        role = "param" if name == "theta" else "state"
        store = Rounding(root, store_budget(prec, role) * fmt.u, fmt.eta, False, None)
        count += 1
        worst_u = max(worst_u, fmt.u)
    return OutputModel(fmt, store, margin(count, worst_u))


# --- the domain ----------------------------------------------------------------------------------

def domain_limit(n: Node, prec: Precision) -> float:
    """The largest magnitude node n's value may have inside the model: the range of the format it
    lives in (float64 for scalar arithmetic, compute for tensors, a store's target format)."""
    limit = FLOAT64.max if n.scalar else prec.compute.max
    if n.kind == "store":
        limit = min(limit, {"param": prec.param, "state": prec.state,
                            "compute": prec.compute}[n.role].max)
    return limit


__all__ = ["IEEE_ULPS", "Precision", "Bound", "rounding_count", "unit", "Rounding", "Terms",
           "store_budget",
           "rounding_terms", "rounding_error", "margin", "output_format", "OutputModel",
           "output_model", "domain_limit"]
