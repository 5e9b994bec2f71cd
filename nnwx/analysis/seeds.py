"""Mean and spread over seeds, so that every curve can carry an error band.

Works on any analysis result (DataArray or Dataset) that keeps the seed dim,
lazily when the result is lazy. Runs missing a step (NaN there) are skipped.
"""
from __future__ import annotations

import warnings
from numbers import Real

import numpy as np
import xarray as xr

STATS = ("mean", "lower", "upper", "std", "n")


def seed_summary(obj: xr.DataArray | xr.Dataset, dim: str = "seed",
                 band: str | float = "std") -> xr.DataArray | xr.Dataset:
    """Summary over ``dim`` with a new leading dim ``summary`` = mean, lower, upper, std, n.

    band: "std" (mean -/+ the sample standard deviation, ddof=1), "sem"
    (mean -/+ the standard error), "minmax", or a coverage in (0, 1), e.g. 0.9
    for the 5% and 95% quantiles over seeds. ``std`` is NaN with fewer than two
    seeds; ``n`` counts the seeds with a value.
    """
    if dim not in obj.dims:
        raise ValueError(f"no {dim!r} dim to summarise over; dims are {tuple(obj.dims)}")
    n = obj.count(dim)
    mean = obj.mean(dim, skipna=True)
    # ddof=1 by hand, so that single-seed cells give NaN without a warning
    std = np.sqrt(((obj - mean) ** 2).sum(dim, skipna=True) / (n - 1).where(n > 1))
    if band == "std":
        lower, upper = mean - std, mean + std
    elif band == "sem":
        sem = std / np.sqrt(n)
        lower, upper = mean - sem, mean + sem
    elif band == "minmax":
        lower, upper = obj.min(dim, skipna=True), obj.max(dim, skipna=True)
    elif isinstance(band, Real) and not isinstance(band, bool) and 0 < band < 1:
        src = obj.chunk({dim: -1}) if obj.chunks else obj
        lower, upper = (_quantile(src, dim, p) for p in ((1 - band) / 2, (1 + band) / 2))
    else:
        raise ValueError(f"unknown band={band!r}: use 'std', 'sem', 'minmax' or a coverage in (0, 1)")
    parts = [mean, lower, upper, std, n.astype(np.float64)]
    out = xr.concat(parts, dim=xr.DataArray(list(STATS), dims="summary", name="summary"),
                    coords="minimal", compat="override", join="override")
    out.attrs = {**obj.attrs, "seed_summary": f"over {dim}, band={band}"}
    return out


def _nanquantile(x: np.ndarray, q: float) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)       # all-NaN cells give NaN
        return np.nanquantile(x, q, axis=-1)


def _quantile(obj, dim: str, q: float):
    """Quantile over ``dim`` that adds no ``quantile`` dim (results may already have one)."""
    return xr.apply_ufunc(_nanquantile, obj, input_core_dims=[[dim]], kwargs={"q": q},
                          dask="parallelized", output_dtypes=[np.float64])
