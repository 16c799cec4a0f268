"""Named variants that apply to any rule of the lineage."""

from __future__ import annotations

from dataclasses import replace

from adamw_conformance.spec.rule import Rule, substitute
from adamw_conformance.spec.symbols import g


def maximize(rule: Rule) -> Rule:
    """Gradient ascent: the rule applied to -g (PyTorch's `maximize=True`)."""
    ascent = substitute(rule, f"{rule.name}+maximize", {g: -g},
                        description=f"{rule.description}; maximize (g -> -g)")
    return replace(ascent, maximized=True)
