"""The exact oracle (spec.oracle) and the exact-arithmetic helpers it rests on (spec.rounding).

- Rules without a square root are checked against an independent exact computation: the rule's
  own SymPy expression evaluated in `fractions.Fraction` (nothing re-typed, no mpmath).
- Rules with a square root are checked for self-consistency across precisions, and for honesty:
  `verify=True` passes on ordinary data and raises `PrecisionLossError` when the working precision
  is genuinely too small.
- Inputs are read exactly (bf16/fp16/fp32 bits decoded independently here), results are rounded
  correctly (checked against an independent Fraction rounding and against numpy/torch casts), and
  ULP distances count representable numbers (checked against the IEEE bit patterns).
- `trajectory` is chained exact steps with nothing rounded in between.
"""

from __future__ import annotations

import math
from dataclasses import fields
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import sympy as sp
import torch
from adamw_conformance.spec import registry
from adamw_conformance.spec.conventions import CHOICES, Convention
from adamw_conformance.spec.formats import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, FORMATS, Format
from adamw_conformance.spec.oracle import Oracle, PrecisionLossError, StepResult
from adamw_conformance.spec.rounding import ordered_key, round_array, round_to, to_mpf, ulp_distance

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


# --- the oracle against exact Fractions ----------------------------------------------------------

POLYNOMIAL_RULES = ("sgd", "sgd_decoupled", "momentum", "nesterov", "momentum_ema")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", POLYNOMIAL_RULES)
def test_oracle_matches_fractions(name, dtype):
    rule = registry.get(name)
    rng = np.random.default_rng(sum(map(ord, name + dtype)))
    oracle = Oracle(rule)
    n = 24
    for t in (1, 2, 9):
        params, grad = wide(rng, n, dtype), wide(rng, n, dtype)
        state, hyper = state_for(rule, rng, n, dtype), hyperparameters(rng)
        result = oracle.step(params, grad, state, hyper, t=t, verify=True)
        expected = exact_step(rule, params, grad, state, hyper, t)
        rounded = result.float64()
        for out in rule.outputs:
            for i, exact in enumerate(expected[out]):
                assert within(result[out][i], exact, oracle.prec - 16), (out, i, t)
                assert rounded[out][i] == float(exact), (out, i, t)


def test_fraction_evaluator_takes_the_first_step_branch():
    # momentum's buffer is a copy of the gradient at t = 1 (PyTorch), dampened afterwards.
    rule = registry.get("momentum")
    one = torch.tensor([1.0], dtype=torch.float64)
    hyper = {"lr": 0.5, "momentum": 0.5, "dampening": 0.5}
    state = {"buf": torch.tensor([4.0], dtype=torch.float64)}
    assert exact_step(rule, one, one, state, hyper, 1)["buf"] == [1]
    assert exact_step(rule, one, one, state, hyper, 2)["buf"] == [Fraction(5, 2)]
    assert Oracle(rule).step(one, one, state, hyper, t=2)["buf"][0] == mpmath.mpf(2.5)


def test_missing_hyperparameter_is_an_error():
    with pytest.raises(KeyError, match="momentum"):
        Oracle(registry.get("momentum")).step(np.zeros(2), np.zeros(2), hyper={"lr": 0.1})


# --- rules with a square root: precision consistency and certification ---------------------------

SQRT_RULES = [(n, Convention()) for n in ("adam", "adam_l2", "adamw", "adagrad", "rmsprop",
                                         "rmsprop_momentum", "rmsprop_centered",
                                         "rmsprop_centered_momentum")]
SQRT_RULES += [("adamw", Convention(**{f.name: c})) for f in fields(Convention)
               if f.name != "counter" for c in CHOICES[f.name] if c != f.default]


@pytest.mark.parametrize(("name", "convention"), SQRT_RULES,
                         ids=[f"{n}[{c.label()}]" for n, c in SQRT_RULES])
def test_precisions_agree_for_sqrt_rules(name, convention):
    rule = registry.get(name, convention)
    rng = np.random.default_rng(7)
    n = 16
    for dtype, t in (("float32", 1), ("bfloat16", 4), ("float64", 30)):
        params, grad = wide(rng, n, dtype), wide(rng, n, dtype)
        state, hyper = state_for(rule, rng, n, dtype), hyperparameters(rng)
        coarse = Oracle(rule, prec=200).step(params, grad, state, hyper, t=t, verify=True)
        fine = Oracle(rule, prec=400).step(params, grad, state, hyper, t=t, verify=True)
        for out in rule.outputs:
            for i in range(n):
                exact = frac(fine[out][i])
                assert within(coarse[out][i], exact, 190), (out, i, dtype)
            assert np.array_equal(coarse.rounded(FLOAT32, out), fine.rounded(FLOAT32, out))


