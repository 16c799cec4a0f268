"""Binary floating-point formats, described by the numbers the rounding model needs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    """An IEEE-style binary format: `precision` significand bits (implicit bit included)."""

    name: str
    precision: int
    emin: int  # exponent of the smallest normal number
    emax: int  # exponent of the largest finite number

    @property
    def u(self) -> float:
        """Unit roundoff: the relative error bound of round-to-nearest."""
        return 2.0 ** -self.precision

    @property
    def eta(self) -> float:
        """Smallest positive subnormal: the spacing of numbers below the normal range."""
        return 2.0 ** (self.emin - self.precision + 1)

    @property
    def tiny(self) -> float:
        """Smallest positive normal number."""
        return 2.0**self.emin

    @property
    def max(self) -> float:
        """Largest finite number."""
        return (2.0 - 2.0 ** (1 - self.precision)) * 2.0**self.emax

    def __str__(self) -> str:
        return self.name


FLOAT64 = Format("float64", 53, -1022, 1023)
FLOAT32 = Format("float32", 24, -126, 127)
BFLOAT16 = Format("bfloat16", 8, -126, 127)
FLOAT16 = Format("float16", 11, -14, 15)

FORMATS: dict[str, Format] = {f.name: f for f in (FLOAT64, FLOAT32, BFLOAT16, FLOAT16)}


def format_of(dtype: object) -> Format:
    """The Format of a numpy dtype, a torch dtype, or a name such as 'bfloat16'."""
    name = str(dtype).removeprefix("torch.")
    aliases = {"double": "float64", "float": "float32", "half": "float16", "bf16": "bfloat16"}
    name = aliases.get(name, name)
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"no binary format known for dtype {dtype!r}") from None


def opmath(fmt: Format) -> Format:
    """The format PyTorch computes in for tensors of `fmt` (its `opmath_type`)."""
    return FLOAT32 if fmt.precision < FLOAT32.precision else fmt
