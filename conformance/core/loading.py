"""Import what an `--impl` string names: its module, attribute and fixed keywords.

A leaf of the package (nothing of the suite imported), so that modules which build a target
in another process (the sharded engines' workers) load it the way `targets` does.
"""

from __future__ import annotations

import ast
import importlib
import os
import sys
from pathlib import Path
from typing import Any

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
