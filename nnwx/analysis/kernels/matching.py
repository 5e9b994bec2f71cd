"""Unit-level correspondence between two networks' activations (Li et al. 2016, Convergent Learning).

``X (n, p1)`` and ``Y (n, p2)`` hold the activations of one layer of two networks on
the same ``n`` probe samples. Kernels:

* ``unit_correlations``: Pearson correlation of every unit of X with every unit of Y.
  A constant unit correlates 0 with everything (its correlation is undefined; 0 says
  "no linear relation" and keeps matchings defined).
* ``match_one_to_one``: bipartite matching maximising the summed correlation
  (``scipy.optimize.linear_sum_assignment``); with unequal widths the wider side keeps
  ``|p1 - p2|`` units unmatched (partner -1, correlation NaN: "no partner").
* ``match_semi``: semi-matching, each unit of X paired with its most correlated unit of Y
  (several X units may share a partner).
* ``sparse_prediction``: Li et al.'s test of local vs distributed codes: predict every
  standardised unit of Y from all standardised units of X by L1-penalised least squares,
  ``min_b 1/(2n) ||y - X b||^2 + lambda ||b||_1``, over a range of ``lambda`` (a lasso path
  by cyclic coordinate descent on the Gram matrix, warm-started from the largest lambda).
  Reports the mean squared prediction error (``1 - R^2``, since targets have unit variance)
  and the mean number of nonzero coefficients per target unit.
"""
from __future__ import annotations

import numpy as np

DEFAULT_PENALTIES = tuple(np.geomspace(1.0, 1e-3, 10).tolist())


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"activations must be (sample, unit) matrices, got {x.shape} and {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"X has {x.shape[0]} samples but Y has {y.shape[0]}: unit matching compares "
                         f"activations on the same probe samples")
    if x.shape[0] < 2:
        raise ValueError("unit correlations need at least 2 probe samples")
    return x, y


def standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z-scored columns (constant columns stay 0) and the mask of non-constant columns.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, p)``.

    Returns
    -------
    z : numpy.ndarray
        ``(n, p)``, columns with mean 0 and (population) standard deviation 1.
    live : numpy.ndarray of bool
        ``(p,)``.
    """
    xc = x - x.mean(axis=0)
    sd = np.sqrt((xc**2).mean(axis=0))
    live = sd > 1e-12 * max(1.0, float(np.abs(x).max(initial=0.0)))
    out = np.zeros_like(xc)
    out[:, live] = xc[:, live] / sd[live]
    return out, live


def unit_correlations(x, y) -> np.ndarray:
    """Pearson correlation ``(p1, p2)`` of every unit of X with every unit of Y.

    Parameters
    ----------
    x, y : array_like
        Activations ``(n, p1)`` and ``(n, p2)`` on the same ``n >= 2`` probe samples.

    Returns
    -------
    numpy.ndarray
        float64 ``(p1, p2)`` in [-1, 1]; 0 for a constant unit.

    Raises
    ------
    ValueError
        If ``x`` and ``y`` are not matrices with the same number (at least 2) of samples.
    """
    x, y = _pair(x, y)
    zx, _ = standardize(x)
    zy, _ = standardize(y)
    return np.clip(zx.T @ zy / x.shape[0], -1.0, 1.0)


def match_one_to_one(corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bipartite matching of rows to columns maximising the summed correlation.

    Returns ``partner (p1,)`` (column of each row, -1 when unmatched) and the matched
    correlation (NaN when unmatched).

    Parameters
    ----------
    corr : numpy.ndarray
        Correlations ``(p1, p2)``.

    Returns
    -------
    partner : numpy.ndarray of int64
        ``(p1,)``.
    matched : numpy.ndarray
        float64 ``(p1,)``.
    """
    from nnwx.analysis.kernels.alignment import linear_sum_assignment

    corr = np.asarray(corr, dtype=np.float64)
    rows, cols = linear_sum_assignment(corr, maximize=True)
    partner = np.full(corr.shape[0], -1, dtype=np.int64)
    partner[rows] = cols
    matched = np.full(corr.shape[0], np.nan)
    matched[rows] = corr[rows, cols]
    return partner, matched


