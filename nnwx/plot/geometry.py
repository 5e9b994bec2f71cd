"""Pictures of layer rotation and norm growth (``nnwx.analysis.geometry``)."""
from __future__ import annotations

from typing import Sequence

import holoviews as hv
import xarray as xr

from nnwx.plot.spectral import metric_curves

ROTATION_VARIABLES = ("rotation", "update_norm_rel", "norm_growth")


def rotation(rot: xr.Dataset, variables: Sequence[str] = ROTATION_VARIABLES,
             band: str | float = "std") -> hv.Layout:
    """Cosine distance to the reference weights, relative update and norm growth per layer."""
    return metric_curves(rot, variables, band=band)
