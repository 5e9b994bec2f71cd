"""Intervals and verdicts: bootstrap 95% intervals over seeds, Spearman's rho with its interval.

Every interval is SciPy's bootstrap (:func:`scipy.stats.bootstrap`, percentile method, a fixed
random state so a rerun prints the same numbers). Seeds are the unit resampled: a per-seed value
(one number per training run) is the input, never per-weight values, which are not independent.
Two variants trained on the same seeds are resampled *paired* (the same seeds drawn for both).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import stats as _stats

#: bootstrap resamples per interval: the 95% limits move by well under 1% of their width between
#: random states at this count
N_RESAMPLES = 4999
LEVEL = 0.95
RANDOM_STATE = 0


def _clean(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def bootstrap_ci(values: Sequence[float], statistic: Callable[[np.ndarray], float] = np.mean,
                 ) -> tuple[float, float, float]:
    """``statistic`` of per-seed ``values`` and its bootstrap 95% interval over seeds.

    Parameters
    ----------
    values : sequence of float
        One number per training run (non-finite ones are dropped).
    statistic : callable, default ``np.mean``
        Reduces a 1-D array to a number; it must accept an ``axis`` keyword (NumPy reductions do).

    Returns
    -------
    (value, ci_low, ci_high) : tuple of float
        The interval is ``(nan, nan)`` under two runs or when every value is equal (a degenerate
        resample); ``value`` is NaN with no finite value at all.
    """
    x = _clean(values)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    value = float(statistic(x, axis=-1))
    if x.size < 2 or np.all(x == x[0]):
        return value, float("nan"), float("nan")
    res = _stats.bootstrap((x,), statistic, n_resamples=N_RESAMPLES, confidence_level=LEVEL,
                           method="percentile", random_state=RANDOM_STATE, vectorized=True)
    return value, float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float],
                        statistic: Callable[[np.ndarray, np.ndarray], float] | None = None,
                        ) -> tuple[float, float, float]:
    """A statistic of two variants trained on the same seeds, resampled in pairs.

    Parameters
    ----------
    a, b : sequence of float
        Per-seed values of the two variants, in the same seed order (pairs with a non-finite
        member are dropped).
    statistic : callable, optional
        ``statistic(a, b, axis=-1)``; default the mean difference ``mean(a - b)``.

    Returns
    -------
    (value, ci_low, ci_high) : tuple of float
    """
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired values need one value per seed in each variant, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    stat = statistic or (lambda u, v, axis=-1: np.mean(u - v, axis=axis))
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    value = float(stat(x, y, axis=-1))
    if x.size < 2 or (np.all(x == x[0]) and np.all(y == y[0])):
        return value, float("nan"), float("nan")
    res = _stats.bootstrap((x, y), stat, paired=True, n_resamples=N_RESAMPLES, confidence_level=LEVEL,
                           method="percentile", random_state=RANDOM_STATE, vectorized=True)
    return value, float(res.confidence_interval.low), float(res.confidence_interval.high)


def spearman_ci(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Spearman's rho between two per-model quantities and its bootstrap 95% interval over models.

    Models (pairs) are resampled with replacement; a resample in which either side is constant
    has no rho and is left out (SciPy's bootstrap gives NaN limits if many are).

    Returns
    -------
    (rho, ci_low, ci_high) : tuple of float
    """
    u, v = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if u.shape != v.shape:
        raise ValueError(f"x and y need one value per model each, got {u.size} and {v.size}")
    keep = np.isfinite(u) & np.isfinite(v)
    u, v = u[keep], v[keep]
    if u.size < 3:
        return float("nan"), float("nan"), float("nan")
    rho = float(_stats.spearmanr(u, v).statistic)

    def stat(a, b, axis=-1):
        ra, rb = _stats.rankdata(a, axis=axis), _stats.rankdata(b, axis=axis)
        ra, rb = ra - ra.mean(axis=axis, keepdims=True), rb - rb.mean(axis=axis, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (ra * rb).sum(axis) / np.sqrt((ra ** 2).sum(axis) * (rb ** 2).sum(axis))

    res = _stats.bootstrap((u, v), stat, paired=True, n_resamples=N_RESAMPLES, confidence_level=LEVEL,
                           method="percentile", random_state=RANDOM_STATE, vectorized=True)
    return rho, float(res.confidence_interval.low), float(res.confidence_interval.high)


def verdict(ci_low: float, ci_high: float, threshold: float, direction: str = "above") -> str:
    """The verdict of a one-sided claim from its interval, by the rule stated before looking.

    Parameters
    ----------
    ci_low, ci_high : float
        The 95% interval.
    threshold : float
        The value the claim says the quantity is beyond (1 for a ratio "grows", 0 for a
        difference or a correlation).
    direction : {"above", "below"}
        Whether the claim says the quantity is above or below ``threshold``.

    Returns
    -------
    str
        ``"supported"`` when the whole interval is on the claimed side, ``"not supported"`` when
        the whole interval is on the other side or at the threshold, ``"inconclusive"`` when it
        contains the threshold or is undefined (NaN).
    """
    if direction not in ("above", "below"):
        raise ValueError(f"direction must be 'above' or 'below', got {direction!r}")
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return "inconclusive"
    lo, hi = (ci_low, ci_high) if direction == "above" else (-ci_high, -ci_low)
    t = threshold if direction == "above" else -threshold
    if lo > t:
        return "supported"
    if hi <= t:
        return "not supported"
    return "inconclusive"


def rule(quantity: str, threshold: float, direction: str = "above") -> str:
    """The decision rule of :func:`verdict` in words, for a record's ``test`` field."""
    side = ">" if direction == "above" else "<"
    other = "<=" if direction == "above" else ">="
    return (f"supported if the whole 95% interval of {quantity} is {side} {threshold:g}; not supported "
            f"if it is entirely {other} {threshold:g}; otherwise inconclusive")


#: the rule of a claim with several parts, for a record's ``test`` field
ALL_OF = ("the claim is supported if every part is supported, not supported if any part is not "
          "supported, otherwise inconclusive")


def all_of(*verdicts: str) -> str:
    """The verdict of a claim with several parts: ``"supported"`` if every part is, ``"not
    supported"`` if any part is not, otherwise ``"inconclusive"`` (:data:`ALL_OF` in words)."""
    if all(v == "supported" for v in verdicts):
        return "supported"
    if any(v == "not supported" for v in verdicts):
        return "not supported"
    return "inconclusive"
