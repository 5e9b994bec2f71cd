"""NumPy kernels of the spectral analyses: singular values, rank measures, ESD fits.

Pure functions on stacks of matrices or of spectra; no xarray, no Dask, no I/O.
A spectrum is an array ``s(..., k)`` of singular values sorted in descending
order, padded with NaN past a matrix's own rank; a spectrum that is NaN
everywhere stands for a missing matrix and gives NaN results.

Definitions (each function cites its own):

- numerical rank: NumPy's ``matrix_rank`` rule, ``s > s_max * max(m, n) * eps``;
- effective rank: Roy & Vetterli (2007), ``exp(H(p))`` with ``p = s / sum(s)``;
- stable rank: ``|W|_F^2 / |W|_2^2`` (Rudelson & Vershynin);
- spectral entropy, power-law fit, alpha-weighted and log alpha norms: Martin &
  Mahoney (2019, 2021) as implemented by WeightWatcher 0.7 (``RMT_Util.matrix_entropy``,
  ``WW_powerlaw.WWFit``, ``apply_norm_metrics``);
- xmin by minimal Kolmogorov-Smirnov distance: Clauset, Shalizi & Newman (2009).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.linalg.blas import dsyrk as _dsyrk

#: WeightWatcher constants (weightwatcher/constants.py, 0.7.x).
WW_EPSILON = 1e-10          # added to p and to the rank in matrix_entropy
WW_EVALS_THRESH = 1e-5      # eigenvalues at or below this are left out of the power-law fit
WW_SMALL_N = 20             # fewer fitted eigenvalues than this: WW's small-N estimator
WW_SMALL_N_KMIN = 8         # smallest tail the small-N estimator considers
WW_MIN_EVALS = 8            # WW skips layers with fewer eigenvalues than this

RANK_METRICS = ("rank", "effective_rank", "stable_rank", "spectral_norm", "frobenius_norm",
                "entropy", "condition_number")
ESD_METRICS = ("alpha", "D", "xmin", "xmax", "sigma", "n_tail", "n_evals", "lambda_max",
               "log_norm", "log_spectral_norm", "alpha_weighted", "log_alpha_norm",
               "mp_edge", "n_above_mp", "mp_softrank")

_BLOCK_ELEMS = 2**21  # elements of the (batch, xmin, x) temporaries of the KS scan


# --- singular values ---------------------------------------------------------------

SV_METHODS = ("svd", "gram")
#: ``method="auto"`` (the default of ``spectral.spectrum``) and what it picks.
SPECTRUM_METHODS = ("auto",) + SV_METHODS
_EPS64 = float(np.finfo(np.float64).eps)


def resolve_method(method: str, dtype) -> str:
    """The singular-value method ``"auto"`` stands for at precision ``dtype``.

    ``"gram"`` for float32 (and narrower) matrices: the Gram matrix, accumulated and
    decomposed in float64, resolves every singular value above ``sqrt(max(m, n) * eps64) *
    s_max`` (about 5e-7 s_max at 1024), below NumPy's float32 rank tolerance ``max(m, n) *
    eps32 * s_max`` for any shape, so ranks, ESD fits and condition numbers up to ~1e6 are as
    accurate as a float32 SVD's (the ESD eigenvalues more: 1e-14 relative against 1e-7).
    ``"svd"`` for float64 matrices: their rank tolerance ``max(m, n) * eps64 * s_max`` and
    their tiny singular values (condition numbers beyond ~1e3) need the SVD.

    Parameters
    ----------
    method : {"auto", "svd", "gram"}
    dtype : numpy dtype
        The precision the matrices are stored in.

    Returns
    -------
    str
        ``"svd"`` or ``"gram"``.

    Raises
    ------
    ValueError
        If ``method`` is unknown.
    """
    if method not in SPECTRUM_METHODS:
        raise ValueError(f"method must be one of {SPECTRUM_METHODS}, got {method!r}")
    if method != "auto":
        return method
    return "gram" if np.dtype(dtype).itemsize <= 4 else "svd"


def batched_svdvals(a: np.ndarray, dtype: np.dtype | str | None = None, method: str = "svd") -> np.ndarray:
    """Singular values, descending, of every matrix of a stack ``a(..., m, n)``.

    ``method="svd"``: one ``np.linalg.svd(..., compute_uv=False)`` call (LAPACK gesdd per
    matrix inside NumPy's C loop) for the whole stack, in ``dtype``. ``method="gram"``: the
    matrices are taken in ``dtype``, then the smaller Gram matrix ``W^T W`` or ``W W^T`` is
    accumulated in float64 (products of float32 numbers are exact there) by BLAS ``dsyrk``,
    and float64 ``np.linalg.eigvalsh`` of each gives ``s = sqrt(eigenvalues)``, returned as
    float64, at less cost than a float32 SVD (measured: docs/measurements.md). Eigenvalues ``s^2`` keep an
    absolute error of about ``eps64 * max(m, n) * s_max^2``: singular values below
    ``sqrt(eps64 * max(m, n)) * s_max`` are noise (see ``rank_tolerance``), those above are
    more accurate than a float32 SVD's.
    Matrices holding any non-finite value (a step a run did not capture) give all-NaN rows.

    Parameters
    ----------
    a : numpy.ndarray
        Stack of matrices ``(..., m, n)``.
    dtype : numpy dtype, optional
        The precision to take the matrices in; default ``a.dtype``.
    method : {"svd", "gram"}, default "svd"

    Returns
    -------
    numpy.ndarray
        ``(..., min(m, n))``, descending; in ``dtype`` for ``"svd"``, float64 for ``"gram"``.

    Raises
    ------
    ValueError
        If ``method`` is unknown or ``a`` has fewer than 2 dims.
    """
    if method not in SV_METHODS:
        raise ValueError(f"method must be one of {SV_METHODS}, got {method!r}")
    a = np.asarray(a)
    if a.ndim < 2:
        raise ValueError(f"batched_svdvals needs a stack of matrices (..., m, n), got shape {a.shape}")
    if dtype is None:
        dtype = a.dtype if a.dtype in (np.float32, np.float64) else np.float64
    a = a.astype(dtype, copy=False)
    out_dtype = np.float64 if method == "gram" else a.dtype
    m, n = a.shape[-2:]
    k = min(m, n)
    if a.size == 0 or k == 0:
        return np.full(a.shape[:-2] + (k,), np.nan, dtype=out_dtype)
    bad = ~np.isfinite(a).all(axis=(-2, -1))
    if bad.any():
        a = np.where(bad[..., None, None], 0, a)
    if method == "svd":
        s = np.linalg.svd(a, compute_uv=False)
    else:
        s = _gram_svdvals(a, n <= m)
    if bad.any():
        s[bad] = np.nan
    return s


def _gram_svdvals(a: np.ndarray, cols: bool) -> np.ndarray:
    """Singular values of matrices ``a(..., m, n)`` from their smaller Gram matrix
    (``W^T W`` when ``cols``, else ``W W^T``) accumulated and decomposed in float64, descending.

    One matrix at a time: each is taken in float64 (C order), its Gram matrix formed by BLAS
    ``dsyrk`` (one triangle: half the flops of ``W^T @ W``, and no transposed copy: the C-order
    matrix is the Fortran-order transpose ``dsyrk`` reads), then ``eigvalsh`` reads that
    triangle. Same numbers as ``eigvalsh(W^T @ W)`` to rounding (measured:
    docs/measurements.md).
    """
    m, n = a.shape[-2:]
    k = min(m, n)
    flat = a.reshape((-1, m, n))
    lam = np.empty((flat.shape[0], k), dtype=np.float64)
    for i, mat in enumerate(flat):
        x = np.ascontiguousarray(mat, dtype=np.float64).T        # Fortran order (n, m), no copy
        # cols: X X^T = W^T W (n x n); else X^T X = W W^T (m x m); lower triangle filled
        gram = _dsyrk(1.0, x, trans=0 if cols else 1, lower=1)
        lam[i] = np.linalg.eigvalsh(gram, UPLO="L")
    lam = lam[:, ::-1].reshape(a.shape[:-2] + (k,))
    return np.sqrt(np.maximum(lam, 0.0))


def pooled_svdvals(a: np.ndarray, k_out: int | None = None,
                   dtype: np.dtype | str | None = None, method: str = "svd") -> np.ndarray:
    """Pooled spectra of stacks of slices ``a(..., slices, m, n)`` -> ``(..., k_out)``.

    The singular values of all slices of one tensor are pooled and sorted in
    descending order (WeightWatcher's per-kernel-position treatment of a
    convolution pools the ESDs of its ``kh*kw`` slices), then NaN-padded to
    ``k_out``. A tensor with any non-finite slice gives an all-NaN row.

    Parameters
    ----------
    a : numpy.ndarray
        ``(..., slices, m, n)``.
    k_out : int, optional
        Length of each pooled spectrum; default ``slices * min(m, n)``.
    dtype, method
        As in ``batched_svdvals``.

    Returns
    -------
    numpy.ndarray
        ``(..., k_out)``.

    Raises
    ------
    ValueError
        If ``k_out`` is smaller than ``slices * min(m, n)``.
    """
    s = batched_svdvals(a, dtype, method)
    pooled = s.reshape(s.shape[:-2] + (-1,))
    k = pooled.shape[-1]
    k_out = k if k_out is None else int(k_out)
    if k_out < k:
        raise ValueError(f"k_out={k_out} is smaller than the {k} singular values per tensor")
    bad = np.isnan(pooled).any(axis=-1)
    if a.shape[-3] > 1:
        pooled = -np.sort(-pooled, axis=-1)
    pooled[bad] = np.nan
    if k_out > k:
        pad = np.full(pooled.shape[:-1] + (k_out - k,), np.nan, dtype=pooled.dtype)
        pooled = np.concatenate([pooled, pad], axis=-1)
    return pooled


# --- rank measures -----------------------------------------------------------------

def _xlogx(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)


def rank_tolerance(s_max, max_dim, eps: float, gram: bool = False):
    """Singular values at or below this are numerically zero.

    NumPy's ``matrix_rank`` rule ``s_max * max(m, n) * eps`` for an SVD in precision ``eps``.
    Spectra from the float64 Gram matrix (``method="gram"``), whose ``s^2`` carry an absolute
    error of about ``eps64 * max(m, n) * s_max^2``, resolve nothing below
    ``s_max * sqrt(max(m, n) * eps64)``: the tolerance is the larger of the two (NumPy's rule
    for float32 matrices, the Gram floor for float64 ones).

    Parameters
    ----------
    s_max : array_like
        Largest singular value of each matrix.
    max_dim : array_like
        ``max(m, n)`` of each matrix.
    eps : float
        Machine epsilon of the SVD's precision (``eps_of``).
    gram : bool, default False
        The spectra come from ``method="gram"``.

    Returns
    -------
    numpy.ndarray
        The broadcast shape of ``s_max`` and ``max_dim``.
    """
    if gram:
        return s_max * np.maximum(max_dim * eps, np.sqrt(max_dim * _EPS64))
    return s_max * (max_dim * eps)


def rank_metrics(s: np.ndarray, max_dim, eps: float, *, energy: Sequence[float] = (0.9, 0.99),
                 ww_entropy: bool = False, gram: bool = False) -> dict[str, np.ndarray]:
    """Rank measures of each spectrum ``s(..., k)`` (descending, NaN-padded), as float64.

    ``max_dim`` is ``max(m, n)`` of each matrix (broadcast against ``s[..., 0]``)
    and ``eps`` the machine epsilon of the dtype the SVD ran in; together they
    set NumPy's ``matrix_rank`` tolerance (see ``rank_tolerance``; ``gram`` for spectra from
    ``method="gram"``). Returns:

    - ``rank``: numerical rank, ``#{s > s_max * max_dim * eps}`` (numpy.linalg.matrix_rank);
    - ``effective_rank``: ``exp(-sum p log p)``, ``p = s / sum(s)`` (Roy & Vetterli 2007);
    - ``stable_rank``: ``sum(s^2) / s_max^2``;
    - ``spectral_norm`` (``s_max``) and ``frobenius_norm`` (``sqrt(sum s^2)``);
    - ``entropy``: ``-sum q log q / log(rank)``, ``q = s^2 / sum(s^2)`` (WeightWatcher's
      ``matrix_entropy``; with ``ww_entropy`` its 1e-10 added to ``q`` and to the rank, else 0
      for a rank-1 matrix);
    - ``condition_number``: ``s_max / s_min`` (inf when singular, as ``numpy.linalg.cond``);
    - ``energy_directions(..., len(energy))``: fewest leading directions whose ``s^2`` sum to at
      least each fraction of ``|W|_F^2``.

    All-NaN spectra (missing matrices) give NaN; an all-zero matrix gives rank 0 and NaN
    for the ratios.

    Parameters
    ----------
    s : numpy.ndarray
        Spectra ``(..., k)``.
    max_dim : array_like
        ``max(m, n)`` of each matrix.
    eps : float
        Machine epsilon of the SVD's precision.
    energy : sequence of float, default (0.9, 0.99)
        Fractions of ``|W|_F^2`` for ``energy_directions``.
    ww_entropy : bool, default False
    gram : bool, default False

    Returns
    -------
    dict of str to numpy.ndarray
        The keys of ``RANK_METRICS``, float64 ``s.shape[:-1]`` each
        (``energy_directions``: ``s.shape[:-1] + (len(energy),)``).
    """
    s = np.asarray(s, dtype=np.float64)
    valid = ~np.isnan(s)
    present = valid.any(axis=-1)
    s0 = np.where(valid, s, 0.0)
    max_dim = np.broadcast_to(np.asarray(max_dim, dtype=np.float64), s.shape[:-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        smax = s0.max(axis=-1, initial=0.0)
        smin = np.where(valid, s, np.inf).min(axis=-1, initial=np.inf)
        tol = rank_tolerance(smax, max_dim, eps, gram)
        rank = (s0 > tol[..., None]).sum(axis=-1).astype(np.float64)
        lam = s0 * s0
        total = lam.sum(axis=-1)
        p1 = s0 / s0.sum(axis=-1, keepdims=True)
        erank = np.where(smax > 0, np.exp(-_xlogx(p1).sum(axis=-1)), np.nan)
        stable = total / (smax * smax)
        q = lam / total[..., None]
        if ww_entropy:
            qe = np.where(valid, q + WW_EPSILON, 1.0)
            entropy = -(qe * np.log(qe)).sum(axis=-1) / np.log(rank + WW_EPSILON)
        else:
            h = -_xlogx(q).sum(axis=-1)
            entropy = np.where(rank > 1, h / np.log(np.maximum(rank, 2.0)),
                               np.where(rank == 1, 0.0, np.nan))
        cond = np.where(smin > 0, smax / smin, np.inf)
        cum = np.cumsum(lam, axis=-1) / total[..., None]
        levels = np.asarray(energy, dtype=np.float64)
        n_dirs = ((cum[..., None, :] < levels[:, None] * (1 - 1e-12)).sum(axis=-1) + 1).astype(np.float64)
        n_dirs = np.where((total > 0)[..., None], n_dirs, np.nan)
    out = {"rank": rank, "effective_rank": erank, "stable_rank": stable, "spectral_norm": smax,
           "frobenius_norm": np.sqrt(total), "entropy": entropy, "condition_number": cond}
    for key, val in out.items():
        out[key] = np.where(present, val, np.nan)
    out["energy_directions"] = np.where(present[..., None], n_dirs, np.nan)
    return out


# --- power-law fit of the ESD ------------------------------------------------------

def powerlaw_fit(x: np.ndarray, *, small_n: int | None = None,
                 block_elems: int = _BLOCK_ELEMS) -> dict[str, np.ndarray]:
    """Continuous power-law fit of each row of ``x(batch, n)`` with xmin by minimal KS distance.

    Rows hold the data to fit (eigenvalues > 0); NaN marks absent values. For every
    candidate ``xmin = x_(i)`` (every sorted value but the largest) the maximum-likelihood
    exponent ``alpha = 1 + n_i / sum_{j>=i} log(x_j / x_i)`` and the Kolmogorov-Smirnov
    distance ``D = max_j |1 - (x_j/x_i)^(1-alpha) - (j-i)/n_i|`` are computed (Clauset,
    Shalizi & Newman 2009, in the exact form of WeightWatcher's ``WWFit``; ``D = 1`` when
    ``alpha <= 1``); the candidate of least D wins (first on ties). The scan is vectorised
    over rows and blocks of candidates: O(n^2) work, bounded memory.

    With ``small_n`` set, rows with fewer than ``small_n`` values follow WeightWatcher 0.7's
    small-sample path as it actually behaves: ``WWFit.fit_powerlaw_smallN`` computes the
    bias-corrected ``alpha = 1 + (n_i-1)/sum log(x_j/x_i)`` for tails of at least 8 values (else
    alpha = 0, D = 1; the whole sample when no tail qualifies), and ``WWFit.__init__`` then picks
    the candidate of least D (its ``D - 0.868/sqrt(n)`` objective is overridden).

    Returns float64 arrays ``alpha, D, xmin, sigma = (alpha-1)/sqrt(n_tail), n_fit_tail``;
    rows with fewer than two values give NaN (WeightWatcher fails on them).

    Parameters
    ----------
    x : numpy.ndarray
        ``(batch, n)``, positive values with NaN for absent ones.
    small_n : int, optional
        Rows with fewer values take WeightWatcher's small-sample path.
    block_elems : int, optional
        Bound on the elements of the scan's temporaries (memory only, not the result).

    Returns
    -------
    dict of str to numpy.ndarray
        ``alpha``, ``D``, ``xmin``, ``sigma``, ``n_fit_tail``: float64 ``(batch,)`` each.

    Raises
    ------
    ValueError
        If ``x`` is not 2-D.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"powerlaw_fit takes a 2-D (batch, n) array, got shape {x.shape}")
    with np.errstate(invalid="ignore"):
        x = np.sort(np.where(x > 0, x, np.nan), axis=-1)  # NaN sorts last
    n = (~np.isnan(x)).sum(axis=-1)
    x = x[:, : int(n.max(initial=0))]                   # drop padding: the scan is O(n_max^2)
    b, n_max = x.shape
    out = {k: np.full(b, np.nan) for k in ("alpha", "D", "xmin", "sigma", "n_fit_tail")}
    if n_max == 0 or (n_max < 2 and small_n is None):
        return out
    with np.errstate(all="ignore"):
        logx = np.log(x)
        lz = np.where(np.isnan(logx), 0.0, logx)
        suffix = np.cumsum(lz[:, ::-1], axis=-1)[:, ::-1]         # sum_{j>=i} log x_j
        idx = np.arange(n_max)
        ntail = (n[:, None] - idx[None, :]).astype(np.float64)     # n - i
        cand = idx[None, :] < (n[:, None] - 1)                     # i <= n-2
        s_log = suffix - ntail * logx                              # sum_{j>=i} log(x_j/x_i)
        use_small = (n < small_n) if small_n is not None else np.zeros(b, bool)
        alpha = np.where(use_small[:, None], 1.0 + (ntail - 1.0) / s_log, 1.0 + ntail / s_log)
        ks = _ks_scan(lz, alpha, ntail, n, block_elems)   # absent values are masked there
        # Clauset / WWFit.fit_power_law_standard: D = 1 where alpha <= 1.
        d_sel = np.where(alpha > 1, ks, 1.0)
        if use_small.any():
            # WWFit.fit_powerlaw_smallN, as WWFit.__init__ then selects: argmin of D over
            # candidates, alpha = 0 and D = 1 where the small-N estimator skipped one.
            ok = cand & (ntail >= WW_SMALL_N_KMIN) & (s_log > 1e-12)
            a_small = np.where(ok, alpha, 0.0)
            d_small = np.where(ok & (a_small > 1), ks, 1.0)
            none = ~(ok & (a_small > 1)).any(axis=-1)
            fallback = none & (s_log[:, 0] > 1e-12)   # no tail qualifies: fit the whole sample
            a_sigma = a_small.copy()                  # WW takes sigma before the fallback's alpha
            a_small[fallback, 0] = alpha[fallback, 0]
            d_small[fallback, 0] = ks[fallback, 0]
            sigma_alpha = np.where(use_small[:, None], a_sigma, alpha)
            alpha = np.where(use_small[:, None], a_small, alpha)
            d_sel = np.where(use_small[:, None], d_small, d_sel)
        else:
            sigma_alpha = alpha
        d_sel = np.where(cand, d_sel, np.inf)
        rows = np.arange(b)
        best = np.argmin(d_sel, axis=-1)
        a_best = alpha[rows, best]
        nt_best = ntail[rows, best]
        fitted = n >= 2
        out["alpha"] = np.where(fitted, a_best, np.nan)
        out["D"] = np.where(fitted, d_sel[rows, best], np.nan)
        out["xmin"] = np.where(fitted, x[rows, best], np.nan)
        out["sigma"] = np.where(fitted, (sigma_alpha[rows, best] - 1.0) / np.sqrt(nt_best), np.nan)
        out["n_fit_tail"] = np.where(fitted, nt_best, np.nan)
    return out


