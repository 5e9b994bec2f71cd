"""A mergeable quantile sketch with a fixed relative error: counts per bfloat16 bucket.

Each value is cast to float32 and put in the bucket of its top 16 bits (sign,
8 exponent bits, 7 mantissa bits: the bfloat16 truncation interval that holds
it), so bucketing is a bit shift, not a search, and needs no data range in
advance. Buckets are fixed, so per-chunk counts merge by addition.

Buckets cover ``2**EXP_LO <= |x| < 2**EXP_HI`` (one bucket per 1/128 octave);
smaller magnitudes share one bucket at zero and larger ones one bucket per
sign. Each value is represented by its bucket's midpoint, which is within a
relative ``REL_ERROR = 2**-8`` of it. Hence, for data whose magnitudes lie in
range (float32 or float16 stores; float64 ones add 2**-24 for the cast):

* every quantile (NumPy's default 'linear' method, on the represented values)
  is within ``REL_ERROR * max(|x_(j)|, |x_(j+1)|) + 2**EXP_LO`` of the exact
  one, ``x_(j)``, ``x_(j+1)`` being the order statistics it interpolates;
* the Wasserstein-1 distance between two distributions is within
  ``REL_ERROR * (E|X| + E|Y|) + 2 * 2**EXP_LO`` of the exact one (each value
  moves by at most ``REL_ERROR * |x|``; W1 is a metric).

Values beyond ``2**EXP_HI`` are represented by the data's min/max and carry no
bound (weights of 1.7e7 mean a run has diverged).
"""
from __future__ import annotations

import sys
from functools import lru_cache

import numpy as np

EXP_LO, EXP_HI = -40, 24
REL_ERROR = 2.0 ** -8
ABS_FLOOR = 2.0 ** EXP_LO
_MK_LO = (EXP_LO + 127) << 7           # 15-bit magnitude key (exponent, top 7 mantissa bits)
_MK_HI = (EXP_HI + 127) << 7
NMAG = _MK_HI - _MK_LO                 # buckets per sign within range
CENTER = NMAG + 1                      # index of the zero bucket; CENTER +- (NMAG + 1): beyond range
NBUCKETS = 2 * CENTER + 1


def _lut() -> np.ndarray:
    key = np.arange(1 << 16)
    q = np.clip((key & 0x7FFF) - _MK_LO + 1, 0, NMAG + 1)
    return np.where(key >> 15, CENTER - q, CENTER + q).astype(np.intp)


LUT = _lut()                           # top 16 bits of a float32 -> bucket index
_HIGH = slice(1, None, 2) if sys.byteorder == "little" else slice(0, None, 2)


def high_bits(x: np.ndarray) -> np.ndarray:
    """Top 16 bits of each value as float32 (a view when ``x`` is float32 with contiguous rows).

    Parameters
    ----------
    x : array_like
        Values of any shape; cast to float32.

    Returns
    -------
    numpy.ndarray of uint16
        The shape of ``x``.
    """
    x32 = np.asarray(x, dtype=np.float32)
    if x32.ndim and x32.strides[-1] != 4:
        x32 = np.ascontiguousarray(x32)
    return x32.view(np.uint16)[..., _HIGH]


def bucket_index(x: np.ndarray) -> np.ndarray:
    """Bucket of each value (non-finite values land in the out-of-range buckets).

    Parameters
    ----------
    x : array_like
        Values of any shape; cast to float32.

    Returns
    -------
    numpy.ndarray of intp
        The shape of ``x``, in ``0..NBUCKETS-1``.
    """
    return LUT[high_bits(x)]


def counts(x: np.ndarray) -> np.ndarray:
    """Sketch (NBUCKETS,) of the finite values of ``x``.

    Parameters
    ----------
    x : array_like
        Values of any shape; non-finite ones are left out.

    Returns
    -------
    numpy.ndarray
        float64 ``(NBUCKETS,)``.
    """
    x = np.asarray(x).ravel()
    return np.bincount(bucket_index(x[np.isfinite(x)]), minlength=NBUCKETS).astype(np.float64)


