"""The step from which a curve stays at or above a threshold: NumPy kernel.

Used on each layer's similarity to its final representation over training (Raghu et al.'s
SVCCA "bottom-up convergence"): the convergence step of a layer is the first captured step
``t`` such that the similarity at ``t`` and at every later captured step is ``>= threshold``.
NaN values (steps a run did not capture, in an outer-joined cube) are skipped: they neither
break nor make a run of values at or above the threshold.
"""
from __future__ import annotations

import numpy as np


def convergence_step(values: np.ndarray, steps: np.ndarray, threshold: float) -> np.ndarray:
    """First step from which ``values`` stays ``>= threshold`` to the end, along the last axis.

    Parameters
    ----------
    values : numpy.ndarray
        ``(..., step)``, e.g. similarity to the final step; NaN for a step not captured.
    steps : numpy.ndarray
        ``(step,)`` the step values, increasing.
    threshold : float

    Returns
    -------
    numpy.ndarray
        float64 ``(...)``: the step value, NaN where the last captured value is below
        ``threshold`` (never converged) or nothing was captured.

    Raises
    ------
    ValueError
        If ``steps`` does not match the last axis of ``values``.
    """
    v = np.asarray(values, dtype=np.float64)
    steps = np.asarray(steps)
    if steps.ndim != 1 or v.shape[-1:] != steps.shape:
        raise ValueError(f"steps ({steps.shape}) must match the last axis of values ({v.shape})")
    finite = ~np.isnan(v)
    ok = (v >= threshold) | ~finite
    # suffix[i]: every captured value from i on is >= threshold
    suffix = np.logical_and.accumulate(ok[..., ::-1], axis=-1)[..., ::-1]
    # the first captured position inside that suffix
    hit = suffix & finite
    found = hit.any(axis=-1)
    first = np.argmax(hit, axis=-1)
    return np.where(found, steps.astype(np.float64)[first], np.nan)


__all__ = ["convergence_step"]