def test_precision_loss_is_detected_for_sgd():
    # lr = 1/3 as a double times g = 3 is 1 - 2^-54: at 30 bits it rounds to 1, theta - 1 is 0.
    args = (np.array([1.0]), np.array([3.0]))
    with pytest.raises(PrecisionLossError, match="not certified at 30 bits"):
        Oracle(registry.get("sgd"), prec=30).step(*args, hyper={"lr": 1 / 3}, verify=True)
    # Without verify the coarse oracle silently answers 0; at the default precision it is exact.
    assert Oracle(registry.get("sgd"), prec=30).step(*args, hyper={"lr": 1 / 3})["theta"][0] == 0
    good = Oracle(registry.get("sgd")).step(*args, hyper={"lr": 1 / 3}, verify=True)
    assert frac(good["theta"][0]) == 1 - 3 * Fraction(1 / 3)


def test_precision_loss_is_detected_for_adamw():
    # AdamW's step cancels the decayed parameter: at t = 1 from zero state, lr*g/(|g|+eps) with
    # eps tiny is lr*(1 - eps/|g|), and theta (1 - lr wd) = lr: the result is about lr*eps/|g|.
    rule = registry.get("adamw")
    hyper = {"lr": 0.25, "weight_decay": 0.0, "eps": 2.0**-60}
    theta, grad = np.array([0.25]), np.array([1.0])
    with pytest.raises(PrecisionLossError):
        Oracle(rule, prec=40).step(theta, grad, hyper=hyper, verify=True)
    result = Oracle(rule).step(theta, grad, hyper=hyper, verify=True)
    exact = Fraction(1, 4) * Fraction(2) ** -60 / (1 + Fraction(2) ** -60)
    assert within(result["theta"][0], exact, 200)


def test_certify_tolerates_only_what_prec_promises():
    oracle = Oracle(registry.get("sgd"), prec=256)
    one = mpmath.mpf(1)

    def certify(a, b):
        with mpmath.workprec(400):
            oracle._certify({"theta": np.array([a], dtype=object)},
                            {"theta": np.array([b], dtype=object)})

    with mpmath.workprec(400):
        certify(one, one + mpmath.mpf(2) ** -245)  # within 2^-(256 - 16)
        with pytest.raises(PrecisionLossError):
            certify(one, one + mpmath.mpf(2) ** -230)
    certify(mpmath.nan, mpmath.nan)
    certify(mpmath.inf, mpmath.inf)
    with pytest.raises(PrecisionLossError):
        certify(mpmath.inf, one)
    with pytest.raises(PrecisionLossError):
        certify(mpmath.inf, -mpmath.inf)
    with pytest.raises(PrecisionLossError):
        certify(mpmath.nan, one)


# --- exact binary inputs -------------------------------------------------------------------------

def decode(bits: int, fmt: Format) -> Fraction | None:
    """The value of an IEEE bit pattern of `fmt`, decoded by hand (None for inf and NaN)."""
    mant_bits = fmt.precision - 1
    exp_bits = (fmt.emax - fmt.emin + 2).bit_length()
    sign = -1 if bits >> (mant_bits + exp_bits) else 1
    biased = (bits >> mant_bits) & ((1 << exp_bits) - 1)
    mant = bits & ((1 << mant_bits) - 1)
    if biased == (1 << exp_bits) - 1:
        return None
    if biased == 0:
        value = Fraction(mant) * Fraction(2) ** (fmt.emin - mant_bits)
    else:
        value = Fraction(mant + (1 << mant_bits)) * Fraction(2) ** (biased + fmt.emin - 1
                                                                     - mant_bits)
    return sign * value


BIT_VIEWS = {"bfloat16": (torch.bfloat16, torch.int16, 16), "float16": (torch.float16,
                                                                        torch.int16, 16),
             "float32": (torch.float32, torch.int32, 32), "float64": (torch.float64,
                                                                      torch.int64, 64)}


