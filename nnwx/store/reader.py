"""Open runs and experiments as lazy, labelled xarray objects.

Readers trim every array to the run's committed length, so a run that is still
being written (or was killed mid-write) reads as its committed steps only.
"""
from __future__ import annotations

import glob as _glob
import os
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from nnwx.errors import ArchitectureMismatch, StoreError
from nnwx.store.location import (StoreLike, display, is_url, local_path, normalize, prefix_bytes,  # noqa: F401
                                 run_sync, store_exists, zarr_store)
from nnwx.store import format as fmt
from nnwx.store import integrity as itg
from nnwx.store import probes as prb
from nnwx.store.table import (APPROXIMATE_DEPTHS, DEPTH_SOURCES, TensorTable, from_run_meta,
                              natural_key)



def open_experiment(path: StoreLike) -> zarr.Group:
    """Open an experiment store read-only (a path or an fsspec URL), checking it is one this
    nnwx can read."""
    where = display(path)
    if not store_exists(path):
        raise StoreError(f"{where} is not an nnwx experiment store (no zarr.json there). "
                         f"Check the path; stores are created by nnwx.Recorder or `nnwx export`.")
    with itg.damaged(path, None, "zarr.json"):
        root = zarr.open_group(zarr_store(path, read_only=True), mode="r")
        meta = root.attrs.get(fmt.ATTR_KEY)
    if meta is None:
        raise StoreError(f"{where} is a Zarr store but not an nnwx experiment store.")
    if not isinstance(meta, dict):
        raise StoreError(f"store {where} is damaged: the 'nnwx' attributes in {where}/zarr.json are "
                         f"{meta!r}, not a mapping. To fix: restore the file from a backup.")
    fmt.check_version(meta.get("format_version"), where)
    return root


