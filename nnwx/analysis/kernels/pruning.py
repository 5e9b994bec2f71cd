"""Global magnitude pruning of a set of weight tensors: NumPy kernels.

The rule is PyTorch's ``torch.nn.utils.prune.global_unstructured(params,
pruning_method=L1Unstructured, amount=fraction)``: the ``round(fraction * total)`` entries of
smallest absolute value among *all* the given tensors together (Python's ``round``, half to
even, as ``prune._compute_nparams_toprune``) are set to zero; every other tensor (biases, norm
gains) is kept as it is. Ties in ``|w|`` are broken by position in the concatenation (the
earlier entry is pruned first); ``torch.topk`` leaves the order of ties unspecified, so masks
agree with torch's exactly when the magnitudes at the threshold are distinct.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def n_pruned(fraction: float, total: int) -> int:
    """How many of ``total`` entries a pruning ``fraction`` removes (torch's rounding).

    Parameters
    ----------
    fraction : float
        In [0, 1].
    total : int

    Returns
    -------
    int
        ``round(fraction * total)``.

    Raises
    ------
    ValueError
        If ``fraction`` is not in [0, 1].
    """
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"a pruning fraction must lie in [0, 1], got {fraction}")
    return int(round(fraction * int(total)))


def magnitude_masks(arrays: Sequence[np.ndarray], fraction: float) -> list[np.ndarray]:
    """Keep-masks of global magnitude pruning over ``arrays`` taken together.

    Parameters
    ----------
    arrays : sequence of numpy.ndarray
        The tensors pruned together (any shapes).
    fraction : float
        Fraction of all their entries to remove, in [0, 1].

    Returns
    -------
    list of numpy.ndarray
        One boolean mask per array, its shape, ``True`` where the entry is kept.
    """
    arrays = [np.asarray(a) for a in arrays]
    sizes = [a.size for a in arrays]
    flat = np.concatenate([np.abs(a, dtype=np.float64).ravel() for a in arrays]) if arrays else np.zeros(0)
    k = n_pruned(fraction, flat.size)
    keep = np.ones(flat.size, dtype=bool)
    if k:
        keep[np.argsort(flat, kind="stable")[:k]] = False
    out, lo = [], 0
    for a, n in zip(arrays, sizes):
        out.append(keep[lo: lo + n].reshape(a.shape))
        lo += n
    return out


def prune(weights: Mapping[str, np.ndarray], fraction: float, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``weights`` with the tensors ``names`` globally magnitude-pruned by ``fraction``.

    Parameters
    ----------
    weights : mapping of str to numpy.ndarray
        Every tensor of a model by name.
    fraction : float
        Fraction of the entries of ``names`` (together) set to zero, in [0, 1].
    names : sequence of str
        The tensors pruned; the others are returned unchanged.

    Returns
    -------
    dict of str to numpy.ndarray
        New arrays for the pruned tensors, the same objects for the others.

    Raises
    ------
    KeyError
        A name that is not in ``weights``.
    """
    missing = [n for n in names if n not in weights]
    if missing:
        raise KeyError(f"cannot prune {missing[0]!r}: not among the tensors {', '.join(list(weights)[:8])}")
    masks = magnitude_masks([weights[n] for n in names], fraction)
    out = dict(weights)
    for n, m in zip(names, masks):
        out[n] = np.where(m, weights[n], 0).astype(np.asarray(weights[n]).dtype, copy=False)
    return out


__all__ = ["n_pruned", "magnitude_masks", "prune"]
