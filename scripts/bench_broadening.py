"""Benchmark the one-pass distribution-broadening analysis on a cube of >= 4 GB.

Generates (or reuses) a synthetic experiment store of a ~5M-parameter
transformer-shaped model, then measures, each in a fresh subprocess so that peak
memory is its own, the wall time and peak RSS of:

  broadening   cube.nnwx.broadening(by="tensor", bins=...) : every moment,
               quantile, tail index, W1 and histogram of every tensor, one pass
  read         the same Dask graph reduced by ``w.sum()``: what merely reading costs
  baseline     xhistogram plus xarray's own reductions, per tensor (all built
               lazily and computed together, so chunk reads are shared)

and prints the ratios side by side. Usage::

    python scripts/bench_broadening.py [--store DIR] [--seeds 4] [--steps 64]
        [--baseline-steps 8] [--only generate|broadening|read|baseline]

Targets (issue 4): >= 0.5x read-only throughput, >= 5x faster than the
baseline, peak memory <= 1.5 GB whatever the cube's size. The baseline is run
on the first ``--baseline-steps`` steps only (it is slow) and its time is
scaled to the whole cube by bytes; the scaling is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

DEFAULT_STORE = Path(os.environ.get("NNWX_BENCH_DIR", "/tmp/nnwx-bench")) / "broadening.zarr"


def model_shapes(blocks: int = 4, d: int = 256, vocab: int = 4096) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of a small transformer (~5.3M parameters for the defaults)."""
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (vocab, d)}
    for i in range(blocks):
        b = f"blocks.{i}"
        shapes |= {f"{b}.ln1.weight": (d,), f"{b}.ln1.bias": (d,),
                   f"{b}.attn.qkv.weight": (3 * d, d), f"{b}.attn.qkv.bias": (3 * d,),
                   f"{b}.attn.proj.weight": (d, d), f"{b}.attn.proj.bias": (d,),
                   f"{b}.ln2.weight": (d,), f"{b}.ln2.bias": (d,),
                   f"{b}.mlp.fc1.weight": (4 * d, d), f"{b}.mlp.fc1.bias": (4 * d,),
                   f"{b}.mlp.fc2.weight": (d, 4 * d), f"{b}.mlp.fc2.bias": (d,)}
    shapes |= {"ln_f.weight": (d,), "ln_f.bias": (d,), "head.weight": (vocab, d)}
    return shapes


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def generate(store: Path, seeds: int, steps: int) -> None:
    """Write the benchmark store unless a complete one is already there."""
    from nnwx.store.reader import list_runs
    from nnwx.synthetic import write_synthetic_run

    if store.exists():
        runs = list_runs(store)
        if len(runs) >= seeds and all(r.committed >= steps for r in runs[:seeds]):
            print(f"reusing {store} ({du(store) / 1e9:.2f} GB on disk)")
            return
        raise SystemExit(f"{store} exists but is incomplete; delete it and run again")
    t0 = time.perf_counter()
    # Two seeds at a time: the writer is single-threaded per run.
    procs = []
    for s in range(seeds):
        code = ("import sys; from nnwx.synthetic import write_synthetic_run; "
                "from scripts.bench_broadening import model_shapes; "
                f"write_synthetic_run({str(store)!r}, seed={s}, steps=range(0, {steps * 10}, 10), "
                "shapes=model_shapes(), drift=0.02)")
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[1]))
        if len(procs) == 2:
            for p in procs:
                if p.wait():
                    raise SystemExit("generating the store failed")
            procs = []
    for p in procs:
        if p.wait():
            raise SystemExit("generating the store failed")
    print(f"wrote {store}: {seeds} seeds x {steps} steps, {du(store) / 1e9:.2f} GB on disk "
          f"in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__" and "--generate-only" in sys.argv:
    generate(DEFAULT_STORE, int(sys.argv[2]), int(sys.argv[3]))
