"""Markers that an evaluation order puts into a SymPy tree; mathematically the identity.

`StoreParam(x)` / `StoreState(x)`: x is written to a tensor of the parameter's / the state's dtype
here (the output of one ATen op, say), so it is rounded to that format. `strip` removes them for
symbolic comparison with the canonical rule.
"""

from __future__ import annotations

import sympy as sp


class StoreParam(sp.Function):
    nargs = 1


class StoreState(sp.Function):
    nargs = 1


STORES = (StoreParam, StoreState)


def strip(expr: sp.Expr) -> sp.Expr:
    for marker in STORES:
        expr = expr.replace(marker, lambda x: x)
    return expr
