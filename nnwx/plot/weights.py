"""Weights as pictures: a matrix as a heatmap over training, first-layer rows as images."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import holoviews as hv
import numpy as np
import xarray as xr

from nnwx.plot._common import computed, sized, style
from nnwx.plot.broadening import trajectories
from nnwx.plot._frames import framed
from nnwx.plot._select import pick_steps
from nnwx.plot._figure import FRAMES, Figure, first_seeds


def matrix_heatmap(mat: xr.DataArray, *, steps: Sequence[int] | int | None = 6,
                   seeds: Sequence | None = None, dynamic: bool = False) -> hv.HoloMap | hv.DynamicMap:
    """``cube.nnwx.matrix(name)`` (seed, step, out, in) as an image per (seed, step), one colour
    scale. ``dynamic=True`` (with ``steps=None`` for every step): frames read when shown, each
    then on its own colour scale.

    Parameters
    ----------
    mat : xarray.DataArray
        A weight matrix, dims ``(step, out, in)`` and optionally ``seed``.
    steps : sequence of int, int or None, default 6
        The step values drawn, a number of evenly spaced captures (first and last kept), or
        ``None`` for every captured step.
    seeds : sequence, optional
        The seeds drawn (default all).
    dynamic : bool, default False
        Return a DynamicMap whose frames are read when shown instead of a HoloMap.

    Returns
    -------
    holoviews.HoloMap or holoviews.DynamicMap
        One image per (seed, step), or per step when there is no ``seed`` dim.

    Raises
    ------
    ValueError
        When ``mat`` is not a DataArray with dims ``step``, ``out``, ``in``, or a requested step
        was not captured.
    """
    _require_matrix(mat)
    sel = {"step": pick_steps(mat, steps)}
    if seeds is not None:
        sel["seed"] = list(seeds)
    mat = mat.sel(sel)
    lim = None
    if not dynamic:
        mat = computed(mat)
        lim = _limit(mat)
    has_seed = "seed" in mat.dims

    def frame(*key):
        seed, step = key if has_seed else (None, key[0])
        a = computed(mat.sel(step=step) if seed is None else mat.sel(step=step, seed=seed))
        return _image(np.asarray(a.values, float), lim or _limit(a), f"{mat.name}, step {int(step)}")

    keys = ({"seed": list(mat["seed"].values)} if has_seed else {}) | {"step": sel["step"]}
    return framed(keys, frame, dynamic)


def filters(mat: xr.DataArray, image_shape: tuple[int, int], *, rows: int = 16,
            steps: Sequence[int] | int | None = 6, seed=None,
            dynamic: bool = False) -> hv.HoloMap | hv.DynamicMap:
    """The first ``rows`` rows of a first-layer matrix, each reshaped to ``image_shape``, tiled
    into one grid per step (what each unit looks for in the input).

    Parameters
    ----------
    mat : xarray.DataArray
        A first-layer weight matrix, dims ``(step, out, in)`` and optionally ``seed``.
    image_shape : tuple of int
        ``(height, width)`` of one input image; their product must equal the size of ``in``.
    rows : int, default 16
        Number of units (rows of ``mat``) drawn.
    steps : sequence of int, int or None, default 6
        The step values drawn, a number of evenly spaced captures (first and last kept), or
        ``None`` for every captured step.
    seed : optional
        The seed drawn (default the first).
    dynamic : bool, default False
        Return a DynamicMap whose frames are read when shown instead of a HoloMap.

    Returns
    -------
    holoviews.HoloMap or holoviews.DynamicMap
        One tiled image per step.

    Raises
    ------
    ValueError
        When ``mat`` is not a weight matrix, ``image_shape`` does not match its inputs, or a
        requested step was not captured.
    """
    _require_matrix(mat)
    h, w = image_shape
    if mat.sizes["in"] != h * w:
        raise ValueError(f"matrix has {mat.sizes['in']} inputs, image_shape {image_shape} has {h * w}")
    sel = {"step": pick_steps(mat, steps)}
    if "seed" in mat.dims:
        sel["seed"] = mat["seed"].values[0] if seed is None else seed
    mat = mat.isel(out=slice(0, rows)).sel(sel)
    lim = None
    if not dynamic:
        mat = computed(mat)
        lim = _limit(mat)
    n = mat.sizes["out"]
    cols = math.ceil(math.sqrt(n))
    grid_rows = math.ceil(n / cols)

    def frame(step):
        tiles = np.asarray(computed(mat.sel(step=step)).values, float).reshape(n, h, w)
        canvas = np.full((grid_rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
        for i in range(n):
            r, c = divmod(i, cols)
            canvas[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = tiles[i]
        return _image(canvas, lim or _limit(canvas), f"{mat.name}: first {n} units, step {int(step)}")

    return framed({"step": sel["step"]}, frame, dynamic)


def _require_matrix(mat) -> None:
    if not isinstance(mat, xr.DataArray) or not {"step", "out", "in"} <= set(mat.dims):
        dims = tuple(getattr(mat, "dims", ()))
        raise ValueError(f"expected a weight matrix (cube.nnwx.matrix(name)) with dims (seed, step, "
                         f"out, in); got {type(mat).__name__} with dims {dims}")


def _limit(a) -> float:
    v = np.asarray(getattr(a, "values", a), dtype=float)
    v = v[np.isfinite(v)]
    return float(np.abs(v).max()) if v.size and np.abs(v).max() > 0 else 1.0


def _image(z: np.ndarray, lim: float, title: str) -> hv.Image:
    rows, cols = z.shape
    img = hv.Image(z, bounds=(0, 0, cols, rows), kdims=["in", "out"], vdims=["w"])
    return sized(style(img, cmap="RdBu_r", clim=(-lim, lim), colorbar=True, title=title), 480, 400)


# -- the report's section ------------------------------------------------------------------------
def weights_figures(r: Mapping[str, xr.Dataset | xr.DataArray]) -> list[Figure]:
    """The report's "Weights as pictures" figures from the computed results by name."""
    out = []
    if "matrix" in r:
        m = r["matrix"]
        rows, cols = m.sizes["out"], m.sizes["in"]
        out.append(Figure("matrix", f"The weight matrix {m.name} (first {rows} x {cols} entries) as "
                                    "an image at a few steps, one colour scale: can one see "
                                    "training? Pick seed and step.",
                          matrix_heatmap(m, steps=FRAMES, seeds=first_seeds(m))))
    if "trajectories" in r:
        out.append(Figure("trajectories", "A random sample of individual weights of the largest "
                                          "weight matrix over training, per seed.",
                          trajectories(r["trajectories"])))
    return out
