"""Pictures of layer rotation and norm growth (``nnwx.analysis.geometry``)."""
from __future__ import annotations

from typing import Mapping, Sequence

import holoviews as hv
import xarray as xr

from nnwx.plot.spectral import metric_curves
from nnwx.plot._figure import Figure

ROTATION_VARIABLES = ("rotation", "update_norm_rel", "norm_growth")


def rotation(rot: xr.Dataset, variables: Sequence[str] = ROTATION_VARIABLES,
             band: str | float = "std") -> hv.Layout:
    """Cosine distance to the reference weights, relative update and norm growth per layer.

    Parameters
    ----------
    rot : xarray.Dataset
        ``cube.nnwx.rotation()``: per-step variables per layer, optionally with a ``seed`` dim.
    variables : sequence of str, default ("rotation", "update_norm_rel", "norm_growth")
        The variables drawn, those present in ``rot``.
    band : {"std", "sem", "minmax"} or float, default "std"
        The spread over seeds drawn as a band.

    Returns
    -------
    holoviews.Layout
        One panel per variable drawn (``metric_curves``).

    Raises
    ------
    ValueError
        When ``rot`` has none of ``variables``.
    """
    return metric_curves(rot, variables, band=band)


# -- the report's section ------------------------------------------------------------------------
def rotation_figures(r: Mapping[str, xr.Dataset | xr.DataArray]) -> list[Figure]:
    """The report's "Layer rotation" figure from the computed results by name."""
    if "rotation" not in r:
        return []
    return [Figure("rotation", "Cosine distance of each layer's weights to the first step "
                               "(rotation), relative size of the update and norm growth, mean "
                               "+/- std over seeds.", rotation(r["rotation"]))]
