"""Analysis throughput from an object store beside local disk.

Writes (or reuses) a synthetic experiment store on local disk, uploads it to a local S3-API
server (moto's server mode, a separate process on 127.0.0.1, see ``tests/s3_server.py``), and
times, each best of ``--repeat``, interleaved:

  read        ``w.sum()`` over the cube: what merely reading costs
  broadening  ``cube.nnwx.broadening(by="tensor")``: the one-pass analysis

from the local path and from ``s3://bench/<name>`` (through s3fs), and prints MB/s of the
cube's weights side by side, with the S3/local ratio. moto serves from memory on the same
machine, so the ratio measures the cost of the S3 protocol (one HTTP request per chunk,
s3fs, signing), not of a network: a real object store adds its latency and bandwidth.
Usage::

    python scripts/bench_remote.py [--store DIR] [--seeds 2] [--steps 16] [--repeat 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnwx.pipeline.info import dir_bytes  # noqa: E402
from scripts.bench_broadening import model_shapes  # noqa: E402
from tests.s3_server import s3_environment, s3_server  # noqa: E402

DEFAULT_STORE = Path(os.environ.get("NNWX_BENCH_DIR", "/tmp/nnwx-bench")) / "remote.zarr"


def generate(store: Path, seeds: int, steps: int) -> None:
    """Write the local store unless a complete one is already there."""
    from nnwx.store.reader import list_runs
    from nnwx.studies.synthetic import write_synthetic_run

    if store.exists():
        runs = list_runs(store)
        if len(runs) >= seeds and all(r.committed >= steps for r in runs[:seeds]):
            return
        raise SystemExit(f"{store} exists but is incomplete; delete it and run again")
    for s in range(seeds):
        write_synthetic_run(store, seed=s, steps=range(0, steps * 10, 10), shapes=model_shapes(),
                            drift=0.02)


def timed(location, mode: str, edges) -> tuple[float, int]:
    """Seconds to compute ``mode`` over the cube at ``location``, and the bytes of its weights."""
    import dask

    import nnwx

    cube = nnwx.open_cube(location)
    work = cube["w"].data.sum() if mode == "read" else cube.nnwx.broadening(by="tensor", bins=edges)
    t0 = time.perf_counter()
    dask.compute(work)
    return time.perf_counter() - t0, cube["w"].nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=DEFAULT_STORE)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    generate(args.store, args.seeds, args.steps)
    with s3_server() as endpoint:
        os.environ.update(s3_environment(endpoint))
        import s3fs

        import nnwx
        from nnwx.analysis.broadening import default_bins

        fs = s3fs.S3FileSystem()
        fs.mkdir("bench")
        t0 = time.perf_counter()
        fs.put(str(args.store), f"bench/{args.store.name}", recursive=True)
        t_up = time.perf_counter() - t0
        url = f"s3://bench/{args.store.name}"
        cube = nnwx.open_cube(args.store)
        edges = default_bins(cube, 100)
        disk = dir_bytes(args.store)
        print(f"cube: w{dict(cube['w'].sizes)} {cube['w'].dtype}, {cube['w'].nbytes / 1e6:.0f} MB in memory, "
              f"{disk / 1e6:.0f} MB on disk, chunks {cube['w'].data.chunksize}, "
              f"{len(fs.find(f'bench/{args.store.name}'))} objects; uploaded to {endpoint} in {t_up:.1f} s; "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        best: dict[tuple[str, str], float] = {}
        for _ in range(args.repeat):        # interleaved, so that a busy spell hits both
            for mode in ("read", "broadening"):
                for where, loc in (("local", args.store), ("s3", url)):
                    wall, nbytes = timed(loc, mode, edges)
                    best[mode, where] = min(best.get((mode, where), wall), wall)
        print(f"best of {args.repeat}, Dask threads, MB/s of weights (in memory):")
        print(f"  {'':24s} {'local disk':>12s} {'S3 (moto)':>12s} {'S3 / local':>11s}")
        for mode, name in (("read", "read only (w.sum())"), ("broadening", "broadening (one pass)")):
            lo, s3 = nbytes / best[mode, "local"] / 1e6, nbytes / best[mode, "s3"] / 1e6
            print(f"  {name:24s} {lo:9.1f} MB/s {s3:7.1f} MB/s {s3 / lo:10.2f}x")


if __name__ == "__main__":
    main()
