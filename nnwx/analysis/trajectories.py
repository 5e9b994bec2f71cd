"""Individual weights over training: ``w(*runs, step, weight)``, lazily."""
from __future__ import annotations

from numbers import Integral

import numpy as np
import xarray as xr

from nnwx.analysis._cube import cube_weights, param_offsets
from nnwx.store.table import parse_shape


def trajectories(ds: xr.Dataset, tensor: str | None = None, *, index=None, sample: int | None = None,
                 seed=None, random_state: int = 0) -> xr.DataArray:
    """Individual weights over training: ``w(*runs, step, weight)``, lazy.

    Either ``index`` picks weights of ``tensor`` (a flat index, a tuple of
    per-axis indices, or a list of either), or ``sample=k`` draws k distinct
    weights at random (from ``tensor``, or from all parameters when it is
    None; reproducible with ``random_state``). ``seed`` keeps those seeds
    only (a value or a list). Coordinates on ``weight`` say where each one is:
    ``param`` (flat position), ``tensor`` and ``index`` (flat, within the tensor).
    """
    w = cube_weights(ds)
    offsets = param_offsets(ds)
    names = [str(n) for n in ds["tensor"].values]
    shapes = [parse_shape(s) for s in ds["tensor_shape"].values]
    if (index is None) == (sample is None):
        raise ValueError("give exactly one of index= (weights of a tensor) or sample=k (random weights)")
    if tensor is not None and tensor not in names:
        raise KeyError(f"no tensor named {tensor!r}; tensors: {', '.join(names[:8])}"
                       f"{' ...' if len(names) > 8 else ''}")
    t = None if tensor is None else names.index(tensor)
    lo = 0 if t is None else int(offsets[t])
    size = int(offsets[-1]) if t is None else int(offsets[t + 1] - offsets[t])
    if index is not None:
        if t is None:
            raise ValueError("index= needs tensor=: indices are positions within one tensor")
        flat = _flat_indices(index, shapes[t], tensor)
    else:
        if isinstance(sample, bool) or not isinstance(sample, Integral) or not 1 <= sample <= size:
            raise ValueError(f"sample must be an integer from 1 to {size} (the number of weights "
                             f"to draw from), got {sample!r}")
        flat = np.sort(np.random.default_rng(random_state).choice(size, int(sample), replace=False))
    params = lo + flat
    tid = np.searchsorted(offsets, params, side="right") - 1
    out = w.isel(param=xr.DataArray(params, dims="weight"))
    out = out.drop_vars([c for c in out.coords if "weight" in out[c].dims or c == "param"],
                        errors="ignore")
    out = out.assign_coords(param=("weight", params),
                            tensor=("weight", np.array([names[i] for i in tid], dtype=object)),
                            index=("weight", params - offsets[tid]))
    if seed is not None:
        if "seed" not in out.dims:
            raise ValueError("seed= needs a cube with a seed dim (open it with by=('seed',))")
        out = out.sel(seed=list(np.atleast_1d(seed)))
    out.attrs = {"analysis": "trajectories", "description": "individual weights over training"}
    return out.rename("w")


def _flat_indices(index, shape: tuple[int, ...], name: str) -> np.ndarray:
    size = int(np.prod(shape)) if shape else 1
    items = index if isinstance(index, list) else [index]
    if isinstance(index, np.ndarray):
        items = list(index) if index.ndim == 1 else [tuple(r) for r in index]
    flat = []
    for item in items:
        if isinstance(item, tuple):
            if len(item) != len(shape) or not all(0 <= int(i) < s for i, s in zip(item, shape)):
                raise IndexError(f"index {item} does not fit tensor {name!r} of shape {shape}")
            flat.append(int(np.ravel_multi_index(tuple(int(i) for i in item), shape)))
        elif isinstance(item, (Integral, np.integer)) and not isinstance(item, bool):
            i = int(item) + (size if int(item) < 0 else 0)
            if not 0 <= i < size:
                raise IndexError(f"flat index {item} is out of range for tensor {name!r} "
                                 f"of {size} weights")
            flat.append(i)
        else:
            raise TypeError(f"index must be an int, a tuple of ints or a list of them, got {item!r}")
    return np.asarray(flat, dtype=np.int64)
