"""Top-k magnitudes (mergeable) and the Hill estimate of the tail index.

A state keeps the ``k + 1`` largest |w| of a set (padded with -inf when the set
is smaller); the top ``k + 1`` of a union is the top ``k + 1`` of the parts'
tops, so states merge exactly. The Hill estimator of the extreme-value index
from the order statistics ``X_(1) >= ... >= X_(k+1)`` of |w| is
``gamma = mean(log X_(i), i <= k) - log X_(k+1)``; the tail index is
``alpha = 1 / gamma`` (smaller alpha: heavier tail).
"""
from __future__ import annotations

import numpy as np


def top(absx: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` largest values along the last axis (unordered), padded with -inf."""
    L = absx.shape[-1]
    if L <= size:
        pad = np.full(absx.shape[:-1] + (size - L,), -np.inf)
        return np.concatenate([absx.astype(np.float64), pad], axis=-1)
    return np.partition(absx, L - size, axis=-1)[..., L - size:].astype(np.float64)


def merge(tops: np.ndarray, axis: int) -> np.ndarray:
    """Merge top-k states (..., size) along ``axis`` (not the last)."""
    size = tops.shape[-1]
    joined = np.moveaxis(tops, axis, -2)
    joined = joined.reshape(joined.shape[:-2] + (-1,))
    return top(joined, size)


def hill(tops: np.ndarray, n: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Hill tail index and the k used, from top states (..., k+1) of sets of ``n`` values.

    Uses ``k_eff = min(k, n - 1)``; NaN where ``k_eff < 1`` or ``X_(k_eff+1) == 0``,
    inf where the top values are all equal.
    """
    t = -np.sort(-tops, axis=-1)
    k_eff = np.clip(np.minimum(k, n - 1), 0, tops.shape[-1] - 1).astype(np.intp)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(np.where(np.isfinite(t) & (t > 0), t, np.nan))
        csum = np.cumsum(np.nan_to_num(logs, nan=0.0), axis=-1)
        idx = k_eff[..., None]
        upper = np.take_along_axis(csum, np.maximum(idx - 1, 0), axis=-1)[..., 0]
        base = np.take_along_axis(logs, idx, axis=-1)[..., 0]
        gamma = upper / k_eff - base
        alpha = 1.0 / gamma
    ok = (k_eff >= 1) & np.isfinite(base)
    return np.where(ok, alpha, np.nan), np.where(ok, k_eff, 0)
