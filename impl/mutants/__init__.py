"""Seeded-defect kernels: what a conformance suite must reject (its power)."""

from impl.mutants.formula import MUTANTS

__all__ = ["MUTANTS"]
