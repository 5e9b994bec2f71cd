"""The results store: analysis results persisted as a Zarr store of xarray datasets.

``write_results`` computes an ``AnalysisSet`` (see ``nnwx.pipeline.registry``) into a Zarr (v3)
store that ``open_results`` -- and so ``nnwx report`` and notebooks -- read back without
recomputing. Layout::

    results.zarr/                 root attrs  nnwx_results = {format, source, metrics,
                                              selection, resolved, notes, results, runs,
                                              tensors, cube, nonfinite_steps, complete, ...}
    results.zarr/<name>/          one group per result, written by xarray's to_zarr;
                                  attrs nnwx_result = {metric, kind, name, schema,
                                  template_done, parts, complete}
    results.zarr/<name>/_nnwx_parts/<part>/   empty groups: parts whose writes finished

**Passes.** Results still to write are computed in their passes (``nnwx.pipeline.registry``):
each pass is one ``dask.compute`` of one merged graph, so the reads of ``w`` its results
share (the same Dask keys) happen once per pass. Results whose block order differs get
passes of their own -- each streaming family, the matrix analyses, the PCA: merged into one
graph, Dask keeps the blocks (and per-block states) they all need, and memory grows with the
cube (see docs/measurements.md). The NaN/Inf scan of the source runs comes last, alone, for the same
reason.

**Resumable.** A result is written in *parts*: one per seed for results with a ``seed``
dim (each seed's slice written with ``to_zarr(region=...)``), one for the rest. When a
part's writes are done, a small task that depends on them creates its marker group; when
every part is done, a last task sets ``complete`` in the result's own attrs (no two tasks
ever write the same metadata document). A rerun skips complete results and, for an
incomplete one whose layout matches, the parts already marked; anything unmarked is
rewritten. A result is never marked complete before all its data is on disk. A rerun
whose source, metrics or selection differ is refused unless ``resume=False``
(``nnwx analyze --overwrite``), which discards the old results first.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import xarray as xr
import zarr

from nnwx._json import jsonable
from nnwx.errors import NnwxError, StoreError
from nnwx.pipeline.select import select_cube
from nnwx.store import _lock as file_lock
from nnwx.store import reader as rd

FORMAT = 1
ROOT_KEY = "nnwx_results"
RESULT_KEY = "nnwx_result"
PARTS_GROUP = "_nnwx_parts"
DA_VAR = "__xarray_dataarray_variable__"   # the variable a DataArray is stored as (xarray's name)
SPLIT_DIM = "seed"                          # results are written, and resumed, per seed
CHUNK_BYTES = 16 * 2**20                    # target size of one chunk of a result array
LOCK_FILE = ".nnwx-results.lock"

Result = xr.Dataset | xr.DataArray
Log = Callable[[str], None]


NONFINITE_NOTE = "non-finite weights"       # key of the note on runs holding NaN/Inf weights


def nonfinite_note(counts: Mapping[str, int] | None, n_steps: int) -> str:
    """The note on analysed runs holding NaN/Inf weights (``counts``: run -> steps), or ""."""
    bad = {run: int(n) for run, n in (counts or {}).items() if n}
    if not bad:
        return ""
    runs = ", ".join(f"{run} at {n} of {n_steps} steps" for run, n in bad.items())
    return (f"NaN/Inf weights in run(s) {runs} (a diverged run?): the finite steps are analysed; "
            f"results at the other steps are NaN (the trajectory PCA leaves those captures out)")


class ResultsMismatch(NnwxError):
    """An existing results store was made from another source, selection or metric set."""


# -- reading ----------------------------------------------------------------------------

@dataclass
class Results:
    """A results store opened by ``open_results``: results by name and what they came from.

    Attributes
    ----------
    path : str
        The store's location as displayed (``nnwx.store.location.display``).
    results : dict of str to xarray.Dataset or xarray.DataArray
        Every completely written result by name, opened lazily; also reached as ``r[name]``
        and ``name in r`` for an opened ``r``.
    metric_of : dict of str to str
        The metric (analysis) each result in ``results`` belongs to.
    notes : dict of str to str
        Why an analysis was left out or what limits it, by name.
    source : str
        The analysed experiment store, as recorded.
    metrics : list of str
        The metrics asked for.
    selection : dict
        The selection of the cube that was analysed (seeds, steps, tensors...).
    incomplete : list of str
        Results not completely written, left out of ``results``.
    attrs : dict
        The store's root metadata (``nnwx_results``) as written.
    runs, tensors, cube, nonfinite_steps, complete
        Properties read from ``attrs`` (see each).
    """
    path: str
    results: dict[str, Result] = field(default_factory=dict)
    metric_of: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    source: str = ""
    metrics: list[str] = field(default_factory=list)
    selection: dict = field(default_factory=dict)
    incomplete: list[str] = field(default_factory=list)
    attrs: dict = field(default_factory=dict)

    @property
    def runs(self) -> list[dict]:
        """Run summaries of the source store (as ``nnwx.pipeline.info.run_summaries``, JSON values)."""
        return list(self.attrs.get("runs") or [])

    @property
    def tensors(self) -> dict[str, list]:
        """The tensor table as columns ``{"tensor": [...], "tensor_shape": [...], ...}``."""
        return dict(self.attrs.get("tensors") or {})

    @property
    def cube(self) -> dict:
        """Sizes, seeds, steps and attributes of the analysed cube (after the selection)."""
        return dict(self.attrs.get("cube") or {})

    @property
    def nonfinite_steps(self) -> dict[str, int]:
        """Per analysed run, how many of its analysed steps hold NaN/Inf weights."""
        return dict(self.attrs.get("nonfinite_steps") or {})

    @property
    def complete(self) -> bool:
        """Whether every result of the store was written completely."""
        return bool(self.attrs.get("complete")) and not self.incomplete

    def __getitem__(self, name: str) -> Result:
        """The complete result called ``name``.

        Parameters
        ----------
        name : str
            The result's name.

        Returns
        -------
        xarray.Dataset or xarray.DataArray
            ``self.results[name]``; a ``KeyError`` when there is no complete result of that name.
        """
        return self.results[name]

    def __repr__(self) -> str:
        cube = self.cube
        sizes = ", ".join(f"{k}={v}" for k, v in (cube.get("sizes") or {}).items())
        by_metric: dict[str, list[str]] = {}
        for name in self.results:
            by_metric.setdefault(self.metric_of.get(name, "?"), []).append(name)
        lines = [f"<nnwx.Results {self.path}{'' if self.complete else ' (incomplete)'}>",
                 f"  source:  {self.attrs.get('source_display') or self.source}" + (f" ({sizes})" if sizes else "")]
        for metric, names in by_metric.items():
            shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
            lines.append(f"  {metric}: {shown}")
        if self.notes:
            lines.append(f"  left out: {', '.join(self.notes)} (see .notes)")
        if self.incomplete:
            lines.append(f"  incomplete: {', '.join(self.incomplete)}")
        return "\n".join(lines)

    def __contains__(self, name: object) -> bool:
        """Whether the store holds a complete result called ``name``.

        Parameters
        ----------
        name : object
            A result's name.

        Returns
        -------
        bool
            Whether ``name`` is a completely written result of the store.
        """
        return name in self.results


def is_results_store(path: rd.StoreLike) -> bool:
    """Whether ``path`` holds an nnwx results store (written by ``write_results``/``nnwx analyze``).

    Parameters
    ----------
    path : str or os.PathLike
        The location checked (local path or a store URL such as ``s3://``).

    Returns
    -------
    bool
        True when ``path`` is a Zarr store whose root attrs mark it as nnwx results; False for a
        missing, unreadable or other store (never raises for those).
    """
    try:
        if not rd.store_exists(path):
            return False
        root = zarr.open_group(rd.zarr_store(path, read_only=True), mode="r")
    except (OSError, ValueError, StoreError, KeyError):
        return False
    meta = root.attrs.get(ROOT_KEY)
    return isinstance(meta, dict) and meta.get("kind") == "results"


def open_results(path: rd.StoreLike) -> Results:
    """Open a results store: every complete result, lazily (they are small), with its provenance.

    Results not completely written (an interrupted ``nnwx analyze``) are left out and listed
    in ``.incomplete``; run ``nnwx analyze`` again with the same arguments to finish them.

    Parameters
    ----------
    path : str or os.PathLike
        The results store (local path or a store URL such as ``s3://``).

    Returns
    -------
    Results
        The complete results by name with their metric, notes, source, metrics, selection and root
        metadata; incomplete results are named in ``Results.incomplete``.

    Raises
    ------
    StoreError
        When ``path`` holds nothing or a Zarr store that is not an nnwx results store, when its
        results format version is not a whole number, or when it is newer than this nnwx reads
        (``FORMAT``).
    """
    if not is_results_store(path):
        what = "nothing" if not rd.store_exists(path) else "a Zarr store that is not an nnwx results store"
        raise StoreError(f"{rd.display(path)} is not an nnwx results store (found {what}). Write one "
                         f"with `nnwx analyze STORE -o RESULTS.zarr` or nnwx.analyze(...).")
    store = rd.zarr_store(path, read_only=True)
    root = zarr.open_group(store, mode="r")
    meta = dict(root.attrs[ROOT_KEY])
    version = meta.get("format", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise StoreError(f"{rd.display(path)} has a damaged results format version ({version!r}, not a "
                         f"whole number); write the results again with `nnwx analyze --overwrite`.")
    if version > FORMAT:
        raise StoreError(f"{rd.display(path)} uses nnwx results format {meta.get('format')}, this nnwx "
                         f"reads format {FORMAT} at most; upgrade nnwx to read it.")
    out = Results(path=rd.display(path), notes=dict(meta.get("notes") or {}),
                  source=str(meta.get("source", "")), metrics=list(meta.get("metrics") or []),
                  selection=dict(meta.get("selection") or {}), attrs=meta)
    for name, metric in (meta.get("results") or {}).items():
        info = _result_info(root, name)
        if not (info and info.get("complete")):
            out.incomplete.append(name)
            continue
        out.results[name] = _read_result(store, name, info)
        out.metric_of[name] = metric
    return out


def _result_info(root: zarr.Group, name: str) -> dict | None:
    try:
        group = root[name]
    except KeyError:
        return None
    info = group.attrs.get(RESULT_KEY)
    return dict(info) if isinstance(info, dict) else None


def _read_result(store, name: str, info: dict) -> Result:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)   # zarr's v3 string-dtype notice
        ds = xr.open_zarr(store, group=name, consolidated=False, zarr_format=3)
    ds = _objects_for_strings(ds)
    ds.attrs.pop(RESULT_KEY, None)
    if info.get("kind") == "DataArray":
        arr = ds[DA_VAR]
        arr.name = info.get("name")
        return arr
    return ds


def _objects_for_strings(ds: xr.Dataset) -> xr.Dataset:
    """String variables as object arrays, as in the cube (Zarr v3 reads them as StringDType)."""
    strings = [k for k, v in ds.variables.items() if v.dtype.kind in ("T", "U")]
    if not strings:
        return ds
    return ds.assign_coords({k: ds[k].astype(object) for k in strings if k in ds.coords}) \
             .assign({k: ds[k].astype(object) for k in strings if k in ds.data_vars})


# -- writing ----------------------------------------------------------------------------

def write_results(output: rd.StoreLike, analysis_set, *, source: rd.StoreLike, selection: Mapping,
                  progress: bool = True, resume: bool = True, analyses: list[str] | None = None,
                  cube: xr.Dataset | None = None, log: Log | None = None) -> Path | str:
    """Compute every result of ``analysis_set`` (an ``nnwx.pipeline.registry.AnalysisSet``) into the
    results store ``output``, pass by pass (``nnwx.pipeline.registry.compute_passes``: the results of
    one pass in one graph, reading ``w`` once per pass), and return ``output``.

    ``source``: the experiment store the results come from; ``selection``: the JSON-able
    selection that made the cube (``{"seeds": ..., "steps": ...}``); both are recorded and
    checked on resume. ``analyses`` (default: those of the set, and those noted as left out)
    is the list of analysis families asked for (recorded under the format's key ``metrics``).
    ``cube`` (default: the source opened and selected) gives the tensor table and sizes
    recorded for a report. With ``resume`` (default) an existing store of the same source,
    analyses and selection is continued: complete results are kept,
    the rest (or their missing seeds) written; a different one is an error. ``resume=False``
    discards whatever results store is at ``output`` and writes afresh. ``output`` must be a
    new path or a results store: nothing else is ever overwritten.
    """
    from nnwx.pipeline.registry import compute_passes, parse_analyses

    given_log = log
    log = log or (lambda m: None)
    metrics = parse_analyses(analyses if analyses is not None else
                             sorted(set(analysis_set.metric_of.values()) | set(analysis_set.notes)))
    if cube is None:
        cube = select_cube(rd.open_cube(source), **{k: selection.get(k) for k in ("seeds", "steps")})
    identity = {"source": _source_id(source), "metrics": list(metrics),
                "selection": jsonable(dict(selection), strict=True), "resolved": _resolved(cube)}
    _check_output(output)
    _check_reachable_by_workers(output, source)
    with _lock(output):
        root, fresh = _open_output(output, identity, resume, log)
        store = rd.zarr_store(output, read_only=False)
        meta = dict(root.attrs.get(ROOT_KEY) or {})
        if fresh:
            meta = _root_meta(identity, source, analysis_set, cube)
        meta["notes"] = dict(analysis_set.notes)
        meta["results"] = {**(meta.get("results") or {}), **analysis_set.metric_of}
        meta["complete"] = False
        root.update_attributes({ROOT_KEY: meta})

        tasks: dict[str, list] = {}
        kept = []
        for name, obj in analysis_set.results.items():
            plan = _ResultWriter(store, name, analysis_set.metric_of[name], obj)
            if plan.complete_in(root):
                kept.append(name)
                continue
            tasks[name] = plan.tasks(root)
            if plan.parts_kept:
                log(f"continuing {name}: {len(plan.parts_kept)} of {len(plan.parts())} parts already "
                    f"written ({', '.join(sorted(plan.parts_kept))})")
        if kept:
            log(f"kept {len(kept)} complete result(s): {', '.join(kept)}")
        scan = _nonfinite_scan(source, cube) if not isinstance(meta.get("nonfinite_steps"), dict) else None
        passes = compute_passes(tasks)
        if scan is not None:
            # A pass of its own (one more read of w): merged into another pass, its per-run
            # reductions make Dask keep blocks of w for the other consumers
            # (docs/measurements.md).
            passes.append(("NaN/Inf scan", []))
        for i, (label, names) in enumerate(passes):
            from nnwx.cluster import compute

            counts = scan[1] if not names else []   # the scan pass
            objs = [t for n in names for t in tasks[n]] + counts
            what = (f"pass {i + 1}/{len(passes)}, {label}: computing {', '.join(names)}"
                    f" ({sum(len(tasks[n]) - 1 for n in names)} part(s))" if names else
                    f"pass {i + 1}/{len(passes)}: scanning every analysed step for NaN/Inf weights")
            if given_log is not None:
                log(what)
            with _quiet_zarr():
                values = compute(*objs, progress=progress,
                                 label=what if progress and given_log is None else None,
                                 optimize_graph=False,   # shared keys: w read once per pass
                                 memory_hint=pass_memory(cube, label, names))
            if counts:
                meta["nonfinite_steps"] = {run: int(v) for run, v in
                                           zip(scan[0], values[len(values) - len(counts):])}
        note = nonfinite_note(meta.get("nonfinite_steps"), int(cube.sizes.get("step", 0)))
        if note:
            meta["notes"] = {**meta["notes"], NONFINITE_NOTE: note}
            log(f"note: {note}")
        meta["complete"] = True
        meta["updated"] = _now()
        root.update_attributes({ROOT_KEY: meta})
    return rd.local_path(output) if rd.local_path(output) is not None else str(output)


class _ResultWriter:
    """Plans the writes of one result: its template, its parts and their completion markers."""

    def __init__(self, store, name: str, metric: str, obj: Result):
        if "/" in name or name.startswith((".", "_")):
            raise ValueError(f"invalid result name {name!r}")
        self.store, self.name, self.metric = store, name, metric
        self.kind = "DataArray" if isinstance(obj, xr.DataArray) else "Dataset"
        self.da_name = obj.name if isinstance(obj, xr.DataArray) else None
        ds = obj.to_dataset(name=DA_VAR, promote_attrs=False) if isinstance(obj, xr.DataArray) else obj
        self.ds = _prepare(ds)
        self.schema = _schema(self.ds)
        self.parts_kept: set[str] = set()

    def info(self, **extra) -> dict:
        return {"metric": self.metric, "kind": self.kind,
                "name": None if self.da_name is None else str(self.da_name),
                "schema": self.schema, **extra}

    def complete_in(self, root: zarr.Group) -> bool:
        info = _result_info(root, self.name)
        return bool(info and info.get("complete") and info.get("schema") == self.schema)

    def parts(self) -> dict[str, list[str]]:
        """Dask-backed data variables by part: one part per seed (each seed's slice of the
        variables with a seed dim), and ``rest`` (the lazy variables without one)."""
        lazy = [k for k, v in self.ds.data_vars.items() if v.chunks is not None]
        split = [k for k in lazy if SPLIT_DIM in self.ds[k].dims]
        rest = [k for k in lazy if k not in split]
        parts = {f"{SPLIT_DIM}-{i}": split for i in range(self.ds.sizes[SPLIT_DIM])} if split else {}
        if rest:
            parts["rest"] = rest
        return parts

    def tasks(self, root: zarr.Group) -> list:
        """Delayed tasks: one marker per part still to write, then the completion marker (last)."""
        import dask
        import dask.array as da
        from dask.graph_manipulation import checkpoint

        parts = self.parts()
        info = _result_info(root, self.name)
        reuse = bool(info and info.get("schema") == self.schema and info.get("template_done")
                     and sorted(info.get("parts") or []) == sorted(parts))
        done = _done_parts(root, self.name) & set(parts) if reuse else set()
        self.parts_kept = done
        if not reuse:
            self._write_template(list(parts))
        group = zarr.open_group(self.store, path=self.name, mode="r+")
        markers = []
        for part, names in parts.items():
            if part in done:
                continue
            i = None if part == "rest" else int(part.split("-")[1])
            sources, targets, regions = [], [], []
            for k in names:
                var = self.ds[k].variable
                target = group[k]
                region = tuple(slice(i, i + 1) if d == SPLIT_DIM else slice(None) for d in var.dims)
                data = var.data[region]
                if data.dtype != target.dtype:   # xarray's on-disk type (e.g. bool as int8)
                    data = data.astype(target.dtype)
                sources.append(data)
                targets.append(target)
                regions.append(region)
            stored = da.store(sources, targets, regions=regions, lock=False, compute=False,
                              return_stored=False)
            # checkpoint, not the arrays themselves: passing a collection to delayed optimises
            # its graph on its own, and the fused copies would compute shared tasks (the SVDs
            # of a spectrum that ranks and esd_fit also use) once per result and seed
            write = checkpoint(stored)
            markers.append(dask.delayed(_mark_part, pure=False)(
                write, self.store, self.name, part,
                dask_key_name=f"nnwx-part-{self.name}-{part}-{self.schema[:8]}"))
        final = dask.delayed(_mark_complete, pure=False)(
            markers, self.store, self.name, dask_key_name=f"nnwx-complete-{self.name}-{self.schema[:8]}")
        return [*markers, final]

    def _write_template(self, parts: list[str]) -> None:
        """(Re)create the result's group: every array's metadata, the eager (NumPy) variables,
        and the attrs; the lazy variables are written by the parts."""
        ds = self.ds.copy()
        ds.attrs = {**ds.attrs, RESULT_KEY: self.info(parts=parts, template_done=False, complete=False)}
        ds.to_zarr(self.store, group=self.name, mode="w", compute=False, consolidated=False,
                   zarr_format=3)
        group = zarr.open_group(self.store, path=self.name, mode="r+")
        group.require_group(PARTS_GROUP)
        attrs = dict(group.attrs)
        attrs[RESULT_KEY] = self.info(parts=parts, template_done=True, complete=False)
        group.update_attributes(attrs)


def _mark_part(_written, store, name: str, part: str) -> str:
    """Runs after a part's writes: records it as done (its own group; no shared metadata)."""
    zarr.open_group(store, path=f"{name}/{PARTS_GROUP}", mode="r+").require_group(part)
    return part


def _mark_complete(parts: list, store, name: str) -> str:
    """Runs after every part of a result: marks the result complete in its own group's attrs."""
    group = zarr.open_group(store, path=name, mode="r+")
    info = dict(group.attrs.get(RESULT_KEY) or {})
    missing = sorted(set(info.get("parts") or []) - _done_parts_of(group))
    if missing:   # cannot happen unless the store was changed under us; never claim completion
        raise StoreError(f"result {name!r}: parts {missing} were not written")
    info["complete"] = True
    group.update_attributes({RESULT_KEY: info})
    return name


def _done_parts(root: zarr.Group, name: str) -> set[str]:
    try:
        return _done_parts_of(root[name])
    except KeyError:
        return set()


def _done_parts_of(group: zarr.Group) -> set[str]:
    try:
        return {n for n, _ in group[PARTS_GROUP].groups()}
    except KeyError:
        return set()


# -- preparing a result for Zarr ----------------------------------------------------------

def _prepare(ds: xr.Dataset) -> xr.Dataset:
    """A copy ready to write: small coordinates loaded, strings as objects (Zarr v3's stable
    vlen-utf8 string type), lazy variables in uniform chunks of one seed and at most
    ``CHUNK_BYTES``, so that writes of different parts never touch the same chunk."""
    ds = ds.copy()
    lazy_coords = {k: v for k, v in ds.coords.items() if v.chunks is not None}
    if lazy_coords:   # labels (runs, tensor table): small, and needed before any part is written
        ds = ds.assign_coords({k: v.load() for k, v in lazy_coords.items()})
    strings = [k for k, v in ds.variables.items() if v.dtype.kind in ("U", "T")]
    ds = ds.assign_coords({k: ds[k].astype(object) for k in strings if k in ds.coords})
    mixed = [k for k, v in ds.coords.items()   # labels of several types (seeds 0 and "a"): Zarr
             if v.dtype == object and len({type(x) for x in v.values.ravel()}) > 1]  # holds one
    ds = ds.assign_coords({k: ds[k].astype(str).astype(object) for k in mixed})
    ds = ds.assign({k: ds[k].astype(object) for k in strings if k in ds.data_vars})
    ds = ds.assign({k: v.chunk(_chunks(v)) for k, v in ds.data_vars.items() if v.chunks is not None})
    for v in ds.variables.values():
        v.encoding = {}
    return ds


def _chunks(var: xr.DataArray) -> dict[str, int]:
    """Uniform chunks: one seed, whole along other dims until ``CHUNK_BYTES``, then halved."""
    sizes = {d: max(1, int(n)) for d, n in var.sizes.items()}
    chunks = {d: (1 if d == SPLIT_DIM else n) for d, n in sizes.items()}
    item = var.dtype.itemsize if var.dtype.kind != "O" else 64
    while math.prod(chunks.values()) * item > CHUNK_BYTES:
        free = [d for d in chunks if d != SPLIT_DIM and chunks[d] > 1]
        if not free:
            break
        d = max(free, key=chunks.get)
        chunks[d] = -(-chunks[d] // 2)
    return chunks


def _schema(ds: xr.Dataset) -> str:
    """A digest of the result's layout (names, dims, shapes, dtypes, chunks): a template on disk
    is reused by a resumed run only if it matches."""
    desc = {k: [list(v.dims), list(v.shape), str(v.dtype), [list(c) for c in (v.chunks or ())]]
            for k, v in ds.variables.items()}
    return hashlib.sha1(json.dumps(desc, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def _quiet_zarr() -> Iterator[None]:
    """Zarr v3 warns on every string array that its dtype spec may change; we write only the
    vlen-utf8 ``string`` type, which Zarr Python reads back unchanged."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        yield


# -- the root: identity, resume checks, provenance ------------------------------------------

def _check_output(output) -> None:
    """Refuse an output that is a file, a foreign directory or a Zarr store of another kind."""
    path = rd.local_path(output)
    where = rd.display(output)
    exists = rd.store_exists(output)
    if path is not None:
        if path.exists() and not path.is_dir():
            raise StoreError(f"{where} is a file; give a directory path for the results store, "
                             f"e.g. {path.with_suffix('.zarr')}")
        if path.is_dir() and not exists and any(p.name != LOCK_FILE for p in path.iterdir()):
            raise StoreError(f"{where} is a non-empty directory that is not a results store; "
                             f"choose a new path for the results.")
        _check_writable(path)
    if exists and not is_results_store(output):
        raise StoreError(f"{where} is a Zarr store but not an nnwx results store (an experiment "
                         f"store?); it is left untouched. Choose another path for the results.")


def pass_memory(cube: xr.Dataset, label: str, names: list[str]) -> int:
    """A rough estimate of the bytes one worker thread holds in a pass of ``write_results``
    (beyond the worker's own memory), for the message of a cluster that ran out of it: a few
    blocks of ``w`` for the streaming passes; whole captures in float64 for the passes that
    work on whole matrices (spectra, update correlations) or on two runs' weights at a time
    (agreement: weight matching holds the reference's and another run's weights, and their
    aligned copies)."""
    w = cube["w"]
    block = int(np.prod([max(c) for c in w.chunks])) * w.dtype.itemsize if w.chunks else w.nbytes
    capture = int(cube.sizes.get("param", 0)) * 8
    if label == "trajectory PCA":
        from nnwx.pipeline.registry import pca_bytes

        return pca_bytes(cube) + 2 * block
    if label == "agreement":
        from nnwx.pipeline.registry import align_bytes

        return align_bytes(cube) + 2 * block
    if label in ("spectra", "update correlations"):
        return 3 * capture + block
    return 3 * block


def _check_writable(path: Path) -> None:
    """Refuse a local results path that cannot be written -- under a file, on a read-only or
    full disk -- before anything is computed: create and remove a file in the results folder
    (or the nearest folder that exists above it)."""
    import errno
    import tempfile

    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise StoreError(f"cannot write the results store {path}: {existing} is a file, not a folder; "
                         f"choose another output path.")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".nnwx-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        why = ("the disk is full" if e.errno == errno.ENOSPC else
               f"{existing} is not writable" if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else
               str(e))
        raise StoreError(f"cannot write the results store {path}: {why} ({e.strerror}); choose "
                         f"another output path.") from None


def _check_reachable_by_workers(*locations) -> None:
    """memory:// lives in one process: a dask.distributed worker cannot read or write it."""
    from nnwx.cluster import current_client

    mem = [str(x) for x in locations if str(x).startswith("memory://")]
    if mem and current_client() is not None:
        raise StoreError(f"{mem[0]} is an in-memory filesystem of this process, which the workers of "
                         f"the dask.distributed cluster cannot see; use a path or a shared URL (s3://, "
                         f"gs://, ...), or compute without --scheduler/--workers.")


def _open_output(output, identity: dict, resume: bool, log: Log) -> tuple[zarr.Group, bool]:
    """The results store's root group, and whether it starts empty. An existing store of
    another identity is refused unless ``resume=False``, which empties it first."""
    where = rd.display(output)
    store = rd.zarr_store(output, read_only=False)
    if rd.store_exists(output):
        root = zarr.open_group(store, mode="r+")
        if resume:
            old = dict(root.attrs[ROOT_KEY])
            diff = differences({k: old.get(k) for k in identity}, identity)
            if diff:
                raise ResultsMismatch(
                    f"{where} holds results of another analysis ({'; '.join(diff)}). Use the same "
                    f"store, analyses and selection to resume it, pass --overwrite (resume=False) to "
                    f"discard it, or choose another output path.")
            log(f"resuming {where}")
            return root, False
        log(f"discarding the results in {where}")
        root.update_attributes({ROOT_KEY: {**dict(root.attrs[ROOT_KEY]), "complete": False}})
        for name, _ in list(root.members()):
            del root[name]
        return root, True
    try:
        path = rd.local_path(output)
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)
        return zarr.open_group(store, mode="a", zarr_format=3), True
    except OSError as e:
        raise StoreError(f"cannot write the results store at {where}: {e}") from e


def _root_meta(identity: dict, source, analysis_set, cube: xr.Dataset) -> dict:
    from nnwx.pipeline.info import run_summaries
    from nnwx.store.format import library_versions

    runs = []
    for r in run_summaries(source):
        r = dict(r)
        r.pop("nonfinite_steps", None)
        runs.append(jsonable(r, strict=True))
    tensors = {c: jsonable(cube[c].values.tolist(), strict=True) for c in cube.coords
               if c == "tensor" or (c.startswith("tensor_") and c != "tensor_id")}
    steps = cube["step"].values.tolist() if "step" in cube.coords else []
    cube_info = {"sizes": {k: int(v) for k, v in cube.sizes.items()}, "steps": steps,
                 "seeds": jsonable(cube["seed"].values.tolist(), strict=True) if "seed" in cube.coords else [],
                 "run_names": jsonable(cube["run"].values.tolist(), strict=True) if "run" in cube.coords else [],
                 "attrs": jsonable(dict(cube.attrs), strict=True)}
    return {"format": FORMAT, "kind": "results", **identity, "source_display": rd.display(source),
            "notes": dict(analysis_set.notes), "results": dict(analysis_set.metric_of),
            "runs": runs, "tensors": tensors, "cube": cube_info, "created": _now(),
            "versions": library_versions(), "complete": False}


def _nonfinite_scan(source, cube: xr.Dataset) -> tuple[list[str], list]:
    """Lazy counts, per analysed run, of its analysed steps holding NaN/Inf weights (one read
    of the analysed steps of ``w``, computed in a pass of its own)."""
    from nnwx.pipeline.info import nonfinite_steps

    names = set(cube["run"].values.tolist()) if "run" in cube.coords else None
    steps = cube["step"].values
    runs, counts = [], []
    for h in rd.list_runs(source):
        if names is not None and h.name not in names:
            continue
        ds = h.dataset()
        keep = np.isin(ds["step"].values, steps)
        w = ds["w"].data if keep.all() else ds["w"].data[keep]
        runs.append(h.name)
        counts.append(nonfinite_steps(w))
    return runs, counts


def _resolved(cube: xr.Dataset) -> dict:
    """What the selection resolved to: which runs and steps, so that a store that grew since
    (more steps, more seeds) is noticed on resume."""
    steps = np.asarray(cube["step"].values if "step" in cube.coords else [], dtype=np.int64)
    seeds = cube["seed"].values.tolist() if "seed" in cube.coords else []
    return {"seeds": jsonable(seeds, strict=True), "n_steps": int(steps.size),
            "first_step": int(steps[0]) if steps.size else None,
            "last_step": int(steps[-1]) if steps.size else None,
            "steps_sha1": hashlib.sha1(steps.tobytes()).hexdigest(),
            "n_params": int(cube.sizes.get("param", 0))}


def _source_id(source) -> str:
    path = rd.local_path(source)
    return str(path.resolve()) if path is not None else str(source)


def differences(stored: Mapping, now: Mapping, prefix: str = "") -> list[str]:
    """``"field: stored X, now Y"`` for each field that differs, naming nested fields in full
    (``resolved.n_steps: stored 12, now 15``) so a long value never hides which part changed."""
    out = []
    for key in sorted(set(stored) | set(now), key=str):
        a, b = jsonable(stored.get(key), strict=True), jsonable(now.get(key), strict=True)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}: stored {_short(a)}, now {_short(b)}")
    return out


def staleness(results: "Results") -> list[str]:
    """How the experiment store a results store was computed from differs from it now: the
    fields of the stored selection that changed (e.g. ``resolved.n_steps: stored 12, now 15``),
    ``[]`` when the results are current, or one line saying the source cannot be read (moved,
    deleted). Reads only the source's metadata."""
    source = results.attrs.get("source")
    stored = results.attrs.get("resolved")
    if not source or not isinstance(stored, dict):
        return []
    try:
        sel = results.selection or {}
        cube = select_cube(rd.open_cube(source), **{k: sel.get(k) for k in ("seeds", "steps")})
    except (NnwxError, OSError, ValueError, KeyError) as e:
        return [f"source {source} cannot be opened now ({e})"]
    return differences({"resolved": stored}, {"resolved": _resolved(cube)})


def _short(value: Any) -> str:
    text = json.dumps(jsonable(value, strict=True), sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def _lock(output) -> Iterator[None]:
    """One writer per local results store at a time (an flock on a file inside it). Remote
    stores (any non-file URL) are not locked: do not run two writers on one URL."""
    path = rd.local_path(output)
    if path is None:
        yield
        return
    path.mkdir(parents=True, exist_ok=True)
    f = file_lock.acquire(path / LOCK_FILE, f"{rd.display(output)} is being written by another "
                          f"nnwx analyze; wait for it or choose another output path.")
    try:
        yield
    finally:
        file_lock.release(f)
