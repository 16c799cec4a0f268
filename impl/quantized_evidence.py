"""Evidence for reports/quantized.md: torchao's AdamW8bit with bfloat16 parameters, the two
failures of its bfloat16 audit on quantized tensors (dtype.precision, 166 x the bound at t = 3;
scale.invariance, 934 x at t = 1; both at beta2 = 0.999999). Each falsifying example is rebuilt
from its printed draws (regimes and seed; a quantized target's draws add outliers), stepped by
torchao directly, and judged by the project's oracle and bound twice: as the spec writes the
step, and with the bias corrections 1 - beta^t taking beta rounded to float32 (the moments'
1 - beta exact), as torchao's float32 step counter forms them (torchao/optim/adam.py,
single_param_adam: `bias_correction2 = 1 - beta2**step`, `step` a float32 tensor). A control
steps torchao's unquantized `_AdamW` from the same decoded state: equal parameters show that
the 8-bit state plays no part in them. Needs torchao; run from the repository root:

    python -m impl.quantized_evidence
"""

from __future__ import annotations

import warnings

import mpmath
import numpy as np
import sympy as sp
import torch
from adamw_conformance.core.judge import Model, compare
from adamw_conformance.core.notes import ratio
from adamw_conformance.core.strategies import Regime, with_outliers
from adamw_conformance.spec.oracle import Oracle
from adamw_conformance.spec.orders_general import EAGER_STORES
from adamw_conformance.spec.rounding_model import Precision
from adamw_conformance.spec.rule import substitute
from adamw_conformance.spec.symbols import beta1, beta2, t

DTYPE = "bfloat16"

#: The audit's two falsifying examples (reports/torchao-adamw8bit-bfloat16/report.md).
CASES = {
    "scale.invariance (unscaled run)": dict(
        hyper=dict(lr=2.29148091725893e-05, beta1=0.9, beta2=0.999999, eps=1e-08,
                   weight_decay=0.06603116578883929),
        t=1, shape=(4096,), seed=1903,
        theta=Regime(center=-2.00001, spread=8.0, zeros=0.0, signs="negative"),
        g=Regime(center=2.279431868498511, spread=1.0, zeros=0.1, signs="negative")),
    "dtype.precision": dict(
        hyper=dict(lr=0.01, beta1=0.99, beta2=0.999999, eps=1e-12, weight_decay=0.01),
        t=3, shape=(4352,), seed=470859,
        theta=Regime(center=-1.5, spread=8.0, zeros=0.0, signs="mixed"),
        g=Regime(center=3.1223611714128613e-223, spread=1.0, zeros=0.1, signs="mixed"),
        m=Regime(center=2.042636768268352, spread=0.0, zeros=0.0, signs="negative"),
        v=Regime(center=1.1754943508222875e-38, spread=0.0, zeros=0.0, signs="mixed")),
}


