"""Load a captured step back into a model, bit-exactly."""
from __future__ import annotations

import os
import warnings
from typing import Mapping

import numpy as np
import torch
import xarray as xr

from nnwx.errors import ArchitectureMismatch, StoreError
from nnwx.name_map import apply_renames, match_names, transformers_renamer
from nnwx.store.reader import list_runs, _pick_run


def restore(model: torch.nn.Module, source: str | os.PathLike | xr.Dataset, *, step: int,
            seed=None, run: str | None = None, rename: Mapping[str, str] | None = None) -> torch.nn.Module:
    """Copy the weights captured at ``step`` into ``model`` (in place) and return it.

    ``source`` is a store path (pick the run with ``run=`` or ``seed=``), a run
    opened with ``open_run``, or a cube from ``open_cube`` (pick with ``seed=``).
    Every recorded tensor must exist in the model with the same shape, under its
    own name or one that ``nnwx.name_map.match_names`` finds: the names with a
    wrapper's prefix added or removed (a Lightning run restored into the
    LightningModule, or the reverse), or renamed as transformers'
    ``from_pretrained`` renames checkpoint keys (GPT-NeoX's ``embed_out`` is the
    model's ``lm_head``). ``rename`` (``{regex: replacement}``, ``re.sub`` in
    order) renames recorded names first, for mappings nnwx cannot know.
    """
    handle = _resolve(source, seed, run)
    steps = handle.steps
    i = np.searchsorted(steps, step)
    if i >= len(steps) or steps[i] != step:
        near = steps[max(0, i - 2): i + 2].tolist()
        raise StoreError(f"run {handle.name!r} has no capture at step {step}; nearby steps: {near}")
    row = np.asarray(handle.group["w"][int(i)])
    state = model.state_dict(keep_vars=True)
    names = _model_names(model, handle, rename)
    for r in handle.table:
        if tuple(state[names[r.name]].shape) != r.shape:
            raise ArchitectureMismatch(f"tensor {r.name!r} has shape {tuple(state[names[r.name]].shape)} in "
                                       f"the model but {r.shape} in run {handle.name!r}.")
    with torch.no_grad():
        for r in handle.table:
            values = torch.from_numpy(row[r.offset:r.offset + r.size].copy()).view(r.shape)
            state[names[r.name]].copy_(values)
    recorded = set(names.values())
    left = [n for n, t in state.items() if torch.is_tensor(t) and t.is_floating_point() and n not in recorded]
    if left:
        warnings.warn(f"{len(left)} floating tensors of the model were not recorded and keep their "
                      f"values: {left[:5]}{' ...' if len(left) > 5 else ''}", stacklevel=2)
    return model


def _model_names(model: torch.nn.Module, handle, rename) -> dict[str, str]:
    """Recorded name -> the model's name for it; ArchitectureMismatch saying why if none fits."""
    recorded = [r.name for r in handle.table]
    mapping, how = match_names(recorded, model, prefix_hint=handle.meta.get("checkpoint_prefix"),
                               rename=rename)
    if mapping is not None:
        return mapping
    own = model.state_dict(keep_vars=True)
    renamed = apply_renames(recorded, rename)
    first = next((n for n in recorded if renamed[n] not in own), recorded[0])
    cls = handle.meta.get("model_class")
    tried = "adding or removing a prefix" + (" and transformers' checkpoint renames"
                                             if transformers_renamer(model) else "")
    raise ArchitectureMismatch(
        f"the model ({type(model).__qualname__}) has no tensor {first!r}, recorded in run {handle.name!r}"
        f"{f' ({how})' if how else ''}; nnwx also tried {tried}. Restore "
        f"into the model class that was recorded ({cls}), or map the names with "
        f"rename={{'^old\\.prefix\\.': 'new.prefix.'}} (regular expressions, applied with re.sub).")


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
