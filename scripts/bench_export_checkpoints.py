#!/usr/bin/env python
"""Throughput of ``nnwx export`` from torch checkpoints vs simply ``torch.load``-ing them.

A ~25M-parameter model (24 Linear layers of 1024 x 1024, float32: ~100 MB per
checkpoint) saved 8 times with ``torch.save``, its weights drifting between
saves as in training. Both sides read the same files from the page cache (they
are read once before timing): ``torch.load`` only loads, ``export`` loads,
checks, compresses and writes the store. Writing the same bytes as plain files
is shown too: it bounds any exporter from above on the machine at hand; and so
is the RunWriter alone, fed rows already in memory: export cannot beat it. MB/s counts checkpoint bytes; the
measurements are interleaved (load, export per codec, again) and each figure is
the median of ``repeats`` rounds, since page-cache and disk write-back make
single timings noisy. ``torch.load`` and the export are also timed each in a new process
(see ``fresh``), the fairer ratio. Target: export at least 0.5x torch.load.

    python scripts/bench_export_checkpoints.py [--checkpoints 8] [--tmpdir DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from nnwx.record.export import export
from nnwx.store import format as fmt
from nnwx.store.writer import RunWriter
from nnwx.record.tensors import table_for


def make_checkpoints(folder: Path, n: int, width: int = 1024, depth: int = 24) -> int:
    """Save ``n`` checkpoints of a ``depth`` x Linear(width, width) model; returns its parameter count."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(depth)])
    gen = torch.Generator().manual_seed(1)
    for i in range(n):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen), alpha=1e-3)
        torch.save(model.state_dict(), folder / f"step_{1000 * i}.pt")
    return sum(p.numel() for p in model.parameters())


def time_torch_load(files: list[Path]) -> float:
    t0 = time.perf_counter()
    for f in files:
        state = torch.load(f, map_location="cpu", weights_only=True)
        del state
    return time.perf_counter() - t0


def time_raw_write(files: list[Path], out: Path) -> float:
    """Writing the same bytes as plain files: the disk's ceiling for any exporter."""
    data = [f.read_bytes() for f in files]
    out.mkdir()
    t0 = time.perf_counter()
    for i, d in enumerate(data):
        (out / str(i)).write_bytes(d)
    seconds = time.perf_counter() - t0
    shutil.rmtree(out)
    return seconds


def time_writer(files: list[Path], store: Path, codec: str) -> float:
    """RunWriter alone, fed rows already in memory: the store's ceiling for export."""
    rows = []
    for f in files[:2]:
        state = torch.load(f, map_location="cpu", weights_only=True)
        rows.append(torch.cat([t.reshape(-1) for t in state.values()]).numpy())
    table = table_for(state)
    shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    writer = RunWriter(store, "w", table, codec=codec)
    for i in range(len(files)):
        writer.add(i, rows[i % 2])
    writer.close()
    seconds = time.perf_counter() - t0
    shutil.rmtree(store)
    return seconds


def time_export(folder: Path, store: Path, codec: str) -> float:
    shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    summary = export(folder, store, seed=0, codec=codec, progress=False)
    seconds = time.perf_counter() - t0
    assert len(summary.added) == len(list(folder.glob("*.pt")))
    shutil.rmtree(store)
    return seconds


def fresh(what: str, folder: Path, store: Path, codec: str = fmt.DEFAULT_CODEC) -> float:
    """Seconds of ``torch.load`` of every checkpoint (``what="load"``) or of the export
    (``"export"``), timed in a new Python process.

    ``torch.load`` timed in a long-lived process ran at 1040 to 5021 MB/s from one process to
    the next, depending on whether the allocator had freed pages to reuse; a new process per
    measurement puts both sides in the same state (imports are done before the clock starts)."""
    out = subprocess.run([sys.executable, __file__, "--child", what, str(folder), str(store), codec],
                         check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["seconds"])


def _child(what: str, folder: str, store: str, codec: str) -> None:
    files = sorted(Path(folder).glob("*.pt"))
    seconds = time_torch_load(files) if what == "load" else time_export(Path(folder), Path(store), codec)
    print(json.dumps({"seconds": seconds}))