def draws(case: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """theta, g, m, v as core/strategies.py step_cases draws them from the case's seed."""
    rng = np.random.default_rng(case["seed"])
    shape = case["shape"]
    theta = case["theta"].sample(rng, shape, DTYPE)
    g = case["g"].sample(rng, shape, DTYPE)
    m = v = np.zeros(shape)
    if case["t"] > 1:
        m = case["m"].sample(rng, shape, DTYPE)
        v = np.abs(case["v"].sample(rng, shape, DTYPE))
    g = with_outliers(g, rng, DTYPE)
    if case["t"] > 1:
        m = with_outliers(m, rng, DTYPE)
    return theta, g, m, v


def torchao_step(cls: type, case: dict, theta: np.ndarray, g: np.ndarray, m: np.ndarray,
                 v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of `cls` at t from (theta, m, v); the parameters after it and the state it
    stepped from, decoded (what the suite's replay hands the oracle)."""
    h = case["hyper"]
    p = torch.nn.Parameter(torch.tensor(theta, dtype=torch.bfloat16))
    opt = cls([p], lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"],
              weight_decay=h["weight_decay"])
    held_m, held_v = m, v
    if case["t"] > 1:  # replay: a zero step creates the state, then it is overwritten
        p.grad = torch.zeros_like(p)
        opt.step()
        state = opt.state[p]
        for name, x in (("exp_avg", m), ("exp_avg_sq", v)):
            if isinstance(state[name], torch.Tensor) and type(state[name]) is torch.Tensor:
                state[name] = torch.tensor(x, dtype=torch.float32)  # _AdamW: a float32 state
            else:
                state[name].copy_(torch.tensor(x, dtype=torch.float32))  # torchao quantizes
        state["step"].fill_(case["t"] - 1)
        with torch.no_grad():
            p.copy_(torch.tensor(theta, dtype=torch.bfloat16))
        held_m, held_v = (_decoded(state[n]) for n in ("exp_avg", "exp_avg_sq"))
    p.grad = torch.tensor(g, dtype=torch.bfloat16)
    opt.step()
    return p.detach().double().numpy(), held_m, held_v


def _decoded(x: torch.Tensor) -> np.ndarray:
    return (x.dequantize() if hasattr(x, "codes") else x).double().numpy()


def main() -> None:
    warnings.filterwarnings("ignore")
    from torchao.optim import AdamW8bit, _AdamW

    prec = Precision.of(DTYPE, state=DTYPE, compute="float32")
    # as the audit judged: its forms probe ruled out intermediates stored to bfloat16 op by op
    # (torch's for-loop and foreach orders, which round scalars to bfloat16 too)
    ruled_out = frozenset({EAGER_STORES})
    plain = Model(ruled_out=ruled_out)
    control = Model(declared_orders=("torch_capturable",), ruled_out=ruled_out)
    for name, case in CASES.items():
        h, step = case["hyper"], case["t"]
        theta, g, m, v = draws(case)
        got, m_held, v_held = torchao_step(AdamW8bit, case, theta, g, m, v)
        unquantized, _, _ = torchao_step(_AdamW, case, theta, g, m_held, v_held)
        state = {"m": m_held, "v": v_held}
        print(f"{name}: {h}, t={step}, {got.size} elements, 8-bit m and v")
        print(f"  torchao's _AdamW (unquantized state) from the same decoded state: theta "
              f"{'bitwise equal' if np.array_equal(got, unquantized) else 'differs'}")
        for label, b in (("beta2", h["beta2"]), ("beta1", h["beta1"])):
            formed = float(1 - b ** torch.tensor(float(step)))  # torchao's counter and formula
            exact = 1 - mpmath.mpf(b) ** step
            print(f"  1 - {label}^{step}: torchao forms {formed!r}, exact "
                  f"{mpmath.nstr(exact, 8)} ({float(formed / exact - 1):+.3%})")
        exact, bnd = plain.expect(theta, g, state, h, step, prec)
        judged = compare("theta", got, exact["theta"], bnd["theta"], DTYPE)
        print("  the spec's step:", _verdict(judged, got.size))
        rounded = {b: sp.Pow(sp.Float(float(np.float32(h[b.name])), 30), t) for b in (beta1,
                                                                                      beta2)}
        shifted = Oracle(substitute(plain.rule, "adamw[float32 corrections]",
                                    {sp.Pow(b, t): r for b, r in rounded.items()}))
        exact_c = shifted.step(theta, g, state, h, step)
        bnd_c = control.bounds(theta, g, state, h, step, prec)
        judged_c = compare("theta", got, exact_c["theta"], bnd_c["theta"], DTYPE)
        print("  with 1 - beta^t formed in float32 (torch's capturable order's bound):",
              _verdict(judged_c, got.size))
        every = Model().bounds(theta, g, state, h, step, prec)["theta"]
        print("  the spec's step, every order in play (op-by-op bfloat16 stores too):",
              _verdict(compare("theta", got, exact["theta"], every, DTYPE), got.size))
        if judged is not None:
            k = judged.index
            print(f"  worst element theta{list(k)}: before {float(theta[k])!r}, got "
                  f"{float(got[k])!r}, spec {mpmath.nstr(exact['theta'][k], 8)}, float32 "
                  f"corrections {mpmath.nstr(exact_c['theta'][k], 8)}")


def _verdict(mm: object, n: int) -> str:
    if mm is None:
        return f"all {n} elements within the bound"
    return f"{mm.count} of {n} elements out of bound, worst {ratio(mm):.3g} x the bound"


if __name__ == "__main__":
    main()
