"""Reading and writing block-quantized optimizer states in a torch optimizer's state dict.

Two representations are recognised, from what the state holds (not from the class):
- a tensor subclass with `codes` and `scale` (torchao.optim's OptimState8bit, OptimState4bit,
  OptimStateFp8) under the moment's own key;
- bitsandbytes' layout: `state1`/`state2` uint8 codes of the parameter's shape with
  `absmax1`/`absmax2` per block (and `qmap1`/`qmap2`), float32 `state1`/`state2` where the
  tensor is too small to be quantized.
The suite decodes the codes with the scheme's own map (spec/quantization.py), never with the
map the target carries: a target whose map is wrong is judged by what its codes should mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from adamw_conformance.adapters.base import Stored
from adamw_conformance.spec.quantization import scheme

#: bitsandbytes' keys: the codes, and the per-block absmax beside them.
BNB_ABSMAX = {"state1": "absmax1", "state2": "absmax2"}
#: bitsandbytes' keys that are part of the representation, not state of their own.
BNB_AUX = ("absmax1", "absmax2", "qmap1", "qmap2")


def is_quantized(st: Mapping[str, Any], key: str) -> bool:
    """Whether st[key] is kept block-quantized."""
    x = st.get(key)
    if _subclass_kind(x) is not None:
        return True
    return key in BNB_ABSMAX and isinstance(x, torch.Tensor) and x.dtype == torch.uint8 \
        and BNB_ABSMAX[key] in st


def _subclass_kind(x: Any) -> str | None:
    codes = getattr(x, "codes", None)
    if not isinstance(x, torch.Tensor) or not isinstance(codes, torch.Tensor) \
            or not isinstance(getattr(x, "scale", None), torch.Tensor):
        return None
    if codes.dtype == torch.float8_e4m3fn:
        return "fp8-e4m3"
    if codes.dtype == torch.uint8:
        # 4-bit codes are packed two to a byte into a flat buffer
        return "dynamic-4bit" if codes.numel() * 2 == x.numel() else "dynamic-8bit"
    return None


def read(st: Mapping[str, Any], key: str) -> Stored:
    """The stored codes and scales of st[key] (is_quantized)."""
    x = st[key]
    kind = _subclass_kind(x)
    if kind is None:
        return Stored("blockwise-dynamic-8bit", _np_int(x), _np(st[BNB_ABSMAX[key]]))
    if kind == "fp8-e4m3":
        codes = _np_int(x.codes.view(torch.uint8))
    elif kind == "dynamic-4bit":
        packed = x.codes
        codes = _np_int(torch.stack([packed >> 4, packed & 0b1111], dim=-1))
    else:
        codes = _np_int(x.codes)
    return Stored(kind, codes.reshape(tuple(x.shape)), _np(x.scale))


def decode(name: str, stored: Stored) -> np.ndarray:
    """What the stored state means (float64), by the scheme's map."""
    return scheme(stored.scheme).decode(name, stored.codes, stored.scales)


def write(st: Mapping[str, Any], key: str, name: str, values: np.ndarray) -> None:
    """Store `values` (the spec's state `name`) into st[key] as its scheme holds them: the
    codes and scales the scheme's encoding gives, written directly."""
    sch = read(st, key).scheme
    codes, scales = scheme(sch).encode(name, values)
    x = st[key]
    with torch.no_grad():
        if _subclass_kind(x) is None:
            x.copy_(torch.tensor(codes, dtype=torch.uint8).reshape(x.shape))
            st[BNB_ABSMAX[key]].copy_(torch.tensor(scales, dtype=torch.float32))
            return
        c = torch.tensor(codes.reshape(-1), dtype=torch.uint8)
        if sch == "fp8-e4m3":
            x.codes.view(torch.uint8).copy_(c.reshape(x.codes.shape))
        elif sch == "dynamic-4bit":
            x.codes.copy_((c[0::2] << 4) | c[1::2])
        else:
            x.codes.copy_(c.reshape(x.codes.shape))
        x.scale.copy_(torch.tensor(scales, dtype=torch.float32))


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy().copy()


def _np_int(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.int64).numpy().copy()