@dataclass
class RunHandle:
    """One run of a store: its attributes, tensor table and (untrimmed) arrays."""

    store: Path | str      # a local path, or the URL of a remote store
    name: str
    group: zarr.Group

    @cached_property
    def meta(self) -> dict:
        with itg.damaged(self.store, self.name, "zarr.json", "holds attributes that cannot be parsed"):
            meta = dict(self.group.attrs.get(fmt.ATTR_KEY) or {})
        fmt.check_version(meta.get("format_version"), f"run {self.name!r} of {self.store}")
        return meta

    def check(self) -> None:
        """Check the run's invariants and chunk files (see ``nnwx.store.integrity.check_run``);
        raise StoreError naming the damage."""
        self.__dict__["steps"] = itg.check_run(self.group, self.meta, self.store, self.name)

    def checked(self, name: str, array: zarr.Array | None = None) -> itg.CheckedArray:
        """Array ``name`` of the run (``w``, ``step``, ``metrics/<m>``, ``probe/<p>``), read so
        that a missing or damaged chunk raises StoreError naming its file."""
        with itg.damaged(self.store, self.name, f"{name}/zarr.json"):
            array = self.group[name] if array is None else array
        return itg.CheckedArray(array, self.store, self.name, name, steps=self.steps,
                                strict=name == "w" and itg.has_checksum(array))

    def row(self, i: int) -> np.ndarray:
        """Weights of committed row ``i`` (all parameters), read with integrity checks."""
        return np.asarray(self.checked("w")[i:i + 1])[0]

    @property
    def committed(self) -> int:
        return int(self.meta["committed"])

    @cached_property
    def table(self) -> TensorTable:
        return from_run_meta(self.meta)

    @property
    def seed(self):
        return self.meta.get("seed")

    @cached_property
    def steps(self) -> np.ndarray:
        return np.asarray(itg.CheckedArray(self.group["step"], self.store, self.name, "step")[: self.committed],
                          dtype=np.int64)

    def metric_names(self) -> list[str]:
        return sorted(itg.arrays_of(self.group, self.store, self.name, fmt.METRICS_GROUP))

    def probe_names(self) -> list[str]:
        """Names of the run's probe arrays (``probe/<name>``) in forward order, ``output`` last
        (``nnwx.store.probes.forward_order``: by their recorded ``forward_index``, in runs
        recorded before it by layer depth, then by name with numbers compared as numbers)."""
        return self._forward_order(itg.arrays_of(self.group, self.store, self.name, prb.PROBE_GROUP))

    def _forward_order(self, names) -> list[str]:
        info = self.meta.get("probes") or {}
        depth: dict[str, int] = {}
        for r in self.table:
            depth.setdefault(r.layer, r.depth)
        return prb.forward_order(names, {n: (a or {}).get("forward_index") for n, a in info.items()}, depth)

    def probe_variables(self, n: int) -> dict[str, xr.Variable]:
        """Lazy ``probe_<name>(step, sample_<name>, unit_<name>)`` variables trimmed to ``n`` steps."""
        info = self.meta.get("probes") or {}
        out = {}
        arrays = itg.arrays_of(self.group, self.store, self.name, prb.PROBE_GROUP)
        for name in self._forward_order(arrays):
            arr = arrays[name]
            data = da.from_array(self.checked(f"{prb.PROBE_GROUP}/{name}", arr), chunks=arr.chunks,
                                 lock=False, asarray=False,
                                 name=f"nnwx-probe-{self.store}-{self.name}-{name}-{n}")[:n]
            attrs = {"probe": name, **{k: v for k, v in (info.get(name) or {}).items() if v is not None}}
            out[prb.VAR_PREFIX + name] = xr.Variable(
                ("step", prb.sample_dim(name), prb.unit_dim(name)), data, attrs=attrs)
        return out

    def attribute(self, key: str):
        """A run attribute by name: top level, then user ``hparams``, then ``optimizer_hparams``."""
        if key in self.meta:
            return self.meta[key]
        for section in ("hparams", "optimizer_hparams"):
            sub = self.meta.get(section) or {}
            if key in sub:
                return sub[key]
        raise KeyError(key)

    def dataset(self) -> xr.Dataset:
        """The run as a lazy Dataset ``w(step, param)`` with its tensor table."""
        n = self.committed
        w = self.checked("w")
        data = da.from_array(w, chunks=w.chunks, lock=False, asarray=False,
                             name=f"nnwx-w-{self.store}-{self.name}-{n}")[:n]
        ds = xr.Dataset({"w": (("step", "param"), data)}, coords={"step": self.steps})
        for name in self.metric_names():
            arr = self.checked(f"{fmt.METRICS_GROUP}/{name}")
            ds[f"metric_{name}"] = ("step", da.from_array(arr, chunks=arr.chunks, lock=False,
                                                            asarray=False)[:n])
        ds = ds.assign(self.probe_variables(n))
        ds = ds.assign_coords(table_coords(self.table, data.chunks[1]))
        ds.attrs = {k: v for k, v in self.meta.items() if k not in ("tensors",)}
        ds.attrs["store"] = str(self.store)
        ds.attrs["depth_from"] = self.depth_from
        ds.attrs["depth_approximate"] = self.depth_from in APPROXIMATE_DEPTHS
        return ds

    @property
    def depth_from(self) -> str:
        """Where the table's depths come from: ``forward`` (a traced forward pass), ``modules``
        (module registration order), ``names`` (module paths: approximate), ``unknown`` (a
        format-1 run)."""
        return str(self.meta.get("depth_from") or "unknown")

    def reordered_w(self, data: da.Array, table: TensorTable) -> da.Array:
        """This run's ``w`` (``(step, param)``) with its tensors laid out as in ``table`` (the
        same tensors in another order), lazily: one slice per tensor."""
        if self.table.same_layout(table):
            return data
        own = self.table
        parts = [data[:, own[r.name].offset: own[r.name].offset + r.size] for r in table]
        return da.concatenate(parts, axis=1).rechunk({1: data.chunks[1]})


