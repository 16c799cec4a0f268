"""Markers that an evaluation order puts into a SymPy tree; mathematically the identity.

`StoreParam(x)` / `StoreState(x)`: x is written to a tensor of the parameter's / the state's dtype
here (the output of one ATen op, say), so it is rounded to that format. `Opmath(w)`: a scalar the
kernel takes into its compute type before doing its own arithmetic on it (ATen's lerp rounds the
weight to float, then forms 1 - w from the rounded value). `strip` removes them for symbolic
comparison with the canonical rule.
"""

from __future__ import annotations

import sympy as sp


class StoreParam(sp.Function):
    nargs = 1


class StoreState(sp.Function):
    nargs = 1


class Opmath(sp.Function):
    nargs = 1


STORES = (StoreParam, StoreState)
MARKERS = (*STORES, Opmath)


def strip(expr: sp.Expr) -> sp.Expr:
    for marker in MARKERS:
        expr = expr.replace(marker, lambda x: x)
    return expr
