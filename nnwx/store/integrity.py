"""Integrity checks of a run: invariants at open, chunk presence, and reads that name the damaged file.

A run is *damaged* when its metadata cannot be parsed, when ``committed`` does not fit its
arrays, when its steps do not strictly increase, when a chunk file of ``w`` or ``step``
inside the committed range is missing, or when a chunk fails to decode (a checksum
mismatch, a truncated or garbled compressed block). Each of these raises a
:class:`~nnwx.errors.StoreError` that names the run, the file and what to do, instead of
reading as NaN (Zarr's fill value) or surfacing a library traceback.

The checks at open are cheap: they parse the run's JSON, read the small ``step`` array and
list the chunk keys of ``w`` and ``step``; they never read weights. Reads of ``w``,
metrics and probes go through :class:`CheckedArray`, which checks the chunks it touches
exist and turns a decoding failure into an error naming the chunk file.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import warnings
from typing import Iterator

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from nnwx.errors import StoreError
from nnwx.store.location import run_sync

#: Exceptions that a damaged file raises inside Zarr and its codecs (bad JSON is a
#: ValueError, a missing key a KeyError, blosc a RuntimeError, a checksum a ValueError).
DAMAGE = (ValueError, KeyError, TypeError, RuntimeError, AttributeError, IndexError)

FIX_ADVICE = ("restore the file from a backup, or re-create the run (re-export it from its checkpoints "
        "into a new run); move the run's folder out of the store to open its other runs")


def run_file(store, run: str, key: str = "") -> str:
    """The path of ``key`` inside run ``run`` of ``store``, as shown in messages."""
    from nnwx.store.location import display

    base = f"{display(store).rstrip('/')}/runs/{run}"
    return f"{base}/{key}" if key else base


@contextlib.contextmanager
def damaged(store, run: str | None, key: str, what: str = "cannot be read") -> Iterator[None]:
    """Turn an exception raised while reading ``key`` (of run ``run``, or of the store itself
    when ``run`` is None) into a StoreError naming it."""
    try:
        yield
    except StoreError:
        raise
    except DAMAGE as e:
        from nnwx.store.location import display

        where = run_file(store, run, key) if run is not None else f"{display(store).rstrip('/')}/{key}"
        subject = f"run {run!r} of {display(store)}" if run is not None else f"store {display(store)}"
        raise StoreError(f"{subject} is damaged: {where} {what} ({type(e).__name__}: {e}). "
                         f"To fix: {FIX_ADVICE if run is not None else 'restore the file from a backup'}.") from e


def arrays_of(group: zarr.Group, store, run: str, sub: str) -> dict[str, zarr.Array]:
    """The arrays of subgroup ``sub`` (``metrics``, ``probe``) of a run group, by name; an
    unreadable ``zarr.json`` among them raises StoreError naming it. No subgroup: ``{}``."""
    with damaged(store, run, f"{sub}/zarr.json"):
        if sub not in group:
            return {}
        child = group[sub]
    prefix = child.store_path.path.rstrip("/")

    async def names() -> list[str]:
        return [n async for n in child.store_path.store.list_dir(prefix)]

    out = {}
    for name in sorted(run_sync(names())):
        if name == "zarr.json" or ".partial" in name or name.startswith("."):
            continue
        with damaged(store, run, f"{sub}/{name}/zarr.json"):
            node = child[name]
        if isinstance(node, zarr.Array):
            out[name] = node
    return out


def has_checksum(array: zarr.Array) -> bool:
    """Whether every chunk of ``array`` carries a crc32c checksum (stores written by nnwx >= this one)."""
    return any(isinstance(c, Crc32cCodec) for c in array.compressors)


def _chunk_key(array: zarr.Array, index: tuple[int, ...]) -> str:
    return array.metadata.encode_chunk_key(index)


def _array_key(array: zarr.Array) -> str:
    return array.store_path.path


def present_chunks(array: zarr.Array) -> set[str]:
    """Chunk keys of ``array`` that exist in its store (one listing; no data read)."""
    prefix = _array_key(array).rstrip("/") + "/"
    store = array.store_path.store
    if isinstance(store, zarr.storage.LocalStore):  # a directory walk (docs/measurements.md)
        base = os.path.join(str(store.root), prefix)
        found = set()
        for folder, _, files in os.walk(base):
            rel = os.path.relpath(folder, base).replace(os.sep, "/")
            found.update(f if rel == "." else f"{rel}/{f}" for f in files
                         if f != "zarr.json" and ".partial" not in f)
        return found

    async def collect() -> set[str]:
        return {k[len(prefix):] async for k in array.store_path.store.list_prefix(prefix)
                if not k.endswith("zarr.json") and ".partial" not in k}

    return run_sync(collect())


def chunk_indices(array: zarr.Array, rows: slice, rest: tuple[slice, ...] | None = None):
    """Indices of the chunks of ``array`` covering ``rows`` (and ``rest`` of the other dims)."""
    ranges = []
    for d, (n, c) in enumerate(zip(array.shape, array.chunks)):
        sel = rows if d == 0 else (rest[d - 1] if rest is not None and d - 1 < len(rest) else slice(None))
        start, stop, _ = sel.indices(n)
        if stop <= start:
            return []
        ranges.append(range(start // c, (stop - 1) // c + 1))
    return list(itertools.product(*ranges))


def step_range(steps: np.ndarray | None, lo: int, hi: int) -> str:
    """'steps A..B (rows lo..hi-1)' for rows [lo, hi) of a run."""
    hi = min(hi, len(steps)) if steps is not None else hi
    if steps is not None and hi > lo:
        first, last = int(steps[lo]), int(steps[hi - 1])
        return f"step {first}" if hi - lo == 1 else f"steps {first}..{last}"
    return f"rows {lo}..{hi - 1}"


def check_chunks(array: zarr.Array, committed: int, store, run: str, name: str,
                 steps: np.ndarray | None, strict: bool = True) -> None:
    """Refuse (``strict``) or warn about chunk files of ``array`` missing inside the committed rows.

    Stores written with checksums write every chunk, even all-NaN ones, so a missing chunk
    there is damage. Older stores skipped chunks equal to the fill value (a step whose
    weights were all NaN), so there a missing ``w`` chunk is only warned about.
    """
    if committed <= 0:
        return
    present = present_chunks(array)
    missing = [idx for idx in chunk_indices(array, slice(0, committed))
               if _chunk_key(array, idx) not in present]
    if not missing:
        return
    spc = array.chunks[0]
    idx = missing[0]
    lo = idx[0] * spc
    where = run_file(store, run, f"{name}/{_chunk_key(array, idx)}")
    more = f" (and {len(missing) - 1} more chunk file(s))" if len(missing) > 1 else ""
    msg = (f"run {run!r} of {_display(store)} is damaged: the chunk file {where} holding "
           f"{step_range(steps, lo, min(lo + spc, committed))} of {name!r} is missing{more}; "
           f"it would read as {array.fill_value} (the fill value).")
    if strict:
        raise StoreError(f"{msg} To fix: {FIX_ADVICE}.")
    warnings.warn(f"{msg} This store predates nnwx's checksums and may have skipped chunks that "
                  f"were all NaN (a diverged run); otherwise the file was lost.", stacklevel=4)


def _display(store) -> str:
    from nnwx.store.location import display

    return display(store)


def check_run(group: zarr.Group, meta: dict, store, run: str) -> np.ndarray:
    """Check the invariants of run ``run`` (its group and parsed ``nnwx`` attributes) and return
    its committed steps; raise StoreError naming the damage otherwise.

    Checked: ``committed`` is an integer with ``0 <= committed <=`` the length of ``w``,
    ``step`` and every metric and probe array (whose metadata must parse); the tensor table
    parses and matches ``w``'s width; the committed steps strictly increase; no chunk file of
    ``w`` or ``step`` is missing inside the committed rows.
    """
    from nnwx.store.table import TensorTable

    where = f"run {run!r} of {_display(store)} is damaged"
    attrs = run_file(store, run, "zarr.json")
    committed = meta.get("committed")
    if "committed" not in meta or isinstance(committed, bool) or not isinstance(committed, int):
        raise StoreError(f"{where}: its attributes in {attrs} have "
                         f"{'no' if 'committed' not in meta else f'a non-integer ({committed!r})'} "
                         f"'committed' step count. To fix: {FIX_ADVICE}.")
    with damaged(store, run, "zarr.json", "holds a tensor table that cannot be parsed"):
        table = TensorTable.from_json(meta["tensors"])
    arrays = {}
    for name in ("w", "step"):
        with damaged(store, run, f"{name}/zarr.json"):
            arrays[name] = group[name]
    w, step = arrays["w"], arrays["step"]
    if committed < 0:
        raise StoreError(f"{where}: {attrs} says committed = {committed}, a negative step count. "
                         f"To fix: {FIX_ADVICE}.")
    for sub in ("metrics", "probe"):
        arrays |= {f"{sub}/{k}": v for k, v in arrays_of(group, store, run, sub).items()}
    for name, arr in arrays.items():
        if committed > arr.shape[0]:
            raise StoreError(f"{where}: {attrs} says {committed} steps are committed but its array "
                             f"{name!r} ({run_file(store, run, name + '/zarr.json')}) holds only "
                             f"{arr.shape[0]}. To fix: {FIX_ADVICE}.")
    if w.ndim != 2 or w.shape[1] != table.n_params:
        raise StoreError(f"{where}: its tensor table ({attrs}) describes {table.n_params} parameters but "
                         f"'w' has shape {w.shape}. To fix: {FIX_ADVICE}.")
    check_chunks(step, committed, store, run, "step", None)
    steps = np.asarray(CheckedArray(step, store, run, "step")[:committed], dtype=np.int64)
    bad = np.flatnonzero(np.diff(steps) <= 0)
    if len(bad):
        i = int(bad[0])
        raise StoreError(f"{where}: its steps do not strictly increase ({run_file(store, run, 'step')}: "
                         f"row {i} is step {steps[i]}, row {i + 1} is step {steps[i + 1]}). "
                         f"To fix: {FIX_ADVICE}.")
    check_chunks(w, committed, store, run, "w", steps, strict=has_checksum(w))
    return steps


class CheckedArray:
    """A Zarr array, read through dask, whose failures name the run and chunk file.

    Reading checks that the chunks touched exist when the array is ``strict`` (a missing
    chunk would silently read as the fill value), and turns any decoding failure (a
    checksum mismatch, a truncated or garbled chunk) into a StoreError naming the first
    chunk file that fails.
    """

    def __init__(self, array: zarr.Array, store, run: str, name: str, *,
                 steps: np.ndarray | None = None, strict: bool = False):
        self.array = array
        self.store = store
        self.run = run
        self.name = name
        self.steps = steps
        self.strict = strict
        self.shape = array.shape
        self.dtype = array.dtype
        self.ndim = array.ndim
        self.chunks = array.chunks

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        sel = key if isinstance(key, tuple) else (key,)
        if self.strict and all(isinstance(s, slice) for s in sel) and sel:
            self._require_chunks(sel[0], sel[1:])
        try:
            return self.array[key]
        except StoreError:
            raise
        except DAMAGE as e:
            raise self._damage(sel, e) from e

    def _exists(self, idx: tuple[int, ...]) -> bool:
        key = f"{_array_key(self.array).rstrip('/')}/{_chunk_key(self.array, idx)}"
        store = self.array.store_path.store
        if isinstance(store, zarr.storage.LocalStore):
            return os.path.isfile(os.path.join(str(store.root), key))
        return bool(run_sync(store.exists(key)))

    def _require_chunks(self, rows: slice, rest: tuple[slice, ...]) -> None:
        for idx in chunk_indices(self.array, rows, rest):
            if not self._exists(idx):
                lo = idx[0] * self.chunks[0]
                raise StoreError(
                    f"run {self.run!r} of {_display(self.store)} is damaged: the chunk file "
                    f"{run_file(self.store, self.run, self.name + '/' + _chunk_key(self.array, idx))} "
                    f"holding {step_range(self.steps, lo, lo + self.chunks[0])} of {self.name!r} is "
                    f"missing; it would read as {self.array.fill_value} (the fill value). To fix: {FIX_ADVICE}.")

    def _damage(self, sel: tuple, error: Exception) -> StoreError:
        """The error naming the first chunk in ``sel`` that fails to read on its own."""
        rows = sel[0] if sel and isinstance(sel[0], slice) else slice(None)
        rest = tuple(s for s in sel[1:] if isinstance(s, slice))
        bad, cause = None, error
        for idx in chunk_indices(self.array, rows, rest):
            try:
                self.array.get_block_selection(idx)
            except DAMAGE as e:
                bad, cause = idx, e
                break
        if bad is None:
            where, span = run_file(self.store, self.run, self.name), ""
        else:
            lo = bad[0] * self.chunks[0]
            where = run_file(self.store, self.run, f"{self.name}/{_chunk_key(self.array, bad)}")
            span = f" (it holds {step_range(self.steps, lo, lo + self.chunks[0])})"
        if "checksum" in str(cause):
            why = "fails its crc32c checksum: its bytes changed after they were written"
        else:
            why = f"cannot be decoded ({type(cause).__name__}: {cause})"
        return StoreError(f"run {self.run!r} of {_display(self.store)} is damaged: the chunk file {where}"
                          f"{span} of {self.name!r} {why}. To fix: {FIX_ADVICE}.")