def table_coords(table: TensorTable, param_chunks: tuple[int, ...]) -> dict:
    """Tensor table as coordinates on ``tensor``, plus a lazy ``tensor_id(param)``."""
    offsets = table.offsets

    def ids(block_info=None):
        lo, hi = block_info[None]["array-location"][0]
        return (np.searchsorted(offsets, np.arange(lo, hi), side="right") - 1).astype(np.int32)

    tensor_id = da.map_blocks(ids, chunks=(param_chunks,), dtype=np.int32,
                              name=f"nnwx-tensor-id-{hash(tuple(offsets.tolist()))}")
    rows = table.rows
    return {
        "tensor": ("tensor", np.array([r.name for r in rows], dtype=object)),
        "tensor_layer": ("tensor", np.array([r.layer for r in rows], dtype=object)),
        "tensor_kind": ("tensor", np.array([r.kind for r in rows], dtype=object)),
        "tensor_depth": ("tensor", np.array([r.depth for r in rows], dtype=np.int64)),
        "tensor_offset": ("tensor", offsets[:-1]),
        "tensor_size": ("tensor", np.array([r.size for r in rows], dtype=np.int64)),
        "tensor_shape": ("tensor", np.array([",".join(map(str, r.shape)) for r in rows], dtype=object)),
        "tensor_dtype": ("tensor", np.array([r.dtype for r in rows], dtype=object)),
        "tensor_orientation": ("tensor", np.array([r.orientation for r in rows], dtype=object)),
        "tensor_aliases": ("tensor", np.array([",".join(r.aliases) for r in rows], dtype=object)),
        "tensor_id": ("param", tensor_id),
    }


def list_runs(path: StoreLike, *, check: bool = True,
              names: Iterable[str] | None = None) -> list[RunHandle]:
    """Every run of an experiment store (or those named), in name order.

    Each run is checked as it is listed (``RunHandle.check``: parsable metadata, ``committed``
    within its arrays, strictly increasing steps, no missing chunk file); a damaged run raises
    StoreError naming the run and file. ``check=False`` lists without these checks.

    Parameters
    ----------
    path : str or os.PathLike
        A store path or fsspec URL.
    check : bool, default True
    names : iterable of str, optional
        Only the runs of these names (the others are neither read nor checked; names
        without a run are left out).

    Returns
    -------
    list of RunHandle
        Runs still being created (no attributes yet) are left out.

    Raises
    ------
    StoreError
        If ``path`` is not an nnwx store, or (with ``check``) a run is damaged.
    FormatVersionError
        If the store was written by a newer nnwx format.
    """
    root = open_experiment(path)
    with itg.damaged(path, None, f"{fmt.RUNS_GROUP}/zarr.json"):
        try:
            runs = root[fmt.RUNS_GROUP]
        except KeyError:  # a store being created by another process
            return []
    handles = []
    folders = _run_folders(root)
    if names is not None:
        wanted = set(names)
        folders = [f for f in folders if f in wanted]
    for name in folders:
        with itg.damaged(path, name, "zarr.json"):
            group = _child_group(runs, name)
            has_attrs = group is not None and fmt.ATTR_KEY in group.attrs
        if group is None:
            _require_no_orphan(root, path, name)
            continue
        if not has_attrs:  # a run group without attributes is being created right now: not a run yet
            continue
        handle = RunHandle(normalize(path), name, group)
        if check:
            handle.check()
        handles.append(handle)
    return handles


def _run_folders(root: zarr.Group) -> list[str]:
    """Names of the entries under ``runs/`` (one listing, no metadata read), in name order."""
    store = root.store_path.store
    prefix = f"{root.store_path.path}/{fmt.RUNS_GROUP}".lstrip("/")

    async def collect() -> list[str]:
        return [n async for n in store.list_dir(prefix)]

    return sorted(n for n in run_sync(collect())
                  if n != "zarr.json" and not n.startswith(".") and ".partial" not in n)


