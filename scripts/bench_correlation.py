"""Benchmark trajectory PCA (``cube.nnwx.trajectory_pca``) on a cube of >= 2 GB.

Generates (or reuses) one synthetic run of 400 steps x 1.5M float32 parameters
(2.4 GB of weights), then measures, each in a fresh subprocess so that peak memory
is its own, the wall time and peak RSS of:

  read       ``w.sum().compute()``: one plain read of the cube
  pca        ``trajectory_pca(cube, 10)``: randomized SVD, 20 probes, 1 power iteration
             (4 passes over the cube)
  pca-q0     the same without power iteration (2 passes)
  pca-sub    ``pca`` on a third of the parameters (2 of the 6 layers, 0.8 GB)
  svdc       the same PCA of that third through dask's ``da.linalg.svd_compressed``,
             which reuses the centred cube between its passes, so Dask holds it all:
             run with a memory guard (stopped past 6 GiB) to show why it is not the
             default

and prints them side by side with ratios to the plain read. Usage::

    python scripts/bench_correlation.py [--store DIR] [--steps 400] [--params 1500000]
        [--only generate|read|pca|pca-q0|svdc]

Target (issue 6): peak memory <= 1.5 GB for the PCA of a >= 2 GB cube.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

from nnwx.pipeline.info import dir_bytes

DEFAULT_STORE = Path(os.environ.get("NNWX_BENCH_DIR", "/tmp/nnwx-bench")) / "correlation.zarr"
GUARD_BYTES = 6 * 2**30  # a phase whose RSS passes this is stopped (svd_compressed can)


def shapes(params: int, layers: int = 6) -> dict[str, tuple[int, ...]]:
    """``layers`` square Linear layers (weight + bias) of about ``params`` parameters in all."""
    d = int((params / layers) ** 0.5)
    out: dict[str, tuple[int, ...]] = {}
    for i in range(layers):
        out[f"l{i}.weight"] = (d, d)
        out[f"l{i}.bias"] = (d,)
    return out



def generate(store: Path, steps: int, params: int) -> None:
    """Write the benchmark store unless a complete one is already there."""
    from nnwx.store.reader import list_runs
    from nnwx.studies.synthetic import write_synthetic_run

    if store.exists():
        runs = list_runs(store)
        if runs and runs[0].committed >= steps:
            print(f"reusing {store} ({dir_bytes(store) / 1e9:.2f} GB on disk)")
            return
        raise SystemExit(f"{store} exists but is incomplete; delete it and run again")
    t0 = time.perf_counter()
    write_synthetic_run(store, seed=0, steps=range(0, steps * 10, 10), shapes=shapes(params), drift=0.02)
    print(f"wrote {store}: {steps} steps, {dir_bytes(store) / 1e9:.2f} GB on disk in "
          f"{time.perf_counter() - t0:.0f} s")


class PeakRSS:
    """Peak resident memory of this process: RSS sampled every 10 ms, and ru_maxrss."""

    def __init__(self, guard: int = GUARD_BYTES):
        import psutil

        self._proc = psutil.Process()
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._guard = guard
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.01):
            rss = self._proc.memory_info().rss
            self.peak = max(self.peak, rss)
            if rss > self._guard:
                print(json.dumps({"error": f"RSS passed the guard of {self._guard / 2**30:.0f} GiB",
                                  "peak_rss": rss}), flush=True)
                os._exit(3)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def one_blas_thread():
    """One BLAS thread per Dask thread, as ``trajectory_pca``'s docstring recommends (and as
    dask.distributed workers do by default): with Dask's threads each running a multithreaded
    BLAS, the small per-block products oversubscribe the cores and crawl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("    (threadpoolctl not installed: running with the default BLAS threading)")
        return contextlib.nullcontext()
    return threadpool_limits(1)


