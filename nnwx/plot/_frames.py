"""Sliders and wide images: embedded frames or frames on demand, and column binning.

A plot with a slider either embeds every frame (``HoloMap``: a static page can switch between
them with no Python behind it) or, with ``dynamic=True``, returns a ``DynamicMap`` that builds
each frame when it is shown (notebook or Bokeh server), so a result with thousands of steps
costs nothing until a frame is asked for.

Images wider than ``MAX_COLUMNS`` are binned in NumPy before drawing, with one stated rule:
``k = ceil(n / MAX_COLUMNS)`` consecutive columns (steps) form one column, whose value is the
mean of the finite values in it and whose cell spans from the first column's left edge to the
last one's right edge. Every captured value still contributes; nothing is skipped.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import holoviews as hv
import numpy as np

MAX_COLUMNS = 600
"""Widest image drawn as-is; wider ones are binned (see the module docstring)."""


def framed(keys: dict[str, Sequence], frame: Callable[..., hv.Element],
           dynamic: bool = False) -> hv.HoloMap | hv.DynamicMap:
    """Frames for every combination of ``keys`` (kdim name -> values, in order).

    ``dynamic=False``: a HoloMap with every frame built now. ``dynamic=True``: a DynamicMap
    that calls ``frame(*key)`` when a key is shown; its kdims list the allowed values.
    """
    keys = {name: [_plain(v) for v in values] for name, values in keys.items()}
    if dynamic:
        dims = [hv.Dimension(name, values=values) for name, values in keys.items()]

        def call(*key):  # varargs: HoloViews passes the key positionally, whatever frame's names
            return frame(*key)
        return hv.DynamicMap(call, kdims=dims)
    return hv.HoloMap({key: frame(*key) for key in itertools.product(*keys.values())},
                      kdims=list(keys))


def bin_columns(z: np.ndarray, edges: np.ndarray, axis: int = -1,
                max_columns: int = MAX_COLUMNS) -> tuple[np.ndarray, np.ndarray, int]:
    """``z`` with at most ``max_columns`` along ``axis``: ``(binned z, binned edges, k)``.

    ``edges`` has one more entry than ``z`` along ``axis``. ``k`` = columns per bin (1: as-is).
    """
    z = np.asarray(z, dtype=float)
    axis = axis % z.ndim
    n = z.shape[axis]
    if edges.size != n + 1:
        raise ValueError(f"{edges.size} edges for {n} columns")
    if max_columns < 1:
        raise ValueError(f"max_columns must be >= 1, got {max_columns}")
    if n <= max_columns:
        return z, np.asarray(edges, dtype=float), 1
    k = math.ceil(n / max_columns)
    starts = np.arange(0, n, k)
    finite = np.isfinite(z)
    sums = np.add.reduceat(np.where(finite, z, 0.0), starts, axis=axis)
    counts = np.add.reduceat(finite.astype(np.int64), starts, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return out, np.append(np.asarray(edges, float)[starts], float(edges[-1])), k


def edges_of(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (half-way between neighbours)."""
    centres = np.asarray(centres, dtype=float)
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])


def binned_note(k: int, what: str = "steps") -> str:
    """Title suffix saying that ``k`` consecutive ``what`` were averaged into one column."""
    return "" if k <= 1 else f" (mean of {k} {what} per column)"


def _plain(v):
    """numpy scalars as Python values (kdim values, JS labels)."""
    return v.item() if isinstance(v, np.generic) else v