def all_or_sampled_bits(name: str, rng: np.random.Generator) -> np.ndarray:
    width = BIT_VIEWS[name][2]
    if width == 16:
        return np.arange(1 << 16, dtype=np.uint64)
    return rng.integers(0, 1 << width, 4096, dtype=np.uint64, endpoint=False)


def tensor_from_bits(bits: np.ndarray, name: str) -> torch.Tensor:
    dtype, int_dtype, width = BIT_VIEWS[name]
    signed = bits.astype(np.int64) if width < 64 else bits.view(np.int64)
    if width < 64:
        signed = np.where(signed >= 1 << (width - 1), signed - (1 << width), signed)
    return torch.tensor(signed, dtype=torch.int64).to(int_dtype).view(dtype)


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # NaN bit patterns
@pytest.mark.parametrize("name", ["bfloat16", "float16", "float32", "float64"])
def test_inputs_are_read_exactly(name):
    fmt = FORMATS[name]
    bits = all_or_sampled_bits(name, np.random.default_rng(3))
    values = tensor_from_bits(bits, name)
    exact = to_mpf(values)
    for b, got in zip(bits.tolist(), exact, strict=True):
        expected = decode(int(b), fmt)
        if expected is None:
            assert not mpmath.isfinite(got)
        else:
            assert frac(got) == expected, hex(b)


def test_bf16_parameters_pass_through_unchanged():
    # lr = 0: theta' = theta exactly, as the bf16 value (never rounded through anything).
    theta = torch.tensor([1.0078125, -3.0e38, 2.0**-133, 0.1], dtype=torch.bfloat16)
    result = Oracle(registry.get("sgd")).step(theta, torch.ones(4, dtype=torch.bfloat16),
                                              hyper={"lr": 0.0})
    for got, value in zip(result["theta"], theta.tolist(), strict=True):
        assert got == mpmath.mpf(value) and frac(got) == Fraction(value)


def test_hyperparameters_are_exact_doubles():
    # lr = 0.1 is the double nearest 1/10, not 1/10.
    result = Oracle(registry.get("sgd")).step(np.array([0.0]), np.array([1.0]),
                                              hyper={"lr": 0.1})
    assert frac(result["theta"][0]) == -Fraction(0.1)
    assert frac(result["theta"][0]) != Fraction(-1, 10)


def test_float32_inputs_are_not_their_decimal_neighbours():
    x = torch.tensor([0.1], dtype=torch.float32)
    assert frac(to_mpf(x)[0]) == Fraction(np.float32(0.1).item())
    assert frac(to_mpf(x)[0]) != Fraction(0.1)


# --- correct rounding ----------------------------------------------------------------------------

def random_mpf(rng: np.random.Generator, n: int, lo: int, hi: int) -> list:
    """High-precision (160-bit) values spread over [2^lo, 2^hi), both signs."""
    out = []
    with mpmath.workprec(200):
        for _ in range(n):
            man = int(rng.integers(1 << 62, 1 << 63)) << 97 | int(rng.integers(0, 1 << 62))
            e = int(rng.integers(lo, hi)) - 159
            out.append(mpmath.mpf((int(rng.integers(0, 2)), man, e, man.bit_length())))
    return out


@pytest.mark.parametrize("name", ["float64", "float32", "float16", "bfloat16"])
def test_round_to_matches_fraction_rounding(name):
    fmt = FORMATS[name]
    rng = np.random.default_rng(11)
    # From deep below the subnormals to beyond the largest finite number.
    values = random_mpf(rng, 600, fmt.emin - fmt.precision - 3, fmt.emax + 2)
    values += random_mpf(rng, 200, fmt.emin - fmt.precision - 1, fmt.emin + 1)  # subnormals
    for x in values:
        assert round_to(x, fmt) == reference_round(frac(x), fmt), mpmath.nstr(x, 30)


