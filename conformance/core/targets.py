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

import ast
import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any

from adamw_conformance.adapters.base import Capabilities, StateLayout

SHORT_NAMES = {
    "torch-loop": "torch.optim.AdamW(foreach=False)",
    "torch-foreach": "torch.optim.AdamW(foreach=True)",
    "torch-fused": "torch.optim.AdamW(fused=True)",
    "torch-fused-kernel": "torch:_fused_adamw_",
    "optax-adamw": "optax.adamw",
    "keras-adamw": "keras.optimizers.AdamW",
}

FORMS = ("a dotted path 'pkg.mod.Attr' or 'pkg.mod:Attr' to a torch.optim.Optimizer subclass, "
         "a functional kernel (params, grads, exp_avgs, exp_avg_sqs, ...), or an adapter "
         "(an object or module with create(setup)), an optax factory such as optax.adamw, "
         "or a Keras 3 optimizer class such as keras.optimizers.AdamW; optional fixed keywords as "
         "'Path(foreach=True)'; or a short name: " + ", ".join(SHORT_NAMES))


class TargetError(Exception):
    """A usage error: the --impl value cannot be turned into something the suite can drive."""


def parse(text: str) -> tuple[str, str, dict[str, Any]]:
    """'pkg.mod:Attr(k=v)' -> ('pkg.mod', 'Attr', {'k': v}); dotted paths split on the last dot
    that leaves an importable module (decided in `load`)."""
    text = SHORT_NAMES.get(text.strip(), text.strip())
    call = text
    kwargs: dict[str, Any] = {}
    if text.endswith(")") and "(" in text:
        call, _, args = text.partition("(")
        try:
            node = ast.parse(f"f({args}", mode="eval").body
            assert isinstance(node, ast.Call) and not node.args
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        except (SyntaxError, ValueError, AssertionError, TypeError):
            raise TargetError(f"--impl={text!r}: cannot read the keyword overrides {args[:-1]!r}; "
                              "write them as Python literals, e.g. (foreach=True, eps=1e-8)") \
                from None
    if ":" in call:
        module, _, attr = call.partition(":")
    else:
        module, _, attr = call.rpartition(".")
    if not module or not attr:
        raise TargetError(f"--impl={text!r} is not a path. Accepted: {FORMS}")
    return module, attr, kwargs


def importable_from(directory: str | os.PathLike[str] | None = None) -> None:
    """Put `directory` (default: the current directory) first on sys.path if it is not there:
    `pytest` and console scripts, unlike `python -m`, do not, and a target is named as
    importable from where the command runs (`--impl=myopt:MyAdamW` for ./myopt.py)."""
    where = Path(directory if directory is not None else os.getcwd()).resolve()
    present = set()
    for entry in sys.path:
        try:
            present.add(Path(entry or os.getcwd()).resolve())
        except OSError:
            continue
    if where not in present:
        sys.path.insert(0, str(where))


def load(text: str, directory: str | os.PathLike[str] | None = None) -> tuple[Any, str,
                                                                           dict[str, Any]]:
    """The object `text` names, imported with `directory` (default: the current directory) on
    sys.path."""
    module_name, attr, kwargs = parse(text)
    importable_from(directory)
    path = f"{module_name}.{attr}"
    tried: list[str] = []
    # 'a.b.C.D' may be module a.b with attribute path C.D: walk back until a module imports.
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        mod_name, attrs = ".".join(parts[:cut]), parts[cut:]
        try:
            obj: Any = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            tried.append(f"import {mod_name}: {e}")
            continue
        except Exception as e:  # an implementation whose import raises is the user's to know
            raise TargetError(f"--impl={text!r}: importing {mod_name} raised "
                              f"{type(e).__name__}: {e}") from None
        try:
            for a in attrs:
                obj = getattr(obj, a)
        except AttributeError:
            tried.append(f"{mod_name} has no attribute {'.'.join(attrs)}")
            continue
        return obj, path, kwargs
    raise TargetError(f"--impl={text!r}: nothing found. Tried: " + "; ".join(tried)
                      + f". Accepted: {FORMS}")


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


def capabilities(adapter: Any) -> Capabilities:
    """What `adapter` declares, normalised (adapters/base.py: Capabilities): its `capabilities`
    if that is one, else its attributes of the fields' names (`accepts` for `keywords`, `rule`
    or `conformance_rule`), the form user adapters keep. The one place the suite looks at an
    adapter's optional attributes; ValueError for a declaration it cannot read."""
    declared = getattr(adapter, "capabilities", None)
    if isinstance(declared, Capabilities):
        return declared
    orders = getattr(adapter, "orders", ())
    if isinstance(orders, str) or not all(isinstance(n, str) for n in orders):
        raise ValueError(f"{type(adapter).__name__}.orders must be a tuple of order names, "
                         f"got {orders!r}")
    accepts = getattr(adapter, "accepts", None)
    rule = next((r for r in (getattr(adapter, a, None) for a in ("rule", "conformance_rule"))
                 if isinstance(r, str) and r), None)
    return Capabilities(options=dict(getattr(adapter, "options", None) or {}),
                        keywords=accepts if callable(accepts) else None,
                        fixed=dict(getattr(adapter, "fixed", None) or {}),
                        pinned=dict(getattr(adapter, "pinned", None) or {}),
                        orders=tuple(orders),
                        none_grads=bool(getattr(adapter, "none_grads", True)),
                        rule=rule, hyper_dtype=getattr(adapter, "hyper_dtype", None),
                        layout=_layout(adapter))


def _layout(adapter: Any) -> StateLayout | None:
    layout = getattr(adapter, "layout", None)
    if layout is None or isinstance(layout, StateLayout):
        return layout
    if callable(layout):  # a module adapter's function of that name declares nothing
        return None
    raise ValueError(f"{type(adapter).__name__}.layout must be a StateLayout "
                     f"(adamw_conformance.adapters.base), got {layout!r}")


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
