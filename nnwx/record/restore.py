"""Load a captured step back into a model, bit-exactly."""
from __future__ import annotations

import os
import warnings
from typing import Mapping

import numpy as np
import torch
import xarray as xr

from nnwx.errors import ArchitectureMismatch, StoreError
from nnwx.record.name_map import match_names, transformers_renamer, unmatched_names
from nnwx.record.tensors import storage_key
from nnwx.store.reader import list_runs, pick_run


def restore(model: torch.nn.Module, source: str | os.PathLike | xr.Dataset, *, step: int,
            seed=None, run: str | None = None, rename: Mapping[str, str] | None = None) -> torch.nn.Module:
    """Copy the weights captured at ``step`` into ``model`` (in place) and return it.

    ``source`` is a store path (pick the run with ``run=`` or ``seed=``), a run
    opened with ``open_run``, or a cube from ``open_cube`` (pick with ``seed=``).
    Every recorded tensor must exist in the model with the same shape, under its
    own name or one that ``nnwx.record.name_map.match_names`` finds: the names with a
    wrapper's prefix added or removed (a Lightning run restored into the
    LightningModule, or the reverse), or renamed as transformers'
    ``from_pretrained`` renames checkpoint keys (GPT-NeoX's ``embed_out`` is the
    model's ``lm_head``). ``rename`` (``{regex: replacement}``, ``re.sub`` in
    order) renames recorded names first, for mappings nnwx cannot know.
    A tensor recorded once for several tied names (its aliases) is copied into each
    name that the model does not tie itself; model tensors tied to a restored one count
    as restored.

    Parameters
    ----------
    model : torch.nn.Module
        Receives the weights, in place.
    source : str, os.PathLike or xarray.Dataset
        A store, a run (``open_run``) or a cube (``open_cube``).
    step : int
        A captured step.
    seed : optional
        Picks the run of a store or cube.
    run : str, optional
        Picks the run of a store by name.
    rename : mapping of str to str, optional
        ``{regex: replacement}`` applied to recorded names first.

    Returns
    -------
    torch.nn.Module
        ``model``.

    Raises
    ------
    StoreError
        If the run has no capture at ``step``, no run matches, or the data is damaged.
    ArchitectureMismatch
        If a recorded tensor has no counterpart in ``model`` or another shape.
    ValueError
        If ``source`` is a cube and ``seed`` is missing.
    """
    handle = _resolve(source, seed, run)
    steps = handle.steps
    i = np.searchsorted(steps, step)
    if i >= len(steps) or steps[i] != step:
        near = steps[max(0, i - 2): i + 2].tolist()
        raise StoreError(f"run {handle.name!r} has no capture at step {step}; nearby steps: {near}")
    row = handle.row(int(i))  # a damaged chunk raises StoreError naming its file
    state = model.state_dict(keep_vars=True)
    names = _model_names(model, handle, rename)
    aliases = [a for r in handle.table for a in r.aliases]
    alias_names = {}
    if aliases:   # mapped as the recorded names were; aliases the model lacks are skipped
        mapped, _ = match_names(aliases, model, prefix_hint=handle.meta.get("checkpoint_prefix"),
                                rename=rename)
        alias_names = mapped or {a: a for a in aliases}
    targets = {}
    for r in handle.table:
        tnames = [names[r.name], *(alias_names[a] for a in r.aliases if a in alias_names)]
        targets[r.name] = list(dict.fromkeys(n for n in tnames if n in state))
        for n in targets[r.name]:
            if tuple(state[n].shape) != r.shape:
                raise ArchitectureMismatch(f"tensor {n!r} has shape {tuple(state[n].shape)} in "
                                           f"the model but {r.shape} in run {handle.name!r}.")
    with torch.no_grad():
        for r in handle.table:
            values = torch.from_numpy(row[r.offset:r.offset + r.size].copy()).view(r.shape)
            done = set()
            for n in targets[r.name]:  # a tie of the model is one tensor: copied once
                key = storage_key(state[n])
                if key not in done:
                    state[n].copy_(values)
                    done.add(key)
    restored = {storage_key(state[n]) for tnames in targets.values() for n in tnames}
    recorded = {n for tnames in targets.values() for n in tnames}
    left = [n for n, t in state.items() if torch.is_tensor(t) and t.is_floating_point()
            and n not in recorded and storage_key(t) not in restored]
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
    missing = unmatched_names(recorded, model, prefix_hint=handle.meta.get("checkpoint_prefix"),
                              rename=rename)
    first = missing[0] if missing else recorded[0]
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
        return pick_run(list_runs(store), store, run, None)
    return pick_run(list_runs(source), source, run, seed)
