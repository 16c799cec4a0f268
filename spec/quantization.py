"""Block-quantized optimizer states: the representation, its exact decode, and its store model.

A block-quantized state keeps, per block of `block` consecutive elements (the flattened tensor),
one float32 scale s and per element a code c; the value it stands for is the float32 product
map[c] * s, which is what the library's next step reads (its dequantize). The scale is the
block's absolute maximum divided by the map's largest magnitude (1 for the dynamic and linear
maps, 448 for float8 e4m3), so that every scaled element lies in the map's range.

Everything that differs between schemes is data (`SCHEMES`): a new scheme is one entry.

The store model (`store_bound`): the library computes the new moment x' in float32 (within the
spec's float32 bound b of the exact x), scales it (one float32 division), picks the nearest code
and decodes (one float32 product). With y = x / s and d = b / s + |y| u, the code picked for
some y' in [y - d, y + d] lies between the nearest codes of the two ends (the choice is
monotone), so |map[c] - y| is at most the larger distance from y to those two codes: half the
gap between the codes around y where the map covers y, and the clamp term (distance to the end
code) where it does not: an asymmetric map's short side, a map without a zero near 0. Times s,
plus the product's rounding: the bound on the decoded element. The scale itself is judged
against the block's exact maximum (`scale_interval`): a scale from the wrong block is caught
even where the codes agree with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from adamw_conformance.spec import quant_maps
from adamw_conformance.spec.formats import FLOAT32, FLOAT64

#: float32's unit roundoff: the scaling division, the decoding product and the scale's own
#: division round once each, in float32.
_U = FLOAT32.u


def _e4m3fn() -> tuple[float, ...]:
    """float8 e4m3fn by bit pattern (code 0..255): 4 exponent bits (bias 7), 3 fraction bits,
    subnormals, no infinities, NaN at S.1111.111 (largest finite 448)."""
    out = []
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        exp, frac = (code >> 3) & 0xF, code & 0x7
        if exp == 0xF and frac == 0x7:
            out.append(float("nan"))
        elif exp == 0:
            out.append(sign * frac / 8 * 2.0**-6)
        else:
            out.append(sign * (1 + frac / 8) * 2.0 ** (exp - 7))
    return tuple(out)


@dataclass(frozen=True)
class CodeMap:
    """code -> value. `values[c]` is what code c means (NaN: a code that means no number)."""

    name: str
    values: tuple[float, ...]

    @cached_property
    def table(self) -> np.ndarray:
        return np.asarray(self.values, dtype=np.float64)

    @cached_property
    def levels(self) -> np.ndarray:
        """The distinct numbers the map holds, ascending."""
        t = self.table
        return np.unique(t[np.isfinite(t)])

    @property
    def largest(self) -> float:
        return float(np.max(np.abs(self.levels)))

    def nearest(self, y: np.ndarray, ties_up: bool) -> np.ndarray:
        """The level nearest to each y (ties to the larger level if `ties_up`, else smaller)."""
        lv = self.levels
        k = np.clip(np.searchsorted(lv, y), 1, len(lv) - 1)
        lo, hi = lv[k - 1], lv[k]
        up = (hi - y < y - lo) | ((hi - y == y - lo) & ties_up)
        return np.where(y <= lv[0], lv[0], np.where(y >= lv[-1], lv[-1],
                                                    np.where(up, hi, lo)))

    def code_of(self, level: np.ndarray) -> np.ndarray:
        """The code of each level (the first code holding it)."""
        t = np.where(np.isfinite(self.table), self.table, np.inf)
        order = np.argsort(t, kind="stable")
        pos = np.searchsorted(t[order], level)
        return order[np.clip(pos, 0, len(order) - 1)]


DYNAMIC_SIGNED_8 = CodeMap("dynamic (signed, 8-bit)", quant_maps.DYNAMIC_SIGNED_8)
DYNAMIC_UNSIGNED_8 = CodeMap("dynamic (unsigned, 8-bit)", quant_maps.DYNAMIC_UNSIGNED_8)
DYNAMIC_SIGNED_4 = CodeMap("dynamic (signed, 4-bit, 3 exponent bits)", quant_maps.DYNAMIC_SIGNED_4)
LINEAR_UNSIGNED_4 = CodeMap("linear 1/16..1 (unsigned, 4-bit, no zero)",
                            quant_maps.LINEAR_UNSIGNED_4)
E4M3 = CodeMap("float8 e4m3fn", _e4m3fn())


@dataclass(frozen=True)
class Scheme:
    """One block-quantization scheme: its maps by state (the first moment signed, the second
    and AMSGrad's maximum unsigned), block size, when the library quantizes a tensor at all."""

    name: str
    block: int
    maps: Mapping[str, CodeMap]
    #: the smallest tensor (elements) that is quantized; smaller ones stay float32
    min_numel: int = 4096
    #: whether only tensors of whole blocks are quantized (torchao); else the last block is
    #: partial (bitsandbytes)
    whole_blocks: bool = True
    #: the absmax is clipped from below before it is divided (torchao: 1e-12); 0: not clipped
    scale_floor: float = 0.0
    #: the library's rounding of the scaled value to a code: ties to the larger code
    ties_up: bool = True
    #: how the library names it
    library: str = ""

    def quantizes(self, numel: int) -> bool:
        """Whether a state of `numel` elements is kept quantized."""
        return numel >= self.min_numel and (numel % self.block == 0 or not self.whole_blocks)

    def n_blocks(self, numel: int) -> int:
        return -(-numel // self.block)

    def map_of(self, name: str) -> CodeMap:
        return self.maps[name]

    def divisor(self, name: str) -> float:
        """scale = absmax / divisor: the map's largest magnitude."""
        return self.map_of(name).largest

    # --- decode and encode --------------------------------------------------------------------

    def decode(self, name: str, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """The values a stored (codes, per-block scales) state means, exactly: float32 of
        map[c] * s (the product of two float32 numbers is exact in float64, then rounded once,
        as the library's dequantize does)."""
        flat = np.asarray(codes).reshape(-1).astype(np.int64)
        per = self._per_element(np.asarray(scales, dtype=np.float64), flat.size)
        exact = self.map_of(name).table[flat] * per
        return exact.astype(np.float32).astype(np.float64).reshape(np.shape(codes))

    def encode(self, name: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(codes, scales) of `values` as this scheme stores them: float32 absmax scale per
        block, nearest code. What replay writes into a target."""
        flat = np.asarray(values, dtype=np.float64).reshape(-1).astype(np.float32)
        absmax = self._block_absmax(np.abs(flat.astype(np.float64)))
        scales = (np.maximum(absmax, self.scale_floor).astype(np.float32)
                  / np.float32(self.divisor(name))).astype(np.float32)
        per = self._per_element(scales.astype(np.float64), flat.size)
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(per > 0, flat / per.astype(np.float32), 0.0).astype(np.float64)
        cmap = self.map_of(name)
        codes = cmap.code_of(cmap.nearest(y, self.ties_up))
        return codes.reshape(np.shape(values)), scales.astype(np.float64)

    # --- the store model ----------------------------------------------------------------------

    def store_bound(self, name: str, exact: np.ndarray, inner: np.ndarray,
                    scales: np.ndarray) -> np.ndarray:
        """Per element, the bound on |decoded stored value - exact new value| (module doc):
        `exact` the exact new state (float64), `inner` the float32 bound of the library's
        unquantized new state, `scales` the stored per-block scales."""
        x = np.asarray(exact, dtype=np.float64).reshape(-1)
        b = np.broadcast_to(np.asarray(inner, dtype=np.float64), np.shape(exact)).reshape(-1)
        s = self._per_element(np.asarray(scales, dtype=np.float64), x.size)
        cmap = self.map_of(name)
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(s > 0, x / s, 0.0)
            d = np.where(s > 0, b / s, np.inf) + np.abs(y) * 2 * _U
        low = cmap.nearest(y - d, ties_up=False)
        high = cmap.nearest(y + d, ties_up=True)
        # in value terms (s * y underflows where x is far below s; x itself does not)
        worst = np.maximum(np.abs(s * low - x), np.abs(s * high - x))
        top = np.maximum(np.abs(low), np.abs(high))
        # (the bound's own float64 evaluation rounds: a few units of float64 on top keep an
        # element whose code is 0 and whose error is |x| itself inside)
        out = (worst + s * top * _U) * (1 + 8 * FLOAT64.u)
        # a zero scale (nothing stored yet) holds zeros exactly: the float32 bound alone
        out = np.where(s > 0, out, b)
        return out.reshape(np.shape(exact))

    def scale_interval(self, name: str, exact: np.ndarray, inner: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Per block, the interval the stored scale must lie in: the absmax of the library's
        float32 new state (each element within `inner` of `exact`), clipped at the floor,
        divided by the map's largest magnitude in float32."""
        x = np.abs(np.asarray(exact, dtype=np.float64).reshape(-1))
        b = np.broadcast_to(np.asarray(inner, dtype=np.float64), np.shape(exact)).reshape(-1)
        lo = np.maximum(self._block_absmax(np.maximum(x - b, 0.0)), self.scale_floor)
        hi = np.maximum(self._block_absmax(x + b), self.scale_floor)
        div = self.divisor(name)
        return lo / div * (1 - 2 * _U), hi / div * (1 + 2 * _U)

    # --- blocks -------------------------------------------------------------------------------

    def _per_element(self, scales: np.ndarray, numel: int) -> np.ndarray:
        return np.repeat(scales, self.block)[:numel]

    def _block_absmax(self, a: np.ndarray) -> np.ndarray:
        pad = self.n_blocks(a.size) * self.block - a.size
        return np.pad(a, (0, pad)).reshape(-1, self.block).max(axis=1)


def _maps(signed: CodeMap, unsigned: CodeMap) -> dict[str, CodeMap]:
    return {"m": signed, "v": unsigned, "vmax": unsigned}


#: The schemes the suite knows, by name. torchao: arXiv:2110.02861 and 2309.01507 as
#: torchao.optim builds them (quantized where numel >= 4096 and a multiple of the block; absmax
#: clipped at 1e-12); bitsandbytes: blockwise 8-bit, quantized where numel >= 4096
#: (min_8bit_size), the last block partial.
SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("dynamic-8bit", 256, _maps(DYNAMIC_SIGNED_8, DYNAMIC_UNSIGNED_8),
           scale_floor=1e-12, library="torchao.optim.AdamW8bit"),
    Scheme("dynamic-4bit", 128, _maps(DYNAMIC_SIGNED_4, LINEAR_UNSIGNED_4),
           scale_floor=1e-12, library="torchao.optim.AdamW4bit"),
    Scheme("fp8-e4m3", 256, _maps(E4M3, E4M3), scale_floor=1e-12,
           library="torchao.optim.AdamWFp8"),
    Scheme("blockwise-dynamic-8bit", 256, _maps(DYNAMIC_SIGNED_8, DYNAMIC_UNSIGNED_8),
           whole_blocks=False, library="bitsandbytes.optim.AdamW8bit"),
)}


def scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown quantization scheme {name!r}: known are "
                         f"{', '.join(SCHEMES)}") from None
