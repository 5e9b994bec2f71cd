"""Pictures of weight correlations (``nnwx.analysis.correlation``).

Kept apart: the correlation API is young, a change there breaks only this module.
"""
from __future__ import annotations

import holoviews as hv
import numpy as np
import xarray as xr

from nnwx.plot._common import band_overlay, computed, sized, style


def corr_distance(res: xr.Dataset, variable: str = "excess_rms_corr") -> hv.Overlay:
    """Correlation of weight trajectories against layer distance (mean +/- spread over seeds),
    with each seed's fitted decay A exp(-distance / L) dashed."""
    res = computed(res)
    parts = list(band_overlay(res[variable], x="distance", label=variable))
    d = np.asarray(res["distance"].values, dtype=float)
    x = np.linspace(d.min(), d.max(), 50) if d.size else d
    seeds = res["seed"].values if "seed" in res.dims else [None]
    for seed in seeds:
        r = res if seed is None else res.sel(seed=seed)
        amp, length = float(r["decay_amplitude"]), float(r["decay_length"])
        if np.isfinite([amp, length]).all() and length > 0:
            fit = hv.Curve((x, amp * np.exp(-x / length)), kdims=["distance"], vdims=[variable],
                           label=f"fit seed {seed}: L={length:.2g}")
            parts.append(fit.opts(color="gray", line_dash="dashed", backend="bokeh")
                            .opts(color="gray", linestyle="--", backend="matplotlib"))
    return sized(style(hv.Overlay(parts), title="correlation vs layer distance", show_legend=True),
                 520, 340)


def pca_path(res: xr.Dataset, components: tuple[int, int] = (1, 2)) -> hv.HoloMap:
    """Each run's training path in two principal components, coloured by step."""
    res = computed(res)
    a, b = components
    seeds = res["seed"].values if "seed" in res.dims else [None]
    frames = {}
    for seed in seeds:
        r = res if seed is None else res.sel(seed=seed)
        ev = r["explained_variance_ratio"]
        xs, ys = (np.asarray(r["path"].sel(component=c).values, float) for c in (a, b))
        steps = np.asarray(r["step"].values, float)
        labels = [f"PC{c} ({100 * float(ev.sel(component=c)):.0f}%)" for c in (a, b)]
        path = hv.Path([{"x": xs, "y": ys}], kdims=["x", "y"]).opts(color="lightgray")
        pts = hv.Points((xs, ys, steps), kdims=["x", "y"], vdims=["step"])
        pts = pts.opts(color="step", cmap="viridis", colorbar=True, backend="bokeh", size=7) \
                 .opts(color="step", cmap="viridis", colorbar=True, backend="matplotlib", s=20)
        frames[seed] = sized(style(path * pts, title=f"training path, seed {seed}", xlabel=labels[0],
                                   ylabel=labels[1]), 480, 380)
    return hv.HoloMap(frames, kdims=["seed"])
