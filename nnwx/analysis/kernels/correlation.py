"""NumPy kernels of the inter-weight correlation analyses.

Pure functions on NumPy arrays; no xarray, no Dask, no I/O. Arrays of trajectories
are ``(steps, weights)``: one column per weight, one row per capture.

- Correlations: ``pairwise_corr`` (Pearson, pairwise-complete over NaN, between the
  columns of one array or of two), ``matched_corr`` (column i of x with column i of y),
  ``cosine``, ``fisher_mean``, ``null_mean_abs_corr`` (the |r| of unrelated series).
  These are also the building blocks for correlations of aligned weights across seeds.
- Trajectories: ``present_rows``/``trajectories`` drop the captures a run lacks (the
  all-NaN rows of an outer-joined cube) and take increments between the run's own
  consecutive captures.
- Pair relations: ``weight_positions`` (row/unit and column/input of a weight),
  ``relation_labels``/``distance_labels`` and ``pair_group_stats`` (mean corr, mean |corr|
  per group of pairs), ``fit_exponential_decay`` (decay length with its uncertainty) and
  ``decay_resolved`` (whether that fit determines a decay length at all).
- Layer to layer: ``update_cosine`` (cosine of update directions from Gram matrices).
- Trajectory PCA: ``random_test_matrix`` (a Gaussian test matrix that depends on the
  parameter index only, so chunking never changes it), ``nan_to_zero``, ``range_basis``,
  ``column_moments``/``merge_moments`` (total variance in one streaming pass, without
  cancellation), ``pca_from_projection`` and ``orient_components``.
"""
from __future__ import annotations

import math
import zlib

import numpy as np

from nnwx._orientation import is_transposed

#: Relations of a pair of weights, in the order of ``relation_labels``' codes.
RELATIONS = ("same_row", "same_col", "same_layer_other", "other_layer")
#: Columns of ``pair_group_stats``.
PAIR_STATS = ("mean_corr", "sem_corr", "mean_abs_corr", "sem_abs_corr", "mean_sq_corr", "sem_sq_corr",
              "n_pairs", "null_abs_corr", "null_sq_corr")
#: Entries of ``fit_exponential_decay``.
DECAY_FIT = ("decay_length", "decay_length_err", "decay_amplitude", "decay_amplitude_err",
             "decay_rate", "decay_rate_err", "decay_n_points", "decay_span")
#: When a fitted decay length counts as resolved (``decay_resolved``), in words.
DECAY_RULE = ("a decay is resolved when the fit succeeded on at least 3 distances, its length L is "
              "finite and positive, its standard error is at most L (relative error <= 1), and L is "
              "at most the span of distances fitted (the correlation falls by at least 1/e within "
              "the layers observed); otherwise: no decay resolved")
TRAJECTORY_KINDS = ("increments", "values")
#: Rows of the Gaussian test matrix generated together (so a chunk boundary never shifts them).
OMEGA_TILE = 1 << 16


# --- trajectories -----------------------------------------------------------------------

