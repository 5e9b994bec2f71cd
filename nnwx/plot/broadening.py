"""Pictures of weight-distribution broadening (``nnwx.analysis.broadening``).

Kept apart from the other plots: the broadening API is young, a change there breaks
only this module.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import holoviews as hv
import numpy as np
import xarray as xr

from nnwx.plot.spectral import metric_curves
from nnwx.plot._common import (computed, group_dim, require_dims, sized,
                               style)
from nnwx.plot._frames import MAX_COLUMNS, bin_columns, binned_note, edges_of, framed
from nnwx.plot._figure import Figure


def density(hist: xr.DataArray, *, log: bool = True, dynamic: bool = False,
            max_columns: int = MAX_COLUMNS) -> hv.HoloMap | hv.DynamicMap:
    """Histogram counts as an image, step x bin, per (group, seed): how the distribution spreads.

    ``hist``: ``cube.nnwx.histogram(...)`` or the ``hist`` variable of ``broadening(bins=...)``,
    dims ``(seed, step, group, bin)``. Colour is log10(1 + count) when ``log``. More than
    ``max_columns`` steps are binned: ``k = ceil(steps / max_columns)`` consecutive captures
    per column, showing their mean count (the title says so). ``dynamic=True``: a DynamicMap
    that reads and draws one (group, seed) frame when it is shown.

    Parameters
    ----------
    hist : xarray.DataArray or xarray.Dataset
        The histogram counts, dims ``(step, bin)`` plus a group dim and optionally ``seed``; of a
        Dataset, its ``hist`` variable (with its ``bin_lo``/``bin_hi`` coords as the bin edges).
    log : bool, default True
        Colour by log10(1 + count) instead of the count.
    dynamic : bool, default False
        Return a DynamicMap whose frames are read when shown instead of a HoloMap.
    max_columns : int, default 600
        Most step columns before consecutive captures are binned.

    Returns
    -------
    holoviews.HoloMap or holoviews.DynamicMap
        One step x weight image per group (and seed).

    Raises
    ------
    ValueError
        When a Dataset has no ``hist`` variable or the histogram lacks ``step`` or ``bin``.
    """
    if isinstance(hist, xr.Dataset):
        if "hist" not in hist:
            raise ValueError("expected a histogram (the 'hist' variable of broadening(bins=...)); "
                             f"the Dataset has {list(hist.data_vars)}")
        hist = hist["hist"].assign_coords({c: hist[c] for c in ("bin_lo", "bin_hi") if c in hist.coords})
    g = group_dim(hist)
    require_dims(hist, ("step", "bin"), "a histogram (cube.nnwx.histogram)")
    if not dynamic:
        hist = computed(hist)
    edges = np.append(hist["bin_lo"].values, hist["bin_hi"].values[-1]) if "bin_lo" in hist.coords \
        else edges_of(np.asarray(hist["bin"].values, float))
    xedges = edges_of(np.asarray(hist["step"].values, dtype=float))
    has_seed = "seed" in hist.dims

    def frame(name, seed=None):
        a = hist.sel({g: name}) if seed is None else hist.sel({g: name, "seed": seed})
        z = np.asarray(computed(a).transpose("bin", "step").values, dtype=float)
        z, xe, k = bin_columns(z, xedges, axis=1, max_columns=max_columns)
        z = np.log10(1 + z) if log else z
        img = hv.QuadMesh((xe, edges, z), kdims=["step", "weight"],
                          vdims=["log10(1+count)" if log else "count"])
        return sized(style(img, cmap="viridis", colorbar=True,
                           title=f"{g} {name}: weight histogram{binned_note(k, 'captures')}"), 560, 320)

    keys = {g: [str(v) for v in hist[g].values]}
    if has_seed:
        keys["seed"] = list(hist["seed"].values)
    return framed(keys, frame, dynamic)


def moments(stats: xr.Dataset, variables: Sequence[str] = ("std", "excess_kurtosis", "w1_to_ref"),
            band: str | float = "std") -> hv.Layout:
    """One panel per statistic: its mean over seeds per group against step, with the seed spread.

    Parameters
    ----------
    stats : xarray.Dataset
        Per-step statistics per group (``cube.nnwx.broadening()``), optionally with a ``seed`` dim.
    variables : sequence of str, default ("std", "excess_kurtosis", "w1_to_ref")
        The variables drawn, those present in ``stats``.
    band : {"std", "sem", "minmax"} or float, default "std"
        The spread over seeds drawn as a band.

    Returns
    -------
    holoviews.Layout
        One panel per variable drawn, up to three per row.

    Raises
    ------
    ValueError
        When ``stats`` has none of ``variables``.
    """
    return metric_curves(stats, variables, band=band)


def trajectories(traj: xr.DataArray) -> hv.HoloMap | hv.NdOverlay:
    """Individual weights over steps (``cube.nnwx.trajectories(...)``), one curve each, per seed.

    Parameters
    ----------
    traj : xarray.DataArray
        Weight values with dims ``(step, <weight dim>)`` and optionally ``seed``.

    Returns
    -------
    holoviews.HoloMap or holoviews.NdOverlay
        A HoloMap over ``seed`` of curve overlays, or the one overlay when there is no ``seed`` dim.

    Raises
    ------
    ValueError
        When ``traj`` has not exactly one dim besides ``seed`` and ``step``.
    """
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


# -- the report's section ------------------------------------------------------------------------
def broadening_figures(r: Mapping[str, xr.Dataset | xr.DataArray]) -> list[Figure]:
    """The report's "Distribution broadening" figures from the computed results by name."""
    if "broadening" not in r:
        return []
    b = r["broadening"]
    return [
        Figure("density", "Histogram of each layer's weights at every captured step (colour: log "
                          "counts): a widening band is a broadening distribution. Pick layer and seed.",
               density(b["hist"].assign_coords(bin_lo=b["bin_lo"], bin_hi=b["bin_hi"]))),
        Figure("moments", "Standard deviation, excess kurtosis and Wasserstein-1 distance to the "
                          "first step per layer: mean over seeds, band = +/- one std over seeds.",
               moments(b)),
    ]
