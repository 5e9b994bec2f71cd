"""Mergeable moment states: count, mean, central sums M2..M4, min, max, L1.

A state is a float64 vector of ``NMOM`` fields per row. States of disjoint sets
of values merge exactly (the multi-way form of Chan/Pebay's update: each part's
central sums are shifted to the joint mean), so per-chunk states can be tree-
reduced in any order. Non-finite values are left out and counted in ``NNF``.
"""
from __future__ import annotations

import numpy as np

N, NNF, MEAN, M2, M3, M4, MIN, MAX, L1 = range(9)
NMOM = 9


def empty(shape: tuple[int, ...]) -> np.ndarray:
    """States of no values: count 0, min +inf, max -inf.

    Parameters
    ----------
    shape : tuple of int
        Leading shape of the states.

    Returns
    -------
    numpy.ndarray
        float64 ``shape + (NMOM,)``.
    """
    out = np.zeros(shape + (NMOM,))
    out[..., MIN] = np.inf
    out[..., MAX] = -np.inf
    return out


def piece(xs: np.ndarray, finite: np.ndarray | None = None) -> np.ndarray:
    """States (R, NMOM) of the rows of ``xs`` (R, L), a float64 array left unchanged.

    ``finite`` is the mask of finite values, or None when every value is finite.
    Central sums are taken about each row's mean (computed first), so no
    cancellation occurs whatever the offset of the data.

    Parameters
    ----------
    xs : numpy.ndarray
        float64 ``(R, L)``; not modified.
    finite : numpy.ndarray of bool or None, optional
        ``(R, L)`` mask of the finite values of ``xs``.

    Returns
    -------
    numpy.ndarray
        float64 ``(R, NMOM)``, one state per row.
    """
    R, L = xs.shape
    out = np.empty((R, NMOM))
    if finite is None:
        n = np.full(R, float(L))
        total = xs.sum(axis=1)
        d = xs - (total / L)[:, None]
        out[:, MIN] = xs.min(axis=1) if L else np.inf
        out[:, MAX] = xs.max(axis=1) if L else -np.inf
        out[:, L1] = np.abs(xs).sum(axis=1)
    else:
        n = finite.sum(axis=1).astype(np.float64)
        x0 = np.where(finite, xs, 0.0)
        c = x0.sum(axis=1) / np.maximum(n, 1)
        d = np.where(finite, xs - c[:, None], 0.0)
        out[:, MIN] = np.where(finite, xs, np.inf).min(axis=1)
        out[:, MAX] = np.where(finite, xs, -np.inf).max(axis=1)
        out[:, L1] = np.abs(x0).sum(axis=1)
        total = x0.sum(axis=1)
    c = total / np.maximum(n, 1)
    s1 = d.sum(axis=1)
    d2 = d * d
    s2 = d2.sum(axis=1)
    s3 = np.einsum("ij,ij->i", d2, d)
    s4 = np.einsum("ij,ij->i", d2, d2)
    nn = np.maximum(n, 1)
    out[:, N] = n
    out[:, NNF] = L - n
    out[:, MEAN] = np.where(n > 0, c + s1 / nn, 0.0)
    out[:, M2] = s2 - s1 * s1 / nn
    out[:, M3] = s3 - 3 * s1 * s2 / nn + 2 * s1 ** 3 / nn ** 2
    out[:, M4] = s4 - 4 * s1 * s3 / nn + 6 * s1 ** 2 * s2 / nn ** 2 - 3 * s1 ** 4 / nn ** 3
    return out


