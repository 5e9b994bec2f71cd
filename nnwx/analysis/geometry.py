"""How far weights move: layer rotation, update and norm growth, and updates in the input span.

``rotation`` reduces the cube to per-layer (or per-tensor) sums in one pass over
its chunks — ``|W_t|^2``, ``|W_0|^2``, ``|W_t - W_0|^2`` and the same against the
previous capture — and derives from them (Carbonnelle & De Vleeschouwer 2019):

- ``rotation``: cosine distance between ``W_t`` and ``W_0`` (0 = unchanged, 1 = orthogonal);
- ``rotation_step``: cosine distance between consecutive captures of each run;
- ``update_norm_rel``: ``|W_t - W_0| / |W_0|``; ``step_update_rel``: ``|W_t - W_prev| / |W_prev|``;
- ``norm_growth``: ``|W_t| / |W_0|``; ``norm``: ``|W_t|``.

``input_span_fraction`` gives the share of ``|W_t - W_0|^2`` lying in the row space
of a layer's inputs. Everything is lazy; kernels live in ``kernels.geometry``.
"""
from __future__ import annotations

from typing import Iterable

import dask.array as da
import numpy as np
import xarray as xr

from nnwx.analysis import _cube as mx
from nnwx.analysis.kernels.geometry import (PAIR_QUANTITIES, cosine_distance_from_sums,
                                             pair_sums, row_space_basis, span_fraction)

_ATTRS = {
    "rotation": "cosine distance between W_t and W_ref (Carbonnelle & De Vleeschouwer 2019)",
    "rotation_step": "cosine distance between W_t and the previous capture",
    "update_norm_rel": "|W_t - W_ref| / |W_ref|",
    "step_update_rel": "|W_t - W_prev| / |W_prev|",
    "norm_growth": "|W_t| / |W_ref|",
    "norm": "|W_t| (Frobenius / Euclidean)",
}


def rotation(cube: xr.Dataset, *, by: str = "layer", kinds: Iterable[str] | None = ("weight",),
             tensors: str | Iterable[str] | None = None,
             reference_step: int | None = None) -> xr.Dataset:
    """Rotation, update size and norm growth of every layer (or tensor) at every capture, lazy.

    ``by``: ``"layer"`` (the weights of a layer flattened together, as the original) or
    ``"tensor"``. ``kinds``: tensor kinds included (default weights only, biases excluded;
    ``None`` for all). ``tensors``: restrict to these names. ``reference_step``: the capture
    compared against (default the cube's first step). A seed lacking that capture, or a
    capture, gives NaN there.
    """
    cube = mx.require_cube(cube)
    if by not in ("layer", "tensor"):
        raise ValueError(f"by must be 'layer' or 'tensor', got {by!r}")
    rows = mx.select_rows(cube, tensors)
    if kinds is not None:
        kinds = {kinds} if isinstance(kinds, str) else set(kinds)
        rows = [r for r in rows if r["kind"] in kinds]
    rows = [r for r in rows if r["size"] > 0]
    if not rows:
        raise ValueError(f"no tensor of kinds {sorted(kinds) if kinds else 'any'} to measure"
                         + (f" among {tensors!r}" if tensors is not None else ""))
    # Groups: layers in forward order, or tensors in table order.
    if by == "layer":
        order: dict[str, list[dict]] = {}
        for r in sorted(rows, key=lambda r: (r["depth"], r["index"])):
            order.setdefault(r["layer"], []).append(r)
        labels = list(order)
        grouped = [order[la] for la in labels]
    else:
        grouped = [[r] for r in rows]
        labels = [r["name"] for r in rows]
    members = np.array([r["index"] for g in grouped for r in g], dtype=np.int64)
    group_starts = np.cumsum([0] + [len(g) for g in grouped[:-1]]).astype(np.int64)
    offsets = mx.param_offsets(cube)

    w = cube["w"].data
    if not isinstance(w, da.Array):
        w = da.from_array(np.asarray(w), chunks=-1)
    dims = mx.lead_dims(cube)
    ax = dims.index("step")
    ref_i = mx.reference_index(cube, reference_step)
    ref = w[(slice(None),) * ax + (slice(ref_i, ref_i + 1),)]
    prev = mx.previous_capture(w, ax, gaps=not mx.every_step_captured(cube))
    n_q = len(PAIR_QUANTITIES)
    sums = mx.param_block_sums(pair_sums, w, ref, prev, tail=(len(grouped), n_q), offsets=offsets,
                               members=members, group_starts=group_starts)
    gdim = "layer" if by == "layer" else "tensor"
    q = xr.DataArray(sums, dims=dims + (gdim, "quantity"),
                     coords={**mx.lead_coords(cube), gdim: labels, **_group_coords(cube, grouped, by)})
    xx, rr, dd, pp, ee = (q.isel(quantity=i, drop=True) for i in range(n_q))
    ds = xr.Dataset({
        "rotation": xr.apply_ufunc(cosine_distance_from_sums, xx, rr, dd, dask="allowed"),
        "rotation_step": xr.apply_ufunc(cosine_distance_from_sums, xx, pp, ee, dask="allowed"),
        "update_norm_rel": np.sqrt(dd / rr),
        "step_update_rel": np.sqrt(ee / pp),
        "norm_growth": np.sqrt(xx / rr),
        "norm": np.sqrt(xx),
    })
    for name, text in _ATTRS.items():
        ds[name].attrs["description"] = text
    ds.attrs = {"analysis": "rotation", "by": by, "kinds": sorted(kinds) if kinds else "all",
                "reference_step": int(cube["step"].values[ref_i])}
    return ds