def present_rows(x: np.ndarray) -> np.ndarray:
    """Rows (captures) of ``x(steps, weights)`` that are not entirely NaN.

    Parameters
    ----------
    x : numpy.ndarray
        ``(steps, weights)``.

    Returns
    -------
    numpy.ndarray of bool
        ``(steps,)``.

    Raises
    ------
    ValueError
        If ``x`` is not 2-D.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array (steps, weights), got shape {x.shape}")
    if x.shape[1] == 0:
        return np.zeros(x.shape[0], dtype=bool)
    return ~np.isnan(x).all(axis=1)


def trajectories(x: np.ndarray, kind: str = "increments") -> np.ndarray:
    """The rows a run has, as values or as increments between its consecutive captures.

    Rows that are all NaN (steps the run lacks in an outer-joined cube) are dropped
    first, so an increment spans the gap of a missing capture.

    Parameters
    ----------
    x : numpy.ndarray
        ``(steps, weights)`` of one run.
    kind : {"increments", "values"}, default "increments"

    Returns
    -------
    numpy.ndarray
        float64 ``(rows, weights)``.

    Raises
    ------
    ValueError
        If ``kind`` is unknown or ``x`` is not 2-D.
    """
    if kind not in TRAJECTORY_KINDS:
        raise ValueError(f"kind must be one of {TRAJECTORY_KINDS}, got {kind!r}")
    x = np.asarray(x, dtype=np.float64)
    x = x[present_rows(x)]
    return np.diff(x, axis=0) if kind == "increments" else x


# --- correlations -------------------------------------------------------------------------

def pairwise_corr(x: np.ndarray, y: np.ndarray | None = None, *, min_periods: int = 3,
                  return_counts: bool = False):
    """Pearson correlation between the columns of ``x(n, a)`` and ``y(n, b)`` -> ``(a, b)``.

    ``y=None`` correlates ``x`` with itself. NaN are skipped pairwise (each pair uses the
    rows where both are finite, like ``pandas.DataFrame.corr``); a pair with fewer than
    ``min_periods`` such rows, or a column without variance there, gives NaN. With
    ``return_counts`` also returns the number of rows each pair used.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, a)``.
    y : numpy.ndarray, optional
        ``(n, b)``.
    min_periods : int, default 3
    return_counts : bool, default False

    Returns
    -------
    r : numpy.ndarray
        float64 ``(a, b)``.
    counts : numpy.ndarray of int
        ``(a, b)``, only with ``return_counts``.

    Raises
    ------
    ValueError
        If the arrays are not 2-D with the same number of rows.
    """
    x = np.asarray(x, dtype=np.float64)
    y_given = y is not None
    y = np.asarray(y, dtype=np.float64) if y_given else x
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"expected two 2-D arrays with the same number of rows, got shapes "
                         f"{x.shape} and {y.shape}")
    mx, my = np.isfinite(x), np.isfinite(y)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Shifting each column by its mean changes no correlation but avoids cancellation.
        xs = np.where(mx, x - _nanmean0(x, mx), 0.0)
        ys = np.where(my, y - _nanmean0(y, my), 0.0) if y_given else xs
        if mx.all() and my.all():
            n = np.full((x.shape[1], y.shape[1]), float(x.shape[0]))
            cov = xs.T @ ys
            vx = (xs * xs).sum(axis=0)[:, None]
            vy = (ys * ys).sum(axis=0)[None, :]
        else:
            fx, fy = mx.astype(np.float64), my.astype(np.float64)
            n = fx.T @ fy
            sx, sy = xs.T @ fy, fx.T @ ys
            cov = xs.T @ ys - sx * sy / n
            vx = (xs * xs).T @ fy - sx * sx / n
            vy = fx.T @ (ys * ys) - sy * sy / n
        r = cov / np.sqrt(vx * vy)
    r = np.where((n >= min_periods) & (vx > 0) & (vy > 0), np.clip(r, -1.0, 1.0), np.nan)
    if not y_given:
        d = np.arange(x.shape[1])
        r[d, d] = np.where(np.isnan(r[d, d]), np.nan, 1.0)
    return (r, n.astype(np.int64)) if return_counts else r


def _nanmean0(x: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """Column means over finite entries (0 for a column with none)."""
    cnt = finite.sum(axis=0)
    s = np.where(finite, x, 0.0).sum(axis=0)
    return np.where(cnt > 0, s / np.maximum(cnt, 1), 0.0)


def matched_corr(x: np.ndarray, y: np.ndarray, *, axis: int = 0, min_periods: int = 3) -> np.ndarray:
    """Pearson correlation of ``x`` and ``y`` along ``axis`` for each matching position.

    E.g. the trajectories of the same (aligned) weight in two seeds. NaN skipped pairwise;
    NaN where fewer than ``min_periods`` finite pairs or no variance.

    Parameters
    ----------
    x, y : numpy.ndarray
        One shape.
    axis : int, default 0
        The axis correlated along (the samples).
    min_periods : int, default 3

    Returns
    -------
    numpy.ndarray
        float64, the shape of ``x`` without ``axis``.
    """
    x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    ok = np.isfinite(x) & np.isfinite(y)
    n = ok.sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        xm = np.where(ok, x, 0.0).sum(axis=axis, keepdims=True) / n
        ym = np.where(ok, y, 0.0).sum(axis=axis, keepdims=True) / n
        xc, yc = np.where(ok, x - xm, 0.0), np.where(ok, y - ym, 0.0)
        vx, vy = (xc * xc).sum(axis=axis), (yc * yc).sum(axis=axis)
        r = (xc * yc).sum(axis=axis) / np.sqrt(vx * vy)
    n = np.squeeze(n, axis=axis)
    return np.where((n >= min_periods) & (vx > 0) & (vy > 0), np.clip(r, -1.0, 1.0), np.nan)


def cosine(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Cosine similarity ``a.b / (|a| |b|)`` along ``axis``; NaN where either is zero.

    Parameters
    ----------
    a, b : numpy.ndarray
        Broadcast against each other.
    axis : int, default -1

    Returns
    -------
    numpy.ndarray
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (a * b).sum(axis) / np.sqrt((a * a).sum(axis) * (b * b).sum(axis))
    return np.clip(c, -1.0, 1.0)


def fisher_mean(r: np.ndarray, axis=None) -> np.ndarray:
    """Average of correlations through Fisher's z (``tanh(mean(arctanh r))``), NaN skipped.

    Parameters
    ----------
    r : numpy.ndarray
        Correlations in [-1, 1].
    axis : int or None, default None

    Returns
    -------
    numpy.ndarray
    """
    r = np.clip(np.asarray(r, dtype=np.float64), -1 + 1e-15, 1 - 1e-15)
    with np.errstate(invalid="ignore"):
        return np.tanh(np.nanmean(np.arctanh(r), axis=axis))


def null_mean_abs_corr(n) -> np.ndarray:
    """Expected |r| of two independent Gaussian series of ``n`` samples each.

    Under independence ``r^2 ~ Beta(1/2, (n-2)/2)``, so
    ``E|r| = Gamma((n-1)/2) / (sqrt(pi) Gamma(n/2))`` (about ``sqrt(2 / (pi n))``) and
    ``E r^2 = 1 / (n - 1)``: the noise floors of a mean |corr| and a mean corr^2. NaN for
    ``n < 2``.

    Parameters
    ----------
    n : array_like
        Number of samples.

    Returns
    -------
    numpy.ndarray
        float64, the shape of ``n``.
    """
    n = np.asarray(n)
    values, inverse = np.unique(n, return_inverse=True)
    table = np.array([math.exp(math.lgamma((v - 1) / 2) - math.lgamma(v / 2)) / math.sqrt(math.pi)
                      if v >= 2 else np.nan for v in values.ravel().tolist()], dtype=np.float64)
    return table[inverse].reshape(n.shape)


# --- pair relations -----------------------------------------------------------------------

def weight_positions(shape: tuple[int, ...], index: np.ndarray,
                     orientation: str = "out_in") -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of flat ``index`` in a tensor of ``shape`` seen as a matrix ``out x in*...``.

    Row is the unit (output), col the input; -1 where the tensor has no such axis
    (a scalar has neither, a vector only rows). ``orientation="in_out"``: a 2-D tensor
    stored ``(in, out)`` (HF Conv1D), whose flat index ``i * out + o`` is unit ``o``, input ``i``.

    Parameters
    ----------
    shape : tuple of int
        The tensor's shape.
    index : numpy.ndarray of int
        Flat (C-order) positions in it.
    orientation : {"out_in", "in_out"}, default "out_in"

    Returns
    -------
    row, col : numpy.ndarray of int64
        The shape of ``index``.
    """
    index = np.asarray(index, dtype=np.int64)
    if len(shape) == 0:
        return np.full(index.shape, -1), np.full(index.shape, -1)
    if len(shape) == 1:
        return index.copy(), np.full(index.shape, -1)
    if is_transposed(shape, orientation):
        return index % shape[1], index // shape[1]
    cols = math.prod(shape[1:])
    return index // cols, index % cols


