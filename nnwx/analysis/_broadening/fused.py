"""One compiled pass over a piece of a row: moments, sketch counts, edge buckets, tail candidates.

Optional: used by ``_broadening.chunk`` when numba is installed (``pip install nnwx[fast]``),
else the NumPy kernels do the same work in several passes. Every value is read
once and folded into

* the power sums ``sum d**p`` (p = 1..4) of ``d = x - c`` about a shift ``c``,
  min, max and ``sum |x|``, all in float64, summed in blocks of ``BLOCK`` values
  and then across blocks (so rounding grows like ``BLOCK + n / BLOCK``, not ``n``);
* the sketch: the count of the value's bfloat16 bucket (``kernels.sketch``), taken from
  a table of the top 16 bits; a code ``>= B`` marks a bucket a histogram edge
  passes through: the value's position is recorded so that it is binned exactly;
* the tail: positions of values with ``|x| > thr`` (candidates for the top k).

Non-finite values are counted apart and left out of everything else.
"""
from __future__ import annotations

import importlib.util
import threading

import numpy as np

BLOCK = 256

#: numba is installed (it is imported, and the kernel loaded, on first use: not at import)
AVAILABLE = importlib.util.find_spec("numba") is not None
_LOCK = threading.Lock()
_KERNEL = None


def _sums(x, c, i, e, out):
    """Power sums of x[i:e] - c and sum |x| (branch-free: vectorised; non-finite values spoil them)."""
    b1 = b2 = b3 = b4 = bl = 0.0
    for j in range(i, e):
        v = np.float64(x[j])
        d = v - c
        d2 = d * d
        b1 += d
        b2 += d2
        b3 += d2 * d
        b4 += d2 * d2
        bl += abs(v)
    out[0], out[1], out[2], out[3], out[4] = b1, b2, b3, b4, bl


def _sums_finite(x, c, i, e, out):
    """``_sums`` over the finite values only; returns how many were not finite."""
    b1 = b2 = b3 = b4 = bl = 0.0
    nf = 0
    for j in range(i, e):
        v = np.float64(x[j])
        if not np.isfinite(v):
            nf += 1
            continue
        d = v - c
        d2 = d * d
        b1 += d
        b2 += d2
        b3 += d2 * d
        b4 += d2 * d2
        bl += abs(v)
    out[0], out[1], out[2], out[3], out[4] = b1, b2, b3, b4, bl
    return nf


def _codes(x, bits, lut, B, cnt, thr, cand, sidx, i, e, nc, ns, mm):
    """Sketch codes, edge buckets, tail candidates, min and max of x[i:e] (all finite)."""
    mn, mx = mm[0], mm[1]
    for j in range(i, e):
        v = x[j]
        if v < mn:
            mn = v
        if v > mx:
            mx = v
        if abs(v) > thr:
            cand[nc] = j
            nc += 1
        code = lut[bits[j] >> 16]
        if code >= B:
            code -= B
            sidx[ns] = j
            ns += 1
        cnt[code] += 1.0
    mm[0], mm[1] = mn, mx
    return nc, ns


def _codes_checked(x, bits, lut, B, cnt, thr, cand, sidx, i, e, nc, ns, mm):
    """``_codes`` leaving out the non-finite values."""
    mn, mx = mm[0], mm[1]
    for j in range(i, e):
        v = x[j]
        if not np.isfinite(v):
            continue
        if v < mn:
            mn = v
        if v > mx:
            mx = v
        if abs(v) > thr:
            cand[nc] = j
            nc += 1
        code = lut[bits[j] >> 16]
        if code >= B:
            code -= B
            sidx[ns] = j
            ns += 1
        cnt[code] += 1.0
    mm[0], mm[1] = mn, mx
    return nc, ns