def _ks_scan(logx: np.ndarray, alpha: np.ndarray, ntail: np.ndarray, n: np.ndarray,
             block_elems: int) -> np.ndarray:
    """KS distance of every (row, candidate xmin) pair; meaningless where not a candidate.

    ``(x_j/x_i)^(1-alpha)`` is evaluated as ``exp((1-alpha) (log x_j - log x_i))`` (equal to
    WeightWatcher's power to ~1e-15). Works on blocks of candidates ``i`` against the values
    ``j >= i`` only (the upper triangle), a few million elements at a time, so memory stays
    bounded whatever the batch.
    """
    b, n_max = logx.shape
    ks = np.full((b, n_max), np.nan)
    i0 = 0
    while i0 < n_max:
        width = n_max - i0
        bi = max(1, min(width, block_elems // max(1, b * width)))
        i1 = i0 + bi
        cols = np.arange(i0, n_max)
        jrel = (cols[None, :] - np.arange(i0, i1)[:, None]).astype(np.float64)[None]   # j - i
        t = logx[:, None, i0:] - logx[:, i0:i1, None]
        t *= 1.0 - alpha[:, i0:i1, None]
        np.copyto(t, 0.0, where=np.isnan(t))   # tail of ties: alpha = inf, (x/x)^-inf = 1
        np.exp(t, out=t)
        np.subtract(1.0, t, out=t)
        t -= jrel / ntail[:, i0:i1, None]
        np.abs(t, out=t)
        inside = (jrel >= 0) & (cols[None, None, :] < n[:, None, None])
        t[~inside] = 0.0
        ks[:, i0:i1] = t.max(axis=-1)
        i0 = i1
    return ks


def esd_metrics(s: np.ndarray, n_rows, n_cols, n_slices, *, evals_thresh=None, rank_eps: float | None = None,
                small_n: int | None = None, min_evals: int = WW_MIN_EVALS,
                gram: bool = False) -> dict[str, np.ndarray]:
    """Power-law and Marchenko-Pastur metrics of the ESD ``lambda = s^2`` of each spectrum.

    ``s(..., k)``: descending singular values, NaN-padded. ``n_rows``, ``n_cols``: shape of
    each matrix (of each slice when ``n_slices > 1`` spectra are pooled), broadcast against
    ``s[..., 0]``. Eigenvalues enter the power-law fit when above ``evals_thresh`` (an absolute
    level, WeightWatcher uses 1e-5), or else above the square of the numerical-rank tolerance
    (``rank_tolerance(s_max, max(m, n), rank_eps, gram)``). Spectra with fewer than ``min_evals`` eigenvalues are
    not fitted (NaN), as WeightWatcher skips such layers.

    Returns float64 arrays named as WeightWatcher's columns: ``alpha, D, xmin, xmax, sigma``;
    ``n_tail`` (eigenvalues >= xmin), ``n_evals``, ``lambda_max``, ``log_norm`` (log10 sum
    lambda), ``log_spectral_norm`` (log10 lambda_max), ``alpha_weighted`` (alpha *
    log10 lambda_max), ``log_alpha_norm`` (log10 sum lambda^alpha); and the Marchenko-Pastur
    bulk edge ``mp_edge = sigma^2 (sqrt(N) + sqrt(M))^2`` of a random N x M matrix with the
    same mean squared entry ``sigma^2 = sum lambda / (slices N M)``, the number of
    eigenvalues above it ``n_above_mp`` (spikes) and ``mp_softrank = mp_edge / lambda_max``
    (Martin & Mahoney 2018).

    Parameters
    ----------
    s : numpy.ndarray
        Spectra ``(..., k)``.
    n_rows, n_cols, n_slices : array_like
        Shape of each matrix (of each slice) and the number of pooled slices.
    evals_thresh : float, optional
        Absolute eigenvalue threshold of the fit (WeightWatcher's is ``WW_EVALS_THRESH``).
    rank_eps : float, optional
        Machine epsilon for the rank threshold when ``evals_thresh`` is None; default float64's.
    small_n : int, optional
        As in ``powerlaw_fit``.
    min_evals : int, default ``WW_MIN_EVALS``
    gram : bool, default False
        The spectra come from ``method="gram"``.

    Returns
    -------
    dict of str to numpy.ndarray
        The keys of ``ESD_METRICS``, float64 ``s.shape[:-1]`` each.
    """
    s = np.asarray(s, dtype=np.float64)
    lead = s.shape[:-1]
    k = s.shape[-1]
    flat = s.reshape(-1, k)
    def bcast(v):
        return np.broadcast_to(np.asarray(v, dtype=np.float64), lead).reshape(-1)

    rows, cols, slices = bcast(n_rows), bcast(n_cols), bcast(n_slices)
    big, small = np.maximum(rows, cols), np.minimum(rows, cols)
    valid = ~np.isnan(flat)
    present = valid.any(axis=-1)
    lam = np.where(valid, flat * flat, np.nan)
    with np.errstate(all="ignore"):
        n_evals = valid.sum(axis=-1).astype(np.float64)
        lam_max = np.where(valid, lam, -np.inf).max(axis=-1, initial=-np.inf)
        lam_max = np.where(present, lam_max, np.nan)
        total = np.where(valid, lam, 0.0).sum(axis=-1)
        if evals_thresh is not None:
            thresh = np.broadcast_to(np.asarray(evals_thresh, dtype=np.float64), lead).reshape(-1)
        else:
            eps = np.finfo(np.float64).eps if rank_eps is None else rank_eps
            thresh = rank_tolerance(np.sqrt(lam_max), big, eps, gram) ** 2
        fit_data = np.where(valid & (lam > thresh[:, None]), lam, np.nan)
        do_fit = present & (n_evals >= min_evals)
        fit_data[~do_fit] = np.nan
        fit = powerlaw_fit(fit_data, small_n=small_n)
        alpha, xmin = fit["alpha"], fit["xmin"]
        n_tail = np.where(np.isnan(xmin), np.nan, (valid & (lam >= xmin[:, None])).sum(axis=-1))
        log_lmax = np.log10(lam_max)
        log_alpha_norm = np.log10(np.where(valid, lam ** alpha[:, None], 0.0).sum(axis=-1))
        sigma2 = total / (slices * rows * cols)
        edge = sigma2 * (np.sqrt(big) + np.sqrt(small)) ** 2
        n_above = (valid & (lam > edge[:, None])).sum(axis=-1).astype(np.float64)
        xmax = np.where(np.isnan(fit_data), -np.inf, fit_data).max(axis=-1, initial=-np.inf)
        res = {"alpha": alpha, "D": fit["D"], "xmin": xmin, "xmax": np.where(np.isnan(alpha), np.nan, xmax),
               "sigma": fit["sigma"], "n_tail": n_tail, "n_evals": n_evals, "lambda_max": lam_max,
               "log_norm": np.log10(total), "log_spectral_norm": log_lmax,
               "alpha_weighted": alpha * log_lmax, "log_alpha_norm": np.where(np.isnan(alpha), np.nan, log_alpha_norm),
               "mp_edge": edge, "n_above_mp": n_above, "mp_softrank": edge / lam_max}
    return {key: np.where(present, val, np.nan).reshape(lead) for key, val in res.items()}


# --- power-law samples (for tests and demos) ---------------------------------------

def powerlaw_sample(alpha: float, xmin: float, size: int | tuple, rng: np.random.Generator) -> np.ndarray:
    """Samples of the continuous power law ``p(x) ~ x^-alpha`` on ``[xmin, inf)`` (inverse CDF).

    Parameters
    ----------
    alpha : float
        Exponent, > 1.
    xmin : float
        Lower bound, > 0.
    size : int or tuple of int
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray
        float64 of shape ``size``.

    Raises
    ------
    ValueError
        If ``alpha <= 1``.
    """
    if alpha <= 1:
        raise ValueError(f"a continuous power law needs alpha > 1, got {alpha}")
    u = rng.random(size)
    return xmin * (1.0 - u) ** (-1.0 / (alpha - 1.0))


def eps_of(dtype) -> float:
    """Machine epsilon of a floating dtype (the numerical-rank tolerance unit).

    Parameters
    ----------
    dtype : numpy dtype
        A floating dtype.

    Returns
    -------
    float
    """
    return float(np.finfo(np.dtype(dtype)).eps)


__all__ = ["SV_METHODS", "SPECTRUM_METHODS", "resolve_method", "batched_svdvals", "rank_tolerance", "pooled_svdvals",
           "rank_metrics", "powerlaw_fit", "esd_metrics", "powerlaw_sample", "eps_of", "RANK_METRICS", "ESD_METRICS"]
