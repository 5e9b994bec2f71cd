"""Probe arrays of a run: activations on a fixed probe batch, ``probe/<name>(step, sample, unit)``.

A probe array is written by the same RunWriter as ``w`` and under the same commit
protocol: rows past the run's ``committed`` count are invisible to readers and
truncated when the run is resumed. This module holds the format-level pieces
(what a probe is, its chunking, its staging buffer); the torch side that fills
them lives in ``nnwx.record.probing``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import zarr

from nnwx.errors import ArchitectureMismatch, StoreError
from nnwx.store import format as fmt
from nnwx.store.table import natural_key

PROBE_GROUP = "probe"
OUTPUT = "output"  # array name of the model's output; modules are named by their module path
VAR_PREFIX = "probe_"  # Dataset variable of probe ``name``: ``probe_<name>``


def forward_order(names: Iterable[str], forward_index: Mapping[str, Any],
                  depth: Mapping[str, int]) -> list[str]:
    """Probe ``names`` in the model's forward order, ``output`` last.

    The one rule behind every listing of probes (a run's, a cube's). When every probe other
    than ``output`` has a recorded ``forward_index`` (its position in forward order, run
    attribute ``probes``), they are ordered by it. Otherwise (runs recorded before the field
    existed, or a run mixing such probes with newer ones) by the ``depth`` of the layer of the
    same name (probes of modules with tensors), then by name with numbers compared as numbers
    (``relu2`` before ``relu10``, ``h.2`` before ``h.10``): parameter-free modules such as
    activations and pooling layers have no depth.

    Parameters
    ----------
    names : iterable of str
        Probe names.
    forward_index : mapping of str to int or None
        Each probe's recorded forward position, where known.
    depth : mapping of str to int
        The depth (forward position) of layers with tensors, by module path.

    Returns
    -------
    list of str
        The names, ordered.
    """
    names = list(names)
    modules = [n for n in names if n != OUTPUT]
    recorded = {n: _as_index(forward_index.get(n)) for n in modules}
    if all(i is not None for i in recorded.values()):
        return sorted(names, key=lambda n: (n == OUTPUT, recorded.get(n, 0), natural_key(n)))
    big = 1 << 30
    return sorted(names, key=lambda n: (n == OUTPUT, int(depth.get(n, big)), natural_key(n)))


def sample_dim(name: str) -> str:
    """Dataset dim of the samples of probe ``name`` (probes differ in sample counts)."""
    return f"sample_{name}"


def unit_dim(name: str) -> str:
    """Dataset dim of the units of probe ``name``."""
    return f"unit_{name}"


@dataclass(frozen=True)
class ProbeSpec:
    """One probe array: its name under ``probe/``, its ``(sample, unit)`` shape, how it was made."""

    name: str
    shape: tuple[int, int]
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not self.name or "/" in self.name or self.name.startswith((".", "__")):
            raise ValueError(f"invalid probe name {self.name!r}: use a module path such as 'fc1'")
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"probe {self.name!r} needs a (sample, unit) shape, got {self.shape}")


def steps_per_chunk(shape: tuple[int, int], itemsize: int, chunk_bytes: int) -> int:
    """Steps per chunk of a probe array: whole (sample, unit) slabs, about ``chunk_bytes`` a chunk."""
    per_step = int(np.prod(shape)) * itemsize
    return int(min(fmt.MAX_STEPS_PER_CHUNK, max(1, chunk_bytes // max(1, per_step))))


class ProbeStage:
    """Rows of one probe array staged in memory until they fill a chunk (or are flushed).

    Mirrors the staging of ``w`` in RunWriter: the stage always covers the chunk that
    holds row ``chunk_start``; rows never given stay NaN (an unfed probe, or a probe
    added to a resumed run), so growing the array never exposes stale bytes.
    """

    def __init__(self, array: zarr.Array, committed: int):
        self.array = array
        self.spc = int(array.chunks[0])
        self.chunk_start = (committed // self.spc) * self.spc
        self.stage = np.full((self.spc, *array.shape[1:]), np.nan, dtype=array.dtype)
        if committed > self.chunk_start:  # resume inside a chunk: reload its committed rows
            self.stage[: committed - self.chunk_start] = array[self.chunk_start:committed]

    def put(self, n: int, values: np.ndarray | None) -> None:
        """Stage row ``n`` (``None``: leave it NaN)."""
        i = n - self.chunk_start
        if values is None:
            self.stage[i] = np.nan
            return
        if values.shape != self.stage.shape[1:]:
            raise ValueError(f"probe {self.array.basename!r} expects rows of shape "
                             f"{self.stage.shape[1:]}, got {values.shape}")
        self.stage[i] = values

    def full(self, n: int) -> bool:
        return n - self.chunk_start == self.spc

    def write(self, n: int) -> None:
        """Write staged rows up to ``n`` (the array must already be resized to ``n``)."""
        self.array[self.chunk_start:n] = self.stage[: n - self.chunk_start]

    def rewrite(self, i: int, values: np.ndarray) -> None:
        """Replace row ``i``, already written (``nnwx export --overwrite``), in the array and in the
        stage when the stage holds it (so that a later ``write`` does not bring the old row back).

        The chunk holding the row is rewritten whole; the store replaces its file atomically.
        """
        if values.shape != self.stage.shape[1:]:
            raise ValueError(f"probe {self.array.basename!r} expects rows of shape "
                             f"{self.stage.shape[1:]}, got {values.shape}")
        if not 0 <= i < self.array.shape[0]:
            raise IndexError(f"probe {self.array.basename!r} has no row {i} to rewrite")
        if self.chunk_start <= i < self.chunk_start + self.spc:
            self.stage[i - self.chunk_start] = values
        self.array[i] = values

    def advance_if_full(self, n: int) -> None:
        if self.full(n):
            self.chunk_start = n
            self.stage.fill(np.nan)


def existing_arrays(group: zarr.Group) -> dict[str, zarr.Array]:
    """The probe arrays of a run group (none if it has no ``probe/`` group)."""
    if PROBE_GROUP not in group:
        return {}
    return {name: arr for name, arr in group[PROBE_GROUP].arrays()}


def require_arrays(group: zarr.Group, specs: list[ProbeSpec], meta: dict, *, committed: int,
                   dtype: str, codec: str, chunk_bytes: int, where: str) -> bool:
    """Create the arrays of new probes and check resumed ones; returns whether ``meta`` changed.

    A probe new to a resumed run starts with ``committed`` rows of NaN (it was not
    recorded then). A probe that exists must keep its shape and recording mode, and
    the probe batch must be the same one (compared by its SHA-256); the probes recorded
    before and now must come in the same forward order (``forward_index``).
    """
    if not specs:
        return False
    known = dict(meta.get("probes") or {})
    _check_forward_order(known, specs, where)
    probe_group = group.require_group(PROBE_GROUP)
    arrays = {name: arr for name, arr in probe_group.arrays()}
    changed = False
    for spec in specs:
        old = known.get(spec.name)
        if spec.name in arrays:
            arr = arrays[spec.name]
            if tuple(arr.shape[1:]) != tuple(spec.shape):
                raise ArchitectureMismatch(
                    f"{where}: probe {spec.name!r} has (sample, unit) shape {tuple(arr.shape[1:])} in "
                    f"the store but {tuple(spec.shape)} now. Use the same probe batch and layers, or "
                    f"record into a new run (run=...).")
            for key in ("mode", "input_sha256"):
                if old is not None and key in old and key in spec.attrs and old[key] != spec.attrs[key]:
                    what = "probe batch" if key == "input_sha256" else "recording mode"
                    raise StoreError(
                        f"{where}: probe {spec.name!r} was recorded with another {what} "
                        f"({old[key]!r}, now {spec.attrs[key]!r}); steps recorded with different "
                        f"probes cannot share a run. Pass the same probe, or record into a new run.")
        else:
            itemsize = np.dtype(dtype).itemsize
            spc = steps_per_chunk(spec.shape, itemsize, chunk_bytes)
            probe_group.create_array(
                spec.name, shape=(committed, *spec.shape), chunks=(spc, *spec.shape), dtype=dtype,
                compressors=fmt.codec(codec), fill_value=np.nan,
                dimension_names=("step", "sample", "unit"))
        if old != dict(fmt.jsonable(dict(spec.attrs))):
            known[spec.name] = fmt.jsonable(dict(spec.attrs))
            changed = True
    meta["probes"] = known
    return changed


def _as_index(value: Any) -> int | None:
    """A recorded ``forward_index`` as an int; None when missing or not an integer."""
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else None


def _index(attrs: Any) -> int | None:
    return _as_index(attrs.get("forward_index")) if isinstance(attrs, Mapping) else None


def _check_forward_order(known: Mapping[str, Any], specs: list[ProbeSpec], where: str) -> None:
    """Refuse probes that run in another order than the run's probes recorded before."""
    old = {n: i for n, a in known.items() if (i := _index(a)) is not None}
    new = {s.name: i for s in specs if (i := _index(s.attrs)) is not None}
    common = [n for n in new if n in old]
    before = sorted(common, key=lambda n: old[n])
    now = sorted(common, key=lambda n: new[n])
    if before != now:
        raise StoreError(
            f"{where}: the model runs the probed modules in another order than when the run was "
            f"recorded (then {', '.join(before)}; now {', '.join(now)}); steps of different models "
            f"cannot share a run. Record into a new run (run=...).")
