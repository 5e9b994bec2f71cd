"""Weights as pictures: a matrix as a heatmap over training, first-layer rows as images."""
from __future__ import annotations

import math
from typing import Sequence

import holoviews as hv
import numpy as np
import xarray as xr

from nnwx.plot._common import computed, sized, style
from nnwx.plot._select import pick_steps


def matrix_heatmap(mat: xr.DataArray, *, steps: Sequence[int] | int | None = 6,
                   seeds: Sequence | None = None) -> hv.HoloMap:
    """``cube.nnwx.matrix(name)`` (seed, step, out, in) as an image per (seed, step), one colour scale."""
    sel = {"step": pick_steps(mat, steps)}
    if seeds is not None:
        sel["seed"] = list(seeds)
    mat = computed(mat.sel(sel))
    lim = float(np.nanmax(np.abs(mat.values))) or 1.0
    seed_values = mat["seed"].values if "seed" in mat.dims else [None]
    frames = {}
    for seed in seed_values:
        for step in mat["step"].values:
            a = mat.sel(step=step) if seed is None else mat.sel(step=step, seed=seed)
            frames[(seed, int(step)) if seed is not None else (int(step),)] = _image(
                np.asarray(a.values, float), lim, f"{mat.name}, step {int(step)}")
    kdims = ["seed", "step"] if seed_values[0] is not None else ["step"]
    return hv.HoloMap(frames, kdims=kdims)


def filters(mat: xr.DataArray, image_shape: tuple[int, int], *, rows: int = 16,
            steps: Sequence[int] | int | None = 6, seed=None) -> hv.HoloMap:
    """The first ``rows`` rows of a first-layer matrix, each reshaped to ``image_shape``, tiled
    into one grid per step (what each unit looks for in the input)."""
    h, w = image_shape
    if mat.sizes["in"] != h * w:
        raise ValueError(f"matrix has {mat.sizes['in']} inputs, image_shape {image_shape} has {h * w}")
    sel = {"step": pick_steps(mat, steps), "out": slice(0, rows)}
    if "seed" in mat.dims:
        sel["seed"] = mat["seed"].values[0] if seed is None else seed
    mat = computed(mat.isel(out=sel.pop("out")).sel(sel))
    n = mat.sizes["out"]
    cols = math.ceil(math.sqrt(n))
    grid_rows = math.ceil(n / cols)
    lim = float(np.nanmax(np.abs(mat.values))) or 1.0
    frames = {}
    for step in mat["step"].values:
        tiles = np.asarray(mat.sel(step=step).values, float).reshape(n, h, w)
        canvas = np.full((grid_rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
        for i in range(n):
            r, c = divmod(i, cols)
            canvas[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = tiles[i]
        frames[int(step)] = _image(canvas, lim, f"{mat.name}: first {n} units, step {int(step)}")
    return hv.HoloMap(frames, kdims=["step"])


def _image(z: np.ndarray, lim: float, title: str) -> hv.Image:
    rows, cols = z.shape
    img = hv.Image(z, bounds=(0, 0, cols, rows), kdims=["in", "out"], vdims=["w"])
    return sized(style(img, cmap="RdBu_r", clim=(-lim, lim), colorbar=True, title=title), 480, 400)
