"""What an adapter declares about itself, read once into `Capabilities`.

A leaf (the adapter protocol only), so that a run's configuration (core/config.py) reads it
without importing target resolution and, through it, the engines a target may name.
"""

from __future__ import annotations

from typing import Any

from adamw_conformance.adapters.base import Capabilities, StateLayout


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
