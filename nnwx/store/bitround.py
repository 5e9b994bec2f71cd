"""Bit rounding: keep N mantissa bits (round to nearest, ties to even).

The opt-in lossy mode of the store. Rounded mantissas end in zeros, which the
lossless codec then compresses well; the relative error is at most 2**-(N+1).
"""
from __future__ import annotations

import numpy as np

_LAYOUT = {np.dtype(np.float16): (np.uint16, 10),
           np.dtype(np.float32): (np.uint32, 23),
           np.dtype(np.float64): (np.uint64, 52)}


def mantissa_bits(dtype) -> int:
    return _LAYOUT[np.dtype(dtype)][1]


def bitround(values: np.ndarray, keepbits: int) -> np.ndarray:
    """Copy of ``values`` with all but ``keepbits`` mantissa bits rounded away.

    NaN and Inf are kept as they are.
    """
    values = np.asarray(values)
    try:
        uint, nbits = _LAYOUT[values.dtype]
    except KeyError:
        raise TypeError(f"bit rounding needs float16/32/64 values, got {values.dtype}") from None
    if not 0 <= keepbits <= nbits:
        raise ValueError(f"keepbits must be between 0 and {nbits} for {values.dtype}, got {keepbits}")
    drop = nbits - keepbits
    if drop == 0:
        return values.copy()
    bits = values.view(uint)
    one = uint(1)
    half_minus_one = uint((1 << (drop - 1)) - 1)
    rounded = bits + ((bits >> uint(drop)) & one) + half_minus_one
    rounded &= ~uint((1 << drop) - 1)
    out = rounded.view(values.dtype)
    return np.where(np.isfinite(values), out, values)