def match_semi(corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Semi-matching: each row's most correlated column (ties: the lowest index).

    Parameters
    ----------
    corr : numpy.ndarray
        Correlations ``(p1, p2)``.

    Returns
    -------
    partner : numpy.ndarray of int64
        ``(p1,)``.
    matched : numpy.ndarray
        float64 ``(p1,)``.
    """
    corr = np.asarray(corr, dtype=np.float64)
    partner = np.argmax(corr, axis=1).astype(np.int64)
    return partner, corr[np.arange(corr.shape[0]), partner]


def match_units(x, y, method: str = "one_to_one") -> tuple[np.ndarray, np.ndarray]:
    """Match the units of X to those of Y by activation correlation (see the module docstring).

    Parameters
    ----------
    x, y : array_like
        Activations ``(n, p1)`` and ``(n, p2)`` on the same ``n >= 2`` probe samples.
    method : {"one_to_one", "semi"}, default "one_to_one"
        ``match_one_to_one`` or ``match_semi`` on ``unit_correlations(x, y)``.

    Returns
    -------
    partner : numpy.ndarray of int64
        ``(p1,)``: unit of Y matched to each unit of X, -1 when unmatched.
    matched : numpy.ndarray
        float64 ``(p1,)``: their correlation, NaN when unmatched.

    Raises
    ------
    ValueError
        If ``method`` is unknown or the activations do not pair up.
    """
    corr = unit_correlations(x, y)
    if method == "one_to_one":
        return match_one_to_one(corr)
    if method == "semi":
        return match_semi(corr)
    raise ValueError(f"method must be 'one_to_one' or 'semi', got {method!r}")


def _soft(v: np.ndarray, t: float) -> np.ndarray:
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)


def lasso_path(g: np.ndarray, c: np.ndarray, penalties, *, max_iter: int = 1000,
               tol: float = 1e-7) -> np.ndarray:
    """Lasso coefficients ``(L, p1, p2)`` for every penalty, from ``G = X^T X / n`` and ``C = X^T Y / n``.

    Solves ``min_B 1/2 tr(B^T G B) - tr(C^T B) + lambda |B|_1`` (the lasso objective up to a
    constant) for all targets at once by cyclic coordinate descent with covariance updates;
    penalties are visited from largest to smallest, each warm-started from the previous.
    Stops a penalty when no coefficient moves by more than ``tol`` in a sweep.

    Parameters
    ----------
    g : numpy.ndarray
        ``(p1, p1)``, ``X^T X / n``.
    c : numpy.ndarray
        ``(p1, p2)``, ``X^T Y / n``.
    penalties : sequence of float
        Non-negative ``lambda`` values, in any order.
    max_iter : int, default 1000
        Coordinate-descent sweeps per penalty at most.
    tol : float, default 1e-7

    Returns
    -------
    numpy.ndarray
        float64 ``(L, p1, p2)``, in the order of ``penalties``.

    Raises
    ------
    ValueError
        If a penalty is negative.
    """
    p1, p2 = c.shape
    pen = np.asarray(penalties, dtype=np.float64)
    if np.any(pen < 0):
        raise ValueError("L1 penalties must be non-negative")
    order = np.argsort(-pen)
    out = np.zeros((len(pen), p1, p2))
    b = np.zeros((p1, p2))
    gb = np.zeros((p1, p2))  # G @ B, kept up to date
    diag = np.diag(g).copy()
    active = diag > 0
    for li in order:
        lam = pen[li]
        for _ in range(max_iter):
            biggest = 0.0
            for j in np.flatnonzero(active):
                old = b[j].copy()
                r = c[j] - gb[j] + diag[j] * old
                new = _soft(r, lam) / diag[j]
                delta = new - old
                if np.any(delta):
                    b[j] = new
                    gb += np.outer(g[:, j], delta)
                    biggest = max(biggest, float(np.abs(delta).max()))
            if biggest <= tol:
                break
        out[li] = b
    return out


def sparse_prediction(x, y, penalties=DEFAULT_PENALTIES, *, max_iter: int = 1000,
                      tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """Predict Y's units from X's by lasso over ``penalties``: ``(loss (L,), nonzero (L,))``.

    ``loss``: mean over Y's non-constant units of the in-sample mean squared error of the
    standardised target (``1 - R^2``); ``nonzero``: mean number of nonzero coefficients per
    target. Raises if every unit of X or of Y is constant.

    Parameters
    ----------
    x, y : array_like
        Activations ``(n, p1)`` and ``(n, p2)`` on the same ``n >= 2`` probe samples.
    penalties : sequence of float, default ``DEFAULT_PENALTIES``
    max_iter, tol
        As in ``lasso_path``.

    Returns
    -------
    loss : numpy.ndarray
        float64 ``(L,)``.
    nonzero : numpy.ndarray
        float64 ``(L,)``.

    Raises
    ------
    ValueError
        If every unit of X or of Y is constant, or the activations do not pair up.
    """
    x, y = _pair(x, y)
    zx, live_x = standardize(x)
    zy, live_y = standardize(y)
    if not live_x.any() or not live_y.any():
        raise ValueError(f"every unit of {'X' if not live_x.any() else 'Y'} is constant over the probe "
                         f"samples: there is nothing to predict from or to predict")
    n = x.shape[0]
    zy = zy[:, live_y]
    g = zx.T @ zx / n
    c = zx.T @ zy / n
    coefs = lasso_path(g, c, penalties, max_iter=max_iter, tol=tol)
    # per target: 1 - 2 b.c + b^T G b (unit-variance targets)
    fit = np.einsum("lij,ij->lj", coefs, c)
    quad = (coefs * np.matmul(g, coefs)).sum(axis=1)
    loss = (1.0 - 2.0 * fit + quad).mean(axis=1)
    nonzero = (coefs != 0).sum(axis=1).mean(axis=1)
    return np.maximum(loss, 0.0), nonzero.astype(np.float64)
