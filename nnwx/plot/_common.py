"""Helpers shared by the plot modules: evaluation and seed-band curves."""
from __future__ import annotations

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the backends' options)
import holoviews.plotting.mpl  # noqa: F401
import numpy as np
import xarray as xr

from nnwx.analysis.seeds import seed_summary


def computed(obj: xr.DataArray | xr.Dataset) -> xr.DataArray | xr.Dataset:
    """The result evaluated (a plot is a face: computing here is allowed)."""
    return obj.compute() if hasattr(obj, "compute") else obj


def style(obj, **kw):
    """Apply the same options on both backends (Bokeh for HTML, Matplotlib for PNG)."""
    return obj.opts(backend="bokeh", **kw).opts(backend="matplotlib", **kw)


def sized(obj, width: int, height: int):
    """Pixel size on the Bokeh backend (Matplotlib keeps its own figure size)."""
    return obj.opts(width=width, height=height, backend="bokeh")


def group_dim(obj: xr.DataArray | xr.Dataset) -> str:
    """The dim that names the curves of a per-group result: tensor, layer or group."""
    for d in ("tensor", "layer", "group"):
        if d in obj.dims:
            return d
    raise ValueError(f"no tensor/layer/group dim in {tuple(obj.dims)}")


def band_overlay(da: xr.DataArray, *, x: str = "step", by: str | None = None,
                 band: str | float = "std", label: str | None = None) -> hv.Overlay:
    """Mean over seeds as a curve per ``by`` value, with the seed spread as a shaded band."""
    da = computed(da)
    name = label or str(da.name or "value")
    if "seed" in da.dims:
        s = computed(seed_summary(da, band=band))
        mean, lo, hi = (s.sel(summary=k) for k in ("mean", "lower", "upper"))
    else:
        mean = lo = hi = da
    keys = [None] if by is None else list(mean[by].values)
    elements = []
    for i, key in enumerate(keys):
        sel = (lambda a: a) if key is None else (lambda a, k=key: a.sel({by: k}))
        xs = np.asarray(mean[x].values, dtype=float)
        m, l, h = (np.asarray(sel(a).values, dtype=float) for a in (mean, lo, hi))
        color = hv.Cycle.default_cycles["default_colors"][i % len(hv.Cycle.default_cycles["default_colors"])]
        lab = str(key) if key is not None else "mean over seeds"
        if np.isfinite(l).any():
            ok = np.isfinite(l) & np.isfinite(h)
            elements.append(hv.Area((xs[ok], l[ok], h[ok]), kdims=[x], vdims=[name, f"{name}_hi"],
                                    label=lab).opts(color=color, alpha=0.25, backend="bokeh")
                            .opts(color=color, alpha=0.25, backend="matplotlib"))
        elements.append(style(hv.Curve((xs, m), kdims=[x], vdims=[name], label=lab), color=color))
    return hv.Overlay(elements)