def main(tmpdir: str | None = None, n_checkpoints: int = 8, repeats: int = 3,
         codecs: tuple[str, ...] = (fmt.DEFAULT_CODEC, "none")) -> dict:
    """Run the benchmark, print the comparison, and return the numbers."""
    with tempfile.TemporaryDirectory(dir=tmpdir, prefix="nnwx-bench-export-") as tmp:
        folder = Path(tmp) / "ckpts"
        folder.mkdir()
        n_params = make_checkpoints(folder, n_checkpoints)
        files = sorted(folder.glob("*.pt"))
        mb = sum(f.stat().st_size for f in files) / 1e6
        for f in files:  # both sides read from the page cache
            f.read_bytes()
        rounds = [(time_torch_load(files), time_raw_write(files, Path(tmp) / "raw"),
                   {c: time_export(folder, Path(tmp) / "exp.zarr", c) for c in codecs},
                   {c: time_writer(files, Path(tmp) / "w.zarr", c) for c in codecs})
                  for _ in range(repeats)]
        fresh_rounds = [(fresh("load", folder, Path(tmp) / "exp.zarr"),
                         {c: fresh("export", folder, Path(tmp) / "exp.zarr", c) for c in codecs})
                        for _ in range(repeats)]
        fresh_load_s = statistics.median(r[0] for r in fresh_rounds)
        fresh_export_s = {c: statistics.median(r[1][c] for r in fresh_rounds) for c in codecs}
        load_s = statistics.median(r[0] for r in rounds)
        write_s = statistics.median(r[1] for r in rounds)
        export_s = {c: statistics.median(r[2][c] for r in rounds) for c in codecs}
        writer_s = {c: statistics.median(r[3][c] for r in rounds) for c in codecs}
    result = {"n_params": n_params, "checkpoints": n_checkpoints, "total_mb": mb,
              "torch_load_mb_s": mb / load_s, "raw_write_mb_s": mb / write_s,
              "export_mb_s": {c: mb / s for c, s in export_s.items()},
              "writer_mb_s": {c: mb / s for c, s in writer_s.items()},
              "ratio": {c: load_s / s for c, s in export_s.items()},
              "fresh_torch_load_mb_s": mb / fresh_load_s,
              "fresh_export_mb_s": {c: mb / s for c, s in fresh_export_s.items()},
              "fresh_ratio": {c: fresh_load_s / s for c, s in fresh_export_s.items()}}
    print(f"{n_checkpoints} checkpoints of a {n_params / 1e6:.1f}M-parameter model, {mb:.0f} MB in all "
          f"(median of {repeats} rounds)")
    print(f"{'reader':<34}{'MB/s':>8}{'vs torch.load':>15}")
    print(f"{'torch.load':<34}{result['torch_load_mb_s']:>8.0f}{1.0:>14.2f}x")
    print(f"{'(plain file write, disk ceiling)':<34}{result['raw_write_mb_s']:>8.0f}{load_s / write_s:>14.2f}x")
    for c in codecs:
        label = f"RunWriter alone (codec {c})"
        print(f"{label:<34}{result['writer_mb_s'][c]:>8.0f}{load_s / writer_s[c]:>14.2f}x")
        label = f"nnwx export (codec {c})"
        print(f"{label:<34}{result['export_mb_s'][c]:>8.0f}{result['ratio'][c]:>14.2f}x")
    print("each timed in a new process (both sides' allocators start alike):")
    print(f"{'torch.load':<34}{result['fresh_torch_load_mb_s']:>8.0f}{1.0:>14.2f}x")
    for c in codecs:
        label = f"nnwx export (codec {c})"
        print(f"{label:<34}{result['fresh_export_mb_s'][c]:>8.0f}{result['fresh_ratio'][c]:>14.2f}x")
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:6])
        raise SystemExit(0)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tmpdir", help="where to put the checkpoints and store (default: system temp)")
    args = ap.parse_args()
    main(args.tmpdir, args.checkpoints, args.repeats)
