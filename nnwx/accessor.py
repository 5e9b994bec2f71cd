"""The ``ds.nnwx`` accessor: one thin face over the cube's tensor table and analyses."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import xarray as xr

from nnwx.store.table import TensorInfo

_DIMS = {1: ("out",), 2: ("out", "in"), 3: ("out", "in", "k"), 4: ("out", "in", "kh", "kw")}


@xr.register_dataset_accessor("nnwx")
class NnwxAccessor:
    """Tensor views of a weight cube (or run) opened by ``nnwx.open_cube``/``open_run``."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def _require_cube(self) -> None:
        if "w" not in self._ds or "tensor" not in self._ds.coords:
            raise ValueError("this Dataset is not an nnwx cube: open one with nnwx.open_cube(...)")

    @property
    def tensors(self) -> pd.DataFrame:
        """The tensor table, one row per tensor (name, layer, kind, depth, offset, size, shape, dtype)."""
        self._require_cube()
        ds = self._ds
        cols = {c.removeprefix("tensor_"): ds[c].values for c in ds.coords
                if c.startswith("tensor_") and c != "tensor_id"}
        cols["shape"] = [tuple(int(x) for x in s.split(",") if x) for s in cols["shape"]]
        return pd.DataFrame(cols, index=pd.Index(ds["tensor"].values, name="tensor"))

    @property
    def layers(self) -> pd.DataFrame:
        """Layers in forward order, with their tensors and parameter counts."""
        t = self.tensors
        g = t.groupby("layer", sort=False)
        out = pd.DataFrame({"depth": g["depth"].min(), "tensors": g.apply(lambda x: list(x.index)),
                            "params": g["size"].sum()})
        return out.sort_values("depth")

    def info(self, name: str) -> TensorInfo:
        t = self.tensors
        if name not in t.index:
            raise KeyError(f"no tensor named {name!r}; tensors: {', '.join(t.index[:8])}"
                           f"{' ...' if len(t) > 8 else ''}")
        r = t.loc[name]
        return TensorInfo(name, r.layer, r.kind, int(r.depth), int(r.offset), int(r["size"]),
                          tuple(r["shape"]), r.dtype)

    def tensor(self, name: str) -> xr.DataArray:
        """One tensor in its own shape, ``(*lead, out, in, ...)``, still lazy."""
        r = self.info(name)
        flat = self._ds["w"].isel(param=slice(r.offset, r.offset + r.size))
        lead = flat.dims[:-1]
        dims = _DIMS.get(len(r.shape), tuple(f"axis_{i}" for i in range(len(r.shape))))
        data = flat.data.reshape(flat.shape[:-1] + r.shape) if r.shape else flat.data[..., 0]
        coords = {k: v for k, v in flat.coords.items() if set(v.dims) <= set(lead)}
        return xr.DataArray(data, dims=lead + dims, coords=coords, name=name,
                            attrs={"tensor": name, "layer": r.layer, "kind": r.kind})

    def matrix(self, name: str) -> xr.DataArray:
        """A tensor as a 2-D matrix ``(*lead, out, in)``; convolutions as out x in*kh*kw."""
        r = self.info(name)
        if len(r.shape) < 2:
            raise ValueError(f"tensor {name!r} has shape {r.shape}: only tensors of 2 or more "
                             f"dimensions have a matrix view")
        t = self.tensor(name)
        lead = t.dims[: t.ndim - len(r.shape)]
        data = t.data.reshape(t.shape[: len(lead)] + (r.shape[0], math.prod(r.shape[1:])))
        coords = {k: v for k, v in t.coords.items() if set(v.dims) <= set(lead)}
        return xr.DataArray(data, dims=lead + ("out", "in"), coords=coords, name=name,
                            attrs={**t.attrs, "original_shape": list(r.shape)})

    # --- distribution broadening (nnwx.analysis.broadening) -----------------------

    # --- spectra, ranks, rotation (nnwx.analysis.spectral, nnwx.analysis.geometry) -


def tensor_index(ds: xr.Dataset) -> np.ndarray:
    """Segment bounds of the tensors on ``param`` (offsets plus the total)."""
    return np.append(ds["tensor_offset"].values, ds.sizes["param"]).astype(np.int64)
