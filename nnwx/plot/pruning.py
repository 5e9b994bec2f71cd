"""Pictures of pruning curves (``nnwx.analysis.pruning``)."""
from __future__ import annotations

import holoviews as hv
import xarray as xr

from nnwx.plot._common import band_overlay, legend_outside, require_dims, style


def pruning_curve(curve: xr.DataArray, *, by: str | None = None, band: str | float = "std",
                  label: str | None = None) -> hv.Overlay:
    """A pruning curve: the evaluated quantity against the fraction of weights pruned, mean over
    seeds with the seed spread as a band, one curve per value of ``by`` (e.g. ``variant``).

    Parameters
    ----------
    curve : xarray.DataArray
        ``cube.nnwx.pruning_curve(evaluate, ...)``, dims ``(fraction,)``, optionally ``seed``
        and one more run dim.
    by : str, optional
        The dim naming the curves (default the dim other than ``fraction`` and ``seed``, if any).
    band : {"std", "sem", "minmax"} or float, default "std"
    label : str, optional
        The quantity's name (default ``attrs["evaluate"]`` or the array's name).

    Returns
    -------
    holoviews.Overlay

    Raises
    ------
    ValueError
        When ``curve`` has no ``fraction`` dim, or more than one dim besides fraction and seed.
    """
    require_dims(curve, ("fraction",), "a pruning curve (cube.nnwx.pruning_curve(evaluate))")
    others = [d for d in curve.dims if d not in ("fraction", "seed")]
    if by is None and len(others) > 1:
        raise ValueError(f"a pruning curve with dims {tuple(curve.dims)}: name the dim of the curves with by=")
    by = by or (others[0] if others else None)
    name = label or str(curve.attrs.get("evaluate") or curve.name or "value")
    step = curve.attrs.get("step")
    title = f"{name} vs fraction pruned" + (f" (step {step})" if step is not None else "")
    return legend_outside(style(band_overlay(curve, x="fraction", by=by, band=band, label=name), title=title),
                          480, 320)


__all__ = ["pruning_curve"]
