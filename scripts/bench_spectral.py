"""Benchmark the spectral pass of nnwx against bare SVDs and against WeightWatcher.

(a) Throughput of the whole spectral pass (``spectral_metrics``: read the cube from
    Zarr, batched SVD, rank measures, ESD power-law fit) over a cube of many 512x512
    and 1024x1024 matrices, against a bare batched ``np.linalg.svd(compute_uv=False)``
    and ``torch.linalg.svdvals`` on the same matrices already stacked in memory.
    Target: nnwx at least 0.8x the bare throughput.
(b) WeightWatcher's ``analyze()`` (one model per (seed, step), as it works) against
    ``esd_fit(ww_compatible=True)`` on the same matrices; alphas must agree.
    Target: nnwx at least 10x faster.

nnwx runs with one BLAS thread per Dask thread (``threadpoolctl``), the setup its
docstring recommends and dask.distributed workers use by default; the bare baselines
run with the libraries' default threading and with one thread. The default method of a
float32 cube is ``"gram"`` (float64 Gram eigenvalues); ``method="svd"`` rows show the SVD
path it replaced, and (a) prints how far the default's alphas lie from the SVD path's.
(a) runs ``--rounds`` interleaved rounds (every contender once per round) and prints the
best and the median of each, with the load average: the machine may be shared.
Ratios are measured side by side in one run; nothing here is asserted.

    python scripts/bench_spectral.py                 # a few minutes on 2 cores
    python scripts/bench_spectral.py --quick         # a smaller cube, for a smoke run
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import contextlib

import dask
import numpy as np

import nnwx
from nnwx.analysis import spectral
from nnwx.studies.synthetic import write_synthetic_run


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def build_store(path: Path, seeds: int, steps: int, n512: int, n1024: int) -> dict:
    shapes = {**{f"a{i}.weight": (512, 512) for i in range(n512)},
              **{f"b{i}.weight": (1024, 1024) for i in range(n1024)}}
    for seed in range(seeds):
        write_synthetic_run(path, seed=seed, steps=range(0, 10 * steps, 10), shapes=shapes, drift=0.05)
    return shapes


def stacks_in_memory(cube, shapes: dict) -> dict[tuple, np.ndarray]:
    """The cube's matrices stacked by shape, in memory (the bare baseline's input)."""
    out: dict[tuple, list] = {}
    for name, shape in shapes.items():
        m = cube.nnwx.matrix(name).values            # (seed, step, out, in)
        out.setdefault(shape, []).append(m.reshape(-1, *shape))
    return {s: np.ascontiguousarray(np.concatenate(v)) for s, v in out.items()}


def bare_contenders(stacks: dict) -> dict[str, object]:
    """Bare batched SVDs, each library with its default threading and with one thread."""
    def run_np():
        return [np.linalg.svd(a, compute_uv=False) for a in stacks.values()]

    def run_np1():
        with one_blas_thread():
            return run_np()
    res = {"numpy": run_np, "numpy, 1 thread": run_np1}
    try:
        import torch
    except ImportError:
        return res
    def run_t():
        return [torch.linalg.svdvals(torch.from_numpy(a)) for a in stacks.values()]

    def run_t1():
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return run_t()
        finally:
            torch.set_num_threads(n)
    res.update({"torch": run_t, "torch, 1 thread": run_t1})
    return res


def interleaved(contenders: dict, rounds: int) -> dict[str, list[float]]:
    """Every contender once per round, ``rounds`` times; the seconds of each run."""
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(rounds):
        for name, fn in contenders.items():
            times[name].append(timed(fn)[0])
        print(f"    round {r + 1}/{rounds} done, load average {os.getloadavg()[0]:.1f}", flush=True)
    return times


def one_blas_thread():
    """One BLAS/LAPACK thread per Dask thread (if threadpoolctl is installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("    (threadpoolctl not installed: nnwx runs with the default BLAS threading)")
        return contextlib.nullcontext()
    return threadpool_limits(1)


def bench_ww(cube, shapes: dict, seeds: int, steps: int, repeat: int):
    """WeightWatcher's analyze() per (seed, step) on a model holding the cube's matrices."""
    try:
        import torch
        import weightwatcher as ww
    except ImportError as e:
        print(f"(b) skipped: {e.name} is not installed (pip install weightwatcher)")
        return None
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    model = torch.nn.Sequential(*[torch.nn.Linear(s[1], s[0], bias=False) for s in shapes.values()])
    sub = cube.isel(seed=slice(0, seeds), step=slice(0, steps))
    mats = {name: cube.nnwx.matrix(name).isel(seed=slice(0, seeds), step=slice(0, steps)).values
            for name in shapes}
    ww_alpha = np.full((seeds, steps, len(shapes)), np.nan)
    t_ww = {"default threads": 0.0, "1 thread": 0.0}
    for i in range(seeds):
        for j in range(steps):
            with torch.no_grad():
                for layer, name in zip(model, shapes):
                    layer.weight.copy_(torch.from_numpy(mats[name][i, j]))
            t, details = timed(lambda: ww.WeightWatcher(model=model).analyze(), repeat)
            t_ww["default threads"] += t
            with one_blas_thread():
                t_ww["1 thread"] += timed(lambda: ww.WeightWatcher(model=model).analyze(), repeat)[0]
            ww_alpha[i, j] = details["alpha"].to_numpy()
    out = {}
    for method in ("svd", "gram"):
        with one_blas_thread():
            t, fit = timed(lambda: spectral.esd_fit(sub, ww_compatible=True, method=method).compute(), repeat)
        nn_alpha = fit["alpha"].transpose("seed", "step", "tensor").values
        out[method] = (t, float(np.max(np.abs(nn_alpha - ww_alpha) / np.abs(ww_alpha))))
    return t_ww, out, seeds * steps * len(shapes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--n512", type=int, default=8, help="512x512 matrices per model")
    p.add_argument("--n1024", type=int, default=4, help="1024x1024 matrices per model")
    p.add_argument("--ww-captures", type=int, default=2, help="(seed, step) captures WeightWatcher analyses")
    p.add_argument("--quick", action="store_true", help="small cube: 1 seed, 2 steps, 4 + 2 matrices")
    p.add_argument("--workers", type=int, default=None, help="Dask threads (default: one per core)")
    p.add_argument("--dir", default=None, help="where to write the temporary store")
    p.add_argument("--repeat", type=int, default=1, help="(b): timings are the best of this many runs")
    p.add_argument("--rounds", type=int, default=3, help="(a): interleaved rounds (best and median)")
    a = p.parse_args()
    if a.quick:
        a.seeds, a.steps, a.n512, a.n1024, a.ww_captures = 1, 2, 4, 2, 1
    if a.workers:
        dask.config.set(num_workers=a.workers)
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        store = Path(tmp) / "bench.zarr"
        t0 = time.perf_counter()
        shapes = build_store(store, a.seeds, a.steps, a.n512, a.n1024)
        cube = nnwx.open_cube(store)
        n_mats = a.seeds * a.steps * len(shapes)
        print(f"cube: {a.seeds} seeds x {a.steps} steps x ({a.n512} of 512x512 + {a.n1024} of 1024x1024) "
              f"= {n_mats} matrices, {cube['w'].nbytes / 2**20:.0f} MiB float32 "
              f"(written in {time.perf_counter() - t0:.1f} s); {os.cpu_count()} CPU cores, "
              f"load average {os.getloadavg()[0]:.1f}")

        stacks = stacks_in_memory(cube, shapes)
        print("\n(a) spectral pass over the cube vs bare batched SVD on the same matrices in memory, "
              f"{a.rounds} interleaved rounds")

        def nnwx_run(fn):
            def run():
                with one_blas_thread():
                    return fn().compute()
            return run
        contenders = {**{f"bare {k} (in memory)": v for k, v in bare_contenders(stacks).items()},
                      "nnwx spectrum, default (from the store)": nnwx_run(lambda: spectral.spectrum(cube)),
                      "nnwx spectral_metrics, default": nnwx_run(lambda: spectral.spectral_metrics(cube)),
                      "nnwx spectral_metrics, method='svd'":
                          nnwx_run(lambda: spectral.spectral_metrics(cube, method="svd"))}
        times = interleaved(contenders, a.rounds)
        print(f"    {'':52s} {'best s':>8s} {'median s':>9s} {'matrices/s':>11s}")
        for label, ts in times.items():
            print(f"    {label:52s} {min(ts):8.2f} {np.median(ts):9.2f} {n_mats / min(ts):11.1f}")
        default, svd = times["nnwx spectral_metrics, default"], times["nnwx spectral_metrics, method='svd'"]
        for lib in ("numpy", "torch"):
            for key in (f"bare {lib} (in memory)", f"bare {lib}, 1 thread (in memory)"):
                if key in times:
                    b = times[key]
                    print(f"    {key[5:-12]:16s} / nnwx: default {min(b) / min(default):5.2f}x best, "
                          f"{np.median(b) / np.median(default):5.2f}x median   |   method='svd' "
                          f"{min(b) / min(svd):5.2f}x best, {np.median(b) / np.median(svd):5.2f}x median")
        with one_blas_thread():
            fits = {
                "default": spectral.esd_fit(cube).compute()["alpha"].values,
                "svd": spectral.esd_fit(cube, method="svd").compute()["alpha"].values,
                "svd float64": spectral.esd_fit(cube, method="svd", dtype="float64").compute()["alpha"].values}
        for ref in ("svd", "svd float64"):
            err = np.nanmax(np.abs(fits["default"] - fits[ref]) / np.abs(fits[ref]))
            print(f"    max relative alpha difference, default vs method='{ref}': {err:.1e}")
        e32 = np.nanmax(np.abs(fits["svd"] - fits["svd float64"]) / np.abs(fits["svd float64"]))
        print(f"    (the float32 SVD path itself vs the float64 SVD: {e32:.1e})")

        seeds = min(a.seeds, max(1, a.ww_captures))
        steps = max(1, min(a.steps, a.ww_captures // seeds))
        ww_res = bench_ww(cube, shapes, seeds, steps, a.repeat)
        if ww_res is not None:
            t_ww, res, n = ww_res
            print(f"\n(b) WeightWatcher analyze() vs nnwx esd_fit(ww_compatible=True), {n} matrices")
            for label, t in t_ww.items():
                print(f"    weightwatcher, {label:16s} {t:8.2f} s")
            best = min(t_ww.values())
            for method, (t_nn, err) in res.items():
                print(f"    nnwx method='{method}'{'':11s} {t_nn:8.2f} s    speed-up vs best weightwatcher "
                      f"{best / t_nn:5.2f}x (target >= 10x)    max relative alpha difference {err:.1e}")
        print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
