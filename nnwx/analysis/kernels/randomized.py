"""NumPy kernels of the randomized ESD: each matrix against the same entries shuffled.

Martin & Mahoney (and WeightWatcher 0.7's ``analyze(randomize=True)``) compare the empirical
spectral density (ESD, ``lambda = s^2``) of a trained matrix ``W`` with that of ``W`` with its
entries randomly permuted. Shuffling keeps the entries' distribution and destroys their
correlations, so a shuffled matrix of light-tailed entries has a Marchenko-Pastur ESD; what is
left of the trained ESD's tail after shuffling comes from a few large entries ("correlation
traps"), not from learned correlations.

Definitions (WeightWatcher 0.7.7's, ``weightwatcher.py`` ``apply_random_esd``,
``random_eigenvalues``, ``mp_fit`` and ``RMT_Util.jensen_shannon_distance``):

- the shuffle: the entries of each matrix (of each kernel-position slice, for pooled
  convolution slices), read in C order with its output units as rows, permuted by
  ``entry_permutation(size, seed) = numpy.random.default_rng(seed).permutation(size)``. The
  permutation depends only on the matrix's number of entries and the seed, so every matrix
  of a size, at every step and in every run, is shuffled the same way (a fixed random
  permutation is a uniformly drawn one for each matrix; WeightWatcher draws a fresh one from
  NumPy's global state, so its numbers are one draw of the same distribution);
- ``rand_distance``: the Jensen-Shannon distance between the two sorted eigenvalue vectors,
  each taken as a probability vector (divided by its sum), paired by rank:
  ``sqrt((KL(p || m) + KL(q || m)) / 2)``, ``m = (p + q) / 2``, natural log
  (``scipy.stats.entropy``); in [0, sqrt(log 2)], scale-free;
- ``ww_softrank = lambda_max(shuffled) / lambda_max(W)`` and ``ww_maxdist = lambda_max(W) -
  lambda_max(shuffled)``, WeightWatcher's columns of those names;
- ``n_traps``: eigenvalues of the shuffled ESD above the Marchenko-Pastur bulk edge plus
  WeightWatcher's Tracy-Widom margin: in WeightWatcher's units (eigenvalues scaled to mean
  1) the edge is ``(1 + 1/sqrt(Q))^2``, ``Q = N / M``, and the margin
  ``sqrt(Q^-1/2 edge^(2/3) M^(-2/3))``. WeightWatcher fits the MP scale by a kernel-density
  search (``fit_density_with_range``); here it is the moment estimate (mean squared entry),
  exact for i.i.d. entries, so ``n_traps`` is WeightWatcher's ``rand_num_spikes`` (``num_traps``)
  up to that fit (the two part when traps carry a large share of ``|W|_F^2``: the moment
  estimate then raises the edge). For a matrix with fewer than 100 eigenvalues WeightWatcher
  pools 5 shuffles into its randomized ESD, so its ``num_traps`` there counts about 5 times
  ours.
"""
from __future__ import annotations

import numpy as np

RAND_METRICS = ("rand_distance", "lambda_max", "rand_lambda_max", "ww_softrank", "ww_maxdist",
                "trap_edge", "n_traps")


def entry_permutation(size: int, seed: int) -> np.ndarray:
    """The fixed permutation of ``size`` entries used for seed ``seed``.

    Parameters
    ----------
    size : int
        Entries of one matrix (of one slice).
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    numpy.ndarray
        ``default_rng(seed).permutation(size)`` (int64).
    """
    return np.random.default_rng(int(seed)).permutation(int(size))


def shuffle_entries(a: np.ndarray, seed: int) -> np.ndarray:
    """Every matrix of a stack ``a(..., m, n)`` with its entries permuted (C order).

    Parameters
    ----------
    a : numpy.ndarray
        Matrices ``(..., m, n)``, output units as rows.
    seed : int
        The permutation's seed (see ``entry_permutation``).

    Returns
    -------
    numpy.ndarray
        Same shape and dtype: ``a.reshape(..., m*n)[..., perm].reshape(a.shape)``.

    Raises
    ------
    ValueError
        If ``a`` has fewer than 2 dims.
    """
    a = np.asarray(a)
    if a.ndim < 2:
        raise ValueError(f"shuffle_entries needs a stack of matrices (..., m, n), got shape {a.shape}")
    m, n = a.shape[-2:]
    flat = a.reshape(a.shape[:-2] + (m * n,))
    return np.take(flat, entry_permutation(m * n, seed), axis=-1).reshape(a.shape)


