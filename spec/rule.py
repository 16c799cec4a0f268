"""What a rule is: SymPy expressions of the next parameter and state.

A rule is written once, as a Python function over SymPy symbols. Built normally, SymPy gives the
canonical expression (for the oracle and the symbolic facts). Built under
``sympy.evaluate(False)``, the same code keeps the order of operations it is written in: that tree
is the "straightforward" evaluation order the rounding bounds are derived from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import sympy as sp
from adamw_conformance.spec import symbols as S

Update = dict[str, sp.Expr]


@dataclass(frozen=True, eq=False)
class Rule:
    """One update rule: hyperparameters, state, and how one step maps them to new values.

    `build()` returns {"theta": ..., <state name>: ...}: expressions of the previous state
    (symbols named in `state`), the gradient `g`, the counter `t` and the hyperparameters.
    """

    name: str
    hyperparameters: tuple[sp.Symbol, ...]
    state: tuple[sp.Symbol, ...]
    build: Callable[[], Update]
    defaults: Mapping[str, float] = field(default_factory=dict)
    initial_state: Mapping[str, float] = field(default_factory=dict)
    description: str = ""
    #: gradient ascent (`spec.variants.maximize`): the orders negate g as the rule does
    maximized: bool = False

    @cached_property
    def update(self) -> Update:
        """Canonical SymPy expressions of the step (what the oracle evaluates)."""
        return {k: sp.sympify(e) for k, e in self.build().items()}

    @cached_property
    def tree(self) -> Update:
        """The same step with SymPy's rewriting switched off: its evaluation order as written."""
        with sp.evaluate(False):
            return self.build()

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("theta", *(s.name for s in self.state))

    @property
    def inputs(self) -> tuple[sp.Symbol, ...]:
        """Every symbol a step depends on, in a fixed order."""
        return (S.theta, S.g, S.t, *self.state, *self.hyperparameters)

    @property
    def hyperparameter_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hyperparameters)

    def __repr__(self) -> str:
        return f"Rule({self.name!r})"


def substitute(rule: Rule, name: str, mapping: Mapping[sp.Symbol, sp.Expr],
               description: str = "") -> Rule:
    """A rule whose step is `rule`'s with symbols replaced before it is built (e.g. g -> -g)."""

    def build() -> Update:
        # xreplace keeps the tree's structure, so the derived rule's order is the original's.
        return {k: e.xreplace(dict(mapping)) for k, e in rule.build().items()}

    return Rule(name, rule.hyperparameters, rule.state, build, rule.defaults,
                rule.initial_state, description or rule.description, rule.maximized)