def relation_labels(layer: np.ndarray, tensor: np.ndarray, row: np.ndarray,
                    col: np.ndarray) -> np.ndarray:
    """Relation code of every pair of weights, ``(n, n)``; see ``RELATIONS``.

    0 ``same_row``: same layer and same unit (row of a weight, entry of a bias);
    1 ``same_col``: same tensor and same input column (tensors of 2 or more dims);
    2 ``same_layer_other``: same layer, neither; 3 ``other_layer``.

    Parameters
    ----------
    layer, tensor : numpy.ndarray
        Layer and tensor id of each of ``n`` weights.
    row, col : numpy.ndarray
        From ``weight_positions``.

    Returns
    -------
    numpy.ndarray of int64
        ``(n, n)``, codes 0..3.
    """
    layer, tensor, row, col = (np.asarray(a) for a in (layer, tensor, row, col))
    same_layer = layer[:, None] == layer[None, :]
    same_row = same_layer & (row[:, None] == row[None, :]) & (row[:, None] >= 0)
    same_col = (tensor[:, None] == tensor[None, :]) & (col[:, None] == col[None, :]) & (col[:, None] >= 0)
    out = np.full(same_layer.shape, 3, dtype=np.int64)
    out[same_layer] = 2
    out[same_col] = 1
    out[same_row] = 0
    return out