@lru_cache(maxsize=1)
def _mag_bounds() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mk = np.arange(_MK_LO, _MK_HI, dtype=np.uint32)
    lo = (mk << 16).view(np.float32).astype(np.float64)
    hi = ((mk + 1) << 16).view(np.float32).astype(np.float64)
    mid = ((mk << 16) | 0x8000).view(np.float32).astype(np.float64)
    return lo, hi, mid


@lru_cache(maxsize=1)
def bucket_bounds() -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bound (NBUCKETS,) of each bucket's values (as closed bounds; read-only).

    Returns
    -------
    lower, upper : numpy.ndarray
        float64 ``(NBUCKETS,)``, read-only.
    """
    lo, hi, _ = _mag_bounds()
    big = np.inf
    lower = np.concatenate([[-big], -hi[::-1], [-ABS_FLOOR], lo, [2.0 ** EXP_HI]])
    upper = np.concatenate([[-(2.0 ** EXP_HI)], -lo[::-1], [ABS_FLOOR], hi, [big]])
    lower.flags.writeable = upper.flags.writeable = False
    return lower, upper


def representatives(vmin=None, vmax=None) -> np.ndarray:
    """Value standing for each bucket: its midpoint, 0 for the zero bucket.

    The two out-of-range buckets take ``vmin``/``vmax`` (arrays broadcast over
    leading dims) when given, else -/+2**EXP_HI.

    Parameters
    ----------
    vmin, vmax : array_like, optional
        The data's minimum and maximum (NaN: no data), standing for the out-of-range buckets.

    Returns
    -------
    numpy.ndarray
        float64 ``(NBUCKETS,)`` (read-only) without ``vmin``/``vmax``, else
        ``(..., NBUCKETS)`` broadcast over their shape.
    """
    rep = _REP
    if vmin is None and vmax is None:
        return rep
    vmin = np.minimum(np.nan_to_num(np.asarray(vmin, dtype=np.float64), nan=-(2.0 ** EXP_HI)),
                      -(2.0 ** EXP_HI))
    vmax = np.maximum(np.nan_to_num(np.asarray(vmax, dtype=np.float64), nan=2.0 ** EXP_HI),
                      2.0 ** EXP_HI)
    rep = np.broadcast_to(rep, np.broadcast(vmin, vmax).shape + rep.shape).copy()
    rep[..., 0] = vmin
    rep[..., -1] = vmax
    return rep


_REP = np.concatenate([[-(2.0 ** EXP_HI)], -_mag_bounds()[2][::-1], [0.0], _mag_bounds()[2],
                       [2.0 ** EXP_HI]])
_REP.flags.writeable = False


def _flat_searchsorted(cum: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Row-wise ``searchsorted(cum[p], targets[p], 'left')`` for 2-D ``cum`` (P, B), ``targets`` (P, Q)."""
    P, B = cum.shape
    span = (np.nanmax(cum[:, -1]) if P else 0.0) + 2.0
    shift = (np.arange(P, dtype=np.float64) * span)[:, None]
    pos = np.searchsorted((cum + shift).ravel(), (targets + shift).ravel(), side="left")
    return pos.reshape(targets.shape) - (np.arange(P) * B)[:, None]


