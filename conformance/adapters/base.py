"""The adapter protocol: everything the suite needs from an implementation, and nothing more.

An implementation is observed only through this protocol: create it with hyperparameters and
parameter groups, feed gradients, read parameters and, where it exposes them, its state. Values
cross the boundary as float64 numpy arrays, which hold every float32/bf16/fp16 value exactly, so
any framework can be wrapped. docs/adapters.md ("Writing an adapter") documents it for users.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class GroupSetup:
    """One parameter group: initial values (float64, exactly representable in the dtype) and
    hyperparameters by spec name: lr, beta1, beta2, eps, weight_decay."""

    params: list[np.ndarray]
    hyper: dict[str, float]


@dataclass
class Setup:
    groups: list[GroupSetup]
    dtype: str = "float32"
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)  # amsgrad, maximize

    @property
    def n_params(self) -> int:
        return sum(len(g.params) for g in self.groups)

    def group_of(self) -> list[int]:
        """Group index of each parameter, in creation order."""
        return [gi for gi, g in enumerate(self.groups) for _ in g.params]


@dataclass
class ParamState:
    """One parameter's optimizer state in the spec's terms (float64 arrays, exact)."""

    m: np.ndarray | None
    v: np.ndarray | None
    step: int
    vmax: np.ndarray | None = None
    dtype: str | None = None  # the dtype the state is stored in, if known
    #: the other rules' state by spec name: buf (momentum buffer), accum (Adagrad's sum),
    #: gavg (centered RMSProp's gradient average). m, v are None where a rule has none.
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def as_mapping(self) -> dict[str, np.ndarray]:
        out = {k: x for k, x in (("m", self.m), ("v", self.v), ("vmax", self.vmax))
               if x is not None}
        out.update(self.extra)
        return out

    @classmethod
    def of(cls, values: dict[str, np.ndarray], step: int, dtype: str | None = None
           ) -> ParamState:
        """A state from spec-named arrays (m, v, vmax, buf, accum, gavg)."""
        rest = {k: x for k, x in values.items() if k not in ("m", "v", "vmax")}
        return cls(values.get("m"), values.get("v"), step, values.get("vmax"), dtype, rest)

    def mapped(self, fn) -> ParamState:
        """The same state with `fn(name, array)` applied to every array (slicing, scaling)."""
        return ParamState.of({k: fn(k, x) for k, x in self.as_mapping().items()}, self.step,
                             self.dtype)


@runtime_checkable
class Run(Protocol):
    """One live optimizer instance. Parameters are indexed in creation order, across groups."""

    def step(self, grads: Sequence[np.ndarray | None]) -> None:
        """One optimizer step; None means the parameter has no gradient this step."""

    def params(self) -> list[np.ndarray]:
        """Current parameter values as float64 arrays."""


class Adapter(Protocol):
    """What `--impl` resolves to. Optional capabilities are plain methods of the Run:

    - `read_state(i) -> ParamState | None` and `write_state(i, ParamState) -> bool`: state replay
      (None / False when the layout is unknown: the suite falls back to trajectory checks);
    - `set_lr(group, lr)`: a schedule changing a group's learning rate between steps;
    - `state_dict()` and `load_state_dict(sd)`: save and restore;
    - `amp_step(grads, scale)`: one step with mixed-precision loss scaling, `grads` already
      multiplied by `scale` (torch.amp.GradScaler, or a kernel's grad_scale/found_inf); raises
      NotImplementedError where the target cannot take it (scale.grad_scaler then skips).
    """

    name: str
    version: str
    options: Mapping[str, Any]  # the options (amsgrad, maximize, ...) this target accepts

    def create(self, setup: Setup) -> Run: ...


def takes_none_grads(adapter: Any) -> bool:
    """Whether the target has "no gradient this step" (None). Frameworks without it (JAX, where
    an unused parameter's gradient is zero) set `none_grads = False` on the adapter; properties
    that need a missing gradient then skip, or draw none, saying why."""
    return bool(getattr(adapter, "none_grads", True))


def declared_orders(adapter: Any) -> tuple[str, ...]:
    """The evaluation orders the target declares it computes in, by name (`orders = ("keras",)`
    on the adapter; spec/orders.py: DECLARABLE). The bound then also covers them, where they are
    written for the conventions the run declares; under other conventions they are not used."""
    names = getattr(adapter, "orders", ())
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{type(adapter).__name__}.orders must be a tuple of order names, "
                        f"got {names!r}")
    return tuple(names)


def declared_hyper(adapter: Any, dtype: str) -> str | None:
    """The dtype the target takes its hyperparameters and their arithmetic in, where its adapter
    says (`hyper_dtype = "float32"`: JAX computes beta^t and a Python float times a float32
    array in float32), for parameters no finer than that dtype; None otherwise (exact). A run's
    --hyper-dtype takes precedence."""
    from adamw_conformance.spec.formats import format_of

    hyper = getattr(adapter, "hyper_dtype", None)
    if hyper is None or format_of(dtype).precision > format_of(hyper).precision:
        return None
    return str(hyper)


NO_NONE_GRADS = "has no missing gradient (None): a framework without it cannot be judged on it"


def capability(run: Any, name: str) -> bool:
    return callable(getattr(run, name, None))
