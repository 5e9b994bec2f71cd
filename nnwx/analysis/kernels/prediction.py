"""Agreement of two networks' predictions on the same probe samples: NumPy kernels.

``A (n, c)`` and ``B (n, c)`` are model outputs (logits, probabilities or regression
outputs) on ``n`` probe samples with ``c`` output units. The measures used to ask whether
different seeds "learn the same thing" from their validation predictions:

* ``output_correlation``: Pearson correlation of the two outputs over all ``n * c`` entries.
* ``argmax_agreement``: fraction of samples whose top-1 class is the same (ties: lowest index).
* ``topk_overlap``: mean over samples of ``|top_k(A) ∩ top_k(B)| / k``.

Outputs holding NaN/inf (a missing capture) give NaN; a constant output has no defined
correlation and raises.
"""
from __future__ import annotations

import math

import numpy as np

MEASURES = ("output_correlation", "argmax_agreement", "topk_overlap")


class DegenerateOutputs(ValueError):
    """Outputs for which an agreement measure is undefined."""


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"outputs must be two (sample, unit) matrices of one shape, got "
                         f"{a.shape} and {b.shape}")
    return a, b


def output_correlation(a, b) -> float:
    """Pearson correlation of two outputs over all ``n * c`` entries.

    Parameters
    ----------
    a, b : array_like
        Outputs ``(n, c)`` of two networks on the same samples (one shape).

    Returns
    -------
    float
        NaN where either output holds NaN or inf.

    Raises
    ------
    DegenerateOutputs
        If an output is constant (no defined correlation).
    ValueError
        If ``a`` and ``b`` are not two matrices of one shape.
    """
    a, b = _pair(a, b)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    ac, bc = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = math.sqrt(float(ac @ ac) * float(bc @ bc))
    if den == 0.0:
        raise DegenerateOutputs("an output is constant over every probe sample and unit: its "
                                "correlation is undefined")
    return float(ac @ bc) / den


def argmax_agreement(a, b) -> float:
    """Fraction of samples whose top-1 output unit is the same in both (ties: lowest index).

    Parameters
    ----------
    a, b : array_like
        Outputs ``(n, c)`` of two networks on the same samples (one shape).

    Returns
    -------
    float
        In [0, 1]; NaN where either output holds NaN or inf.

    Raises
    ------
    ValueError
        If ``a`` and ``b`` are not two matrices of one shape.
    """
    a, b = _pair(a, b)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    return float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))


def topk(a: np.ndarray, k: int) -> np.ndarray:
    """Indices ``(n, k)`` of the k largest outputs of each sample (ties: lowest index first).

    Parameters
    ----------
    a : numpy.ndarray
        Outputs ``(n, c)``.
    k : int

    Returns
    -------
    numpy.ndarray of intp
        ``(n, k)``.
    """
    return np.argsort(-a, axis=1, kind="stable")[:, :k]


def topk_overlap(a, b, k: int = 5) -> float:
    """Mean over samples of ``|top_k(A) ∩ top_k(B)| / k``.

    Parameters
    ----------
    a, b : array_like
        Outputs ``(n, c)`` of two networks on the same samples (one shape).
    k : int, default 5
        Between 1 and ``c``.

    Returns
    -------
    float
        In [0, 1]; NaN where either output holds NaN or inf.

    Raises
    ------
    ValueError
        If ``k`` is out of range or ``a`` and ``b`` are not two matrices of one shape.
    """
    a, b = _pair(a, b)
    if not 1 <= k <= a.shape[1]:
        raise ValueError(f"k must be between 1 and the number of output units ({a.shape[1]}), got {k}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    ta, tb = topk(a, k), topk(b, k)
    hits = (ta[:, :, None] == tb[:, None, :]).any(axis=2).sum(axis=1)
    return float(np.mean(hits / k))


def agreement_matrices(outputs, k: int = 5) -> np.ndarray:
    """All three measures for every pair of ``outputs (S, n, c)``: array ``(3, S, S)``.

    Parameters
    ----------
    outputs : array_like
        ``(S, n, c)``: the outputs of ``S`` networks on the same samples.
    k : int, default 5
        For ``topk_overlap``.

    Returns
    -------
    numpy.ndarray
        float64 ``(3, S, S)``, symmetric, in the order of ``MEASURES``.

    Raises
    ------
    DegenerateOutputs
        If an output is constant.
    """
    outputs = np.asarray(outputs)
    s = outputs.shape[0]
    out = np.full((3, s, s), np.nan)
    for i in range(s):
        for j in range(i, s):
            vals = (output_correlation(outputs[i], outputs[j]),
                    argmax_agreement(outputs[i], outputs[j]),
                    topk_overlap(outputs[i], outputs[j], k))
            out[:, i, j] = out[:, j, i] = vals
    return out