TIES = {
    # (exact value, fmt, correctly rounded)
    "tie down to even": (Fraction(1) + Fraction(2) ** -24, FLOAT32, 1.0),
    "tie up to even": (Fraction(1) + 3 * Fraction(2) ** -24, FLOAT32, 1 + 2.0**-22),
    "just above a tie": (Fraction(1) + Fraction(2) ** -24 + Fraction(2) ** -80, FLOAT32,
                         1 + 2.0**-23),
    "subnormal tie to zero": (Fraction(2) ** -150, FLOAT32, 0.0),
    "subnormal tie to even": (3 * Fraction(2) ** -150, FLOAT32, 2.0**-148),
    "just above half the smallest": (Fraction(2) ** -150 + Fraction(2) ** -200, FLOAT32,
                                     2.0**-149),
    "largest finite": (Fraction(FLOAT32.max), FLOAT32, FLOAT32.max),
    "below the overflow tie": (Fraction(FLOAT32.max) + Fraction(2) ** 103 - 1, FLOAT32,
                               FLOAT32.max),
    "overflow tie": (Fraction(FLOAT32.max) + Fraction(2) ** 103, FLOAT32, math.inf),
    "float64 subnormal tie": (3 * Fraction(2) ** -1075, FLOAT64, 2.0**-1073),
    "float64 overflow": (Fraction(2) ** 1024, FLOAT64, math.inf),
    "float64 just below overflow tie": (Fraction(FLOAT64.max) + Fraction(2) ** 970 - 1, FLOAT64,
                                        FLOAT64.max),
    "bf16 tie to even": (Fraction(1) + Fraction(2) ** -8, BFLOAT16, 1.0),
    "bf16 overflow tie": (Fraction(BFLOAT16.max) + Fraction(2) ** 119, BFLOAT16, math.inf),
    "fp16 overflow": (Fraction(65520), FLOAT16, math.inf),
    "fp16 largest": (Fraction(65519), FLOAT16, 65504.0),
    "fp16 subnormal": (Fraction(5, 2) * Fraction(2) ** -24, FLOAT16, 2.0**-23),
}


@pytest.mark.parametrize("case", list(TIES))
def test_round_to_edge_cases(case):
    exact, fmt, expected = TIES[case]
    with mpmath.workprec(2000):
        x = mpmath.mpf(exact.numerator) / exact.denominator
        neg = -x
    assert frac(x) == exact
    assert round_to(x, fmt) == expected
    assert round_to(neg, fmt) == -expected
    assert reference_round(exact, fmt) == expected


def test_round_to_never_rounds_through_float64():
    # 1 + 2^-24 + 2^-80 is 1 + 2^-24 in float64, a float32 tie that would go down to 1.
    with mpmath.workprec(100):
        x = 1 + mpmath.mpf(2) ** -24 + mpmath.mpf(2) ** -80
    assert round_to(x, FLOAT32) == 1 + 2.0**-23
    assert np.float32(float(x)) == 1.0  # what double rounding gives


def doubles_over(rng, lo: int, hi: int, n: int) -> np.ndarray:
    x = rng.uniform(1, 2, n) * np.exp2(rng.integers(lo, hi, n).astype(np.float64))
    return x * rng.choice([-1.0, 1.0], n)


def test_rounded_matches_numpy_float32_cast():
    rng = np.random.default_rng(12)
    x = doubles_over(rng, -155, 130, 2000)  # subnormals, normals, overflow
    x = np.concatenate([x, [0.0, FLOAT32.max, -FLOAT32.max, 2.0**-149, 2.0**-150]])
    result = StepResult({"theta": to_mpf(x)}, 256)
    with np.errstate(over="ignore"):
        expected = x.astype(np.float32).astype(np.float64)
    assert np.array_equal(result.rounded(FLOAT32, "theta"), expected)
    assert np.array_equal(result.rounded(FLOAT32)["theta"], expected)
    assert np.array_equal(result.float64()["theta"], x)


def test_rounded_matches_numpy_float16_cast():
    rng = np.random.default_rng(13)
    x = doubles_over(rng, -27, 18, 2000)
    x = np.concatenate([x, [65504.0, 65519.99, 65520.0, 2.0**-25, 3 * 2.0**-25, 1 + 2.0**-11]])
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16).astype(np.float64)
    assert np.array_equal(round_array(to_mpf(x), FLOAT16), expected)


def test_rounded_matches_torch_bfloat16_cast():
    # torch rounds float32 to bf16 correctly (float64 goes through float32: double rounding), so
    # the exact values here are float32 numbers.
    rng = np.random.default_rng(14)
    with np.errstate(over="ignore"):
        x = doubles_over(rng, -140, 129, 2000).astype(np.float32)
    x = np.concatenate([x[np.isfinite(x)],
                        np.array([1 + 2.0**-8, 1 + 3 * 2.0**-8, 3.3961e38, 3.3963e38,
                                  2.0**-134, 3 * 2.0**-134], dtype=np.float32)])
    expected = torch.from_numpy(x).to(torch.bfloat16).double().numpy()
    assert np.array_equal(round_array(to_mpf(x), BFLOAT16), expected)
    assert np.isinf(expected).any() and (expected == 0).any()  # overflow and underflow covered


