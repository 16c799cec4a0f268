"""Every rule of the lineage by name: the names adapters, tests and reports use."""

from __future__ import annotations

from collections.abc import Callable

from adamw_conformance.spec.conventions import DEFAULT, Convention
from adamw_conformance.spec.rule import Rule
from adamw_conformance.spec.rules.adam import adam, adamw
from adamw_conformance.spec.rules.adaptive import adagrad, rmsprop
from adamw_conformance.spec.rules.sgd import (
    momentum_ema,
    momentum_sgd,
    nesterov,
    sgd,
    sgd_decoupled,
)
from adamw_conformance.spec.variants import maximize

_FACTORIES: dict[str, Callable[[], Rule]] = {
    "sgd": sgd,
    "sgd_decoupled": sgd_decoupled,
    "momentum": momentum_sgd,
    "momentum_ema": momentum_ema,
    "nesterov": nesterov,
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "rmsprop_momentum": lambda: rmsprop(with_momentum=True),
    "rmsprop_centered": lambda: rmsprop(centered=True),
    "rmsprop_centered_momentum": lambda: rmsprop(centered=True, with_momentum=True),
    "adam": adam,
    "adam_l2": lambda: adam(weight_decay_l2=True),
    "adamw": adamw,
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
        if name in ("adam", "adam_l2"):
            rule = adam(weight_decay_l2=name == "adam_l2", convention=convention)
        elif name == "adamw":
            rule = adamw(convention)
        else:
            if convention != DEFAULT:
                raise ValueError(f"conventions apply to the Adam family, not to {name!r}")
            rule = _FACTORIES[name]()
        _CACHE[key] = maximize(rule) if maximized else rule
    return _CACHE[key]
