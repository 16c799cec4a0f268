"""How often a library's block quantizer picks a code that is not the nearest one, measured
against the scheme's map (spec/quantization.py): `python -m adamw_conformance.tools.code_choice`.

The store model assumes the nearest code; a quantizer that picks another one fails the stored
state's bound by (distance to its code) / (half the gap around the value). This tool quantizes
random blocks with each library's own quantizer (bitsandbytes' `quantize_blockwise` op on the
CPU; torchao's `quantize_8bit_with_qmap` as the control) and counts, per map, the codes that are
farther from the scaled value than the nearest code by more than the value's own float32
rounding, and the worst such distance in half gaps. Values are drawn as x = N(0, 1) x 10^-U,
U uniform in [0, spread]: spread 0 is a plain normal tensor, 8 reaches the map's finest codes.
A library that is not installed is reported as such.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
from adamw_conformance.spec.quantization import Scheme, scheme

Quantizer = Callable[[np.ndarray, str], tuple[np.ndarray, np.ndarray]]


def _bitsandbytes() -> Quantizer:
    import bitsandbytes  # noqa: F401  (registers its ops)
    import torch

    sch = scheme("blockwise-dynamic-8bit")

    def run(x: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        code = torch.tensor(sch.map_of(name).values, dtype=torch.float32)
        out, absmax = torch.ops.bitsandbytes.quantize_blockwise(
            torch.tensor(x, dtype=torch.float32), code, sch.block)
        return out.numpy().astype(np.int64), absmax.double().numpy()
    return run


def _torchao() -> Quantizer:
    import torch
    from torchao.optim.quant_utils import quantize_8bit_with_qmap, scale_tensor

    sch = scheme("dynamic-8bit")

    def run(x: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        qmap = torch.tensor(sch.map_of(name).values, dtype=torch.float32)
        scaled, scale = scale_tensor(torch.tensor(x, dtype=torch.float32), sch.block)
        return (quantize_8bit_with_qmap(scaled, qmap).numpy().astype(np.int64),
                scale.double().numpy())
    return run


LIBRARIES: dict[str, tuple[str, Callable[[], Quantizer]]] = {
    "bitsandbytes": ("blockwise-dynamic-8bit", _bitsandbytes),
    "torchao": ("dynamic-8bit", _torchao),
}


def measure(quantize: Quantizer, sch: Scheme, name: str, spread: float, trials: int = 20,
            seed: int = 0) -> dict[str, float]:
    """Share of non-nearest codes, the share of those at |x|/absmax < 1.6e-5, and the worst
    distance in half gaps, over `trials` tensors of 4096 elements."""
    rng = np.random.default_rng(seed)
    cmap = sch.map_of(name)
    lv = cmap.levels
    total = wrong = tiny = 0
    worst = 0.0
    for _ in range(trials):
        x = rng.standard_normal(4096) * 10.0 ** rng.uniform(-spread, 0, 4096)
        x = (np.abs(x) if name == "v" else x).astype(np.float32).astype(np.float64)
        codes, scales = quantize(x, name)
        y = x / np.repeat(scales, sch.block)[: x.size]
        q = cmap.table[codes]
        near = cmap.nearest(y, True)
        k = np.clip(np.searchsorted(lv, y), 1, len(lv) - 1)
        half = (lv[k] - lv[k - 1]) / 2
        bad = np.abs(q - y) - np.abs(near - y) > 4 * 2.0**-24 * np.abs(y) + 1e-300
        total += x.size
        wrong += int(bad.sum())
        tiny += int(np.sum(bad & (np.abs(y) < 1.6e-5)))
        if bad.any():
            worst = max(worst, float(np.max(np.abs(q - y)[bad] / half[bad])))
    return {"non_nearest": wrong / total, "of_them_tiny": tiny / max(wrong, 1),
            "worst_half_gaps": worst}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spread", type=float, nargs="*", default=[0.0, 8.0])
    args = parser.parse_args(argv)
    for lib, (sch_name, make) in LIBRARIES.items():
        try:
            quantize = make()
        except ImportError as e:
            print(f"{lib}: not installed ({e})")
            continue
        sch = scheme(sch_name)
        for spread in args.spread:
            for name, kind in (("m", "signed"), ("v", "unsigned")):
                r = measure(quantize, sch, name, spread)
                print(f"{lib} {kind} map, spread 10^-{spread:g}: non-nearest "
                      f"{r['non_nearest']:.3%} of elements ({r['of_them_tiny']:.0%} of them at "
                      f"|x|/absmax < 1.6e-5), worst {r['worst_half_gaps']:.3g} half gaps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