def test_oracle_rounds_its_exact_result_once():
    # sgd: theta - lr g = 1 + 2^-24 + 2^-60 exactly. In float64 that is 1 + 2^-24, a float32 tie
    # that goes down to 1; the exact value is above the tie and rounds up to 1 + 2^-23.
    result = Oracle(registry.get("sgd")).step(np.array([1.0]), np.array([-(2.0**-24 + 2.0**-60)]),
                                              hyper={"lr": 1.0})
    assert frac(result["theta"][0]) == 1 + Fraction(2) ** -24 + Fraction(2) ** -60
    assert result.rounded(FLOAT32, "theta")[0] == 1 + 2.0**-23
    assert result.rounded(BFLOAT16, "theta")[0] == 1.0
    assert result.float64()["theta"][0] == 1 + 2.0**-24


# --- ordered keys and ULP distances --------------------------------------------------------------

@pytest.mark.parametrize("name", ["bfloat16", "float16", "float32", "float64"])
def test_ordered_key_counts_representable_numbers(name):
    # For IEEE formats the count of representable magnitudes below |x| is x's bit pattern without
    # its sign: adjacent numbers differ by one, across subnormals, binades and up to inf.
    fmt = FORMATS[name]
    width = BIT_VIEWS[name][2]
    bits = all_or_sampled_bits(name, np.random.default_rng(5))
    values = tensor_from_bits(bits, name)
    magnitude = (bits & np.uint64((1 << (width - 1)) - 1)).astype(np.int64)
    negative = (bits >> np.uint64(width - 1)).astype(bool)
    keep = ~torch.isnan(values).numpy()
    expected = np.where(negative, -magnitude, magnitude)[keep]
    assert np.array_equal(ordered_key(values, fmt)[keep], expected)


@pytest.mark.parametrize("name", ["bfloat16", "float16", "float32", "float64"])
def test_adjacent_numbers_are_one_ulp_apart(name):
    fmt = FORMATS[name]
    dtype = DTYPES[name]
    rng = np.random.default_rng(6)
    x = wide(rng, 500, name)
    x = torch.cat([x, torch.tensor([0.0, fmt.tiny, -fmt.tiny, fmt.eta, fmt.max, -fmt.max],
                                   dtype=torch.float64).to(dtype)])
    up = torch.nextafter(x, torch.full_like(x, math.inf))
    down = torch.nextafter(x, torch.full_like(x, -math.inf))
    assert np.all(ulp_distance(x, up, fmt) == 1)
    assert np.all(ulp_distance(x, down, fmt) == 1)
    assert np.all(ulp_distance(up, down, name) == 2)


def test_ulp_distance_across_zero():
    for fmt in (BFLOAT16, FLOAT16, FLOAT32, FLOAT64):
        assert ulp_distance(-fmt.eta, fmt.eta, fmt) == 2
        assert ulp_distance(-0.0, 0.0, fmt) == 0
        assert ulp_distance(-fmt.tiny, fmt.tiny, fmt) == 2 * 2 ** (fmt.precision - 1)


def test_ulp_distance_does_not_overflow_int32():
    # Twice the largest float32 key is above 2^31.
    d = ulp_distance(-FLOAT32.max, FLOAT32.max, FLOAT32)
    assert d.dtype == np.int64 and d == 2 * 0x7F7FFFFF
    assert ulp_distance(FLOAT32.max, math.inf, FLOAT32) == 1


def test_ulp_distance_large_bfloat16():
    big = torch.tensor([2.0**100, 2.0**101, BFLOAT16.max, math.inf], dtype=torch.bfloat16)
    assert ulp_distance(big[0], big[1], torch.bfloat16) == 128
    assert ulp_distance(big[2], big[3], "bfloat16") == 1
    assert ulp_distance(-big[2], big[2], BFLOAT16) == 2 * 0x7F7F
    assert ulp_distance(2.0**-133, BFLOAT16.max, BFLOAT16) == 0x7F7F - 1


def test_ulp_distance_float64_far_apart():
    # Keys pass 2^53: float64 arithmetic on them would lose the last steps.
    x = np.array([1e300, 3.0])
    assert np.all(ulp_distance(x, np.nextafter(x, np.inf), FLOAT64) == 1)
    assert ulp_distance(1.0, 2.0, FLOAT64) == 2**52


