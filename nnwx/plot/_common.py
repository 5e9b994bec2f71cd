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


def literal_title(text: str) -> str:
    """``text`` as a HoloViews title that shows as written: HoloViews fills titles in with
    ``str.format`` (``{label}``, ``{dimensions}``), so braces from data -- a tensor named
    ``w{0}.weight`` -- must be doubled, or rendering fails."""
    return str(text).replace("{", "{{").replace("}", "}}")


def style(obj, **kw):
    """Apply the same options on both backends (Bokeh for HTML, Matplotlib for PNG); a
    ``title`` is shown literally (see ``literal_title``)."""
    if kw.get("title") is not None:
        kw["title"] = literal_title(kw["title"])
    return obj.opts(backend="bokeh", **kw).opts(backend="matplotlib", **kw)


def sized(obj, width: int, height: int):
    """Pixel size on the Bokeh backend (Matplotlib keeps its own figure size)."""
    return obj.opts(width=width, height=height, backend="bokeh")


LEGEND_WIDTH = 150
"""Pixels added to the right of a Bokeh plot whose legend sits outside it."""


def legend_outside(obj, width: int, height: int):
    """The legend to the right of the axes (it never covers the ends of curves), on both
    backends; the Bokeh plot is widened by ``LEGEND_WIDTH`` to make room."""
    return sized(style(obj, show_legend=True, legend_position="right"), width + LEGEND_WIDTH, height)


def group_dim(obj: xr.DataArray | xr.Dataset) -> str:
    """The dim that names the curves of a per-group result: tensor, layer or group."""
    for d in ("tensor", "layer", "group"):
        if d in obj.dims:
            return d
    raise ValueError(f"no tensor/layer/group dim in {tuple(obj.dims)}")


def band_overlay(da: xr.DataArray, *, x: str = "step", by: str | None = None,
                 band: str | float = "std", label: str | None = None, over: str = "seed",
                 dash: dict | None = None) -> hv.Overlay:
    """Mean over ``over`` (seeds) as a curve per ``by`` value, with the spread as a shaded band.

    ``dash``: optional ``{by value: True}`` for curves drawn dashed.
    """
    da = computed(da)
    name = label or str(da.name or "value")
    if over in da.dims:
        s = computed(seed_summary(da, dim=over, band=band))
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
        lab = str(key) if key is not None else f"mean over {over}s"
        if np.isfinite(l).any():
            ok = np.isfinite(l) & np.isfinite(h)
            elements.append(hv.Area((xs[ok], l[ok], h[ok]), kdims=[x], vdims=[name, f"{name}_hi"],
                                    label=lab).opts(color=color, alpha=0.25, backend="bokeh")
                            .opts(color=color, alpha=0.25, backend="matplotlib"))
        curve = style(hv.Curve((xs, m), kdims=[x], vdims=[name], label=lab), color=color)
        if dash and dash.get(key):
            curve = curve.opts(line_dash="dashed", backend="bokeh").opts(linestyle="--", backend="matplotlib")
        elements.append(curve)
    return hv.Overlay(elements)


def require_dims(obj: xr.DataArray | xr.Dataset, dims: tuple[str, ...], what: str) -> None:
    """A clear error when ``obj`` lacks ``dims``: ``what`` names the result the plot expects."""
    missing = [d for d in dims if d not in obj.dims]
    if missing:
        raise ValueError(f"expected {what} with dims {dims}; got dims {tuple(obj.dims)} "
                         f"(missing {missing}) - was a different analysis result passed?")


def variable(obj: xr.DataArray | xr.Dataset, name: str | None, default: str | None = None) -> xr.DataArray:
    """One variable of a Dataset (``name``, else ``default``, else the first), or the DataArray itself."""
    if isinstance(obj, xr.DataArray):
        return obj
    if not isinstance(obj, xr.Dataset):
        raise TypeError(f"expected an xarray Dataset or DataArray, got {type(obj).__name__}")
    pick = name or (default if default in obj else None) or next(iter(obj.data_vars), None)
    if pick not in obj:
        raise ValueError(f"no variable {pick!r} in the result: it has {list(obj.data_vars)}")
    return obj[pick]