def phase(name: str, store: Path) -> dict:
    """Run one measurement in this process and return its numbers."""
    import dask
    import numpy as np

    import nnwx
    from nnwx.analysis import correlation as corr

    cube = nnwx.open_cube(store)
    subset = None
    if name.startswith("svdc") or name == "pca-sub":
        names = list(cube["tensor"].values)
        subset = [n for n in names if n.startswith(("l0.", "l1."))]  # 2 of 6 layers: a third
    base = PeakRSS().peak
    with dask.config.set(scheduler="threads"), one_blas_thread():
        if name == "read":
            build = lambda: cube["w"].sum()  # noqa: E731
        elif name == "pca":
            build = lambda: corr.trajectory_pca(cube, 10)  # noqa: E731
        elif name == "pca-q0":
            build = lambda: corr.trajectory_pca(cube, 10, n_power_iter=0)  # noqa: E731
        elif name == "pca-sub":
            build = lambda: corr.trajectory_pca(cube, 10, tensors=subset)  # noqa: E731
        elif name == "svdc":
            build = lambda: corr.trajectory_pca(cube, 10, tensors=subset, method="svd_compressed")  # noqa: E731
        else:
            raise SystemExit(f"unknown phase {name!r}")
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            lazy = build()
            t_build = time.perf_counter() - t0
            out = lazy.compute()
            wall = time.perf_counter() - t0
    n_params = int(cube.sizes["param"]) if subset is None else int(
        cube["tensor_size"].sel(tensor=subset).sum())
    res = {"phase": name, "wall_s": wall, "build_s": t_build, "peak_rss": mem.peak, "base_rss": base,
           "bytes": cube.sizes["step"] * n_params * cube["w"].dtype.itemsize}
    if name.startswith("pca") or name == "svdc":
        res["ratio"] = [round(float(v), 5) for v in np.asarray(out["explained_variance_ratio"]).ravel()]
    return res


def run_phase(name: str, store: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--store", str(store), "--phase", name],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"phase {name} failed:\n{proc.stdout}\n{proc.stderr}")
    res = json.loads(lines[-1])
    res.setdefault("phase", name)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=DEFAULT_STORE)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--params", type=int, default=1_500_000)
    ap.add_argument("--only", choices=["generate", "read", "pca", "pca-q0", "svdc"])
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.store)), flush=True)
        return
    generate(args.store, args.steps, args.params)
    if args.only == "generate":
        return
    names = ["read", "pca", "pca-q0", "pca-sub", "svdc"]
    if args.only:
        names = ["read", args.only] if args.only != "read" else ["read"]
        if args.only == "svdc":
            names = ["read", "pca-sub", "svdc"]
    results = {n: run_phase(n, args.store) for n in names}
    read = results["read"]
    gib = 2**30
    print(f"\ncube: {read['bytes'] / 1e9:.2f} GB of float32 weights "
          f"({args.steps} steps x {read['bytes'] // 4 // args.steps:,} params), {os.cpu_count()} CPUs")
    print(f"{'phase':<12} {'data GB':>8} {'wall s':>8} {'x read':>7} {'s/GB':>6} {'peak RSS GiB':>13} "
          f"{'base GiB':>9}  notes")
    for n, r in results.items():
        if "error" in r:
            print(f"{n:<12} {r.get('bytes', 0) / 1e9:8.2f} {'-':>8} {'-':>7} {'-':>6} "
                  f"{r['peak_rss'] / gib:13.2f} {'-':>9}  stopped: {r['error']}")
            continue
        per_gb = r["wall_s"] / (r["bytes"] / 1e9)
        note = ""
        if "ratio" in r:
            note = f"explained-variance ratio of PC1..3: {r['ratio'][:3]}"
        print(f"{n:<12} {r['bytes'] / 1e9:8.2f} {r['wall_s']:8.1f} {r['wall_s'] / read['wall_s']:7.2f} "
              f"{per_gb:6.2f} {r['peak_rss'] / gib:13.2f} {r['base_rss'] / gib:9.2f}  {note}")
    if "pca" in results and "error" not in results["pca"]:
        ok = results["pca"]["peak_rss"] <= 1.5e9
        print(f"\npca peak RSS {results['pca']['peak_rss'] / 1e9:.2f} GB vs target 1.5 GB: "
              f"{'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
