"""The expression DAG both bound engines walk: one node per distinct subexpression of an order's
outputs, children before parents.

The graph is structure only: each node's kind (the operation it stands for), its operands, and
whether it depends on hyperparameters and t alone ("scalar") or is exact integer arithmetic on t.
Which of those operations round, and to which format, is the rounding model's business
(`spec.rounding_model`). The same subexpression used twice is one node: a deterministic kernel
computes it once, identically.

`conditions` and `select` evaluate a Piecewise node (which branch each element takes); both the
interpreted reference and the compiled engine call them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import sympy as sp
from adamw_conformance.spec.markers import Opmath, StoreParam, StoreState
from adamw_conformance.spec.symbols import SCALARS, t


@dataclass
class Node:
    """One subexpression: what operation it is and on which operands."""

    expr: sp.Basic
    kind: str  # leaf, const, add, mul, sqrt, rsqrt, recip, square, pow, abs, max, select, store
    children: list[sp.Basic]
    scalar: bool  # depends on hyperparameters and t only
    integer: bool  # exact integer arithmetic on t (exponents such as t - 1)
    role: str = ""  # for stores: "param", "state" or "compute" (an Opmath cast)
    denominators: int = 0  # for mul: how many trailing children are divisors
    constant: float = 1.0  # for mul: the product of numeric factors


class Graph:
    """The DAG of `outputs` (name -> expression): `nodes` by expression, `order` children first."""

    def __init__(self, outputs: Mapping[str, sp.Expr]) -> None:
        self.outputs = dict(outputs)
        self.nodes: dict[sp.Basic, Node] = {}
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

    def _make(self, x: sp.Basic) -> Node:
        free = x.free_symbols
        scalar = free <= SCALARS
        integer = free <= {t} and (x.is_integer is True)
        children = self._children(x)
        if x.is_Number:
            return Node(x, "const", [], True, bool(x.is_integer))
        if isinstance(x, sp.Symbol):
            return Node(x, "leaf", [], scalar, x == t)
        if isinstance(x, sp.Add):
            return Node(x, "add", children, scalar, integer)
        if isinstance(x, sp.Mul):
            nums = [a for a in x.args if not a.is_Number and not (isinstance(a, sp.Pow)
                                                                  and a.exp == -1)]
            dens = [a.base for a in x.args if isinstance(a, sp.Pow) and a.exp == -1]
            const = float(sp.Mul(*[a for a in x.args if a.is_Number]))
            return Node(x, "mul", nums + dens, scalar, integer, denominators=len(dens),
                        constant=const)
        if isinstance(x, sp.Pow):
            kind = {sp.S.Half: "sqrt", -sp.S.Half: "rsqrt", sp.S.NegativeOne: "recip",
                    sp.Integer(2): "square"}.get(x.exp, "pow")
            return Node(x, kind, children, scalar, integer)
        if isinstance(x, sp.Abs):
            return Node(x, "abs", children, scalar, integer)
        if isinstance(x, sp.Max):
            return Node(x, "max", children, scalar, integer)
        if isinstance(x, sp.Piecewise):
            return Node(x, "select", children, scalar, integer)
        if isinstance(x, (StoreParam, StoreState)):
            role = "param" if isinstance(x, StoreParam) else "state"
            return Node(x, "store", children, scalar, integer, role)
        if isinstance(x, Opmath):
            return Node(x, "store", children, scalar, integer, "compute")
        raise NotImplementedError(f"no rounding model for {type(x).__name__}: {x}")


@cache
def graph_of(outputs: tuple[tuple[str, sp.Expr], ...]) -> Graph:
    """The graph of (name, expression) pairs, built once per distinct tuple."""
    return Graph(dict(outputs))


def reachable(graph: Graph, root: sp.Basic) -> set[sp.Basic]:
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


@cache
def _condition_function(cond: sp.Basic) -> tuple[list[sp.Symbol], Any]:
    # lambdify compiles Python source: once per condition, not once per element array.
    syms = sorted(cond.free_symbols, key=str)
    return syms, sp.lambdify(syms, cond, "numpy")


def conditions(x: sp.Piecewise, env: Mapping[sp.Symbol, np.ndarray]) -> list[np.ndarray]:
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


def select(x: sp.Piecewise, env: Mapping[sp.Symbol, np.ndarray],
           branches: list[np.ndarray]) -> np.ndarray:
    """The Piecewise's value: each element's branch, from the branches' values."""
    out = np.zeros(np.broadcast(*branches).shape)
    for mask, b in zip(conditions(x, env), branches, strict=True):
        out = np.where(mask, b, out)
    return out


__all__ = ["Node", "Graph", "graph_of", "reachable", "conditions", "select"]
