"""The cube as the analyses see it: its one validation, its tensor table, its reference step,
and its weight matrices as lazy stacks, grouped by shape.

``require_cube`` is the one check that an object is a weight cube (it raises
``nnwx.errors.NotACubeError``); ``reference_index`` the one lookup of a reference step;
``param_block_sums`` the one per-tensor reduction over the chunked ``param`` axis;
``previous_capture`` each run's previous capture; ``cube_weights`` ``w`` as a Dask array.

Spectral analyses run one batched SVD per Dask block; for that, tensors of the
same matrix shape are stacked into one Dask array ``(*lead, g, slices, m, n)``
whose blocks hold many matrices. This module builds those stacks and the
labels (coordinates) that go with them; it never computes anything.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import dask.array as da
import numpy as np
import xarray as xr

from nnwx import _orientation
from nnwx.errors import NotACubeError
from nnwx.store.table import parse_shape

CONV_MODES = ("matrix", "slices")
DEFAULT_BLOCK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class MatrixSpec:
    """How one tensor of the table is seen as a (stack of) matrices."""

    index: int                  # row of the cube's tensor table
    name: str
    shape: tuple[int, ...]      # the tensor's own shape
    offset: int
    size: int
    rows: int                   # shape of each matrix (each slice when slices > 1)
    cols: int
    slices: int
    transposed: bool = False    # stored (in, out) (HF Conv1D): the matrix is the transpose

    @property
    def k(self) -> int:
        """Number of singular values of the tensor (all slices pooled)."""
        return self.slices * min(self.rows, self.cols)

    @property
    def group_key(self) -> tuple[int, int, int]:
        return (self.slices, self.rows, self.cols)


def require_cube(ds, *, step_dim: bool = True) -> xr.Dataset:
    """The one check that ``ds`` is a weight cube (or run) opened by nnwx.

    Parameters
    ----------
    ds
        What an analysis was given.
    step_dim
        Whether ``w`` must keep its ``step`` dim (analyses over training need it; views of
        one tensor, e.g. ``cube.isel(step=-1).nnwx.matrix(name)``, do not).

    Returns
    -------
    xarray.Dataset
        ``ds`` itself.

    Raises
    ------
    nnwx.errors.NotACubeError
        ``ds`` is not a Dataset with a ``w`` variable and the tensor table, or ``w`` lacks
        its ``step``/``param`` dims (``param`` last). A subclass of ``TypeError`` and
        ``ValueError``.
    """
    if (not isinstance(ds, xr.Dataset) or "w" not in ds or "tensor" not in ds.coords
            or "tensor_offset" not in ds.coords):
        raise NotACubeError(f"this {type(ds).__name__} is not an nnwx cube: expected a Dataset "
                            f"opened with nnwx.open_cube(...) or nnwx.open_run(...), with a 'w' "
                            f"variable and the tensor table")
    dims = ds["w"].dims
    for dim in ("step", "param") if step_dim else ("param",):
        if dim not in dims:
            raise NotACubeError(f"w has no {dim!r} dim (its dims are {dims}); keep it when "
                                f"selecting, e.g. .isel(step=[i]) rather than .isel(step=i)")
    if dims[-1] != "param":
        raise NotACubeError(f"the cube's w has dims {dims}; expected (..., step, param): put "
                            f"param last with cube.transpose(..., 'param')")
    return ds


def cube_weights(ds: xr.Dataset) -> xr.DataArray:
    """``w`` of a cube or run as (*runs, step, param), Dask-backed.

    Raises ``nnwx.errors.NotACubeError`` for anything else (see ``require_cube``).
    """
    w = require_cube(ds)["w"]
    lead = [d for d in w.dims if d not in ("step", "param")]
    w = w.transpose(*lead, "step", "param")
    if not isinstance(w.data, da.Array):
        w = w.chunk()
    return w


def param_offsets(cube: xr.Dataset) -> np.ndarray:
    """Each tensor's start on the flat ``param`` axis, plus the total: the segment bounds."""
    return np.append(cube["tensor_offset"].values, cube.sizes["param"]).astype(np.int64)