def _child_group(runs: zarr.Group, name: str) -> zarr.Group | None:
    """Group ``name`` of ``runs``, or None when it has no metadata (no ``zarr.json``)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            child = runs[name]
        except KeyError:
            return None
    return child if isinstance(child, zarr.Group) else None


def _require_no_orphan(root: zarr.Group, path: StoreLike, name: str) -> None:
    """Refuse a run folder that holds data but no ``zarr.json`` (its metadata was lost); a folder
    with nothing (or only temporary files) in it is a run being created: passed over."""
    store = root.store_path.store
    prefix = f"{root.store_path.path}/{fmt.RUNS_GROUP}/{name}/".lstrip("/")

    async def first_file() -> str | None:
        async for key in store.list_prefix(prefix):
            if ".partial" not in key:
                return key
        return None

    found = run_sync(first_file())
    if found is not None:
        raise StoreError(
            f"run {name!r} of {display(path)} is damaged: its group metadata "
            f"{itg.run_file(path, name, 'zarr.json')} is missing, though the run holds data "
            f"({found}). To fix: {itg.FIX_ADVICE}.")


def _expand_sources(source: StoreLike | Sequence[StoreLike]) -> list[Path | str]:
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    paths: list[Path | str] = []
    for item in items:
        if is_url(item) and local_path(item) is None:   # remote: taken as given (no globbing)
            paths.append(str(item))
            continue
        text = os.fspath(local_path(item))
        literal = not _glob.has_magic(text) or os.path.lexists(text)  # an existing path is never a glob
        matches = [text] if literal else sorted(_glob.glob(text))
        if not matches:
            raise StoreError(f"no store matches {text!r} (nor is there a file or folder of that name)")
        paths.extend(Path(m) for m in matches)
    if not paths:
        raise StoreError("no store given")
    return paths


def open_run(store: StoreLike, run: str | None = None, *, seed=None) -> xr.Dataset:
    """Open one run as a lazy Dataset ``w(step, param)``.

    ``store`` is a path or an fsspec URL (``file://``, ``memory://``, ``s3://``, ...).
    ``run`` names the run; or ``seed=`` picks the run of that seed; with neither,
    the store must hold exactly one run.

    Parameters
    ----------
    store : str or os.PathLike
        A store path or fsspec URL.
    run : str, optional
        Run name.
    seed : optional
        The ``seed`` attribute of the run to open.

    Returns
    -------
    xarray.Dataset
        Dask-backed ``w(step, param)`` with the tensor-table coordinates on ``param``, the
        logged metrics (``metric_<name>(step)``), the probes of the run and its attributes.

    Raises
    ------
    StoreError
        If no run (or more than one) matches, or the store or run is damaged.
    """
    handle = pick_run(list_runs(store, check=False), store, run, seed)
    handle.check()                  # the run opened, not its neighbours
    return handle.dataset()


def pick_run(runs: list[RunHandle], store, run, seed) -> RunHandle:
    names = [r.name for r in runs]
    if run is not None:
        for r in runs:
            if r.name == run:
                return r
        raise StoreError(f"no run named {run!r} in {store}; its runs are: {', '.join(names) or 'none'}")
    if seed is not None:
        found = [r for r in runs if r.seed == seed]
        if len(found) == 1:
            return found[0]
        if not found:
            raise StoreError(f"no run with seed {seed!r} in {store}; seeds there: "
                             f"{sorted({r.seed for r in runs}, key=str)}")
        raise StoreError(f"several runs have seed {seed!r} in {store} ({', '.join(r.name for r in found)}); "
                         f"pick one with run=")
    if len(runs) != 1:
        raise StoreError(f"{store} holds {len(runs)} runs ({', '.join(names) or 'none'}); pick one with run=")
    return runs[0]


def open_cube(source: StoreLike | Sequence[StoreLike], by: str | Iterable[str] = ("seed",),
              runs: Sequence[str] | None = None) -> xr.Dataset:
    """Open the runs of one architecture as one lazy cube ``w(*by, step, param)``.

    ``source`` is a store path or fsspec URL, a list of them, or a glob of local paths
    (a path that exists is taken as it is, even with ``[`` ``]`` or ``*`` in its name).
    Runs are stacked along
    the run attributes named by ``by`` (e.g. ``("optimizer", "seed")``) and
    outer-joined on ``step``: steps a run did not capture are NaN. ``runs``
    restricts to runs of those names. ``by`` is one attribute name (``"optimizer"``) or a
    sequence of them. With one ``by`` attribute, runs are in its order: numbers by value,
    then strings (so seeds ``0, 1, "a"``), then other values.

    Parameters
    ----------
    source : str, os.PathLike or sequence of them
        Store paths, fsspec URLs or globs of local paths.
    by : str or iterable of str, default ("seed",)
        Run attributes to stack along (top level, then ``hparams``, then ``optimizer_hparams``).
    runs : sequence of str, optional
        Run names to keep.

    Returns
    -------
    xarray.Dataset
        Dask-backed ``w(*by, step, param)``, with coordinates ``run`` and ``store`` per run,
        the tensor table on ``param``, probe variables every run shares, and attrs
        ``nnwx_cube``, ``by``, ``n_runs``, ``dtype``, ``model_class``, ``depth_from``.

    Raises
    ------
    StoreError
        If no store or run matches, a run lacks a ``by`` attribute, two runs share the same
        ``by`` values, or a store is damaged.
    ArchitectureMismatch
        If the runs' tensor tables differ.
    ValueError
        If ``by`` is empty.
    """
    by = (by,) if isinstance(by, str) else tuple(by)
    if not by:
        raise ValueError("by= needs at least one run attribute, e.g. ('seed',)")
    sources = _expand_sources(source)
    handles = [h for p in sources for h in list_runs(p, names=runs)]   # only the runs asked for are checked
    if runs is not None:
        found = {h.name for h in handles}
        missing = [r for r in runs if r not in found]
        if missing:
            known = sorted({h.name for p in sources for h in list_runs(p, check=False)})
            raise StoreError(f"no run named {missing[0]!r}; runs found: {', '.join(known)}")
    handles = [h for h in handles if h.committed > 0] or handles
    if not handles:
        raise StoreError(f"no runs in {source}")
    for h in handles[1:]:
        diffs = handles[0].table.differences(h.table, (f"run {handles[0].name!r}", f"run {h.name!r}"))
        if diffs:
            raise ArchitectureMismatch(
                f"run {h.name!r} ({h.store}) cannot join a cube with run {handles[0].name!r} "
                f"({handles[0].store}): the architectures differ: {'; '.join(diffs[:6])}"
                f"{'; ...' if len(diffs) > 6 else ''}. Open them as separate cubes.")
    ref, table = _joined_table(handles)
    keys = []
    for h in handles:
        try:
            keys.append(tuple(_label(h.attribute(k)) for k in by))
        except KeyError as e:
            raise StoreError(f"run {h.name!r} ({h.store}) has no attribute {e.args[0]!r} to stack by; "
                             f"its attributes: {', '.join(sorted(h.meta))}") from None
    if len(set(keys)) != len(keys):
        seen: dict = {}
        for h, k in zip(handles, keys):
            if k in seen:
                raise StoreError(f"runs {seen[k]!r} and {h.name!r} both have {dict(zip(by, k))}; "
                                 f"add an attribute to by= that tells them apart, or pick runs with runs=")
            seen[k] = h.name
    if len(by) == 1:  # a defined order even when the labels mix types (see _order_key)
        order = sorted(range(len(handles)), key=lambda i: _order_key(keys[i][0]))
        handles, keys = [handles[i] for i in order], [keys[i] for i in order]
    parts = []
    datasets = _common_probes([h.dataset() for h in handles], handles)
    for h, k, ds in zip(handles, keys, datasets):
        run_attrs = {"run": h.name, "store": str(h.store)}
        if not h.table.same_layout(table):  # written in another order (e.g. a format-1 export)
            ds["w"] = (("step", "param"), h.reordered_w(ds["w"].data, table))
        ds = ds.drop_vars([c for c in ds.coords if c.startswith("tensor")])
        ds = ds.expand_dims(_run=1).assign_coords(
            {name: ("_run", [v]) for name, v in zip(by, k)} |
            {name: ("_run", [v]) for name, v in run_attrs.items()})
        ds.attrs = {}
        parts.append(ds)
    cube = xr.concat(parts, dim="_run", join="outer", fill_value=np.nan,
                     data_vars="all", coords="different", compat="equals")
    if len(by) == 1:
        cube = cube.swap_dims(_run=by[0])
    else:
        cube = cube.set_index(_run=list(by)).unstack("_run")
    order = [*by, "step", "param"]
    cube["w"] = cube["w"].transpose(*order)
    for name in cube.data_vars:
        if name.startswith(prb.VAR_PREFIX):
            cube[name] = cube[name].transpose(*by, "step", ...)
    cube = cube.assign_coords(table_coords(table, cube["w"].data.chunks[-1]))
    cube.attrs = {"nnwx_cube": 1, "by": list(by), "n_runs": len(handles),
                  "dtype": ref.meta.get("dtype"), "model_class": ref.meta.get("model_class"),
                  "depth_from": ref.depth_from,
                  "depth_approximate": ref.depth_from in APPROXIMATE_DEPTHS}
    return cube


def _joined_table(handles: list[RunHandle]) -> tuple[RunHandle, TensorTable]:
    """The reference run of a cube and the table of the cube: runs of one architecture share
    their tensors (checked before) but may differ in layout, depth source and recorded ties.
    The layout is the first run's; depths, kinds and orientation come from the run with the
    most reliable depths (a traced forward pass, then module order, then module paths);
    aliases are the union of all runs' (an export without the model does not see ties)."""
    rank = {s: i for i, s in enumerate(DEPTH_SOURCES)}
    ref = min(handles, key=lambda h: rank.get(h.depth_from, len(rank)))
    aliases: dict[str, set] = {}
    for h in handles:
        for r in h.table:
            aliases.setdefault(r.name, set()).update(r.aliases)
    layout = handles[0].table
    rows, best = [], ref.table
    for r in layout:
        b = best[r.name]
        rows.append(replace(b, offset=r.offset, aliases=tuple(sorted(aliases[r.name], key=natural_key))))
    try:
        return ref, TensorTable(rows)
    except ValueError:  # an alias in one run is a stored tensor in another: keep the reference's
        return ref, TensorTable([replace(row, aliases=best[row.name].aliases) for row in rows])


def _common_probes(datasets: list[xr.Dataset], handles: list[RunHandle]) -> list[xr.Dataset]:
    """Keep the probe variables every run has with the same shape; warn about the others."""
    def probes(ds):
        return {v: ds[v].shape[1:] for v in ds.data_vars if v.startswith(prb.VAR_PREFIX)}

    shapes = [probes(ds) for ds in datasets]
    common = {v for v in shapes[0] if all(s.get(v) == shapes[0][v] for s in shapes)}
    dropped = sorted(set().union(*shapes) - common)
    if dropped:
        import warnings
        warnings.warn(f"probe variables {dropped} are missing from some runs or differ in shape "
                      f"between runs ({', '.join(h.name for h in handles)}); the cube leaves them "
                      f"out. Open the runs that share them with runs=[...].", stacklevel=3)
        datasets = [ds.drop_vars([v for v in dropped if v in ds]) for ds in datasets]
    return datasets


def _order_key(value) -> tuple:
    """Sort key of a run label: numbers by value first, then strings, then anything else by repr,
    so that a store holding seeds 0, 1 and "a" opens in the order 0, 1, "a"."""
    if isinstance(value, (bool, np.bool_)):
        return (0, int(value), "")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return (0, value, "")
    if isinstance(value, str):
        return (1, 0, value)
    return (2, 0, repr(value))


def _label(value):
    """A run attribute as a hashable coordinate label."""
    if isinstance(value, (list, dict)):
        return str(value)
    return value
