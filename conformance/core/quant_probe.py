"""Whether a target keeps its state block-quantized, found from behaviour: one step on a tensor
large enough for every known scheme to quantize (spec/quantization.py: SCHEMES), its state read
back. Libraries quantize only large tensors (4096 elements and more), so the layout probe's
three elements never show it.

Only adapters that can read a quantized state take the probe (`reads_quantized`: the torch
adapter, adapters/quantized.py); the others pay nothing for it.
"""

from __future__ import annotations

import numpy as np
from adamw_conformance.adapters.base import GroupSetup, Setup, capability
from adamw_conformance.core import calls
from adamw_conformance.core.config import Config
from adamw_conformance.spec.quantization import SCHEMES

#: Elements of the probe: a multiple of every scheme's block, at every scheme's threshold.
PROBE_ELEMENTS = max(s.min_numel for s in SCHEMES.values())


def find(cfg: Config) -> str:
    """'m: <scheme>, v: <scheme>' for the states the target keeps block-quantized; '' if
    none (or the adapter cannot read such a state, or the target fails on the large tensor:
    the properties then meet that failure on their own draws, not the layout probe)."""
    if not getattr(cfg.adapter, "reads_quantized", False):
        return ""
    try:
        return _find(cfg)
    except calls.ImplementationError:
        return ""


def _find(cfg: Config) -> str:
    from adamw_conformance.core.strategies import representable, typical_hyper

    assert all(PROBE_ELEMENTS % s.block == 0 for s in SCHEMES.values())
    rng = np.random.default_rng(0)
    theta = np.round(rng.uniform(-1, 1, PROBE_ELEMENTS), 3)
    grad = np.round(rng.uniform(-1, 1, PROBE_ELEMENTS), 3)
    setup = Setup([GroupSetup([representable(theta, cfg.dtype)],
                              typical_hyper(cfg.model.rule_name))], cfg.dtype, cfg.device)
    run = calls.guarded("creating the optimizer", cfg.adapter.create, setup, timeout=cfg.timeout)
    calls.step(cfg, run, [representable(grad, cfg.dtype)])
    if not capability(run, "read_state"):
        return ""
    state = calls.guarded("read_state()", run.read_state, 0, timeout=cfg.timeout)
    if state is None or not state.stored:
        return ""
    return ", ".join(f"{name}: {s.scheme}" for name, s in sorted(state.stored.items()))