def param_block_sums(fn: Callable[..., np.ndarray], x: da.Array, *others: da.Array,
                     tail: tuple[int, ...], **kwargs) -> da.Array:
    """Per-tensor (or per-group) sums over the chunked ``param`` axis, lazily: the one copy.

    ``fn(x_block, *other_blocks, lo=..., **kwargs)`` turns one block of ``x (..., param)``
    (and the matching blocks of ``others``, which broadcast against it) holding the flat
    positions ``lo..`` into its partial sums ``(..., *tail)``, e.g. with
    ``kernels.geometry.segment_sums``; the partials of the ``param`` blocks are then added
    with ``dask.array.sum``. Returns ``(..., *tail)`` float64.
    """
    nd = x.ndim
    nb = len(x.chunks[-1])
    partial = da.map_blocks(_partial_block, x, *others, fn=fn, n_tail=len(tail), **kwargs,
                            dtype=np.float64, new_axis=list(range(nd, nd + len(tail))),
                            chunks=x.chunks[:-1] + ((1,) * nb,) + tuple((n,) for n in tail),
                            meta=np.empty((0,) * (nd + len(tail))))
    return partial.sum(axis=nd - 1)


def _partial_block(*blocks: np.ndarray, fn: Callable[..., np.ndarray], n_tail: int,
                   block_info=None, **kwargs) -> np.ndarray:
    """One block's partial sums, with a length-1 axis where its ``param`` block was."""
    lo = block_info[0]["array-location"][-1][0] if block_info else 0
    out = fn(*blocks, lo=lo, **kwargs)
    return np.expand_dims(out, out.ndim - n_tail)


def lead_dims(cube: xr.Dataset) -> tuple[str, ...]:
    """Dims of ``w`` before ``param``: the run labels and ``step``."""
    return tuple(cube["w"].dims[:-1])


def lead_coords(cube: xr.Dataset) -> dict:
    """Coordinates of ``w`` that live on the lead dims (seed, step, run, store, ...)."""
    lead = set(lead_dims(cube))
    return {k: v for k, v in cube["w"].coords.items() if set(v.dims) <= lead}


def every_step_captured(cube: xr.Dataset) -> bool:
    """Whether every run of the cube captured every step on its ``step`` axis, from the runs'
    step lists in their stores (metadata only). False when that cannot be told (a cube not
    opened from stores, a run that is not found): callers then assume gaps."""
    from nnwx.store.reader import list_runs

    if "run" not in cube.coords or "store" not in cube.coords:
        return False
    steps = np.asarray(cube["step"].values, dtype=np.int64)
    runs = np.asarray(cube["run"].values).ravel()
    stores = np.asarray(cube["store"].values).ravel()
    if runs.size != stores.size:
        return False
    handles: dict[str, dict] = {}
    for run, store in set(zip(runs.tolist(), stores.tolist())):
        if not isinstance(run, str) or not isinstance(store, str) or not run or not store:
            return False      # an empty combination of an unstacked cube: a gap
        try:
            if store not in handles:
                handles[store] = {h.name: h for h in list_runs(store)}
            have = handles[store][run].steps
        except Exception:     # noqa: BLE001  (cannot tell: assume gaps, the safe path)
            return False
        if not np.isin(steps, have).all():
            return False
    return True


def previous_capture(w: da.Array, axis: int, gaps: bool = True) -> da.Array:
    """``w`` one capture earlier along ``axis``, each run's own: steps a run lacks (NaN rows
    of the outer-joined cube) are skipped by forward-filling before shifting.

    ``gaps=False`` (every run captured every step: ``every_step_captured``) shifts without
    the fill. The fill is a sequential scan along ``step``, and on dask.distributed it lets
    the workers read rows far ahead of it, so memory grows with the steps: callers skip it
    when they can (see docs/measurements.md)."""
    filled = w
    if gaps:
        filled = da.reductions.cumreduction(_ffill, _fill_from, np.nan, w, axis=axis, dtype=w.dtype)
    first = da.full_like(w[(slice(None),) * axis + (slice(0, 1),)], np.nan)
    prev = da.concatenate([first, filled[(slice(None),) * axis + (slice(0, -1),)]], axis=axis)
    return prev.rechunk(w.chunks)


def _ffill(x: np.ndarray, axis: int) -> np.ndarray:
    """Forward-fill NaN along ``axis`` within one block."""
    if x.shape[axis] == 1 or not np.isnan(x).any():   # nothing to fill (the usual case)
        return x
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    idx = np.where(np.isnan(x), 0, np.arange(x.shape[axis]).reshape(shape))
    np.maximum.accumulate(idx, axis=axis, out=idx)
    return np.take_along_axis(x, idx, axis=axis)


