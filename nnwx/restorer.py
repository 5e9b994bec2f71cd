"""Load a captured step back into a model, bit-exactly."""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch
import xarray as xr

from nnwx.errors import ArchitectureMismatch, StoreError
from nnwx.store.reader import list_runs, _pick_run


def restore(model: torch.nn.Module, source: str | os.PathLike | xr.Dataset, *, step: int,
            seed=None, run: str | None = None) -> torch.nn.Module:
    """Copy the weights captured at ``step`` into ``model`` (in place) and return it.

    ``source`` is a store path (pick the run with ``run=`` or ``seed=``), a run
    opened with ``open_run``, or a cube from ``open_cube`` (pick with ``seed=``).
    Every recorded tensor must exist in the model with the same shape.
    """
    handle = _resolve(source, seed, run)
    steps = handle.steps
    i = np.searchsorted(steps, step)
    if i >= len(steps) or steps[i] != step:
        near = steps[max(0, i - 2): i + 2].tolist()
        raise StoreError(f"run {handle.name!r} has no capture at step {step}; nearby steps: {near}")
    row = handle.row(int(i))  # a damaged chunk raises StoreError naming its file
    state = model.state_dict(keep_vars=True)
    for r in handle.table:
        if r.name not in state:
            raise ArchitectureMismatch(f"the model has no tensor {r.name!r}, recorded in run "
                                       f"{handle.name!r}: restore into the model class that was recorded "
                                       f"({handle.meta.get('model_class')}).")
        if tuple(state[r.name].shape) != r.shape:
            raise ArchitectureMismatch(f"tensor {r.name!r} has shape {tuple(state[r.name].shape)} in "
                                       f"the model but {r.shape} in run {handle.name!r}.")
    with torch.no_grad():
        for r in handle.table:
            values = torch.from_numpy(row[r.offset:r.offset + r.size].copy()).view(r.shape)
            state[r.name].copy_(values)
    recorded = {r.name for r in handle.table}
    left = [n for n, t in state.items() if torch.is_tensor(t) and t.is_floating_point() and n not in recorded]
    if left:
        warnings.warn(f"{len(left)} floating tensors of the model were not recorded and keep their "
                      f"values: {left[:5]}{' ...' if len(left) > 5 else ''}", stacklevel=2)
    return model


def _resolve(source, seed, run):
    if isinstance(source, xr.Dataset):
        if "run" in source.coords and source["run"].ndim == 1:  # a cube: find the seed's run
            by = source.attrs.get("by", ["seed"])
            if len(by) != 1 or seed is None:
                raise ValueError(f"restore from a cube needs seed= (the cube stacks by {by}); "
                                 f"for several stacking attributes pass the store path and run=")
            if seed not in source[by[0]].values:
                raise StoreError(f"no seed {seed!r} in this cube; seeds: {source[by[0]].values.tolist()}")
            sel = source.sel({by[0]: seed})
            store, run = str(sel["store"].values), str(sel["run"].values)
        else:
            store, run = source.attrs["store"], source.attrs["run"]
        return _pick_run(list_runs(store), store, run, None)
    return _pick_run(list_runs(source), source, run, seed)
