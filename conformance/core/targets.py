"""Turn an `--impl` string into an adapter, or a usage error that says what was tried.

Accepted forms:
    torch.optim.AdamW                     a dotted path to an Optimizer subclass, kernel or adapter
    mypkg.kernels:fused_adamw             module:attribute
    torch.optim.AdamW(foreach=True)       fixed keyword overrides, Python literals
    optax.adamw                           an optax factory (adapters/optax_adapter.py)
    keras.optimizers.AdamW                a Keras 3 optimizer class (adapters/keras_adapter.py)
    torch-loop | torch-foreach | torch-fused | torch-fused-kernel    short names
    optax-adamw | keras-adamw             short names
    zero:torch.optim.AdamW                a sharded engine (zero, fsdp2) over --world-size ranks
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any

from adamw_conformance.core.declared import capabilities  # noqa: F401 - callers import it here
from adamw_conformance.core.loading import (  # noqa: F401 - the names callers import from here
    FORMS,
    SHORT_NAMES,
    TargetError,
    importable_from,
    load,
    parse,
)


def resolve(text: str, directory: str | os.PathLike[str] | None = None,
            world_size: int | None = None) -> Any:
    """An adapter for `text` (see module docstring), or TargetError. Modules are imported with
    `directory` (default: the current directory) on sys.path; what the adapter declares is
    checked here (`capabilities`), so that a bad declaration is a usage error. `world_size`:
    the ranks a sharded engine runs on (default 2)."""
    adapter = _sharded(text, directory, world_size) or _adapter(text, directory)
    try:
        capabilities(adapter)
    except ValueError as e:
        raise TargetError(str(e)) from None
    return adapter


def _sharded(text: str, directory: str | os.PathLike[str] | None,
             world_size: int | None) -> Any:
    """The sharded adapter where `text` is ENGINE:TARGET with a known engine, else None."""
    from adamw_conformance.sharded import DEFAULT_WORLD, split

    parts = split(text)
    if parts is None:
        return None
    from adamw_conformance.sharded.adapter import ShardedAdapter

    return ShardedAdapter(*parts, world=world_size or DEFAULT_WORLD, directory=directory)


def _adapter(text: str, directory: str | os.PathLike[str] | None) -> Any:
    import torch
    from adamw_conformance.adapters.kernel import KernelAdapter, looks_like_kernel
    from adamw_conformance.adapters.torch_optim import TorchOptimizerAdapter

    if parse(text)[0].split(".")[0] == "keras":
        # Keras fixes its backend when first imported: the adapter chooses it before that.
        import adamw_conformance.adapters.keras_adapter  # noqa: F401
    obj, path, kwargs = load(text, directory)
    foreign = _foreign_adapter(text, obj, path, kwargs)
    if foreign is not None:
        return foreign
    if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer):
        adapter = TorchOptimizerAdapter(obj, kwargs)
        unknown = [k for k in kwargs if k not in adapter.accepted and not adapter.takes_kwargs]
        if unknown:
            raise TargetError(f"--impl={text!r}: {obj.__name__} takes no keyword(s) {unknown}")
        return adapter
    if inspect.isclass(obj) and callable(getattr(obj, "create", None)):
        obj = obj(**kwargs)
        kwargs = {}
    if callable(getattr(obj, "create", None)) and not inspect.isclass(obj):
        if kwargs:
            raise TargetError(f"--impl={text!r}: keyword overrides apply to classes and kernels")
        for attr, default in (("name", path), ("version", "unknown")):
            if not hasattr(obj, attr):
                try:
                    setattr(obj, attr, default)
                except (AttributeError, TypeError):
                    pass
        return obj
    if callable(obj) and looks_like_kernel(obj):
        return KernelAdapter(obj, path, kwargs)
    kind = type(obj).__name__
    raise TargetError(f"--impl={text!r}: {path} is a {kind}, which the suite cannot drive. "
                      f"Accepted: {FORMS}")


def _foreign_adapter(text: str, obj: Any, path: str, kwargs: dict[str, Any]) -> Any:
    """The optax or Keras adapter where `obj` is an optax factory or a Keras optimizer class,
    else None. Their modules import optax/keras only when asked, so torch-only installs work."""
    from adamw_conformance.adapters.optax_adapter import OptaxAdapter, looks_like_optax_factory

    module = inspect.getmodule(obj)
    root = (module.__name__ if module else getattr(obj, "__module__", "") or "").split(".")[0]
    try:
        # A Keras optimizer class from Keras itself, or a subclass of one from anywhere (a
        # module that defines one has imported keras already; others never import it here).
        if inspect.isclass(obj) and (root == "keras" or "keras" in sys.modules):
            from adamw_conformance.adapters.keras_adapter import KerasAdapter, is_keras_optimizer
            if is_keras_optimizer(obj):
                return KerasAdapter(obj, kwargs, name=path)
        if looks_like_optax_factory(obj):
            return OptaxAdapter(obj, kwargs, name=path)
    except TypeError as e:
        raise TargetError(f"--impl={text!r}: {e}") from None
    return None