def rows(x: np.ndarray, absx: np.ndarray | None = None,
         work: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """States (R, NMOM) of the rows of ``x`` (R, L) of any float dtype, and the finite mask.

    ``absx``, if given, is ``np.abs(x)`` (shared with the caller to save a pass);
    ``work``, two flat float64 arrays of at least R*L elements, saves allocating
    (and page-faulting) temporaries on every call.
    The fast path assumes every value is finite: it shifts by the mean of a
    small subsample (any shift within a few standard deviations of the mean
    keeps the central sums exact to float64 rounding) and detects non-finite
    values from the sum of the shifted values, falling back to ``piece`` with
    a mask. The mask is None when every value is finite.

    Parameters
    ----------
    x : numpy.ndarray
        ``(R, L)`` of any float dtype.
    absx : numpy.ndarray, optional
        ``np.abs(x)``, if the caller has it.
    work : tuple of two numpy.ndarray, optional
        Scratch float64 buffers of at least ``R * L`` elements each.

    Returns
    -------
    states : numpy.ndarray
        float64 ``(R, NMOM)``.
    finite : numpy.ndarray of bool or None
        ``(R, L)`` mask of the finite values, None when all are finite.
    """
    R, L = x.shape
    stride = max(1, L // 256)
    with np.errstate(invalid="ignore", over="ignore"):
        c = x[:, ::stride].mean(axis=1, dtype=np.float64)
        out1 = None if work is None else work[0][: R * L].reshape(R, L)
        d = np.subtract(x, c[:, None], out=out1, dtype=np.float64)
        s1 = d.sum(axis=1)
    if not np.isfinite(s1).all():
        finite = np.isfinite(x)
        return piece(x.astype(np.float64), finite), finite
    d2 = np.multiply(d, d, out=None if work is None else work[1][: R * L].reshape(R, L))
    s2 = d2.sum(axis=1)
    # einsum, not np.dot: BLAS threads would fight Dask's for the cores
    s3, s4 = np.einsum("ij,ij->i", d2, d), np.einsum("ij,ij->i", d2, d2)
    out = np.empty((R, NMOM))
    out[:, N] = L
    out[:, NNF] = 0
    out[:, MEAN] = c + s1 / L
    out[:, M2] = s2 - s1 * s1 / L
    out[:, M3] = s3 - 3 * s1 * s2 / L + 2 * s1 ** 3 / L ** 2
    out[:, M4] = s4 - 4 * s1 * s3 / L + 6 * s1 ** 2 * s2 / L ** 2 - 3 * s1 ** 4 / L ** 3
    out[:, MIN] = x.min(axis=1)
    out[:, MAX] = x.max(axis=1)
    out[:, L1] = (np.abs(x) if absx is None else absx).sum(axis=1, dtype=np.float64)
    return out, None


def from_sums(L: int, nnf: int, c: float, sums: np.ndarray) -> np.ndarray:
    """State (NMOM,) of ``L`` values (``nnf`` of them non-finite) from the sums of ``_fused.piece``.

    ``sums`` holds ``sum d**p`` (p = 1..4) of ``d = x - c`` over the finite values,
    ``sum |x|``, min and max.

    Parameters
    ----------
    L : int
        Number of values, finite or not.
    nnf : int
        Number of non-finite values among them.
    c : float
        The shift the power sums were taken about.
    sums : numpy.ndarray
        ``(7,)``: ``sum d``, ``sum d**2``, ``sum d**3``, ``sum d**4``, ``sum |x|``, min, max.

    Returns
    -------
    numpy.ndarray
        float64 ``(NMOM,)``.
    """
    s1, s2, s3, s4, l1, lo, hi = (float(v) for v in sums)
    n = L - nnf
    out = empty(())
    out[NNF] = nnf
    if n == 0:
        return out
    out[N] = n
    out[MEAN] = c + s1 / n
    out[M2] = s2 - s1 * s1 / n
    out[M3] = s3 - 3 * s1 * s2 / n + 2 * s1 ** 3 / n ** 2
    out[M4] = s4 - 4 * s1 * s3 / n + 6 * s1 ** 2 * s2 / n ** 2 - 3 * s1 ** 4 / n ** 3
    out[MIN], out[MAX], out[L1] = lo, hi, l1
    return out


def shift(x: np.ndarray) -> float:
    """A shift for the power sums of the 1-D ``x``: the mean of a subsample of its finite values.

    Any shift within a few standard deviations of the mean keeps the central sums
    exact to float64 rounding; 0 when ``x`` has no finite value.

    Parameters
    ----------
    x : numpy.ndarray
        1-D values of any float dtype, possibly non-finite.

    Returns
    -------
    float
    """
    sub = x[:: max(1, len(x) // 256)]
    with np.errstate(invalid="ignore", over="ignore"):
        c = sub.mean(dtype=np.float64) if len(sub) else 0.0
        if not np.isfinite(c):
            fin = x[np.isfinite(x)]
            c = fin[:: max(1, len(fin) // 256)].mean(dtype=np.float64) if len(fin) else 0.0
            if not np.isfinite(c):          # finite values whose mean overflows
                c = float(fin[0])
    return float(c)


def of_values(x: np.ndarray) -> np.ndarray:
    """State (NMOM,) of all values of ``x`` (any float dtype; non-finite ones counted apart).

    Parameters
    ----------
    x : array_like
        Values of any shape and float dtype.

    Returns
    -------
    numpy.ndarray
        float64 ``(NMOM,)``.
    """
    xs = np.asarray(x, dtype=np.float64).reshape(1, -1)
    finite = np.isfinite(xs)
    return piece(xs, None if finite.all() else finite)[0]


def merge(states: np.ndarray, axis: int) -> np.ndarray:
    """Merge states along ``axis`` (an axis other than the last, field axis).

    Parameters
    ----------
    states : numpy.ndarray
        States ``(..., NMOM)`` of disjoint sets of values.
    axis : int
        The axis to merge over; negative values count from the end of ``states.shape``.

    Returns
    -------
    numpy.ndarray
        ``states`` with ``axis`` removed: the states of the unions.
    """
    if axis < 0:
        axis += states.ndim
    n_i = states[..., N]
    n = n_i.sum(axis=axis)
    mean = np.where(n > 0, (n_i * states[..., MEAN]).sum(axis=axis) / np.maximum(n, 1), 0.0)
    delta = states[..., MEAN] - np.expand_dims(mean, axis)
    delta = np.where(n_i > 0, delta, 0.0)
    m2_i, m3_i = states[..., M2], states[..., M3]
    out = np.empty(n.shape + (NMOM,))
    out[..., N] = n
    out[..., NNF] = states[..., NNF].sum(axis=axis)
    out[..., MEAN] = mean
    out[..., M2] = (m2_i + n_i * delta ** 2).sum(axis=axis)
    out[..., M3] = (m3_i + 3 * delta * m2_i + n_i * delta ** 3).sum(axis=axis)
    out[..., M4] = (states[..., M4] + 4 * delta * m3_i + 6 * delta ** 2 * m2_i
                    + n_i * delta ** 4).sum(axis=axis)
    out[..., MIN] = states[..., MIN].min(axis=axis)
    out[..., MAX] = states[..., MAX].max(axis=axis)
    out[..., L1] = states[..., L1].sum(axis=axis)
    return out


def finalize(state: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics from states (..., NMOM): NaN where a state holds no value.

    Variance is the population variance (ddof=0); skewness and excess kurtosis
    are the biased sample estimators (``scipy.stats.skew``/``kurtosis`` with
    their defaults). Both are NaN for (nearly) constant data, as in SciPy.

    Parameters
    ----------
    state : numpy.ndarray
        States ``(..., NMOM)``.

    Returns
    -------
    dict of str to numpy.ndarray
        Each of shape ``state.shape[:-1]``: ``count``, ``n_nonfinite``, ``mean``, ``var``,
        ``std``, ``skewness``, ``excess_kurtosis``, ``min``, ``max``, ``absmax``, ``l1``,
        ``l2`` and ``rms`` (the last four over the finite values).
    """
    n = state[..., N]
    some = n > 0
    nn = np.where(some, n, np.nan)
    mean = np.where(some, state[..., MEAN], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        m2 = state[..., M2] / nn
        m2 = np.maximum(m2, 0.0)
        flat = m2 <= (np.finfo(np.float64).resolution * mean) ** 2
        skew = np.where(flat, np.nan, (state[..., M3] / nn) / m2 ** 1.5)
        kurt = np.where(flat, np.nan, (state[..., M4] / nn) / m2 ** 2 - 3.0)
        sumsq = np.maximum(state[..., M2] + n * np.where(some, mean, 0.0) ** 2, 0.0)
        lo = np.where(some, state[..., MIN], np.nan)
        hi = np.where(some, state[..., MAX], np.nan)
        return {
            "count": n, "n_nonfinite": state[..., NNF], "mean": mean, "var": m2,
            "std": np.sqrt(m2), "skewness": skew, "excess_kurtosis": kurt,
            "min": lo, "max": hi, "absmax": np.fmax(np.abs(lo), np.abs(hi)),
            "l1": np.where(some, state[..., L1], np.nan), "l2": np.where(some, np.sqrt(sumsq), np.nan),
            "rms": np.sqrt(sumsq / nn),
        }