# --- trajectories --------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "t0"), [("adamw", 1), ("adamw", 5), ("momentum", 1),
                                          ("momentum", 3), ("rmsprop_centered_momentum", 2),
                                          ("adagrad", 1)])
def test_first_step_of_trajectory_is_step(name, t0):
    rule = registry.get(name)
    rng = np.random.default_rng(21)
    params, grad = wide(rng, 8, "float32"), wide(rng, 8, "float32")
    state, hyper = state_for(rule, rng, 8, "float32"), hyperparameters(rng)
    oracle = Oracle(rule)
    (first,) = oracle.trajectory(params, [grad], hyper, state, t0=t0)
    step = oracle.step(params, grad, state, hyper, t=t0)
    for out in rule.outputs:
        assert all(a == b for a, b in zip(first[out], step[out], strict=True)), out


@pytest.mark.parametrize("name", POLYNOMIAL_RULES)
def test_trajectory_is_chained_exact_steps(name):
    rule = registry.get(name)
    rng = np.random.default_rng(22)
    n, t0 = 6, 1
    params, state = wide(rng, n, "bfloat16"), state_for(rule, rng, n, "bfloat16")
    grads = [wide(rng, n, "bfloat16") for _ in range(4)]
    hyper = hyperparameters(rng)
    traj = Oracle(rule).trajectory(params, grads, hyper, state, t0=t0)
    # The same chain in Fractions: each step's exact outputs are the next step's inputs.
    h = dict(rule.defaults) | hyper
    for i in range(n):
        current = {"theta": Fraction(float(params[i]))}
        current |= {s.name: Fraction(float(state[s.name][i])) for s in rule.state}
        for k, grad in enumerate(grads):
            env = {sym: current[sym.name] for sym in (rule.inputs[0], *rule.state)}
            env |= {rule.inputs[1]: Fraction(float(grad[i])), rule.inputs[2]: Fraction(t0 + k)}
            env |= {sym: Fraction(float(h[sym.name])) for sym in rule.hyperparameters}
            current = {out: fraction_eval(rule.update[out], env) for out in rule.outputs}
            for out in rule.outputs:
                assert within(traj[k][out][i], current[out], 230), (i, k, out)


def test_adamw_trajectory_is_chained_exact_steps():
    # Chained in SymPy's own arbitrary-precision evaluation (evalf, 130 digits), not in mpmath's
    # lambdified code: outputs of each step are carried unrounded into the next.
    rule = registry.get("adamw")
    rng = np.random.default_rng(23)
    n, t0 = 3, 2
    params, state = wide(rng, n, "float32"), state_for(rule, rng, n, "float32")
    grads = [wide(rng, n, "float32") for _ in range(3)]
    hyper = hyperparameters(rng)
    traj = Oracle(rule).trajectory(params, grads, hyper, state, t0=t0)
    h = dict(rule.defaults) | hyper
    for i in range(n):
        current = {"theta": sp.Rational(float(params[i]))}
        current |= {s.name: sp.Rational(float(state[s.name][i])) for s in rule.state}
        for k, grad in enumerate(grads):
            env = {sym: current[sym.name] for sym in (rule.inputs[0], *rule.state)}
            env |= {rule.inputs[1]: sp.Rational(float(grad[i])), rule.inputs[2]: t0 + k}
            env |= {sym: sp.Rational(float(h[sym.name])) for sym in rule.hyperparameters}
            current = {out: rule.update[out].evalf(130, subs=env) for out in rule.outputs}
            for out in rule.outputs:
                exact = Fraction(*map(int, sp.Rational(current[out]).as_numer_denom()))
                assert within(traj[k][out][i], exact, 230), (i, k, out)


def test_trajectory_does_not_round_between_steps():
    # Decay only, in float64: the exact trajectory is theta (1 - lr wd)^k, which float64 steps
    # (rounded each time) miss.
    rule = registry.get("sgd_decoupled")
    hyper = {"lr": 0.1, "weight_decay": 0.1}
    traj = Oracle(rule).trajectory(np.array([1.0]), [np.array([0.0])] * 5, hyper)
    keep = 1 - Fraction(0.1) * Fraction(0.1)
    for k, res in enumerate(traj, start=1):
        assert within(res["theta"][0], keep**k, 240)
    # The value carried is not a double: nothing was rounded to float64 between steps.
    assert frac(traj[-1]["theta"][0]).denominator > 2**53