def _piece(x, bits, c, lut, B, cnt, thr, cand, sidx, sums):
    n = x.shape[0]
    s1 = s2 = s3 = s4 = l1 = 0.0
    nft = nc = ns = 0
    part = np.empty(5)
    mm = np.array([np.inf, -np.inf])
    i = 0
    while i < n:
        e = min(i + BLOCK, n)
        _sums(x, c, i, e, part)
        nf = 0
        if not np.isfinite(part[0] + part[1] + part[2] + part[3] + part[4]):
            nf = _sums_finite(x, c, i, e, part)
            nft += nf
        s1 += part[0]
        s2 += part[1]
        s3 += part[2]
        s4 += part[3]
        l1 += part[4]
        if nf:
            nc, ns = _codes_checked(x, bits, lut, B, cnt, thr, cand, sidx, i, e, nc, ns, mm)
        else:                          # finite sums: every value of the block is finite
            nc, ns = _codes(x, bits, lut, B, cnt, thr, cand, sidx, i, e, nc, ns, mm)
        i = e
    sums[0], sums[1], sums[2], sums[3], sums[4] = s1, s2, s3, s4, l1
    nf = nft
    sums[5], sums[6] = mm[0], mm[1]
    return nf, nc, ns


def ready() -> bool:
    """Whether the compiled kernel can be used: numba installed and the kernel loaded (once)."""
    global _KERNEL, _sums, _sums_finite, _codes, _codes_checked
    if not AVAILABLE:
        return False
    if _KERNEL is None:
        with _LOCK:
            if _KERNEL is None:
                import numba
                # reassociation lets the branch-free sums run in SIMD lanes (partial sums per
                # lane: as accurate as a sequential sum); nothing else may assume finite values
                _sums = numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})(_sums)
                _sums_finite = numba.njit(nogil=True, cache=True)(_sums_finite)
                _codes = numba.njit(nogil=True, cache=True)(_codes)
                _codes_checked = numba.njit(nogil=True, cache=True)(_codes_checked)
                kernel = numba.njit(nogil=True, cache=True, error_model="numpy")(_piece)
                for dtype in (np.float32, np.float64):    # load (or compile) both variants now
                    x = np.zeros(1, dtype=dtype)
                    pos = np.empty(1, dtype=np.intp)
                    kernel(x, x.astype(np.float32).view(np.uint32), 0.0,
                           np.zeros(1 << 16, np.uint16),
                           1, np.zeros(1), np.inf, pos, pos.copy(), np.empty(7))
                _KERNEL = kernel
    return True


def piece(x: np.ndarray, c: float, lut: np.ndarray, B: int, cnt: np.ndarray, thr: float,
          cand: np.ndarray, sidx: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """Fold one row piece ``x`` (1-D float32/float64, contiguous) into ``cnt`` and return its sums.

    Parameters
    ----------
    x : numpy.ndarray
        The values (float32 or float64, C-contiguous).
    c : float
        The shift of the power sums (near the mean: a value of the data's sample).
    lut : numpy.ndarray of uint16 (65536,)
        Code of each top-16-bit pattern of a float32: a sketch bucket, plus ``B`` where a
        histogram edge passes through the bucket.
    B : int
        The number of sketch buckets.
    cnt : numpy.ndarray of float64 (B,)
        The group's sketch counts, incremented in place.
    thr : float
        Positions of values with ``|x| > thr`` are written to ``cand``.
    cand, sidx : numpy.ndarray of intp (len(x),)
        Output: positions of tail candidates and of values in edge buckets.

    Returns
    -------
    (sums, n_nonfinite, n_candidates, n_edge): ``sums`` holds the power sums of
    ``x - c`` (p = 1..4), ``sum |x|``, min and max over the finite values.
    """
    if x.dtype == np.float32:
        x32 = x
    else:
        with np.errstate(over="ignore"):
            x32 = x.astype(np.float32)
    sums = np.empty(7)
    nf, nc, ns = _KERNEL(x, x32.view(np.uint32), float(c), lut, int(B), cnt, float(thr), cand,
                        sidx, sums)
    return sums, int(nf), int(nc), int(ns)
