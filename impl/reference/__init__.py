"""A clean reference AdamW kernel, written as an implementation would be (not from the spec)."""

from impl.reference.adamw_kernel import AdamWMath, adamw, make_kernel, opmath_dtype

__all__ = ["AdamWMath", "adamw", "make_kernel", "opmath_dtype"]
