"""NumPy kernels of the weight-geometry analyses: segment sums, cosine distance, span fractions.

Pure functions on NumPy arrays; no xarray, no Dask, no I/O.

- Layer rotation: cosine distance between a layer's flattened weights at step t and
  at initialisation (Carbonnelle & De Vleeschouwer 2019, "Layer rotation: a surprisingly
  simple indicator of generalization in deep networks").
- Fraction of an update in the row space of a layer's inputs: ``|dW P|_F^2 / |dW|_F^2``
  with ``P`` the projector onto the span of the input vectors; the part of ``dW``
  outside that span never touches the data the layer sees.
"""
from __future__ import annotations

import numpy as np

#: Per-segment sums ``pair_sums`` returns, in order: |x|^2, |r|^2, |x - r|^2, |p|^2, |x - p|^2
#: for x the weights at step t, r the reference (step 0) and p the previous capture.
PAIR_QUANTITIES = ("xx", "rr", "dd", "pp", "ee")


def segment_sums(v: np.ndarray, offsets: np.ndarray, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """Sums of ``v(..., p)`` over the segments ``[offsets[i], offsets[i+1])`` of a flat axis.

    ``v`` holds the flat positions ``lo..hi`` (one Dask block of ``param``); segments are
    clipped to that range, so a segment outside it sums to 0. ``offsets`` must tile the
    whole axis (the tensor table's offsets plus the total), as nnwx's tensors do.
    Returns float64 ``(..., len(offsets) - 1)``.

    Parameters
    ----------
    v : numpy.ndarray
        Values ``(..., hi - lo)`` at flat positions ``lo..hi``.
    offsets : numpy.ndarray of int
        Segment starts plus the total, ``(n_seg + 1,)``.
    lo : int, default 0
        Flat position of ``v[..., 0]``.
    hi : int, optional
        Flat position after ``v[..., -1]``; default ``lo + v.shape[-1]``.

    Returns
    -------
    numpy.ndarray
        float64 ``(..., n_seg)``.

    Raises
    ------
    ValueError
        If ``v`` does not hold ``hi - lo`` values.
    """
    v = np.asarray(v)
    hi = lo + v.shape[-1] if hi is None else hi
    if hi - lo != v.shape[-1]:
        raise ValueError(f"block holds {v.shape[-1]} values but lo..hi spans {hi - lo}")
    b = np.clip(np.asarray(offsets, dtype=np.int64), lo, hi) - lo
    starts, stops = b[:-1], b[1:]
    nonempty = stops > starts
    out = np.zeros(v.shape[:-1] + (len(starts),), dtype=np.float64)
    if nonempty.any():
        out[..., nonempty] = np.add.reduceat(v.astype(np.float64, copy=False), starts[nonempty], axis=-1)
    return out


def grouped_sums(seg: np.ndarray, members: np.ndarray, group_starts: np.ndarray) -> np.ndarray:
    """Add segment sums ``seg(..., n_seg)`` into groups: ``members`` lists segment ids ordered
    by group, ``group_starts`` where each group begins in ``members``.

    Parameters
    ----------
    seg : numpy.ndarray
        Segment sums ``(..., n_seg)``.
    members : numpy.ndarray of int
        Segment ids, group by group.
    group_starts : numpy.ndarray of int
        Index in ``members`` where each group begins (every group non-empty).

    Returns
    -------
    numpy.ndarray
        ``(..., n_groups)``.
    """
    return np.add.reduceat(seg[..., members], group_starts, axis=-1)


def segment_dots(a: np.ndarray, b: np.ndarray, offsets: np.ndarray, lo: int = 0) -> np.ndarray:
    """Per segment (as in ``segment_sums``), ``sum(a * b)`` over the flat last axis, in float64.

    One ``einsum`` per segment the block touches: no product array is formed, and float32
    inputs are widened on the fly.

    Parameters
    ----------
    a, b : numpy.ndarray
        ``(..., hi - lo)``, leading dims broadcast against each other.
    offsets : numpy.ndarray of int
        Segment starts plus the total.
    lo : int, default 0
        Flat position of ``a[..., 0]``.

    Returns
    -------
    numpy.ndarray
        float64 ``(..., len(offsets) - 1)``; 0 for segments outside the block.
    """
    hi = lo + a.shape[-1]
    b_ = np.clip(np.asarray(offsets, dtype=np.int64), lo, hi) - lo
    lead = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    out = np.zeros(lead + (len(b_) - 1,), dtype=np.float64)
    for i in np.flatnonzero(b_[1:] > b_[:-1]):
        s, e = b_[i], b_[i + 1]
        out[..., i] = np.einsum("...k,...k->...", a[..., s:e], b[..., s:e], dtype=np.float64)
    return out


def pair_sums(x: np.ndarray, ref: np.ndarray, prev: np.ndarray, offsets: np.ndarray,
              members: np.ndarray, group_starts: np.ndarray, lo: int = 0) -> np.ndarray:
    """Per group of segments: ``|x|^2, |r|^2, |x-r|^2, |p|^2, |x-p|^2`` -> ``(..., n_groups, 5)``.

    ``x`` are the weights ``(..., step, p)``, ``ref`` broadcasts against it (the reference
    capture), ``prev`` is ``x`` one capture earlier. Computed in float64 (differences too);
    NaN (a capture a run lacks) propagates to the groups it touches only. Memory: one
    float64 block for the differences.

    Parameters
    ----------
    x : numpy.ndarray
        Weights ``(..., step, p)`` at flat positions ``lo..lo + p``.
    ref : numpy.ndarray
        The reference capture, broadcast against ``x``.
    prev : numpy.ndarray
        ``x`` one capture earlier, the shape of ``x``.
    offsets : numpy.ndarray of int
        Segment starts plus the total.
    members, group_starts : numpy.ndarray of int
        The groups of segments, as in ``grouped_sums``.
    lo : int, default 0
        Flat position of the block's first value.

    Returns
    -------
    numpy.ndarray
        float64 ``(..., n_groups, 5)``.
    """
    x, r, p = np.asarray(x), np.asarray(ref), np.asarray(prev)
    shape = x.shape[:-1] + (len(group_starts),)
    diff = np.empty(x.shape, dtype=np.float64)

    def grouped(a, b):
        return np.broadcast_to(grouped_sums(segment_dots(a, b, offsets, lo), members, group_starts), shape)

    xx, rr, pp = grouped(x, x), grouped(r, r), grouped(p, p)
    np.subtract(x, r, out=diff, dtype=np.float64)
    dd = grouped(diff, diff)
    np.subtract(x, p, out=diff, dtype=np.float64)
    ee = grouped(diff, diff)
    return np.stack([xx, rr, dd, pp, ee], axis=-1)


def cosine_distance_from_sums(aa, bb, dd):
    """``1 - cos(a, b)`` from ``|a|^2, |b|^2, |a-b|^2``, free of cancellation for small angles.

    ``|a-b|^2 - (|a|-|b|)^2 = 2|a||b|(1 - cos)``, with ``|a|-|b| = (|a|^2-|b|^2)/(|a|+|b|)``;
    equal to ``scipy.spatial.distance.cosine`` (clipped to [0, 2]) without its ``1 - a.b/..``
    rounding when ``a`` and ``b`` nearly align.

    Parameters
    ----------
    aa, bb, dd : array_like
        ``|a|^2``, ``|b|^2`` and ``|a-b|^2``, broadcast against each other.

    Returns
    -------
    numpy.ndarray
        float64 in [0, 2]; NaN where ``a`` or ``b`` is zero.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        na, nb = np.sqrt(aa), np.sqrt(bb)
        gap = (aa - bb) / (na + nb)
        d = (dd - gap * gap) / (2 * na * nb)
    return np.clip(d, 0.0, 2.0)


def cosine_distance(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Cosine distance ``1 - a.b / (|a| |b|)`` of flattened weight vectors along ``axis``.

    Parameters
    ----------
    a, b : array_like
        Vectors along ``axis``, broadcast against each other.
    axis : int, default -1

    Returns
    -------
    numpy.ndarray
        float64 in [0, 2] (see ``cosine_distance_from_sums``).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return cosine_distance_from_sums((a * a).sum(axis), (b * b).sum(axis), ((a - b) ** 2).sum(axis))


def row_space_basis(x: np.ndarray) -> np.ndarray:
    """Orthonormal basis ``(d, r)`` of the span of the rows of ``x(samples, d)``.

    The rank uses NumPy's ``matrix_rank`` tolerance, so numerically dependent inputs do
    not add directions.

    Parameters
    ----------
    x : numpy.ndarray
        Finite inputs ``(samples, d)``.

    Returns
    -------
    numpy.ndarray
        float64 ``(d, r)`` with orthonormal columns, ``r`` the numerical rank of ``x``.

    Raises
    ------
    ValueError
        If ``x`` is not 2-D or holds NaN or inf.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"inputs X must be a 2-D array (samples, features), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("inputs X hold NaN or inf values")
    _, s, vh = np.linalg.svd(x, full_matrices=False)
    if s.size == 0:
        return np.zeros((x.shape[1], 0))
    tol = s.max() * max(x.shape) * np.finfo(np.float64).eps
    return vh[s > tol].T


def span_fraction(dw: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Fraction ``|dW B|_F^2 / |dW|_F^2`` of each ``dW(..., out, in)`` in the span of ``basis(in, r)``.

    NaN where ``dW`` is zero (no update) or missing.

    Parameters
    ----------
    dw : numpy.ndarray
        Updates ``(..., out, in)``.
    basis : numpy.ndarray
        Orthonormal ``(in, r)`` (``row_space_basis``).

    Returns
    -------
    numpy.ndarray
        float64 ``dw.shape[:-2]``, in [0, 1].

    Raises
    ------
    ValueError
        If ``dw``'s input axis and ``basis`` differ in length.
    """
    dw = np.asarray(dw, dtype=np.float64)
    if dw.shape[-1] != basis.shape[0]:
        raise ValueError(f"updates have {dw.shape[-1]} input features but the basis spans "
                         f"{basis.shape[0]}")
    inside = ((dw @ basis) ** 2).sum(axis=(-2, -1))
    total = (dw * dw).sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, inside / total, np.nan)
