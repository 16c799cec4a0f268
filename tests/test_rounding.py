"""The exact-arithmetic helpers the oracle rests on (spec.rounding, and the oracle's reading and
rounding): inputs are read exactly (bf16/fp16/fp32 bits decoded independently here), results are
rounded correctly (checked against an independent Fraction rounding and against numpy/torch
casts), and ULP distances count representable numbers (checked against the IEEE bit patterns).
"""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import torch
from adamw_conformance.spec import registry
from adamw_conformance.spec.formats import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, FORMATS, Format
from adamw_conformance.spec.oracle import Oracle, StepResult
from adamw_conformance.spec.rounding import ordered_key, round_array, round_to, to_mpf, ulp_distance

from tests.exact import DTYPES, frac, reference_round, wide

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
