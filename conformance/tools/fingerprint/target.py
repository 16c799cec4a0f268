"""The target as the probes drive it: every call guarded, parameters made exact in its dtype,
and the model a candidate is judged by built from the answers a probe was given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from adamw_conformance.adapters.base import GroupSetup, ParamState, Setup, declared_hyper
from adamw_conformance.core.calls import create, guarded, step
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import Model
from adamw_conformance.core.precision import LOW_DTYPES
from adamw_conformance.core.replay import read_states
from adamw_conformance.core.strategies import representable
from adamw_conformance.spec.conventions import Convention
from adamw_conformance.tools.fingerprint.judging import Candidate, worst

#: One group of a setup: its parameters and hyperparameters.
Group = tuple[Sequence[np.ndarray], Mapping[str, float]]


@dataclass(frozen=True)
class Given:
    """The answers a probe is judged under, in the spec's terms: the rule the coupling probe
    showed and the conventions the probes it needs found (the defaults where they found none)."""

    rule: str = "adamw"
    convention: Convention = field(default_factory=Convention)


class Target:
    """An adapter, driven in one dtype on one device with a limit on every call."""

    def __init__(self, adapter: Any, dtype: str, device: str, timeout: float) -> None:
        self.adapter, self.dtype, self.device = adapter, dtype, device
        # Convention probes are judged at the loosest precision the target might have (its own
        # dtype's arithmetic for bf16/fp16): candidates differ by far more than that bound, and
        # a target that computes in bf16 is still identified. Precision is probed separately.
        compute = dtype if dtype in LOW_DTYPES else None
        from adamw_conformance.core.targets import capabilities

        hyper = declared_hyper(capabilities(adapter), dtype)
        self.cfg = Config(adapter, dtype=dtype, device=device, compute=compute, timeout=timeout,
                          hyper=hyper)
        self.declared = Config(adapter, dtype=dtype, device=device, timeout=timeout, hyper=hyper)
        # Orders the adapter declares (Keras': float32 scalars) widen the bound where the
        # convention under test is the one they are written for, as in a conformance run.
        self.orders = self.cfg.caps.orders

    def x(self, values: Sequence[float]) -> np.ndarray:
        """`values` rounded to the nearest of the target's dtype (exact inputs)."""
        return representable(np.asarray(values, dtype=np.float64), self.dtype)

    def setup(self, groups: Sequence[Group], options: Mapping[str, Any] | None = None) -> Setup:
        return Setup([GroupSetup([p.copy() for p in ps], dict(h)) for ps, h in groups],
                     self.dtype, self.device, dict(options or {}))

    def create(self, groups: Sequence[Group], options: Mapping[str, Any] | None = None) -> Any:
        """A fresh optimizer over `groups`."""
        return create(self.cfg, self.setup(groups, options))

    def params(self, run: Any) -> list[np.ndarray]:
        return guarded("params()", run.params, timeout=self.cfg.timeout)

    def step(self, run: Any, grads: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        """One step; the parameters after it, in float64."""
        step(self.cfg, run, grads)
        return [np.asarray(p, np.float64) for p in self.params(run)]

    def set_lr(self, run: Any, group: int, lr: float) -> None:
        guarded("set_lr()", run.set_lr, group, lr, timeout=self.cfg.timeout)

    def states(self, run: Any, n: int) -> list[ParamState | None] | None:
        """The state as the target stores it: the candidates a probe judges are conventions
        of the stored form (moments=debiased among them), not of the decoded one."""
        return guarded("read_state()", read_states, run, n, True, timeout=self.cfg.timeout)

    def layout(self) -> str:
        """How the target stores its state, as the layout probe found it (core/layout.py)."""
        from adamw_conformance.core.layout import of
        return of(self.cfg).describe()

    def orders_in_play(self, given: Given) -> str:
        """The orders a run under `given` would judge by, as the orders probe finds them from
        behaviour (core/forms.py), with its evidence."""
        from adamw_conformance.core import forms

        cfg = replace(self.declared, model=self.model(given))
        found = forms.of(cfg)
        return found.describe([o.name for o in replace(cfg.model, ruled_out=found.ruled_out)
                                .orders(cfg.precision())], evidence=True)

    def model(self, given: Given, rule: str | None = None, **conv: str) -> Model:
        """The model of `given` (its rule unless `rule` says another), with `conv` changed."""
        return Model(rule or given.rule, replace(given.convention, **conv),
                     declared_orders=self.orders)

    def worst(self, cand: Candidate, before: Sequence[np.ndarray],
              grads: Sequence[np.ndarray | None], after: Sequence[np.ndarray],
              states: Sequence[ParamState | None] | None = None) -> float:
        """The largest err/bound of a step under `cand` (judging.worst)."""
        return worst(self.cfg, cand, before, grads, after, states)


def fresh(theta: np.ndarray) -> list[ParamState | None]:
    """The state a candidate says one parameter starts from: zero moments, no step taken."""
    return [ParamState(np.zeros_like(theta), np.zeros_like(theta), 0)]
