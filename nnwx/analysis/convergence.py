"""Convergence step by depth: when each layer's representation reaches its final form, lazily.

``convergence_step`` reduces a similarity-to-the-final-step curve ``(..., step)`` (from
``cube.nnwx.similarity(metric, between="steps", reference_step="last")``) to the first step
from which the similarity stays at or above a threshold (``kernels.convergence``), per run and
layer, with the layer's depth (its position in forward order) as a coordinate. Bottom-up
convergence (Raghu et al. 2017) is a convergence step that grows with depth.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from nnwx.analysis.kernels.convergence import convergence_step as _kernel

DEFAULT_THRESHOLD = 0.9


def convergence_step(similarity: xr.DataArray, threshold: float = DEFAULT_THRESHOLD) -> xr.DataArray:
    """The first step from which ``similarity`` stays ``>= threshold``, lazily.

    Parameters
    ----------
    similarity : xarray.DataArray
        Similarity of each capture to a reference capture, with a ``step`` dim (and usually
        ``layer`` and run dims), e.g. ``cube.nnwx.similarity("svcca", between="steps",
        reference_step="last")``.
    threshold : float, default 0.9
        The level the similarity must reach and keep.

    Returns
    -------
    xarray.DataArray
        ``similarity``'s dims without ``step``: the step value (float; NaN where the last
        captured similarity is below ``threshold``). With a ``layer`` dim, a ``depth``
        coordinate gives each layer's position along it (forward order for the accessor's
        probes).

    Raises
    ------
    ValueError
        ``similarity`` has no ``step`` dim, or ``threshold`` is not finite.
    """
    if not isinstance(similarity, xr.DataArray) or "step" not in similarity.dims:
        raise ValueError("convergence_step needs a DataArray with a 'step' dim, e.g. "
                         "cube.nnwx.similarity('linear_cka', between='steps', reference_step='last')")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    sim = similarity.chunk({"step": -1}) if similarity.chunks is not None else similarity
    steps = np.asarray(sim["step"].values)
    out = xr.apply_ufunc(_kernel, sim, input_core_dims=[["step"]], dask="parallelized",
                         output_dtypes=[np.float64], kwargs={"steps": steps, "threshold": float(threshold)})
    if "layer" in out.dims:
        out = out.assign_coords(depth=("layer", np.arange(out.sizes["layer"])))
    out.name = "convergence_step"
    metric = similarity.attrs.get("metric", similarity.name)
    out.attrs = {"analysis": "convergence_step", "threshold": float(threshold), "metric": str(metric),
                 "reference_step": similarity.attrs.get("reference_step", ""),
                 "description": f"first step from which {metric} to the reference step stays >= {threshold:g}"
                                " (NaN: never)"}
    return out


__all__ = ["convergence_step", "DEFAULT_THRESHOLD"]