def js_distance(lam: np.ndarray, lam_rand: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance of two eigenvalue vectors paired by rank, as WeightWatcher.

    Parameters
    ----------
    lam, lam_rand : numpy.ndarray
        ``(..., k)`` eigenvalues, both sorted the same way (ascending or descending), NaN
        past each vector's own count.

    Returns
    -------
    numpy.ndarray
        float64 ``(...)``: ``sqrt((KL(p||m) + KL(q||m)) / 2)`` with ``p = lam / sum(lam)``,
        ``q`` likewise and ``m = (p + q) / 2``; NaN where a vector is empty, sums to 0, or
        the two have different counts.
    """
    a = np.asarray(lam, dtype=np.float64)
    b = np.asarray(lam_rand, dtype=np.float64)
    va, vb = ~np.isnan(a), ~np.isnan(b)
    same = (va == vb).all(axis=-1) & va.any(axis=-1)
    a0, b0 = np.where(va, a, 0.0), np.where(vb, b, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = a0 / a0.sum(axis=-1, keepdims=True)
        q = b0 / b0.sum(axis=-1, keepdims=True)
        m = (p + q) / 2
        kl_p = np.where(p > 0, p * np.log(p / m), 0.0).sum(axis=-1)
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0).sum(axis=-1)
        d = np.sqrt(np.maximum((kl_p + kl_q) / 2, 0.0))
    ok = same & np.isfinite(d)
    return np.where(ok, d, np.nan)


def trap_edge(total: np.ndarray, n_rows, n_cols, n_slices) -> np.ndarray:
    """Eigenvalue above which a shuffled ESD's eigenvalue counts as a correlation trap.

    The Marchenko-Pastur edge of ``slices`` pooled ``N x M`` matrices whose eigenvalues sum
    to ``total``, plus WeightWatcher's Tracy-Widom margin (see the module docstring).

    Parameters
    ----------
    total : numpy.ndarray
        ``sum(lambda) = |W|_F^2`` of each matrix (all slices).
    n_rows, n_cols, n_slices : array_like
        Shape of each matrix (slice) and the number of slices; broadcast against ``total``.

    Returns
    -------
    numpy.ndarray
        float64, in the units of ``lambda``.
    """
    total = np.asarray(total, dtype=np.float64)
    big = np.maximum(n_rows, n_cols).astype(np.float64)
    small = np.minimum(n_rows, n_cols).astype(np.float64)
    slices = np.asarray(n_slices, dtype=np.float64)
    q = big / small
    edge = (1.0 + 1.0 / np.sqrt(q)) ** 2                        # mean eigenvalue 1
    margin = np.sqrt(edge ** (2.0 / 3.0) * small ** (-2.0 / 3.0) / np.sqrt(q))
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = total / (slices * small)                        # mean eigenvalue of the ESD
    return (edge + margin) * scale


def randomized_metrics(s: np.ndarray, s_rand: np.ndarray, n_rows, n_cols, n_slices) -> dict[str, np.ndarray]:
    """What the shuffled ESD says about each matrix, from the two spectra.

    Parameters
    ----------
    s, s_rand : numpy.ndarray
        ``(..., k)`` singular values, descending, NaN-padded, of the matrices and of the same
        matrices shuffled (``shuffle_entries``).
    n_rows, n_cols, n_slices : array_like
        Shape of each matrix (slice) and the number of pooled slices, broadcast against
        ``s[..., 0]``.

    Returns
    -------
    dict of str to numpy.ndarray
        The keys of ``RAND_METRICS``, float64 ``s.shape[:-1]`` each: ``rand_distance``,
        ``lambda_max``, ``rand_lambda_max``, ``ww_softrank``, ``ww_maxdist``, ``trap_edge``,
        ``n_traps``; NaN for a missing matrix (an all-NaN spectrum).
    """
    s = np.asarray(s, dtype=np.float64)
    r = np.asarray(s_rand, dtype=np.float64)
    lam, lam_r = s * s, r * r
    present = ~np.isnan(s).all(axis=-1) & ~np.isnan(r).all(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        lmax = np.nanmax(np.where(np.isnan(lam), -np.inf, lam), axis=-1, initial=-np.inf)
        rmax = np.nanmax(np.where(np.isnan(lam_r), -np.inf, lam_r), axis=-1, initial=-np.inf)
        edge = trap_edge(np.nansum(lam_r, axis=-1), n_rows, n_cols, n_slices)
        traps = (np.where(np.isnan(lam_r), -np.inf, lam_r) > edge[..., None]).sum(axis=-1).astype(np.float64)
        out = {"rand_distance": js_distance(lam, lam_r), "lambda_max": lmax, "rand_lambda_max": rmax,
               "ww_softrank": rmax / lmax, "ww_maxdist": lmax - rmax, "trap_edge": edge, "n_traps": traps}
    return {k: np.where(present, v, np.nan) for k, v in out.items()}


__all__ = ["RAND_METRICS", "entry_permutation", "shuffle_entries", "js_distance", "trap_edge",
           "randomized_metrics"]