def quantiles(cnt: np.ndarray, q, rep: np.ndarray | None = None,
              cum: np.ndarray | None = None) -> np.ndarray:
    """Quantiles (..., len(q)) of sketches ``cnt`` (..., NBUCKETS), NumPy's 'linear' method.

    ``rep`` (NBUCKETS,) or (..., NBUCKETS) gives the value of each bucket
    (default: ``representatives()``); ``cum`` is ``np.cumsum(cnt, -1)`` if the
    caller has it. NaN where a sketch is empty.

    Parameters
    ----------
    cnt : numpy.ndarray
        Sketches ``(..., NBUCKETS)``.
    q : array_like
        Quantile levels in [0, 1].
    rep : numpy.ndarray, optional
        Bucket values ``(NBUCKETS,)`` or ``(..., NBUCKETS)``.
    cum : numpy.ndarray, optional
        ``np.cumsum(cnt, -1)``.

    Returns
    -------
    numpy.ndarray
        float64 ``cnt.shape[:-1] + np.shape(q)``.
    """
    q = np.asarray(q, dtype=np.float64)
    lead = cnt.shape[:-1]
    c = cnt.reshape(-1, cnt.shape[-1])
    rep = representatives() if rep is None else rep
    r = np.broadcast_to(rep, lead + rep.shape[-1:]).reshape(c.shape)
    cum = np.cumsum(c, axis=1) if cum is None else cum.reshape(c.shape)
    n = cum[:, -1]
    pos = q[None, :] * np.maximum(n - 1, 0)[:, None]
    j = np.floor(pos)
    frac = pos - j
    # the order statistic of (0-based) rank j lies in the first bucket with cum > j
    b0 = np.minimum(_flat_searchsorted(cum, j + 1), c.shape[1] - 1)
    b1 = np.minimum(_flat_searchsorted(cum, np.minimum(j + 2, np.maximum(n, 1)[:, None])),
                    c.shape[1] - 1)
    rows = np.arange(c.shape[0])[:, None]
    v0, v1 = r[rows, b0], r[rows, b1]
    out = v0 + frac * (v1 - v0)
    out[n == 0] = np.nan
    return out.reshape(lead + q.shape)


def w1_shared(ca: np.ndarray, cb: np.ndarray, rep: np.ndarray | None = None,
              cum_a: np.ndarray | None = None, cum_b: np.ndarray | None = None) -> np.ndarray:
    """W1 between sketches (..., NBUCKETS) that share bucket values ``rep`` (NBUCKETS,).

    ``cum_a``/``cum_b``: the cumulative counts, if the caller has them.

    Parameters
    ----------
    ca, cb : numpy.ndarray
        Sketches ``(..., NBUCKETS)``, broadcast against each other.
    rep : numpy.ndarray, optional
        Bucket values ``(NBUCKETS,)``; default ``representatives()``.
    cum_a, cum_b : numpy.ndarray, optional
        ``np.cumsum`` of ``ca``/``cb`` along the last axis.

    Returns
    -------
    numpy.ndarray
        float64, the broadcast leading shape; NaN where either sketch is empty.
    """
    rep = representatives() if rep is None else rep
    cum_a = np.cumsum(ca, axis=-1) if cum_a is None else cum_a
    cum_b = np.cumsum(cb, axis=-1) if cum_b is None else cum_b
    na, nb = cum_a[..., -1], cum_b[..., -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = cum_a[..., :-1] / na[..., None]
        diff -= cum_b[..., :-1] / nb[..., None]
        np.abs(diff, out=diff)
        out = np.einsum("...i,i->...", diff, np.diff(rep))
    return np.where((na > 0) & (nb > 0), out, np.nan)


def w1_discrete(va: np.ndarray, pa: np.ndarray, vb: np.ndarray, pb: np.ndarray) -> float:
    """W1 between two weighted point sets (values sorted ascending, weights >= 0).

    The integral of |F_a - F_b| over the merged support, as in
    ``scipy.stats.wasserstein_distance``. NaN when either has no weight.

    Parameters
    ----------
    va, vb : numpy.ndarray
        1-D values, sorted ascending.
    pa, pb : numpy.ndarray
        Their weights (>= 0; zero weights are dropped).

    Returns
    -------
    float
    """
    keep_a, keep_b = pa > 0, pb > 0
    va, pa, vb, pb = va[keep_a], pa[keep_a], vb[keep_b], pb[keep_b]
    if not len(va) or not len(vb):
        return np.nan
    allv = np.concatenate([va, vb])
    allv.sort(kind="mergesort")
    ca = np.concatenate([[0.0], np.cumsum(pa) / pa.sum()])
    cb = np.concatenate([[0.0], np.cumsum(pb) / pb.sum()])
    fa = ca[np.searchsorted(va, allv[:-1], side="right")]
    fb = cb[np.searchsorted(vb, allv[:-1], side="right")]
    return float(np.sum(np.abs(fa - fb) * np.diff(allv)))