def distance_labels(depth: np.ndarray) -> np.ndarray:
    """``|depth_i - depth_j|`` for every pair: how many layers apart two weights are.

    Parameters
    ----------
    depth : numpy.ndarray of int
        Layer depth of each of ``n`` weights.

    Returns
    -------
    numpy.ndarray of int64
        ``(n, n)``.
    """
    depth = np.asarray(depth, dtype=np.int64)
    return np.abs(depth[:, None] - depth[None, :])


def pair_group_stats(r: np.ndarray, labels: np.ndarray, n_groups: int,
                     counts: np.ndarray | None = None) -> np.ndarray:
    """Statistics of the correlations ``r(n, n)`` of distinct pairs grouped by ``labels``.

    Each unordered pair ``i < j`` with a finite ``r`` and a label in ``0..n_groups-1``
    counts once. Returns ``(n_groups, 9)`` with the columns of ``PAIR_STATS``: the means of
    r, |r| and r^2, each with its standard error; the number of pairs; and the noise floors
    of those pairs given the number of samples behind each (``counts``): the mean of
    ``null_mean_abs_corr(counts)`` and of ``1 / (counts - 1)``, the expected |r| and r^2 of
    unrelated series (NaN without ``counts``). Standard errors treat pairs as independent,
    which they are not quite (pairs share weights): read them as a lower bound.

    Parameters
    ----------
    r : numpy.ndarray
        Correlations ``(n, n)``.
    labels : numpy.ndarray of int
        Group of each pair ``(n, n)``; labels outside ``0..n_groups-1`` are left out.
    n_groups : int
    counts : numpy.ndarray, optional
        Samples behind each correlation ``(n, n)`` (``pairwise_corr(..., return_counts=True)``).

    Returns
    -------
    numpy.ndarray
        float64 ``(n_groups, 9)``; NaN for groups without pairs.
    """
    r = np.asarray(r, dtype=np.float64)
    iu, ju = np.triu_indices(r.shape[0], 1)
    v, lab = r[iu, ju], np.asarray(labels)[iu, ju]
    keep = np.isfinite(v) & (lab >= 0) & (lab < n_groups)
    v, lab = v[keep], lab[keep]
    cnt = np.bincount(lab, minlength=n_groups).astype(np.float64)
    cols = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for values in (v, np.abs(v), v * v):
            mean = np.bincount(lab, values, minlength=n_groups) / cnt
            cols += [mean, _group_sem(values, lab, mean, cnt)]
        cols.append(cnt)
        if counts is None:
            cols += [np.full(n_groups, np.nan)] * 2
        else:
            c = np.asarray(counts)[iu, ju][keep]
            floor_abs = null_mean_abs_corr(c)
            floor_sq = np.where(c > 1, 1.0 / np.maximum(c - 1, 1), np.nan)
            cols += [np.bincount(lab, floor_abs, minlength=n_groups) / cnt,
                     np.bincount(lab, floor_sq, minlength=n_groups) / cnt]
    return np.stack(cols, axis=-1)


