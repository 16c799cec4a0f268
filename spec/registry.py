"""Every rule of the lineage by name: the names adapters, tests and reports use.

What the suite knows about each rule beyond its step (how it is judged, how torch names it) is
in `adamw_conformance.core.rule_table`, one entry per name here.
"""

from __future__ import annotations

from collections.abc import Callable

from adamw_conformance.spec.conventions import DEFAULT, Convention
from adamw_conformance.spec.rule import Rule
from adamw_conformance.spec.rules.adam import adam, adamw
from adamw_conformance.spec.rules.adamax import adamax
from adamw_conformance.spec.rules.adaptive import adagrad, rmsprop
from adamw_conformance.spec.rules.sgd import (
    momentum_ema,
    momentum_sgd,
    nesterov,
    sgd,
    sgd_decoupled,
)
from adamw_conformance.spec.variants import maximize

#: A rule under a convention (`spec.conventions`).
Factory = Callable[[Convention], Rule]


def _plain(factory: Callable[[], Rule]) -> Factory:
    """A rule without conventions: they are the Adam family's."""

    def build(convention: Convention) -> Rule:
        rule = factory()
        if convention != DEFAULT:
            raise ValueError(f"conventions apply to the Adam family, not to {rule.name!r}")
        return rule

    return build


_FACTORIES: dict[str, Factory] = {
    "sgd": _plain(sgd),
    "sgd_decoupled": _plain(sgd_decoupled),
    "momentum": _plain(momentum_sgd),
    "momentum_ema": _plain(momentum_ema),
    "nesterov": _plain(nesterov),
    "adagrad": _plain(adagrad),
    "rmsprop": _plain(rmsprop),
    "rmsprop_momentum": _plain(lambda: rmsprop(with_momentum=True)),
    "rmsprop_centered": _plain(lambda: rmsprop(centered=True)),
    "rmsprop_centered_momentum": _plain(lambda: rmsprop(centered=True, with_momentum=True)),
    "adam": lambda convention: adam(convention=convention),
    "adam_l2": lambda convention: adam(weight_decay_l2=True, convention=convention),
    "adamw": adamw,
    "adamax": _plain(adamax),
}

_CACHE: dict[tuple[str, Convention, bool], Rule] = {}


def names() -> tuple[str, ...]:
    return tuple(_FACTORIES)


def get(name: str, convention: Convention = DEFAULT, maximized: bool = False) -> Rule:
    """The rule called `name`, built once and cached (its SymPy trees are cached on it too).

    `convention` applies to the Adam family (it is where the conventions live).
    """
    key = (name, convention, maximized)
    if key not in _CACHE:
        if name not in _FACTORIES:
            raise KeyError(f"no rule named {name!r}; known rules: {', '.join(_FACTORIES)}")
        rule = _FACTORIES[name](convention)
        _CACHE[key] = maximize(rule) if maximized else rule
    return _CACHE[key]
