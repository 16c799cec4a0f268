"""The named ways real libraries differ on AdamW (docs/conventions.md).

Each is a parameter of the spec, not a bug: an audit names which one an implementation follows,
and a conformance run judges against the ones it declares. The defaults are PyTorch's and optax's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

DecayCoupling = Literal["lr", "schedule", "independent"]
DecayTarget = Literal["previous", "updated"]
EpsPlacement = Literal["after", "hat", "root", "floor"]
Counter = Literal["parameter", "group", "global"]
Moments = Literal["raw", "debiased"]
AMSGrad = Literal["none", "raw_max", "corrected_max"]

CHOICES: dict[str, tuple[str, ...]] = {
    "decay_coupling": ("lr", "schedule", "independent"),
    "decay_target": ("previous", "updated"),
    "eps": ("after", "hat", "root", "floor"),
    "counter": ("parameter", "group", "global"),
    "moments": ("raw", "debiased"),
    "amsgrad": ("none", "raw_max", "corrected_max"),
}

EXPLANATIONS: dict[str, dict[str, str]] = {
    "decay_coupling": {
        "lr": "decay factor 1 - lr*wd (PyTorch, optax, Keras)",
        "schedule": "decay factor 1 - (lr/initial_lr)*wd: the paper's schedule multiplier",
        "independent": "decay factor 1 - wd, whatever lr is",
    },
    "decay_target": {
        "previous": "decay applies to the parameters before this step's Adam update",
        "updated": "decay applies to the parameters after this step's Adam update",
    },
    "eps": {
        "after": "lr * mh / (sqrt(vh) + eps): eps after bias correction",
        "hat": "eps added to sqrt(v) before v's bias correction = eps / sqrt(1-b2^t) (Keras, TF)",
        "root": "eps inside the square root: lr * mh / sqrt(vh + eps)",
        "floor": "eps as a floor of the denominator: lr * mh / max(sqrt(vh), eps) (heavyball)",
    },
    "counter": {
        "parameter": "each parameter counts its own steps, only those with a gradient (PyTorch)",
        "group": "one counter per parameter group",
        "global": "one counter for the whole optimizer",
    },
    "moments": {
        "raw": "state holds m and v; bias correction is applied when they are used",
        "debiased": "state holds the bias-corrected mh, vh (\"debiased betas\")",
    },
    "amsgrad": {
        "none": "no AMSGrad",
        "raw_max": "vmax = max(vmax, v) on raw v, then bias-corrected (PyTorch, Keras)",
        "corrected_max": "vmax = max(vmax, vh) on bias-corrected v (optax)",
    },
}


@dataclass(frozen=True)
class Convention:
    decay_coupling: DecayCoupling = "lr"
    decay_target: DecayTarget = "previous"
    eps: EpsPlacement = "after"
    counter: Counter = "parameter"
    moments: Moments = "raw"
    amsgrad: AMSGrad = "none"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value not in CHOICES[f.name]:
                raise ValueError(
                    f"convention {f.name}={value!r} is not one of {', '.join(CHOICES[f.name])}")

    def changed(self) -> dict[str, str]:
        """The fields that differ from the default convention."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != f.default}

    def label(self) -> str:
        """'default' or e.g. 'eps=hat,amsgrad=raw_max': readable, and stable for test ids."""
        return ",".join(f"{k}={v}" for k, v in self.changed().items()) or "default"

    @classmethod
    def parse(cls, text: str) -> Convention:
        """The inverse of `label`: 'eps=hat,counter=group' (or 'default', or '')."""
        text = text.strip()
        if text in ("", "default"):
            return cls()
        kwargs: dict[str, str] = {}
        for item in text.split(","):
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in CHOICES:
                raise ValueError(
                    f"bad convention {item!r}: expected NAME=VALUE with NAME one of "
                    f"{', '.join(CHOICES)}")
            kwargs[key] = value
        return replace(cls(), **kwargs)


DEFAULT = Convention()