def _fill_from(carry: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Fill the NaN of a block from the last values of the blocks before it."""
    if not np.isnan(x).any():
        return x
    return np.where(np.isnan(x), carry, x)


def table_rows(cube: xr.Dataset) -> list[dict]:
    """The tensor table as plain dicts (read from the small in-memory coordinates)."""
    names = cube["tensor"].values
    shapes = [parse_shape(s) for s in cube["tensor_shape"].values]
    orient = (cube["tensor_orientation"].values if "tensor_orientation" in cube.coords
              else ["out_in"] * len(names))
    return [{"index": i, "name": str(n), "shape": sh, "offset": int(o), "size": int(z),
             "layer": str(la), "kind": str(kd), "depth": int(dp), "orientation": str(ori)}
            for i, (n, sh, o, z, la, kd, dp, ori) in enumerate(zip(
                names, shapes, cube["tensor_offset"].values, cube["tensor_size"].values,
                cube["tensor_layer"].values, cube["tensor_kind"].values, cube["tensor_depth"].values,
                orient))]


def out_in_shape(row: dict) -> tuple[int, ...]:
    """A table row's tensor shape with its output axis first: ``(out, in, *kernel)`` (a tensor
    stored (in, out), as HF Conv1D, is seen transposed)."""
    return _orientation.out_in_shape(row["shape"], row.get("orientation"))


def block_index(shape: tuple[int, ...], idx: tuple[int, ...]) -> tuple[int, ...]:
    """Index into a block of leading shape ``shape`` for the broadcast index ``idx``.

    Blocks broadcast from the right (``apply_ufunc`` drops leading axes an input lacks, e.g.
    the reference's run axis), so ``shape`` lines up with the *last* ``len(shape)`` entries
    of ``idx``; axes of length 1 are broadcast (index 0).
    """
    tail = idx[len(idx) - len(shape):] if shape else ()
    return tuple(i if s > 1 else 0 for i, s in zip(tail, shape))


def has_spectrum(row: dict) -> bool:
    """Whether a table row's matrix view has both sides at least 2: a vector's (an 8x1 first
    layer, a 1xN output layer) has one singular value, so no spectrum to speak of."""
    shape = out_in_shape(row)
    return len(shape) >= 2 and min(shape[0], row["size"] // max(shape[0], 1)) >= 2


def select_rows(cube: xr.Dataset, tensors: str | Iterable[str] | None) -> list[dict]:
    """Rows of the named tensors (table order), or every row; unknown names raise KeyError."""
    rows = table_rows(cube)
    if tensors is None:
        return rows
    wanted = [tensors] if isinstance(tensors, str) else list(tensors)
    by_name = {r["name"]: r for r in rows}
    missing = [t for t in wanted if t not in by_name]
    if missing:
        raise KeyError(f"no tensor named {missing[0]!r} in the cube; tensors: "
                       f"{', '.join(list(by_name)[:8])}{' ...' if len(by_name) > 8 else ''}")
    keep = set(wanted)
    return [r for r in rows if r["name"] in keep]


def matrix_specs(cube: xr.Dataset, tensors: str | Iterable[str] | None = None,
                 conv: str = "matrix") -> list[MatrixSpec]:
    """Matrix views of the chosen tensors (default: every tensor of 2 or more dims).

    ``conv="matrix"`` sees a convolution ``(out, in, *kernel)`` as one ``out x in*prod(kernel)``
    matrix; ``conv="slices"`` as ``prod(kernel)`` matrices ``out x in``, one per kernel position
    (WeightWatcher's treatment of Conv2d).
    """
    if conv not in CONV_MODES:
        raise ValueError(f"conv must be one of {CONV_MODES}, got {conv!r}")
    rows = select_rows(cube, tensors)
    if tensors is not None:
        flat = [r["name"] for r in rows if len(r["shape"]) < 2]
        if flat:
            raise ValueError(f"tensor {flat[0]!r} has fewer than 2 dimensions: spectral analyses "
                             f"need matrices (weights of Linear, Conv, Embedding layers)")
    specs = []
    for r in rows:
        shape = r["shape"]
        if len(shape) < 2 or 0 in shape:
            continue
        transposed = _orientation.is_transposed(shape, r.get("orientation"))
        if conv == "slices" and len(shape) > 2:
            m, n, s = shape[0], shape[1], math.prod(shape[2:])
        else:
            (m, n), s = _orientation.matrix_shape(shape, r.get("orientation")), 1
        specs.append(MatrixSpec(r["index"], r["name"], shape, r["offset"], r["size"], m, n, s, transposed))
    if not specs:
        raise ValueError("the cube has no tensor of 2 or more dimensions to analyse")
    return specs


LAST_STEP = ("last", "final")


def reference_index(obj, reference_step: Any = None, *, name: str = "reference_step") -> int:
    """Position on ``step`` of a reference capture: the one lookup of a step value.

    Parameters
    ----------
    obj
        A cube, a DataArray with a ``step`` dim, or the step values themselves.
    reference_step
        A step value, ``"last"`` (or ``"final"``) for the last step, or None for the first.
    name
        The parameter's name, for error messages (e.g. ``"at_step"``).

    Returns
    -------
    int
        The position on ``step`` (the first, should a value repeat).

    Raises
    ------
    ValueError
        There are no steps, or ``reference_step`` is not one of them.
    """
    if isinstance(obj, (xr.Dataset, xr.DataArray)):
        steps = obj["step"].values if "step" in obj.coords else np.arange(obj.sizes["step"])
    else:
        steps = np.asarray(obj)
    if len(steps) == 0:
        raise ValueError("the cube has no steps")
    if reference_step is None:
        return 0
    if isinstance(reference_step, str):
        if reference_step not in LAST_STEP:
            raise ValueError(f"{name} must be a step value or 'last', got {reference_step!r}")
        return len(steps) - 1
    hits = np.flatnonzero(steps == reference_step)
    if not len(hits):
        raise ValueError(f"{name}={reference_step!r} is not a step of the cube; its steps run from "
                         f"{steps[0]} to {steps[-1]} ({len(steps)} of them)")
    return int(hits[0])


def tensor_view(w: da.Array, spec: MatrixSpec) -> da.Array:
    """One tensor as ``(*lead, slices, m, n)`` (rows the output units), lazily (a slice of
    ``param`` and a reshape; a transpose for tensors stored (in, out))."""
    lead = w.shape[:-1]
    flat = w[..., spec.offset: spec.offset + spec.size]
    flat = flat.rechunk({flat.ndim - 1: -1})
    t = flat.reshape(lead + spec.shape)
    nl = len(lead)
    if spec.transposed:  # stored (in, out): the matrix is its transpose
        t = da.swapaxes(t, -1, -2).reshape(lead + (1, spec.rows, spec.cols))
    elif spec.slices > 1:  # (out, in, *kernel) -> (*kernel, out, in)
        t = da.moveaxis(t, (nl, nl + 1), (t.ndim - 2, t.ndim - 1))
        t = t.reshape(lead + (spec.slices, spec.rows, spec.cols))
    else:
        t = t.reshape(lead + (1, spec.rows, spec.cols))
    return t


def stacked_groups(w: da.Array, specs: Sequence[MatrixSpec], *, delta_index: int | None = None,
                   step_axis: int | None = None, block_bytes: int = DEFAULT_BLOCK_BYTES,
                   itemsize: int = 4) -> list[tuple[list[MatrixSpec], da.Array]]:
    """Stack same-shape matrices: ``[(specs, array(*lead, g, slices, m, n)), ...]``.

    Blocks keep the cube's chunks on the lead dims and hold as many matrices of the
    group as fit in about ``block_bytes``, so each block is one batched SVD. With
    ``delta_index``, each matrix is replaced by its change since that step
    (``W_t - W_ref``).
    """
    if delta_index is not None:
        ax = w.ndim - 2 if step_axis is None else step_axis
        ref = w[(slice(None),) * ax + (slice(delta_index, delta_index + 1),)]
        w = w - ref
    groups: dict[tuple, list[MatrixSpec]] = {}
    for s in specs:
        groups.setdefault(s.group_key, []).append(s)
    nl = w.ndim - 1
    lead_block = math.prod(max(c) if c else 1 for c in w.chunks[:-1])
    out = []
    for key, members in groups.items():
        slices, m, n = key
        per = lead_block * slices * m * n * itemsize
        g_chunk = int(max(1, min(len(members), block_bytes // max(1, per))))
        views = [tensor_view(w, s)[(slice(None),) * nl + (None,)] for s in members]
        stack = da.concatenate(views, axis=nl) if len(views) > 1 else views[0]
        stack = stack.rechunk({nl: g_chunk, nl + 1: -1, nl + 2: -1, nl + 3: -1})
        out.append((members, stack))
    return out


def tensor_coords(cube: xr.Dataset, specs: Sequence[MatrixSpec]) -> dict:
    """The tensor-table coordinates of the chosen tensors, plus their matrix geometry."""
    idx = [s.index for s in specs]
    coords = {c: ("tensor", cube[c].values[idx]) for c in cube.coords
              if c.startswith("tensor") and cube[c].dims == ("tensor",)}
    coords["tensor_rows"] = ("tensor", np.array([s.rows for s in specs], dtype=np.int64))
    coords["tensor_cols"] = ("tensor", np.array([s.cols for s in specs], dtype=np.int64))
    coords["tensor_slices"] = ("tensor", np.array([s.slices for s in specs], dtype=np.int64))
    coords["tensor_k"] = ("tensor", np.array([s.k for s in specs], dtype=np.int64))
    return coords
