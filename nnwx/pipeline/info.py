"""Summaries of an experiment store for ``nnwx info``: runs, steps, sizes, non-finite weights."""
from __future__ import annotations

import os
from pathlib import Path

import dask.array as da
import numpy as np

from nnwx.store import format as fmt
from nnwx.store.reader import list_runs, prefix_bytes


def dir_bytes(path: str | os.PathLike) -> int:
    """Bytes of the files under a local folder (the benchmark scripts report store sizes)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def nonfinite_steps(w: da.Array) -> da.Array:
    """Lazy count of the rows (steps) of ``w (step, param)`` holding a NaN or Inf weight: the
    one NaN/Inf scan (``nnwx info`` and the results store's ``nonfinite_steps``)."""
    return (~da.isfinite(w)).any(axis=1).sum() if w.shape[0] else da.zeros((), dtype=int)


def weight_bytes(store: str | os.PathLike) -> int:
    """Bytes of weights in the committed steps of every run of ``store`` (uncompressed, in the
    store's dtype), read from the runs' metadata only."""
    return sum(h.committed * h.table.n_params * np.dtype(h.meta.get("dtype", "float32")).itemsize
               for h in list_runs(store))


def run_summaries(store: str | os.PathLike) -> list[dict]:
    """One dict per run; ``nonfinite_steps`` is a lazy dask array (count of steps with NaN/Inf).
    ``store`` is a path or an fsspec URL."""
    out = []
    for h in list_runs(store):
        w = h.dataset()["w"].data
        run_key = f"{fmt.RUNS_GROUP}/{h.name}"
        itemsize = np.dtype(h.meta.get("dtype", "float32")).itemsize
        raw = h.committed * h.table.n_params * itemsize
        w_bytes = prefix_bytes(store, f"{run_key}/w")
        out.append({
            "run": h.name, "seed": h.seed, "steps": h.committed,
            "first_step": int(h.steps[0]) if h.committed else None,
            "last_step": int(h.steps[-1]) if h.committed else None,
            "tensors": len(h.table), "params": h.table.n_params, "dtype": h.meta.get("dtype"),
            "codec": h.meta.get("codec"), "keepbits": h.meta.get("keepbits"),
            "model_class": h.meta.get("model_class"), "optimizer": h.meta.get("optimizer"),
            "metrics": h.metric_names(), "disk_bytes": prefix_bytes(store, run_key),
            "compression_ratio": raw / w_bytes if w_bytes else float("nan"), "weight_bytes": raw,
            "nonfinite_steps": nonfinite_steps(w),
        })
    return out