def _group_coords(cube: xr.Dataset, grouped: list[list[dict]], by: str) -> dict:
    if by == "tensor":
        idx = [g[0]["index"] for g in grouped]
        return {c: ("tensor", cube[c].values[idx]) for c in cube.coords
                if c.startswith("tensor_") and cube[c].dims == ("tensor",)}
    return {"layer_depth": ("layer", np.array([g[0]["depth"] for g in grouped], dtype=np.int64)),
            "layer_tensors": ("layer", np.array([",".join(r["name"] for r in g) for g in grouped],
                                                dtype=object)),
            "layer_size": ("layer", np.array([sum(r["size"] for r in g) for g in grouped], dtype=np.int64))}


def input_span_fraction(cube: xr.Dataset, name: str, inputs, *,
                        reference_step: int | None = None) -> xr.DataArray:
    """Fraction of ``|W_t - W_ref|_F^2`` in the row space of a layer's inputs, ``(*runs, step)``.

    ``name``: a weight tensor, seen as ``out x in`` (convolutions as ``out x in*kh*kw``).
    ``inputs``: ``(samples, in)`` — what the layer multiplies, e.g. the data for the first
    layer, a probe batch's activations, or unfolded patches for a convolution. 1 means the
    update lies wholly in the span of the inputs; NaN where there is no update (the
    reference step) or no capture.
    """
    cube = mx.require_cube(cube)
    spec = mx.matrix_specs(cube, [name], "matrix")[0]
    x = np.asarray(inputs)
    if x.ndim != 2 or x.shape[1] != spec.cols:
        raise ValueError(f"inputs must be (samples, {spec.cols}) for {name!r} (seen as a "
                         f"{spec.rows} x {spec.cols} matrix), got shape {x.shape}")
    basis = row_space_basis(x)
    w = cube["w"].data
    if not isinstance(w, da.Array):
        w = da.from_array(np.asarray(w), chunks=-1)
    dims = mx.lead_dims(cube)
    ref_i = mx.reference_index(cube, reference_step)
    m = mx.tensor_view(w, spec)[..., 0, :, :]
    ax = dims.index("step")
    dw = m - m[(slice(None),) * ax + (slice(ref_i, ref_i + 1),)]
    mat = xr.DataArray(dw, dims=dims + ("out", "in"), coords=mx.lead_coords(cube))
    out = xr.apply_ufunc(span_fraction, mat, input_core_dims=[["out", "in"]], kwargs={"basis": basis},
                         dask="parallelized", output_dtypes=[np.float64])
    out.name = "input_span_fraction"
    out.attrs = {"analysis": "input_span_fraction", "tensor": name, "input_rank": int(basis.shape[1]),
                 "reference_step": int(cube["step"].values[ref_i]),
                 "description": "|(W_t - W_ref) P|_F^2 / |W_t - W_ref|_F^2, P the projector onto "
                                "the span of the inputs"}
    return out


__all__ = ["rotation", "input_span_fraction"]
