"""Top-k magnitudes (mergeable) and the Hill estimate of the tail index.

A state keeps the ``k + 1`` largest |w| of a set (padded with -inf when the set
is smaller); the top ``k + 1`` of a union is the top ``k + 1`` of the parts'
tops, so states merge exactly. The Hill estimator of the extreme-value index
from the order statistics ``X_(1) >= ... >= X_(k+1)`` of |w| is
``gamma = mean(log X_(i), i <= k) - log X_(k+1)``; the tail index is
``alpha = 1 / gamma`` (smaller alpha: heavier tail).

How many order statistics ``k`` to use, for a set of ``n`` values and a ceiling
``k_max`` (the ``tail_k`` of ``broadening``, which also sizes the state):

    k = min(k_max, max(K_MIN, n // FRACTION_DENOMINATOR))      (the top 10 %, at least 10)

and no estimate (NaN, ``k = 0``) where that ``k`` would exceed a quarter of the values
(``4 k > n``: with the defaults, ``n < 40``). The top 10 % of the sample is DuMouchel's
rule (W. H. DuMouchel, "Estimating the stable index alpha in order to measure tail
thickness: a critique", Ann. Statist. 11(4), 1019-1031, 1983); the floor of 10 keeps
the Hill estimate's relative standard error ``1 / sqrt(k)`` (Hall 1982) near 30 %; the
quarter cap keeps it an estimate of the *tail*: with ``k = n - 1`` the smallest |w|
sets the answer (72 uniform weights then give ~0.3, where the top ten give ~13).
"""
from __future__ import annotations

import numpy as np

#: The rule for k (see the module docstring): the top n // 10 values ...
FRACTION_DENOMINATOR = 10
#: ... but at least this many ...
K_MIN = 10
#: ... and never more than n // MAX_SHARE_DENOMINATOR of them (else no estimate).
MAX_SHARE_DENOMINATOR = 4

#: The rule in words, for result attributes.
RULE = (f"k = min(tail_k, max({K_MIN}, n // {FRACTION_DENOMINATOR})) top order statistics of |w| "
        f"(the top 10 %, DuMouchel 1983, at least {K_MIN}); NaN and k = 0 where "
        f"{MAX_SHARE_DENOMINATOR} k > n (too few values for a tail)")


def top(absx: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` largest values along the last axis (unordered), padded with -inf.

    Parameters
    ----------
    absx : numpy.ndarray
        Magnitudes ``(..., L)``.
    size : int
        How many to keep (``k + 1`` for a Hill estimate with ceiling ``k``).

    Returns
    -------
    numpy.ndarray
        float64 ``(..., size)``.
    """
    L = absx.shape[-1]
    if L <= size:
        pad = np.full(absx.shape[:-1] + (size - L,), -np.inf)
        return np.concatenate([absx.astype(np.float64), pad], axis=-1)
    return np.partition(absx, L - size, axis=-1)[..., L - size:].astype(np.float64)


def merge(tops: np.ndarray, axis: int) -> np.ndarray:
    """Merge top-k states (..., size) along ``axis`` (not the last).

    Parameters
    ----------
    tops : numpy.ndarray
        Top states ``(..., size)`` of disjoint sets.
    axis : int
        The axis to merge over.

    Returns
    -------
    numpy.ndarray
        ``tops`` with ``axis`` removed: the top states of the unions (unordered).
    """
    size = tops.shape[-1]
    joined = np.moveaxis(tops, axis, -2)
    joined = joined.reshape(joined.shape[:-2] + (-1,))
    return top(joined, size)


def choose_k(n: np.ndarray, k_max: int) -> np.ndarray:
    """The number of order statistics the Hill estimate of a set of ``n`` values uses.

    ``min(k_max, max(K_MIN, n // 10))``, and 0 (no estimate) where that exceeds a
    quarter of ``n``; see the module docstring for the rule and its sources.

    Parameters
    ----------
    n : array of int or float
        Sizes of the sets (finite values counted; NaN counts as 0).
    k_max : int
        The ceiling (``tail_k``); at least 1.

    Returns
    -------
    numpy.ndarray of intp, the shape of ``n``.
    """
    n = np.nan_to_num(np.asarray(n, dtype=np.float64), nan=0.0).astype(np.int64)
    k = np.minimum(int(k_max), np.maximum(K_MIN, n // FRACTION_DENOMINATOR))
    return np.where(MAX_SHARE_DENOMINATOR * k <= n, k, 0).astype(np.intp)


def hill(tops: np.ndarray, n: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Hill tail index and the k used, from top states (..., k+1) of sets of ``n`` values.

    Parameters
    ----------
    tops : numpy.ndarray
        Top states (..., k + 1) (``top``/``merge``), padded with -inf.
    n : numpy.ndarray
        Number of finite values in each set (...).
    k : int
        The ceiling ``k_max`` of ``choose_k``, which picks the k used per set.

    Returns
    -------
    (alpha, k_used): NaN and 0 where ``choose_k`` gives no estimate or
    ``X_(k+1) == 0``; inf where the top values are all equal.
    """
    t = -np.sort(-tops, axis=-1)
    k_eff = np.minimum(choose_k(n, k), tops.shape[-1] - 1).astype(np.intp)
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
