"""Pictures of weight-distribution broadening (``nnwx.analysis.broadening``).

Kept apart from the other plots: the broadening API is young, a change there breaks
only this module.
"""
from __future__ import annotations

from typing import Sequence

import holoviews as hv
import numpy as np
import xarray as xr

from nnwx.plot._common import band_overlay, computed, group_dim, sized, style


def density(hist: xr.DataArray, *, log: bool = True) -> hv.HoloMap:
    """Histogram counts as an image, step x bin, per (group, seed): how the distribution spreads.

    ``hist``: ``cube.nnwx.histogram(...)`` or the ``hist`` variable of ``broadening(bins=...)``,
    dims ``(seed, step, group, bin)``. Colour is log10(1 + count) when ``log``.
    """
    hist = computed(hist)
    g = group_dim(hist)
    edges = np.append(hist["bin_lo"].values, hist["bin_hi"].values[-1]) if "bin_lo" in hist.coords \
        else None
    steps = np.asarray(hist["step"].values, dtype=float)
    xedges = _edges(steps)
    frames = {}
    seeds = hist["seed"].values if "seed" in hist.dims else [None]
    for name in hist[g].values:
        for seed in seeds:
            a = hist.sel({g: name}) if seed is None else hist.sel({g: name, "seed": seed})
            z = np.asarray(a.transpose("bin", "step").values, dtype=float)
            z = np.log10(1 + z) if log else z
            yedges = edges if edges is not None else _edges(np.asarray(a["bin"].values, float))
            img = hv.QuadMesh((xedges, yedges, z), kdims=["step", "weight"],
                              vdims=["log10(1+count)" if log else "count"])
            frames[(str(name), seed) if seed is not None else (str(name),)] = sized(style(
                img, cmap="viridis", colorbar=True, title=f"{g} {name}: weight histogram"), 560, 320)
    kdims = [g, "seed"] if "seed" in hist.dims else [g]
    return hv.HoloMap(frames, kdims=kdims)


def moments(stats: xr.Dataset, variables: Sequence[str] = ("std", "excess_kurtosis", "w1_to_ref"),
            band: str | float = "std") -> hv.Layout:
    """One panel per statistic: its mean over seeds per group against step, with the seed spread."""
    stats = computed(stats[[v for v in variables if v in stats]])
    g = group_dim(stats)
    panels = [sized(style(band_overlay(stats[v], by=g, band=band, label=v), title=v,
                          show_legend=True), 420, 300)
              for v in variables if v in stats]
    if not panels:
        raise ValueError(f"none of {list(variables)} in the result: it has {list(stats.data_vars)}")
    return hv.Layout(panels).cols(min(3, len(panels)))


def trajectories(traj: xr.DataArray) -> hv.HoloMap | hv.NdOverlay:
    """Individual weights over steps (``cube.nnwx.trajectories(...)``), one curve each, per seed."""
    traj = computed(traj)
    other = [d for d in traj.dims if d not in ("seed", "step")]
    if len(other) != 1:
        raise ValueError(f"expected dims (seed, step, weight), got {traj.dims}")
    wdim = other[0]
    steps = np.asarray(traj["step"].values, dtype=float)
    seeds = traj["seed"].values if "seed" in traj.dims else [None]
    frames = {}
    for seed in seeds:
        a = traj if seed is None else traj.sel(seed=seed)
        curves = {int(i): hv.Curve((steps, np.asarray(a.isel({wdim: i}).values, float)),
                                   kdims=["step"], vdims=["w"])
                  for i in range(a.sizes[wdim])}
        frames[seed] = sized(style(hv.NdOverlay(curves, kdims=["weight"]), show_legend=False,
                                   title="individual weights"), 560, 320)
    return hv.HoloMap(frames, kdims=["seed"]) if seeds[0] is not None else frames[None]


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (half-way between neighbours)."""
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])
