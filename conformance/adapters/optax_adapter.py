"""Adapter for optax (JAX): `optax.adamw`, or any factory with its signature that returns an
AdamW-like GradientTransformation (a chain of scale_by_adam, add_decayed_weights and a learning
rate, with or without `mask=`).

How the suite's notions map onto optax, which has none of them built in:

- Parameter groups: optax has no groups. Each group gets its own transformation from the factory,
  with that group's hyperparameters, and `optax.multi_transform` routes each leaf (parameter) to
  its group's. A weight_decay=0 group is simply the factory with weight_decay=0.
- Learning-rate changes: the factory is wrapped in `optax.inject_hyperparams`, with every
  argument but `learning_rate` static, so the other hyperparameters stay Python floats (weakly
  typed) exactly as in a plain `optax.adamw(...)` call, and the lr lives in the optimizer state
  in the parameters' dtype (what inject_hyperparams does by default), where `set_lr` rewrites it.
- No gradient: JAX has no "no gradient"; jax.grad gives zeros for an unused parameter, and a
  zero gradient is a real step. The adapter declares `none_grads = False` and raises on None;
  the properties that need a missing gradient skip with that reason.
- Counter: `ScaleByAdamState.count` is one counter per transformation, so here one per group,
  advanced by every update. With every parameter stepped every time (no None gradients) this is
  indistinguishable from the default per-parameter counter.
- State replay: `read_state`/`write_state` read and rebuild the (immutable) ScaleByAdamState
  (`mu`, `nu`, `count`; `nu_max` of an AMSGrad state) of the parameter's group. Writing a
  parameter's counter sets its whole group's counter, which is what replay needs (the suite
  writes the same t to every parameter of a group).
- Precision: jax computes in float32 by default; float64 needs `jax_enable_x64`, a process-wide
  switch, turned on here only when a float64 run is created (after that, the process stays in
  x64 mode, which changes jax's default dtypes: run float64 in its own process). bfloat16
  parameters are `jnp.bfloat16` arrays; optax then computes in bfloat16 (its Python-float
  hyperparameters are cast to the parameters' dtype: beta2 = 0.999 becomes 1.0).
- Steps run eagerly (op by op, no jit), so each jax operation rounds once as written.
- Loss scaling: optax has no GradScaler (`amp_step` raises NotImplementedError).

Select it with `--impl=optax.adamw` or `--impl=optax-adamw`; a factory of your own with
`--impl=mypkg.optim:my_adamw` (it must take learning_rate, b1, b2, eps, weight_decay by name).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from adamw_conformance.adapters.base import ParamState, Setup

#: The factory's hyperparameters, by the spec's names.
_NAMES = {"lr": "learning_rate", "beta1": "b1", "beta2": "b2", "eps": "eps",
          "weight_decay": "weight_decay"}


def looks_like_optax_factory(obj: Any) -> bool:
    """An optax transformation factory: defined in optax and taking learning_rate (optax.adamw,
    but also optax.sgd, optax.lion, ...: the fingerprint tells from behaviour what they do), or
    a callable taking learning_rate, b1, b2 and weight_decay by name, as optax.adamw does."""
    if not callable(obj) or inspect.isclass(obj):
        return False
    module = getattr(obj, "__module__", "") or ""
    try:
        names = set(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return False
    if module.split(".")[0] == "optax":
        return "learning_rate" in names
    return {"learning_rate", "b1", "b2", "weight_decay"} <= names


def _is_adam_state(x: Any) -> bool:
    return all(hasattr(x, f) for f in ("count", "mu", "nu")) and hasattr(x, "_replace")


def _map_states(tree: Any, fn: Callable[[Any], Any]) -> Any:
    """`tree` (an optax state: NamedTuples, tuples, lists, dicts) with every Adam state s
    replaced by fn(s)."""
    if _is_adam_state(tree):
        return fn(tree)
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(_map_states(x, fn) for x in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map_states(x, fn) for x in tree)
    if isinstance(tree, dict):
        return {k: _map_states(v, fn) for k, v in tree.items()}
    return tree


def _find_states(tree: Any) -> list[Any]:
    found: list[Any] = []
    _map_states(tree, lambda s: found.append(s) or s)
    return found


class OptaxAdapter:
    """Drives `factory(learning_rate=, b1=, b2=, eps=, weight_decay=, **fixed)` per group."""

    #: JAX has no missing gradient: see the module docstring.
    none_grads = False
    #: jax computes optax's bias corrections (beta ** count, count an int32 array) and a
    #: Python-float hyperparameter times a float32 array in float32: the hyperparameter
    #: precision profile a run judges it in (adapters.base: declared_hyper)
    hyper_dtype = "float32"

    def __init__(self, factory: Callable[..., Any] | None = None,
                 fixed: dict[str, Any] | None = None, name: str | None = None) -> None:
        import optax

        self.factory = factory or optax.adamw
        self.fixed = dict(fixed or {})
        base = name or (f"{getattr(self.factory, '__module__', '')}."
                        f"{getattr(self.factory, '__qualname__', repr(self.factory))}")
        if base.startswith("optax._src.alias."):
            base = "optax." + base.removeprefix("optax._src.alias.")
        self.name = base + ("(" + ", ".join(f"{k}={v!r}" for k, v in self.fixed.items()) + ")"
                            if self.fixed else "")
        self.version = f"optax {optax.__version__}"
        try:
            import jax
            self.version += f", jax {jax.__version__}"
        except ImportError:  # pragma: no cover - optax needs jax
            pass
        params = inspect.signature(self.factory).parameters
        self.accepted = set(params)
        if "learning_rate" not in params:
            raise TypeError(f"{self.name} takes no learning_rate: an optax factory takes "
                            "learning_rate (and b1, b2, eps, weight_decay where it has them) by "
                            "name")
        #: the spec's hyperparameters the factory takes; the others keep its own defaults
        #: (optax.adam has no weight_decay, optax.lion no eps, optax.sgd neither betas).
        self.taken = {spec for spec, name in _NAMES.items() if name in params}
        unknown = [k for k in self.fixed if k not in params]
        if unknown:
            raise TypeError(f"{self.name} takes no keyword(s) {unknown}")
        # optax.adamw has neither amsgrad nor maximize: those variants are skipped.
        self.options: dict[str, Any] = {}

    def accepts(self, option: str) -> bool:
        """Whether the target receives `option`: a hyperparameter (by the spec's name, or
        torch's `betas`) or an option such as amsgrad."""
        if option == "betas":
            return {"beta1", "beta2"} <= self.taken
        return option in self.taken or option in self.options

    def transformation(self, hyper: dict[str, float]) -> Any:
        """One group's transformation: the factory, lr injected, everything else static."""
        import optax

        static = tuple(n for n in self.accepted if n != "learning_rate")
        kwargs = {_NAMES[k]: v for k, v in hyper.items()
                  if k in self.taken and _NAMES[k] not in self.fixed}
        return optax.inject_hyperparams(self.factory, static_args=static)(
            **kwargs, **self.fixed)

    def create(self, setup: Setup) -> OptaxRun:
        return OptaxRun(self, setup)


def _jnp_dtype(name: str) -> Any:
    import jax
    import jax.numpy as jnp

    if name == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    return getattr(jnp, name)


def _to_numpy(x: Any) -> np.ndarray:
    return np.asarray(x).astype(np.float64)


class OptaxRun:
    def __init__(self, adapter: OptaxAdapter, setup: Setup) -> None:
        import jax.numpy as jnp
        import optax

        self.adapter, self.setup = adapter, setup
        self.dtype = _jnp_dtype(setup.dtype)
        self.group = setup.group_of()
        self.labels = [str(k) for k in self.group]
        self.params_ = [jnp.asarray(p, dtype=self.dtype) for g in setup.groups for p in g.params]
        self.tx = optax.multi_transform(
            {str(k): adapter.transformation(g.hyper) for k, g in enumerate(setup.groups)},
            self.labels)
        self.state = self.tx.init(self.params_)

    def step(self, grads: Sequence[np.ndarray | None]) -> None:
        import jax.numpy as jnp
        import optax

        if any(g is None for g in grads):
            raise ValueError("optax has no missing gradient (None): jax.grad gives zeros, and "
                             "a zero gradient is a real step")
        gs = [jnp.asarray(g, dtype=self.dtype) for g in grads]
        updates, self.state = self.tx.update(gs, self.state, self.params_)
        self.params_ = optax.apply_updates(self.params_, updates)

    def params(self) -> list[np.ndarray]:
        return [_to_numpy(p) for p in self.params_]

    def amp_step(self, grads: Sequence[np.ndarray | None], scale: float,
                 unscale_first: bool = False) -> None:
        raise NotImplementedError("optax has no loss scaler (no GradScaler equivalent)")

    # --- state ----------------------------------------------------------------------------

    def _group_state(self, k: int) -> Any:
        return self.state.inner_states[str(k)]

    def read_state(self, i: int) -> ParamState | None:
        found = _find_states(self._group_state(self.group[i]))
        if len(found) != 1:
            return None  # not one Adam state in the chain: layout unknown
        s = found[0]
        vmax = getattr(s, "nu_max", None)
        return ParamState(_to_numpy(s.mu[i]), _to_numpy(s.nu[i]), int(s.count),
                          None if vmax is None else _to_numpy(vmax[i]), str(s.mu[i].dtype))

    def write_state(self, i: int, state: ParamState) -> bool:
        import jax.numpy as jnp

        k = self.group[i]
        if len(_find_states(self._group_state(k))) != 1:
            return False

        def put(s: Any) -> Any:
            mu, nu = list(s.mu), list(s.nu)
            mu[i] = jnp.asarray(state.m, dtype=s.mu[i].dtype)
            nu[i] = jnp.asarray(state.v, dtype=s.nu[i].dtype)
            fields = {"mu": type(s.mu)(mu), "nu": type(s.nu)(nu),
                      "count": jnp.asarray(state.step, dtype=jnp.asarray(s.count).dtype)}
            if getattr(s, "nu_max", None) is not None and state.vmax is not None:
                vm = list(s.nu_max)
                vm[i] = jnp.asarray(state.vmax, dtype=s.nu_max[i].dtype)
                fields["nu_max"] = type(s.nu_max)(vm)
            return s._replace(**fields)

        inner = dict(self.state.inner_states)
        inner[str(k)] = _map_states(inner[str(k)], put)
        self.state = self.state._replace(inner_states=inner)
        return True

    def write_params(self, i: int, values: np.ndarray) -> None:
        import jax.numpy as jnp

        self.params_[i] = jnp.asarray(values, dtype=self.dtype)

    def set_lr(self, group: int, lr: float) -> None:
        import jax.numpy as jnp

        def rewrite(tree: Any) -> Any:
            if hasattr(tree, "hyperparams") and hasattr(tree, "_replace"):
                hp = dict(tree.hyperparams)
                hp["learning_rate"] = jnp.asarray(lr, dtype=hp["learning_rate"].dtype)
                return tree._replace(hyperparams=hp)
            if isinstance(tree, tuple) and hasattr(tree, "_fields"):
                return type(tree)(*(rewrite(x) for x in tree))
            return tree

        inner = dict(self.state.inner_states)
        inner[str(group)] = rewrite(inner[str(group)])
        self.state = self.state._replace(inner_states=inner)

    def state_dict(self) -> Any:
        # jax arrays are immutable: the pytree itself is a snapshot.
        return copy.deepcopy(self.state)

    def load_state_dict(self, sd: Any) -> None:
        import jax

        mine = jax.tree_util.tree_structure(self.state)
        theirs = jax.tree_util.tree_structure(sd)
        if mine != theirs:
            raise ValueError(f"the loaded optax state has another structure: {theirs} vs {mine}")
        self.state = copy.deepcopy(sd)
