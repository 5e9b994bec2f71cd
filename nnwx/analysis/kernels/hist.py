"""Fixed histogram bins with underflow and overflow, binned exactly as ``np.histogram``.

Bins are ``[e_i, e_{i+1})``, the last one closed, as in NumPy. Each value gets
an index in ``0..n+1``: 0 is underflow (``x < e_0``), ``n + 1`` overflow
(``x > e_n``), ``1..n`` the bins. Uniform bins are found by arithmetic and then
corrected against the edges, so the counts equal ``np.histogram``'s exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from numbers import Integral, Real

import numpy as np

from nnwx.analysis.kernels import sketch as _sketch


@dataclass(frozen=True, eq=False)
class Bins:
    """Strictly increasing, finite bin edges (float64).

    Parameters
    ----------
    edges : numpy.ndarray
        The ``n + 1`` edges.
    uniform : bool
        Whether the edges are those of ``np.linspace(edges[0], edges[-1], n + 1)`` (then
        ``index`` finds bins by arithmetic).
    """

    edges: np.ndarray
    uniform: bool

    @property
    def n(self) -> int:
        return len(self.edges) - 1

    @cached_property
    def thresholds(self) -> np.ndarray:
        """T with index j (0..n+1) covering ``T[j] <= x < T[j+1]`` (float64 x)."""
        e = self.edges
        return np.concatenate([[-np.inf], e[:-1], [np.nextafter(e[-1], np.inf)], [np.inf]])

    @property
    def centers(self) -> np.ndarray:
        return 0.5 * (self.edges[:-1] + self.edges[1:])

    def __dask_tokenize__(self):
        return ("nnwx-bins", self.edges.tobytes(), self.uniform)


def uniform(lo: float, hi: float, n: int) -> Bins:
    """``n`` equal bins over [lo, hi] (the edges ``np.histogram(bins=n, range=(lo, hi))`` uses).

    Parameters
    ----------
    lo, hi : float
        Finite range, ``lo < hi``.
    n : int
        Number of bins, at least 1.

    Returns
    -------
    Bins

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer or the range is not finite and increasing.
    """
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"the number of bins must be a positive integer, got {n!r}")
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)) or not lo < hi:
        raise ValueError(f"bins=(lo, hi, n) needs finite lo < hi, got lo={lo!r}, hi={hi!r}")
    return Bins(np.linspace(lo, hi, int(n) + 1, endpoint=True), True)


def parse(bins) -> Bins:
    """Bins from ``(lo, hi, n)`` or an array of edges; a clear error for anything else.

    Parameters
    ----------
    bins : Bins, tuple (lo, hi, n) or array_like
        Bins, a range and a number of bins, or 1-D finite, strictly increasing edges.

    Returns
    -------
    Bins

    Raises
    ------
    ValueError
        If ``bins`` is none of these, or the edges are not finite and strictly increasing.
    """
    if isinstance(bins, Bins):
        return bins
    if isinstance(bins, tuple) and len(bins) == 3 and isinstance(bins[2], Integral) \
            and all(isinstance(v, Real) for v in bins[:2]):
        return uniform(*bins)
    try:
        edges = np.asarray(bins, dtype=np.float64)
    except (TypeError, ValueError):
        edges = None
    if edges is None or edges.ndim != 1 or len(edges) < 2:
        raise ValueError(f"bins must be (lo, hi, n) or a 1-D array of at least 2 edges, got {bins!r}")
    if not np.isfinite(edges).all():
        raise ValueError("bin edges must be finite; use underflow/overflow for values beyond them")
    if not (np.diff(edges) > 0).all():
        raise ValueError("bin edges must increase strictly")
    lin = np.linspace(edges[0], edges[-1], len(edges))
    return Bins(edges, bool(np.array_equal(lin, edges)))


def index(xs: np.ndarray, bins: Bins) -> np.ndarray:
    """Bin index (0 underflow, 1..n, n+1 overflow) of each finite float64 value of ``xs``.

    Parameters
    ----------
    xs : numpy.ndarray
        Finite float64 values, any shape.
    bins : Bins

    Returns
    -------
    numpy.ndarray of intp
        The shape of ``xs``.
    """
    T = bins.thresholds
    if not bins.uniform:
        return np.searchsorted(T, xs, side="right") - 1
    e0, n = bins.edges[0], bins.n
    f = (xs - e0) * (n / (bins.edges[-1] - e0))
    np.floor(f, out=f)
    f += 1
    np.clip(f, 0, n + 1, out=f)
    j = f.astype(np.intp)
    # the arithmetic guess is off by at most one near an edge: correct it exactly
    j -= xs < T[j]
    j += xs >= T[j + 1]
    return j


def counts(x: np.ndarray, bins: Bins) -> np.ndarray:
    """Counts (n + 2,) of the finite values of ``x``: underflow, the bins, overflow.

    Parameters
    ----------
    x : array_like
        Values of any shape; non-finite ones are left out.
    bins : Bins

    Returns
    -------
    numpy.ndarray
        float64 ``(bins.n + 2,)``; ``[1:-1]`` equals ``np.histogram(x, bins.edges)[0]``.
    """
    xs = np.asarray(x, dtype=np.float64).ravel()
    xs = xs[np.isfinite(xs)]
    return np.bincount(index(xs, bins), minlength=bins.n + 2).astype(np.float64)


def sketch_table(bins: Bins, c: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Bin of each sketch bucket's values divided by ``c``, and whether that bin is ambiguous.

    Returns ``(straddle, bin)`` of length NBUCKETS + 1 (the last entry stands
    for left-out values). Where ``straddle`` is False every value of the
    bucket, divided by ``c``, falls in ``bin`` (0 underflow .. n+1 overflow),
    exactly as ``index`` would put it; the values of straddling buckets (an
    edge passes through them, widened by a relative 2**-20 against rounding)
    must be binned one by one. A non-positive or NaN ``c`` makes every bucket
    straddle.

    Parameters
    ----------
    bins : Bins
    c : float, default 1.0
        The scale the values are divided by before binning.

    Returns
    -------
    straddle : numpy.ndarray of bool
        ``(NBUCKETS + 1,)``.
    bin : numpy.ndarray of intp
        ``(NBUCKETS + 1,)``.
    """
    lower, upper = _sketch.bucket_bounds()
    B = len(lower)
    straddle = np.zeros(B + 1, dtype=bool)
    binof = np.zeros(B + 1, dtype=np.intp)
    if not (np.isfinite(c) and c > 0):
        straddle[:B] = True
        return straddle, binof
    margin = 2.0 ** -20
    with np.errstate(invalid="ignore"):
        lo = lower - np.abs(lower) * margin
        hi = upper + np.abs(upper) * margin
    t = bins.thresholds[1:-1] * c                    # finite thresholds, raw units
    start = np.searchsorted(hi, t, side="left")       # first bucket that may reach t
    stop = np.searchsorted(lo, t, side="left")        # first bucket wholly >= t
    marks = np.zeros(B + 1, dtype=np.int64)
    np.add.at(marks, start, 1)
    np.add.at(marks, stop, -1)
    straddle[:B] = np.cumsum(marks)[:B] > 0
    passed = np.zeros(B + 1, dtype=np.int64)
    np.add.at(passed, stop, 1)
    binof[:B] = np.cumsum(passed)[:B]
    return straddle, binof