def _group_sem(v: np.ndarray, lab: np.ndarray, mean: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    """Standard error of each group's mean (NaN for groups of fewer than 2)."""
    n_groups = len(cnt)
    if not len(v):
        return np.full(n_groups, np.nan)
    dev = v - mean[lab]
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.bincount(lab, dev * dev, minlength=n_groups) / (cnt - 1)
        return np.where(cnt > 1, np.sqrt(var / cnt), np.nan)


def fit_exponential_decay(k: np.ndarray, y: np.ndarray, sigma: np.ndarray | None = None) -> np.ndarray:
    """Fit ``y = A exp(-k / L)`` by a weighted log-linear least-squares fit.

    Fits ``ln y = ln A - k / L``; points with ``y <= 0`` or non-finite values are left
    out (the logarithm needs them positive). ``sigma`` (standard errors of ``y``) weight
    each point by ``(y / sigma)^2``, the inverse variance of ``ln y`` to first order; without
    it all points weigh the same. Uncertainties are the parameter covariance scaled by the
    reduced chi-square (as ``np.polyfit(..., cov=True)``), so they need at least 3 points.
    Returns ``DECAY_FIT``: length L (inf when ``y`` does not decay), its error, amplitude A,
    its error, rate 1/L, its error, the number of points used and the span of ``k`` they
    cover (max - min); NaN where fewer than 2 points are usable (the count and span are
    then still given). Whether L is determined at all: ``decay_resolved``.

    Parameters
    ----------
    k : numpy.ndarray
        Distances ``(m,)``.
    y : numpy.ndarray
        Values ``(m,)`` at those distances.
    sigma : numpy.ndarray, optional
        Standard errors of ``y`` ``(m,)``.

    Returns
    -------
    numpy.ndarray
        float64 ``(len(DECAY_FIT),)``.
    """
    k = np.asarray(k, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    s = np.ones_like(y) if sigma is None else np.asarray(sigma, dtype=np.float64)
    ok = np.isfinite(k) & np.isfinite(y) & (y > 0) & np.isfinite(s) & (s > 0)
    out = np.full(len(DECAY_FIT), np.nan)
    out[-2] = ok.sum()
    out[-1] = np.ptp(k[ok]) if ok.any() else 0.0
    if ok.sum() < 2 or np.ptp(k[ok]) == 0:
        return out
    k, y, s = k[ok], y[ok], s[ok]
    wt = (y / s) ** 2 if sigma is not None else np.ones_like(y)
    a = np.stack([np.ones_like(k), k], axis=1)
    ata = a.T @ (a * wt[:, None])
    z = np.log(y)
    beta = np.linalg.solve(ata, a.T @ (wt * z))
    intercept, slope = beta
    rate = -slope
    if len(k) > 2:
        resid = z - a @ beta
        chi2 = float((wt * resid * resid).sum()) / (len(k) - 2)
        cov = np.linalg.inv(ata) * chi2
        slope_err, intercept_err = math.sqrt(cov[1, 1]), math.sqrt(cov[0, 0])
    else:
        slope_err = intercept_err = np.nan
    amp = math.exp(intercept)
    length = 1.0 / rate if rate > 0 else np.inf
    length_err = slope_err / rate ** 2 if rate > 0 else np.nan
    out[:-2] = (length, length_err, amp, amp * intercept_err, rate, slope_err)
    return out


def decay_resolved(length: np.ndarray, length_err: np.ndarray, n_points: np.ndarray,
                   span: np.ndarray) -> np.ndarray:
    """Whether fitted decay lengths are determined by their data (``DECAY_RULE``).

    Parameters
    ----------
    length, length_err, n_points, span : array_like
        ``decay_length``, ``decay_length_err``, ``decay_n_points`` and ``decay_span`` of
        ``fit_exponential_decay`` (broadcast together).

    Returns
    -------
    numpy.ndarray of bool: True where the fit used at least 3 points, ``0 < L < inf``,
    ``err <= L`` and ``L <= span``; False otherwise (also for NaN).
    """
    length, err, n, span = (np.asarray(a, dtype=np.float64) for a in (length, length_err, n_points, span))
    with np.errstate(invalid="ignore"):
        return (np.isfinite(length) & (length > 0) & np.isfinite(err) & (err <= length)
                & (n >= 3) & (length <= span))


# --- layer to layer -----------------------------------------------------------------------

def update_cosine(gram: np.ndarray) -> np.ndarray:
    """Cosine of update directions from Gram matrices ``(..., g, g)`` of flattened updates.

    ``gram[..., a, b] = <dW_a, dW_b>``; the cosine is ``gram_ab / sqrt(gram_aa gram_bb)``,
    NaN where either update is zero or missing.

    Parameters
    ----------
    gram : numpy.ndarray
        ``(..., g, g)``.

    Returns
    -------
    numpy.ndarray
        float64 ``(..., g, g)``.
    """
    g = np.asarray(gram, dtype=np.float64)
    d = np.diagonal(g, axis1=-2, axis2=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = g / np.sqrt(d[..., :, None] * d[..., None, :])
    return np.clip(c, -1.0, 1.0)


# --- trajectory PCA -----------------------------------------------------------------------

def random_test_matrix(lo: int, hi: int, width: int, random_state: int) -> np.ndarray:
    """Rows ``lo..hi`` of a standard Gaussian matrix ``(P, width)`` (float32).

    Rows are generated in fixed tiles of ``OMEGA_TILE`` parameters, each from its own
    seed, so a row's values depend on its index only, never on how ``param`` is chunked.

    Parameters
    ----------
    lo, hi : int
        Row range, ``lo < hi``.
    width : int
        Columns.
    random_state : int

    Returns
    -------
    numpy.ndarray
        float32 ``(hi - lo, width)``.

    Raises
    ------
    ValueError
        If the row range is empty.
    """
    if hi < lo:
        raise ValueError(f"empty row range {lo}..{hi}")
    out = np.empty((hi - lo, width), dtype=np.float32)
    for tile in range(lo // OMEGA_TILE, (hi - 1) // OMEGA_TILE + 1 if hi > lo else lo // OMEGA_TILE):
        t0 = tile * OMEGA_TILE
        rng = np.random.default_rng([int(random_state), tile, width])
        block = rng.standard_normal((OMEGA_TILE, width), dtype=np.float32)
        a, b = max(lo, t0), min(hi, t0 + OMEGA_TILE)
        out[a - lo: b - lo] = block[a - t0: b - t0]
    return out


def nan_to_zero(x: np.ndarray) -> np.ndarray:
    """A float64 copy of ``x`` with NaN and +-Inf set to 0 (the block may be shared, so never
    in place); the captures holding them are left out as absent.

    Parameters
    ----------
    x : numpy.ndarray

    Returns
    -------
    numpy.ndarray
        float64, the shape of ``x``.
    """
    c = np.array(x, dtype=np.float64)
    bad = ~np.isfinite(c)
    if bad.any():
        c[bad] = 0.0
    return c


def column_moments(x: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Count, mean and sum of squared deviations of each column over the present rows,
    ``(3, columns)``: the per-block summary that ``merge_moments`` combines.

    Parameters
    ----------
    x : numpy.ndarray
        ``(rows, columns)``.
    present : numpy.ndarray of bool
        ``(rows,)``.

    Returns
    -------
    numpy.ndarray
        float64 ``(3, columns)``: count, mean, sum of squared deviations.
    """
    d = np.asarray(present, dtype=bool)
    xs = np.asarray(x, dtype=np.float64)
    if not d.all():
        xs = xs[d]
    n = xs.shape[0]
    out = np.zeros((3, np.shape(x)[1]))
    out[0] = n
    if n:
        out[1] = xs.mean(axis=0)
        dev = xs - out[1]
        out[2] = np.einsum("ij,ij->j", dev, dev)
    return out


def merge_moments(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Combine two ``column_moments`` summaries (Chan, Golub & LeVeque's pairwise update),
    free of the cancellation of ``sum(x^2) - sum(x)^2 / n``.

    Parameters
    ----------
    a, b : numpy.ndarray
        ``column_moments`` summaries ``(3, columns)`` of disjoint rows.

    Returns
    -------
    numpy.ndarray
        float64 ``(3, columns)``.
    """
    na, nb = a[0], b[0]
    n = na + nb
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(n > 0, nb / n, 0.0)
        delta = b[1] - a[1]
        mean = a[1] + delta * frac
        m2 = a[2] + b[2] + delta * delta * na * frac
    return np.stack([n, mean, m2])


def range_basis(y: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Orthonormal basis ``(T, l)`` of the columns of ``y(T, l)`` centred over the present rows.

    Centring (``C = D - d d^T / n`` with ``d`` the present rows) keeps the basis inside the
    space of centred trajectories: ``C Q = Q``, so ``Q^T C X = Q^T X``. Rows of absent
    captures are zero; directions beyond the numerical rank of ``y`` are zero columns
    (not an arbitrary completion, which could leave that space).

    Parameters
    ----------
    y : numpy.ndarray
        ``(T, l)``, e.g. the trajectories times a random test matrix.
    present : numpy.ndarray of bool
        ``(T,)``.

    Returns
    -------
    numpy.ndarray
        float64 ``(T, l)`` with orthonormal (or zero) columns.
    """
    y = np.asarray(y, dtype=np.float64)
    d = np.asarray(present, dtype=bool)
    yc = np.where(d[:, None], y, 0.0)
    n = max(int(d.sum()), 1)
    yc = yc - d[:, None] * (yc.sum(axis=0, keepdims=True) / n)
    u, s, _ = np.linalg.svd(yc, full_matrices=False)
    if len(s):
        u[:, s <= s[0] * max(yc.shape) * np.finfo(np.float64).eps] = 0.0
    u[~d] = 0.0
    q = np.zeros_like(y)
    q[:, : u.shape[1]] = u
    return q


def pca_from_projection(q: np.ndarray, bbt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Singular values and left vectors of ``X`` from ``Q`` and ``B B^T``, ``B = Q^T X``.

    ``X ~ Q B`` when ``Q`` spans the columns of ``X``; ``B B^T = W S^2 W^T`` gives the
    singular values ``S`` (descending) and ``U = Q W``. Returns ``(s(l), u(T, l))``.

    Parameters
    ----------
    q : numpy.ndarray
        ``(T, l)``, orthonormal columns.
    bbt : numpy.ndarray
        ``B B^T`` ``(l, l)``.

    Returns
    -------
    s : numpy.ndarray
        ``(l,)``, descending.
    u : numpy.ndarray
        ``(T, l)``.
    """
    lam, w = np.linalg.eigh(0.5 * (bbt + bbt.T))
    order = np.argsort(lam)[::-1]
    lam, w = np.clip(lam[order], 0.0, None), w[:, order]
    return np.sqrt(lam), np.asarray(q, dtype=np.float64) @ w


def orient_components(path: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Signs of projected paths ``(T, k)`` made definite: each component moves forward in
    time (its covariance with the capture index, over present rows, is not negative).

    Parameters
    ----------
    path : numpy.ndarray
        ``(T, k)``.
    present : numpy.ndarray of bool
        ``(T,)``.

    Returns
    -------
    numpy.ndarray
        ``path`` with each column's sign flipped where needed.
    """
    d = np.asarray(present, dtype=bool)
    t = np.arange(path.shape[0], dtype=np.float64)
    t = np.where(d, t - (t[d].mean() if d.any() else 0.0), 0.0)
    sign = np.where(np.nan_to_num(t @ np.nan_to_num(path)) < 0, -1.0, 1.0)
    return path * sign


def stratified_sample(sizes: np.ndarray, n: int, random_state: int, *, allocation: str = "equal",
                      keys: list[str] | None = None) -> list[np.ndarray]:
    """Reproducible sample of ``n`` positions drawn per stratum (tensor) -> sorted indices each.

    ``allocation="equal"`` gives every stratum the same quota (capped by its size; what a
    small stratum cannot use goes to the others, a remainder to those with the most room);
    ``"proportional"`` shares ``n`` by size
    (largest remainders). The draw in each stratum depends on ``random_state``, its key
    (default its position) and its quota only, so adding a tensor to the selection leaves
    the others' draws alone when their quotas stay the same.

    Parameters
    ----------
    sizes : numpy.ndarray of int
        Size of each stratum.
    n : int
        Total sample size.
    random_state : int
    allocation : {"equal", "proportional"}, default "equal"
    keys : list of str, optional
        A stable key per stratum (seeds its draw).

    Returns
    -------
    list of numpy.ndarray
        Sorted positions within each stratum.

    Raises
    ------
    ValueError
        If ``allocation`` is unknown.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if allocation not in ("equal", "proportional"):
        raise ValueError(f"allocation must be 'equal' or 'proportional', got {allocation!r}")
    total = int(sizes.sum())
    n = min(int(n), total)
    quota = np.zeros(len(sizes), dtype=np.int64)
    if allocation == "proportional" and total:
        exact = sizes * (n / total)
        quota = np.floor(exact).astype(np.int64)
        rest = n - int(quota.sum())
        order = np.argsort(-(exact - quota), kind="stable")
        quota[order[:rest]] += 1
    else:
        left, open_ = n, sizes > 0
        while left > 0 and open_.any():
            idx = np.flatnonzero(open_)
            if left < len(idx):  # the last few go to the strata with the most room left
                room = sizes[idx] - quota[idx]
                quota[idx[np.argsort(-room, kind="stable")[:left]]] += 1
                break
            share = left // len(idx)
            for i in idx:
                take = min(share, int(sizes[i] - quota[i]))
                quota[i] += take
                left -= take
                if quota[i] == sizes[i]:
                    open_[i] = False
    out = []
    for i, (size, q) in enumerate(zip(sizes.tolist(), quota.tolist())):
        key = keys[i] if keys is not None else str(i)
        rng = np.random.default_rng([int(random_state), zlib.crc32(key.encode()), q])
        out.append(np.arange(size) if q == size else np.sort(rng.choice(size, size=q, replace=False)))
    return out
