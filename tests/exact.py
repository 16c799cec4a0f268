"""Independent exact arithmetic and test inputs for the oracle's tests: the rules' own SymPy
expressions evaluated in `fractions.Fraction` (nothing re-typed, no mpmath), rounding to a format
by Fractions, and wide random inputs per dtype."""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import sympy as sp
import torch
from adamw_conformance.spec.formats import Format

# --- independent exact arithmetic ----------------------------------------------------------------

def frac(x) -> Fraction:
    """The exact value of an mpf (or a float) as a Fraction."""
    if isinstance(x, float):
        return Fraction(x)
    if not isinstance(x, mpmath.mpf):
        x = mpmath.mpf(x)  # exact for ints; an mpf is never re-made (that rounds to mp.prec)
    assert mpmath.isfinite(x), x
    sign, man, exp, _ = x._mpf_  # man_exp drops the sign
    return (-1) ** sign * Fraction(int(man)) * Fraction(2) ** exp


def _truth(cond, env) -> bool:
    if cond in (sp.true, sp.false):
        return bool(cond)
    lhs, rhs = fraction_eval(cond.lhs, env), fraction_eval(cond.rhs, env)
    ops = {sp.Eq: lambda a, b: a == b, sp.Ne: lambda a, b: a != b,
           sp.StrictLessThan: lambda a, b: a < b, sp.LessThan: lambda a, b: a <= b,
           sp.StrictGreaterThan: lambda a, b: a > b, sp.GreaterThan: lambda a, b: a >= b}
    return ops[type(cond)](lhs, rhs)


def fraction_eval(expr: sp.Expr, env: dict) -> Fraction:
    """`expr` evaluated exactly in Fractions: +, *, integer powers and Piecewise only."""
    if expr.is_Symbol:
        return env[expr]
    if expr.is_Rational:
        return Fraction(int(expr.p), int(expr.q))
    if expr.is_Add:
        return sum((fraction_eval(a, env) for a in expr.args), Fraction(0))
    if expr.is_Mul:
        return math.prod((fraction_eval(a, env) for a in expr.args), start=Fraction(1))
    if expr.is_Pow:
        exponent = fraction_eval(expr.exp, env)
        assert exponent.denominator == 1, f"not an integer power: {expr}"
        return fraction_eval(expr.base, env) ** int(exponent)
    if isinstance(expr, sp.Piecewise):
        for value, cond in expr.args:
            if _truth(cond, env):
                return fraction_eval(value, env)
        raise ValueError(f"no branch of {expr} applies")
    raise TypeError(f"no exact evaluation for {type(expr).__name__}: {expr}")


def reference_round(x: Fraction, fmt: Format) -> float:
    """Round to nearest, ties to even, onto `fmt` (subnormals, overflow to inf), in Fractions."""
    if x == 0:
        return 0.0
    a = abs(x)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    quantum = Fraction(2) ** (max(e, fmt.emin) - fmt.precision + 1)
    r = round(a / quantum) * quantum  # Fraction.__round__ is half-to-even
    value = math.inf if r > Fraction(fmt.max) else float(r)
    return -value if x < 0 else value


# --- inputs --------------------------------------------------------------------------------------

DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
          "bfloat16": torch.bfloat16}

#: Exponent ranges for random inputs per dtype: wide, with the subnormal range of each format.
EXPONENTS = {"float64": (-300, 300), "float32": (-148, 120), "float16": (-24, 14),
             "bfloat16": (-132, 120)}


def wide(rng: np.random.Generator, n: int, dtype: str, positive: bool = False) -> torch.Tensor:
    """`n` values of `dtype` spread over its exponent range (a few zeros among them)."""
    lo, hi = EXPONENTS[dtype]
    mant = rng.uniform(1.0, 2.0, n)
    x = mant * np.exp2(rng.integers(lo, hi, n).astype(np.float64))
    if not positive:
        x *= rng.choice([-1.0, 1.0], n)
    x[rng.random(n) < 0.05] = 0.0
    return torch.tensor(x, dtype=torch.float64).to(DTYPES[dtype])


def hyperparameters(rng: np.random.Generator) -> dict[str, float]:
    """Python floats, with values that are far from short binary fractions."""
    return {
        "lr": float(10 ** rng.uniform(-6, 0)), "weight_decay": float(10 ** rng.uniform(-6, -1)),
        "momentum": float(rng.uniform(0.01, 0.99)), "dampening": float(rng.uniform(0, 0.5)),
        "beta1": float(rng.uniform(0.01, 0.99)), "beta2": float(rng.uniform(0.9, 0.99999)),
        "eps": float(10 ** rng.uniform(-12, -4)), "alpha": float(rng.uniform(0.5, 0.999)),
        "lr_decay": float(10 ** rng.uniform(-4, -1)), "initial_lr": float(10 ** rng.uniform(-4, 0)),
    }


def state_for(rule, rng, n, dtype) -> dict[str, torch.Tensor]:
    """State inside the rule's domain: second moments >= 0, centered v >= gavg^2."""
    state = {}
    for s in rule.state:
        if s.name in ("v", "vmax", "accum"):
            state[s.name] = wide(rng, n, dtype, positive=True)
        else:
            state[s.name] = wide(rng, n, dtype)
    if "gavg" in state:
        gavg = state["gavg"].double()
        v = (2 * gavg * gavg + state["v"].double()).to(DTYPES[dtype])
        overflow = torch.isinf(v)  # gavg too large for gavg^2 in this dtype: use gavg = 0 there
        state["gavg"] = torch.where(overflow, torch.zeros_like(state["gavg"]), state["gavg"])
        state["v"] = torch.where(overflow, state["v"], v)
    return state


def exact_step(rule, params, grad, state, hyper, t) -> dict[str, list[Fraction]]:
    """The rule's step for every element, in Fractions, from the same exact inputs."""
    h = dict(rule.defaults) | dict(hyper)
    names = [s for s in rule.inputs]
    out = {name: [] for name in rule.outputs}
    p, g_ = params.double().numpy(), grad.double().numpy()
    st = {k: v.double().numpy() for k, v in state.items()}
    for i in range(p.size):
        values = [Fraction(float(p[i])), Fraction(float(g_[i])), Fraction(t)]
        values += [Fraction(float(st[s.name][i])) for s in rule.state]
        values += [Fraction(float(h[name])) for name in rule.hyperparameter_names]
        env = dict(zip(names, values, strict=True))
        for name in rule.outputs:
            out[name].append(fraction_eval(rule.update[name], env))
    return out


def within(got, exact: Fraction, bits: int) -> bool:
    """|got - exact| <= 2^-bits |exact|, decided exactly."""
    return abs(frac(got) - exact) <= abs(exact) * Fraction(1, 2**bits)
