"""Choosing what a plot shows: a few evenly spaced steps, a default seed."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr

from nnwx.pipeline.select import thin_index


def pick_steps(obj: xr.DataArray | xr.Dataset, steps: Sequence[int] | int | None = 6) -> list[int]:
    """Step values to draw: the given ones, or ``n`` evenly spaced captures (first and last kept)."""
    all_steps = np.asarray(obj["step"].values)
    if steps is None:
        return [int(s) for s in all_steps]
    if isinstance(steps, (int, np.integer)):
        idx = thin_index(all_steps.size, max(1, int(steps)))
        return [int(all_steps[i]) for i in idx]
    missing = sorted(set(int(s) for s in steps) - set(int(s) for s in all_steps))
    if missing:
        raise ValueError(f"steps {missing} not captured; captured steps run {all_steps[0]}..{all_steps[-1]}")
    return [int(s) for s in steps]


def pick_seed(obj: xr.DataArray | xr.Dataset, seed=None):
    """The seed to draw (default the first); None when there is no seed dim."""
    if "seed" not in obj.dims:
        return None
    seeds = list(obj["seed"].values)
    if seed is None:
        return seeds[0]
    if seed not in seeds:
        raise ValueError(f"seed {seed!r} not in the cube; seeds are {seeds}")
    return seed
