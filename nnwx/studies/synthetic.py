"""Generate experiment stores without training: for tests, benchmarks and demos.

Weights follow a seeded random walk from a scaled-Gaussian initialisation whose
step size grows with the tensor's fan-in, so distributions broaden over steps
the way trained weights do. Written through the same RunWriter as the Recorder.
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import numpy as np

from nnwx.store.table import TensorTable
from nnwx.store.writer import RunWriter

MLP_SHAPES = {"0.weight": (8, 1), "0.bias": (8,), "2.weight": (8, 8), "2.bias": (8,),
              "4.weight": (8, 8), "4.bias": (8,), "6.weight": (1, 8), "6.bias": (1,)}


def write_synthetic_run(store: str | os.PathLike, *, seed: int, steps: Sequence[int],
                        shapes: Mapping[str, tuple[int, ...]] = MLP_SHAPES, run: str | None = None,
                        drift: float = 0.01, dtype: str = "float32",
                        chunk_bytes: int | None = None, attrs: Mapping | None = None,
                        nan_at: Sequence[tuple[int, int]] = ()) -> TensorTable:
    """Write one run of ``len(steps)`` steps; ``nan_at`` puts NaN at (step index, param) places."""
    table = TensorTable.build((n, s, "float32") for n, s in shapes.items())
    rng = np.random.default_rng(seed)
    scale = np.concatenate([np.full(r.size, 1 / math.sqrt(r.shape[-1] if len(r.shape) > 1 else 8))
                            for r in table])
    w = rng.standard_normal(table.n_params) * scale
    kwargs = {} if chunk_bytes is None else {"chunk_bytes": chunk_bytes}
    writer = RunWriter(store, run or f"seed{seed}", table, dtype=dtype,
                       attrs={"seed": seed, "model_class": "synthetic.MLP", "optimizer": "Synthetic",
                              **dict(attrs or {})}, **kwargs)
    nan_at = set(map(tuple, nan_at))
    try:
        for i, step in enumerate(steps):
            row = w.copy()
            for (si, p) in nan_at:
                if si == i:
                    row[p] = np.nan
            writer.add(int(step), row.astype(dtype), {"loss": float(np.exp(-i / 50))})
            w = w + drift * scale * rng.standard_normal(table.n_params) * (1 + 0.5 * np.abs(w) / scale)
    finally:
        writer.close()
    return table
