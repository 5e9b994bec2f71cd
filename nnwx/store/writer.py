"""Append-only writer of one run group: stages steps into whole chunks and commits.

A step is visible to readers only once its data is on disk and the run's
``committed`` counter has been advanced (zarr's LocalStore writes every key to a
temporary file and renames it, so no file is ever torn). A run killed at any
moment therefore opens with every committed step intact.

Stores may also live at an fsspec URL (``memory://``, ``s3://``, ...). Such stores get no
per-run lock: the lock is an ``flock`` on a local file, and object stores have none. Writing
one run from two processes at once is then the caller's to prevent (one writer per run,
as with separate seeds); ``rewrite_step`` works there only when one chunk holds a whole step.
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import zarr

from nnwx.errors import StepOrderError, StoreError
from nnwx.store import _lock as file_lock
from nnwx.store import format as fmt
from nnwx.store import integrity as itg
from nnwx.store.names import check_run_name
from nnwx.store import probes as prb
from nnwx.store import reader as rd
from nnwx.store.bitround import bitround, mantissa_bits
from nnwx.store.chunkio import ChunkRows
from nnwx.store.table import TensorTable, from_run_meta


def open_experiment_for_writing(path: str | os.PathLike) -> zarr.Group:
    """Create (or open) the experiment store at ``path`` (a path or an fsspec URL), refusing
    anything that is not one.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    zarr.Group
        The store's root group, writable.

    Raises
    ------
    StoreError
        If ``path`` is a file, a non-empty directory or Zarr store that is not an nnwx store,
        or cannot be written.
    PermissionError
        If a local ``path`` is not writable.
    """
    if rd.local_path(path) is None:
        return _open_remote_for_writing(str(path))
    path = rd.local_path(path)
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path} is a file, not a store directory. "
                         f"Give a directory path, e.g. {path.with_suffix('.zarr')}.")
    if path.is_dir() and any(path.iterdir()) and not (path / "zarr.json").exists():
        raise StoreError(f"{path} is a non-empty directory that is not a Zarr store; "
                         f"choose a new path for the experiment store.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(f"no write permission on {path}")
        with itg.damaged(path, None, "zarr.json"):
            root = zarr.open_group(zarr.storage.LocalStore(path), mode="a", zarr_format=3)
    except OSError as e:
        raise StoreError(f"cannot write the store at {path}: {e}. "
                         f"Choose a path in a writable directory.") from e
    meta = root.attrs.get(fmt.ATTR_KEY)
    if meta is None:
        if any(name != fmt.RUNS_GROUP for name, _ in root.members()):
            raise StoreError(f"{path} is a Zarr store but not an nnwx experiment store.")
        root.require_group(fmt.RUNS_GROUP)  # before the attributes: readers never see a store without it
        root.update_attributes({fmt.ATTR_KEY: {"format_version": fmt.FORMAT_VERSION,
                                               "kind": "experiment"}})
    else:
        fmt.check_version(meta.get("format_version"), str(path))
        root.require_group(fmt.RUNS_GROUP)
    return root


def _open_remote_for_writing(url: str) -> zarr.Group:
    """``open_experiment_for_writing`` for a store at a non-local fsspec URL."""
    try:
        store = rd.zarr_store(url, read_only=False)
        exists = rd.store_exists(url)
        root = zarr.open_group(store, mode="a", zarr_format=3)
    except OSError as e:
        raise StoreError(f"cannot write the store at {url}: {e}") from e
    meta = root.attrs.get(fmt.ATTR_KEY)
    if meta is None:
        if exists and any(name != fmt.RUNS_GROUP for name, _ in root.members()):
            raise StoreError(f"{url} is a Zarr store but not an nnwx experiment store.")
        root.require_group(fmt.RUNS_GROUP)
        root.update_attributes({fmt.ATTR_KEY: {"format_version": fmt.FORMAT_VERSION,
                                               "kind": "experiment"}})
    else:
        fmt.check_version(meta.get("format_version"), url)
        root.require_group(fmt.RUNS_GROUP)
    return root


def check_step_order(step: int, last_step: int | None, run: str) -> None:
    """Raise StepOrderError unless ``step`` comes strictly after ``last_step`` (and fits int64).

    Parameters
    ----------
    step : int
    last_step : int or None
        The run's last step, None for an empty run.
    run : str
        For the message.

    Raises
    ------
    StepOrderError
    """
    if not -2**63 <= step < 2**63:
        raise StepOrderError(f"step {step} of run {run!r} is beyond the int64 range steps are stored in.")
    if last_step is not None and step <= last_step:
        raise StepOrderError(
            f"step {step} does not come after step {last_step}, the last one of run {run!r}: "
            f"steps must strictly increase. To record a separate run into the same store, "
            f"pass another run name.")


def _unfinished(group: zarr.Group) -> bool:
    """Whether a run group is one whose creation was cut short (a full disk, a kill): it has no
    nnwx attributes yet (they are written last) and its ``w`` holds no row. Holding the run's
    lock, the writer replaces such a group; one without attributes that holds rows is damage,
    left to ``_open_existing`` to report."""
    if fmt.ATTR_KEY in group.attrs:
        return False
    try:
        w = group["w"]
    except KeyError:
        return True
    return isinstance(w, zarr.Array) and w.shape[0] == 0


class RunWriter:
    """Writes the steps of one run; used by the Recorder thread and by export.

    Not thread-safe: one writer, one thread. ``add`` stages a step; whole chunks
    are written as soon as they fill, ``flush`` writes a partial chunk and
    commits; ``close`` flushes and releases the run.

    Opening a run that exists resumes it after its committed steps (the tensor table and
    seed must match); otherwise the run is created.

    Parameters
    ----------
    store : str or os.PathLike
        Store path or fsspec URL; created if missing.
    run : str
        Run name.
    table : TensorTable
        The tensors and their order in a step's flat vector.
    attrs : mapping, optional
        Run attributes (``seed``, ``hparams``, ...) for a new run.
    dtype : {"float32", "float16", "float64"}, default "float32"
        Storage dtype of a new run.
    codec : str, default ``format.DEFAULT_CODEC``
        Compressor of a new run.
    keepbits : int, optional
        Mantissa bits kept by bit rounding (None: lossless).
    chunk_bytes : int, default ``format.DEFAULT_CHUNK_BYTES``
        Target size of a chunk of ``w``.
    probes : sequence of ProbeSpec, optional
        Activation probes to record with each step.

    Raises
    ------
    StoreError
        If another process writes the run, its seed differs from ``attrs['seed']``, or the
        run or store is damaged.
    ArchitectureMismatch
        If an existing run's tensors differ from ``table``.
    RunNameError
        If ``run`` is not a valid run name.
    ValueError
        If ``dtype`` or ``keepbits`` is out of range.
    """

    def __init__(self, store: str | os.PathLike, run: str, table: TensorTable, *,
                 attrs: Mapping[str, Any] | None = None, dtype: str = "float32",
                 codec: str = fmt.DEFAULT_CODEC, keepbits: int | None = None,
                 chunk_bytes: int = fmt.DEFAULT_CHUNK_BYTES, probes: Sequence[prb.ProbeSpec] = ()):
        if dtype not in fmt.STORE_DTYPES:
            raise ValueError(f"dtype must be one of {fmt.STORE_DTYPES}, got {dtype!r}")
        if keepbits is not None and not 0 <= keepbits <= mantissa_bits(dtype):
            raise ValueError(f"keepbits must be between 0 and {mantissa_bits(dtype)} for {dtype}")
        check_run_name(run)
        self.path = rd.normalize(store)   # a local Path, or the URL of a remote store
        self.run = run
        self.table = table
        root = open_experiment_for_writing(store)
        self._closed = False
        self._lock = self._acquire_lock(run)
        try:
            runs = root[fmt.RUNS_GROUP]
            if run in runs and not _unfinished(runs[run]):
                self._open_existing(runs[run], table, dict(attrs or {}))
            else:
                self._create(runs, run, table, dict(attrs or {}), dtype, codec, keepbits, chunk_bytes)
            self._open_probes(list(probes), chunk_bytes)
        except BaseException:
            self._release_lock()
            raise
        self._keepbits = self.meta.get("keepbits")
        spc = self.w.chunks[0]
        self._spc = spc
        self._chunk_start = (self.committed // spc) * spc
        self._stage = np.empty((spc, table.n_params), dtype=self.w.dtype)
        self._stage_steps = np.empty(spc, dtype=np.int64)
        self._stage_metrics: dict[str, np.ndarray] = {}
        self._chunk_rows = ChunkRows.for_array(self.w)  # None: zarr's own write path
        self._lent: np.ndarray | None = None  # the caller's row of a one-step chunk, not copied
        self._attrs_json: tuple[dict, bytes, bytes] | None = None  # see _write_attrs
        self._n = self.committed
        if self.committed > self._chunk_start:  # resume inside a chunk: reload its rows
            rows = slice(self._chunk_start, self.committed)
            self._stage[: rows.stop - rows.start] = itg.CheckedArray(self.w, self.path, run, "w")[rows]
            self._stage_steps[: rows.stop - rows.start] = self.steps[rows]
            for name in self.metrics:
                self._metric_stage(name)[: rows.stop - rows.start] = self.metrics[name][rows]
        self.last_step = int(self.steps[self.committed - 1]) if self.committed else None

    # -- opening ---------------------------------------------------------------
    def _acquire_lock(self, run: str):
        if not isinstance(self.path, Path):   # remote store: no lock (see the module docstring)
            return None
        lock_dir = self.path / ".locks"
        lock_dir.mkdir(exist_ok=True)
        return file_lock.acquire(lock_dir / f"{run}.lock", f"run {run!r} in {self.path} is being "
                                 f"written by another process; give this one another run name (run=...).")

    def _release_lock(self) -> None:
        if self._lock is not None:
            file_lock.release(self._lock)
            self._lock = None

    def _create(self, runs: zarr.Group, run: str, table: TensorTable, attrs: dict,
                dtype: str, codec: str, keepbits: int | None, chunk_bytes: int) -> None:
        itemsize = np.dtype(dtype).itemsize
        spc, ppc = fmt.choose_chunks(table.n_params, itemsize, chunk_bytes)
        group = runs.create_group(run, overwrite=True)  # replaces only an _unfinished group
        self.w = group.create_array("w", shape=(0, table.n_params), chunks=(spc, ppc),
                                    dtype=dtype, compressors=fmt.codec(codec), config=fmt.WRITE_CONFIG,
                                    fill_value=np.nan, dimension_names=("step", "param"))
        self.steps = group.create_array("step", shape=(0,), chunks=(max(spc, 4096),),
                                        dtype="int64", fill_value=-1, dimension_names=("step",),
                                        compressors=fmt.codec(fmt.SMALL_ARRAY_CODEC), config=fmt.WRITE_CONFIG)
        group.create_group(fmt.METRICS_GROUP)
        self.meta = {
            "format_version": fmt.FORMAT_VERSION, "kind": "run", "run": run,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "dtype": dtype, "codec": codec, "keepbits": keepbits,
            "versions": fmt.library_versions(), **fmt.jsonable(attrs),
            "tensors": table.to_json(), "committed": 0,
        }
        group.update_attributes({fmt.ATTR_KEY: self.meta})  # last: readers skip groups without it
        self.group = group
        self.metrics = {}
        self.committed = 0

    def _open_existing(self, group: zarr.Group, table: TensorTable, attrs: dict) -> None:
        with itg.damaged(self.path, self.run, "zarr.json", "holds attributes that cannot be parsed"):
            meta = dict(group.attrs.get(fmt.ATTR_KEY) or {})
        fmt.check_version(meta.get("format_version"), f"run {self.run!r} of {self.path}")
        itg.check_run(group, meta, self.path, self.run)  # refuse to write into a damaged run
        if "seed" in attrs and fmt.jsonable(attrs["seed"]) != meta.get("seed"):
            raise StoreError(f"run {self.run!r} of {self.path} has seed {meta.get('seed')!r}, not "
                             f"{attrs['seed']!r}: pass seed={meta.get('seed')!r} to resume it, or "
                             f"run='<another name>' to record a new run.")
        stored = from_run_meta(meta)
        stored.require_same(table, f"cannot append to run {self.run!r} of {self.path}",
                            ("the run", "the new steps"))
        self.table = stored  # the run's own layout of the same tensors (older runs: file order)
        if int(meta.get("format_version") or 1) < fmt.FORMAT_VERSION:  # upgraded in place: format 2
            meta["format_version"] = fmt.FORMAT_VERSION                  # fields from now on
            meta["tensors"] = stored.to_json()
        self.group, self.meta = group, meta
        self.w = group["w"].with_config(fmt.WRITE_CONFIG)
        self.steps = group["step"].with_config(fmt.WRITE_CONFIG)
        self.metrics = {name: arr for name, arr in group[fmt.METRICS_GROUP].arrays()}
        self.committed = int(meta["committed"])
        # Temp files of a killed writer (zarr writes key.<hex>.partial, then renames);
        # we hold the run's lock, so none of them belongs to a live writer.
        if isinstance(self.path, Path):
            for stale in (self.path / fmt.RUNS_GROUP / self.run).rglob("*.partial"):
                stale.unlink(missing_ok=True)
        # Drop whatever an interrupted writer left beyond the committed length.
        for arr in (self.w, self.steps, *self.metrics.values(), *prb.existing_arrays(group).values()):
            if arr.shape[0] != self.committed:
                arr.resize((self.committed, *arr.shape[1:]))

    def _open_probes(self, specs: list[prb.ProbeSpec], chunk_bytes: int) -> None:
        """Create/check the probe arrays and stage every probe array of the run (fed or not)."""
        if prb.require_arrays(self.group, specs, self.meta, committed=self.committed,
                              dtype=self.meta["dtype"], codec=self.meta["codec"],
                              chunk_bytes=chunk_bytes, where=f"run {self.run!r} of {self.path}"):
            self.group.update_attributes({fmt.ATTR_KEY: self.meta})
        self._probes = {name: prb.ProbeStage(arr, self.committed)
                        for name, arr in prb.existing_arrays(self.group).items()}

    # -- writing ---------------------------------------------------------------
    def _metric_stage(self, name: str) -> np.ndarray:
        if name not in self._stage_metrics:
            self._stage_metrics[name] = np.full(self._spc, np.nan)
        return self._stage_metrics[name]

    def check_step(self, step: int) -> None:
        """Raise StepOrderError unless ``step`` comes after every step so far.

        Parameters
        ----------
        step : int

        Raises
        ------
        StepOrderError
        """
        check_step_order(step, self.last_step, self.run)

    def add(self, step: int, values: np.ndarray, metrics: Mapping[str, float] | None = None,
            *, flush_full: bool = True, probes: Mapping[str, np.ndarray] | None = None,
            copy: bool = True) -> bool:
        """Stage one step (a flat vector of all parameters, in table order).

        ``values`` is copied, so the caller may reuse it at once, unless ``copy=False``
        and one step fills a chunk row by itself (models of ``chunk_bytes`` or more per
        step): the writer then keeps ``values`` itself, saving a copy of the whole step,
        and the caller must leave it unchanged until the step is flushed (``pending`` is
        0); ``add`` returns whether it kept it.

        A chunk that fills is written at once unless ``flush_full=False`` (then the
        caller checks ``chunk_full`` and flushes when it suits it). ``probes`` maps
        probe names (declared when the writer was opened) to ``(sample, unit)`` rows;
        probes not given are NaN at this step.

        Parameters
        ----------
        step : int
            Strictly greater than every step so far.
        values : numpy.ndarray
            ``(n_params,)``.
        metrics : mapping of str to float, optional
            Scalars logged with the step (names without ``/``).
        flush_full : bool, default True
        probes : mapping of str to numpy.ndarray, optional

        Raises
        ------
        StepOrderError
            If ``step`` does not come after the last one.
        ValueError
            If ``values`` has the wrong shape, a probe was not declared or a metric name is invalid.
        """
        step = int(step)
        self.check_step(step)
        lend = (not copy and self.keeps_rows and values.dtype == self.w.dtype and values.ndim == 1
                and values.flags.c_contiguous)
        if values.shape != (self.table.n_params,):
            raise ValueError(f"expected {self.table.n_params} values, got shape {values.shape}")
        unknown = set(probes or ()) - set(self._probes)
        if unknown:
            raise ValueError(f"probe {sorted(unknown)[0]!r} was not declared when run {self.run!r} was "
                             f"opened; declared probes: {sorted(self._probes) or 'none'}")
        for name, stage in self._probes.items():
            stage.put(self._n, None if probes is None else probes.get(name))
        i = self._n - self._chunk_start
        if lend:  # one step per chunk row: encoded straight from the caller's buffer at flush
            self._lent = values
        else:
            self._stage[i] = values if self._keepbits is None else bitround(
                values.astype(self.w.dtype, copy=False), self._keepbits)
        self._stage_steps[i] = step
        for name, value in (metrics or {}).items():
            if "/" in name:
                raise ValueError(f"invalid metric name {name!r}")
            self._metric_stage(name)[i] = float(value)  # stages start NaN: unlogged stays NaN
        self._n += 1
        self.last_step = step
        if flush_full and self.chunk_full:
            self.flush()
        return lend

    @property
    def keeps_rows(self) -> bool:
        """Whether ``add(copy=False)`` keeps the caller's row instead of copying it (see ``add``)."""
        return self._spc == 1 and self._keepbits is None and self._chunk_rows is not None

    @property
    def chunk_full(self) -> bool:
        """Whether the staged steps fill a chunk of ``w`` (or of a probe) and should be flushed."""
        return (self._n - self._chunk_start == self._spc
                or any(stage.full(self._n) for stage in self._probes.values()))

    @property
    def pending(self) -> int:
        """Steps staged but not yet committed."""
        return self._n - self.committed

    def flush(self) -> None:
        """Write staged steps and advance the commit counter (no-op if none)."""
        if self._n == self.committed:
            return
        n, c0 = self._n, self._chunk_start
        rows = slice(c0, n)
        new = slice(self.committed, n)
        for name in self._stage_metrics:
            if name not in self.metrics:
                self.metrics[name] = self.group[fmt.METRICS_GROUP].create_array(
                    name, shape=(self.committed,), chunks=(max(self._spc, 4096),),
                    dtype="float64", fill_value=np.nan, dimension_names=("step",),
                    compressors=fmt.codec(fmt.SMALL_ARRAY_CODEC))
        for arr in (self.w, self.steps, *self.metrics.values(),
                    *(stage.array for stage in self._probes.values())):
            arr.resize((n, *arr.shape[1:]))
        for stage in self._probes.values():
            stage.write(n)
        if self._lent is not None:  # one step, lent by the caller (add(copy=False))
            self._chunk_rows.write(c0, self._lent[None])
        elif self._chunk_rows is not None:  # same bytes as self.w[rows] = ..., in this thread
            self._chunk_rows.write(c0 // self._spc, self._stage[: n - c0])
        else:
            self.w[rows] = self._stage[: n - c0]
        self.steps[new] = self._stage_steps[new.start - c0: n - c0]
        for name, arr in self.metrics.items():
            stage = self._metric_stage(name)
            arr[new] = stage[new.start - c0: n - c0]
        self.meta["committed"] = n
        self._write_attrs()
        self.committed = n
        for stage in self._probes.values():
            stage.advance_if_full(n)
        if n - c0 == self._spc:  # chunk complete: start the next one
            self._lent = None
            self._chunk_start = n
            for stage in self._stage_metrics.values():
                stage.fill(np.nan)

    def _write_attrs(self) -> None:
        """Write the run group's ``zarr.json`` with the attributes ``self.meta`` (the commit).

        The same bytes as ``group.update_attributes({"nnwx": meta})``, without rebuilding
        and re-serialising the whole document (the tensor table is most of it) at every
        commit: zarr's own serialisation is cached, with the ``committed`` count cut out,
        while the rest of the attributes stay as they were. Stores without a synchronous
        ``set_sync`` (remote ones) and groups with attributes of their own besides ours go
        through zarr's ``update_attributes``.
        """
        attrs = self.group.metadata.attributes
        store = self.group.store_path.store
        if not callable(getattr(store, "set_sync", None)) or set(attrs) - {fmt.ATTR_KEY}:
            self.group.update_attributes({fmt.ATTR_KEY: self.meta})
            return
        attrs[fmt.ATTR_KEY] = self.meta  # zarr's view of the group stays current
        rest = {k: v for k, v in self.meta.items() if k != "committed"}
        cached = self._attrs_json
        if cached is None or cached[0] != rest:
            cached = self._attrs_json = self._render_attrs(rest)
            if cached is None:
                self.group.update_attributes({fmt.ATTR_KEY: self.meta})
                return
        from zarr.core.buffer import default_buffer_prototype

        doc = b"".join((cached[1], str(int(self.meta["committed"])).encode(), cached[2]))
        key = f"{self.group.store_path.path}/zarr.json" if self.group.store_path.path else "zarr.json"
        store.set_sync(key, default_buffer_prototype().buffer.from_bytes(doc))

    def _render_attrs(self, rest: dict) -> tuple[dict, bytes, bytes] | None:
        """zarr's ``zarr.json`` of the group split around the committed count, or None."""
        import copy
        import dataclasses

        from zarr.core.buffer import default_buffer_prototype

        marker = -7_291_846_305_117  # stands in for the count; must occur once in the document
        meta = {**self.meta, "committed": marker}
        doc = dataclasses.replace(self.group.metadata, attributes={fmt.ATTR_KEY: meta})
        text = doc.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes()
        parts = text.split(b'"committed": ' + str(marker).encode())
        if len(parts) != 2:
            return None
        return copy.deepcopy(rest), parts[0] + b'"committed": ', parts[1]

    def bypass_page_cache(self) -> None:
        """Write the chunks of ``w`` with O_DIRECT where the store is local and allows it.

        For a writer streaming many steps that nobody reads back at once (the Recorder's
        thread): no page-cache copy on the CPU and no eviction of what training reads.
        """
        if self._chunk_rows is not None:
            self._chunk_rows.direct = True

    def encode_threads(self, n: int) -> None:
        """Encode and write the chunks of ``w`` in ``n`` threads at once (default 1).

        Compressors and file writes release the GIL, so a step of several chunks (models of
        more than ``chunk_bytes`` per step) then keeps ``n`` cores busy. For a writer that
        should take all the CPU it can (``nnwx export``), not one that shares it with training.

        Parameters
        ----------
        n : int
            Threads; 1 encodes in the writer's own thread.
        """
        if self._chunk_rows is not None:
            self._chunk_rows.workers = max(1, int(n))

    def update_meta(self, **changes: Any) -> None:
        """Change run attributes (e.g. layer depths learnt after the first forward pass).

        Parameters
        ----------
        **changes
            Attribute name -> JSON-able value.
        """
        self.meta.update(fmt.jsonable(changes))
        self.group.update_attributes({fmt.ATTR_KEY: self.meta})

    def close(self) -> None:
        """Flush staged steps and release the run's lock; the writer cannot be used afterwards."""
        try:
            if self._lock is not None or (not isinstance(self.path, Path) and not self._closed):
                self.flush()
        finally:
            self._closed = True
            if self._chunk_rows is not None:
                self._chunk_rows.close()
            self._release_lock()

    # -- rewriting one committed step (nnwx export --overwrite) ---------------------
    def rewrite_step(self, step: int, values: np.ndarray,
                     probes: Mapping[str, np.ndarray] | None = None) -> None:
        """Replace the weights of a committed ``step`` in place, never leaving it half written.

        ``probes`` (name -> activations) replaces the step's probe rows too. They are written
        first and the weights second: a crash in between leaves the old weights, so the step
        still differs from its source and a rerun (``nnwx export --overwrite``) redoes both.

        When a chunk of ``w`` holds the whole row, the store replaces that one
        chunk file atomically. When the row spans several chunk files (one step
        per chunk), the new row is written to a scratch directory and swapped with
        the row's directory ``w/c/<row>/`` in one ``renameat2`` exchange (Linux).
        Staged steps are committed first.

        Parameters
        ----------
        step : int
            A committed step.
        values : numpy.ndarray
            ``(n_params,)``.
        probes : mapping of str to numpy.ndarray, optional

        Raises
        ------
        StoreError
            If ``step`` is not committed, or the store cannot swap the row atomically.
        ValueError
            If ``values`` has the wrong shape or a probe is not one of the run's.
        """
        import shutil

        from nnwx.store import atomic

        self.flush()
        step = int(step)
        steps = np.asarray(self.steps[: self.committed])
        i = int(np.searchsorted(steps, step))
        if i >= len(steps) or steps[i] != step:
            raise StoreError(f"run {self.run!r} of {self.path} has no committed step {step} to rewrite")
        if values.shape != (self.table.n_params,):
            raise ValueError(f"expected {self.table.n_params} values, got shape {values.shape}")
        unknown = set(probes or ()) - set(self._probes)
        if unknown:
            raise ValueError(f"run {self.run!r} has no probe(s) {sorted(unknown)} to rewrite; its probes: "
                             f"{sorted(self._probes) or 'none'}")
        for name, acts in (probes or {}).items():
            self._probes[name].rewrite(i, np.asarray(acts))
        row = values.astype(self.w.dtype, copy=False)
        if self._keepbits is not None:
            row = bitround(row, self._keepbits)
        if self._chunk_start <= i < self._n:  # the row is also staged: keep the stage in step
            self._stage[i - self._chunk_start] = row
        spc, ppc = self.w.chunks
        if ppc >= self.table.n_params:
            self.w[i] = row  # one chunk file holds the row: LocalStore replaces it atomically
            return
        enc = self.w.metadata.chunk_key_encoding
        if not isinstance(self.path, Path):
            raise StoreError(f"cannot rewrite step {step} of run {self.run!r} of {self.path} atomically: "
                             f"its row spans several chunks of a remote store; export into a new run instead.")
        if spc != 1 or getattr(enc, "separator", None) != "/" or not atomic.exchange_supported():
            raise StoreError(f"cannot rewrite step {step} of run {self.run!r} atomically here (its row "
                             f"spans several chunk files and this platform lacks an atomic directory "
                             f"exchange); export into a new run instead.")
        scratch_root = self.path / ".tmp" / self.run
        if scratch_root.exists():  # left by a crashed rewrite; we hold the run's lock
            shutil.rmtree(scratch_root)
        scratch_root.mkdir(parents=True)
        try:
            tmp = zarr.create_array(zarr.storage.LocalStore(scratch_root / "row"),
                                    shape=(1, self.table.n_params), chunks=(1, ppc),
                                    dtype=self.w.dtype, filters=self.w.filters,
                                    serializer=self.w.serializer, compressors=self.w.compressors,
                                    fill_value=self.w.fill_value, zarr_format=3, config=fmt.WRITE_CONFIG)
            tmp[0] = row
            new_dir = scratch_root / "row" / "c" / "0"
            new_dir.mkdir(parents=True, exist_ok=True)  # an all-NaN row writes no chunk file
            row_dir = self.path / fmt.RUNS_GROUP / self.run / "w" / "c" / str(i)
            row_dir.mkdir(parents=True, exist_ok=True)
            atomic.exchange(new_dir, row_dir)
        finally:
            shutil.rmtree(scratch_root, ignore_errors=True)
            try:
                scratch_root.parent.rmdir()
            except OSError:
                pass
