"""Adapter for Keras 3 optimizers: `keras.optimizers.AdamW` (or a subclass with its constructor).

Backend: Keras fixes its backend once per process, when it is first imported, from the
KERAS_BACKEND environment variable. This module sets it to "torch" (already installed with the
suite) with `os.environ.setdefault` *before* importing keras, so an explicit choice wins:
`KERAS_BACKEND=jax pytest conformance --impl=keras-adamw` runs it on jax (where installed). A
process that imported keras earlier keeps that backend; the header shows it in the version.

How Keras' AdamW maps onto the spec (keras/src/optimizers/adam.py, base_optimizer.py):
- eps: `lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`: eps before v's bias
  correction, the spec's `eps=hat` convention.
- decay: `variable - variable * wd * lr` before the Adam step: the default coupling and target.
- counter: one `iterations` per optimizer. Keras has no parameter groups and one learning rate per
  optimizer, so each group gets its own optimizer instance: one counter per group
  (`counter=group`). A parameter with no gradient (None) is left out of `apply_gradients`
  (its variable and state untouched); a group with no gradient at all is not stepped.
- hyperparameters are cast to the variable's dtype before use (lr is a float32 variable):
  `alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)` is 0-dim-tensor arithmetic in that dtype. The
  adapter declares this evaluation order (`orders`, spec/orders.py: keras), so the bound covers
  Keras' float32 scalars where eps=hat is declared. In bfloat16, beta2 = 0.999 becomes 1.0
  (v stops decaying, 1 - b2^t = 0: no step), which fails at the declared precision.
Declare: `--conventions=eps=hat,counter=group` (known deviations: conformance/xfails/keras.txt).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
from adamw_conformance.adapters.base import ParamState, Setup  # noqa: E402


def is_keras_optimizer(obj: Any) -> bool:
    import keras

    return inspect.isclass(obj) and issubclass(obj, keras.optimizers.Optimizer)


def _numpy(x: Any) -> np.ndarray:
    value = getattr(x, "value", x)
    if hasattr(value, "detach"):  # torch backend: numpy has no bfloat16, go through float64
        return value.detach().to("cpu").double().numpy().copy()
    return np.asarray(value).astype(np.float64)


#: The spec's hyperparameter names -> Keras' constructor keywords.
_KEYWORDS = {"lr": "learning_rate", "beta1": "beta_1", "beta2": "beta_2", "eps": "epsilon",
             "weight_decay": "weight_decay"}


class KerasAdapter:
    """Drives `cls(learning_rate=, beta_1=, beta_2=, epsilon=, weight_decay=, **fixed)`, one
    instance per parameter group."""

    #: Keras' evaluation order (spec/orders.py: keras), used where eps=hat is declared.
    orders = ("keras",)

    def __init__(self, cls: type | None = None, fixed: dict[str, Any] | None = None,
                 name: str | None = None) -> None:
        import keras

        self.cls = cls or keras.optimizers.AdamW
        self.fixed = dict(fixed or {})
        self.name = (name or f"keras.optimizers.{self.cls.__name__}") + (
            "(" + ", ".join(f"{k}={v!r}" for k, v in self.fixed.items()) + ")"
            if self.fixed else "")
        self.version = f"keras {keras.__version__}, backend {keras.backend.backend()}"
        params = inspect.signature(self.cls.__init__).parameters
        self.accepted = set(params)
        unknown = [k for k in self.fixed if k not in params]
        if unknown:
            raise TypeError(f"{self.cls.__name__} takes no keyword(s) {unknown}")
        self.options = {"amsgrad": False} if "amsgrad" in params else {}

    def accepts(self, option: str) -> bool:
        if option == "betas":
            return {"beta_1", "beta_2"} <= self.accepted
        keyword = _KEYWORDS.get(option)
        if keyword is not None:
            return option == "lr" or keyword in self.accepted
        return option in self.options

    def keywords(self, hyper: dict[str, float]) -> dict[str, Any]:
        """The constructor's keywords for `hyper`, only those the class takes by name (Lion has
        no epsilon, SGD no betas; Keras' base **kwargs rejects the rest), and not those fixed
        in --impl."""
        out = {}
        for option, keyword in _KEYWORDS.items():
            if keyword in self.fixed or (keyword not in self.accepted and option != "lr"):
                continue
            out[keyword] = hyper.get(option, 0.0) if option == "weight_decay" else hyper[option]
        return out

    def create(self, setup: Setup) -> KerasRun:
        return KerasRun(self, setup)


class KerasRun:
    def __init__(self, adapter: KerasAdapter, setup: Setup) -> None:
        import keras

        self.adapter, self.setup = adapter, setup
        self.group = setup.group_of()
        self.vars = [keras.Variable(np.asarray(p, np.float64).astype(
            np.float32 if setup.dtype == "bfloat16" else setup.dtype), dtype=setup.dtype)
            for g in setup.groups for p in g.params]
        options = {k: v for k, v in setup.options.items()
                   if k in adapter.options and k not in adapter.fixed}
        self.opts = []
        for k, g in enumerate(setup.groups):
            h = g.hyper
            opt = adapter.cls(**adapter.keywords(h), **options, **adapter.fixed)
            opt.build(self._members(k))
            self.opts.append(opt)

    def _members(self, k: int) -> list[Any]:
        return [v for v, gk in zip(self.vars, self.group, strict=True) if gk == k]

    def _tensor(self, g: np.ndarray) -> Any:
        import keras

        x = keras.ops.convert_to_tensor(np.asarray(g, np.float64).astype(
            np.float32 if self.setup.dtype == "bfloat16" else self.setup.dtype))
        return keras.ops.cast(x, self.setup.dtype)

    def step(self, grads: Sequence[np.ndarray | None]) -> None:
        for k, opt in enumerate(self.opts):
            pairs = [(self._tensor(g), v) for g, v, gk in zip(grads, self.vars, self.group,
                                                               strict=True)
                     if gk == k and g is not None]
            if pairs:
                opt.apply_gradients(pairs)

    def params(self) -> list[np.ndarray]:
        return [_numpy(v) for v in self.vars]

    def amp_step(self, grads: Sequence[np.ndarray | None], scale: float,
                 unscale_first: bool = False) -> None:
        raise NotImplementedError("the adapter drives keras.optimizers.AdamW without a "
                                  "LossScaleOptimizer")

    def _slots(self, i: int) -> tuple[Any, Any, Any, Any | None]:
        opt = self.opts[self.group[i]]
        idx = opt._get_variable_index(self.vars[i])  # noqa: SLF001 - Keras' own lookup
        hats = getattr(opt, "_velocity_hats", None)
        return opt, opt._momentums[idx], opt._velocities[idx], (  # noqa: SLF001
            hats[idx] if hats else None)

    def read_state(self, i: int) -> ParamState | None:
        try:
            opt, m, v, vh = self._slots(i)
        except (AttributeError, KeyError, IndexError):
            return None
        return ParamState(_numpy(m), _numpy(v), int(_numpy(opt.iterations)),
                          None if vh is None else _numpy(vh), str(m.dtype))

    def write_state(self, i: int, state: ParamState) -> bool:
        try:
            opt, m, v, vh = self._slots(i)
        except (AttributeError, KeyError, IndexError):
            return False
        m.assign(self._tensor(state.m))
        v.assign(self._tensor(state.v))
        if vh is not None and state.vmax is not None:
            vh.assign(self._tensor(state.vmax))
        opt.iterations.assign(state.step)
        return True

    def write_params(self, i: int, values: np.ndarray) -> None:
        self.vars[i].assign(self._tensor(values))

    def set_lr(self, group: int, lr: float) -> None:
        self.opts[group].learning_rate = lr

    def state_dict(self) -> Any:
        return [[_numpy(x) for x in opt.variables] for opt in self.opts]

    def load_state_dict(self, sd: Any) -> None:
        for opt, values in zip(self.opts, sd, strict=True):
            for x, value in zip(opt.variables, values, strict=True):
                x.assign(np.asarray(value).astype(str(x.dtype)) if str(x.dtype) != "bfloat16"
                         else self._tensor(value))
