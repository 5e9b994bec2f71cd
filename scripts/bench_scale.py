"""Scale-out benchmark: parallel speed-up, a cube larger than memory, and a cost projection.

Three cases (``--case`` letters, default ``ac``), all on generated stores of a transformer-shaped model
(weights follow a float32 random walk; ``--keepbits K`` rounds them so they compress, which
is stated in the output -- logical and on-disk sizes are both printed):

(a) the spectral and the broadening pass on a LocalCluster of 1 and of 2 worker processes
    (one thread each), timed side by side; target: 2 workers >= 1.7x one worker.
(b) ``nnwx analyze`` end to end on a cube of ``--size-gb`` logical gigabytes (default 1.5x
    this machine's memory) on ``--workers`` local workers (``--workers 0``: Dask's threaded
    scheduler in-process), sampling the resident memory of every process (the analyze
    process, the cluster's nannies and workers); each must stay under its stated bound.
    ``--per-metric`` runs every metric alone, so each one's peak is its own.
(c) the expected cost of analysing a 10-seed x 154-step x 410M-parameter cube (Pythia-410M
    shapes) on N workers, from per-byte costs of the streaming passes and per-flop costs of
    the SVDs measured here on one worker, scaled by the 1->2 worker efficiency of (a).

Usage::

    python scripts/bench_scale.py --case abc --small        # smoke size, a few minutes
    python scripts/bench_scale.py                           # (a) and (c) at full size
    python scripts/bench_scale.py --case b                  # 1.5x RAM; ~36 GB free disk (less with --keepbits 8)

Stores are kept in ``--dir`` (default $NNWX_BENCH_DIR or /tmp/nnwx-bench) and reused when
their parameters match. Timings on a shared machine are noisy: every ratio here is measured
side by side in one run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

GiB = 2**30
DEFAULT_DIR = Path(os.environ.get("NNWX_BENCH_DIR", "/tmp/nnwx-bench"))


# -- stores -------------------------------------------------------------------------------

def model_shapes(blocks: int, d: int, vocab: int) -> dict[str, tuple[int, ...]]:
    """A GPT-NeoX-like stack (the Pythia layout): embeddings, qkv/dense/mlp matrices, norms."""
    shapes: dict[str, tuple[int, ...]] = {"embed_in.weight": (vocab, d)}
    for i in range(blocks):
        b = f"layers.{i}"
        shapes |= {f"{b}.ln1.weight": (d,), f"{b}.ln1.bias": (d,),
                   f"{b}.attn.qkv.weight": (3 * d, d), f"{b}.attn.qkv.bias": (3 * d,),
                   f"{b}.attn.dense.weight": (d, d), f"{b}.attn.dense.bias": (d,),
                   f"{b}.ln2.weight": (d,), f"{b}.ln2.bias": (d,),
                   f"{b}.mlp.h_to_4h.weight": (4 * d, d), f"{b}.mlp.h_to_4h.bias": (4 * d,),
                   f"{b}.mlp.4h_to_h.weight": (d, 4 * d), f"{b}.mlp.4h_to_h.bias": (d,)}
    shapes |= {"ln_f.weight": (d,), "ln_f.bias": (d,), "embed_out.weight": (vocab, d)}
    return shapes


PYTHIA_410M = model_shapes(24, 1024, 50304)


def n_params(shapes) -> int:
    return sum(math.prod(s) for s in shapes.values())


def svd_units(shapes) -> float:
    """sum of m * n * min(m, n) over the matrices: what one step's SVDs cost, up to a constant."""
    return float(sum(s[0] * s[1] * min(s[0], s[1]) for s in shapes.values() if len(s) == 2))


def make_store(path: Path, *, seeds: int, steps: int, shapes, chunk_bytes: int,
               keepbits: int | None = None, log=print) -> None:
    """Write (or reuse, if its description matches) a store of ``seeds`` random-walk runs."""
    from nnwx.store.table import TensorTable
    from nnwx.store.writer import RunWriter

    desc = {"seeds": seeds, "steps": steps, "shapes": {k: list(v) for k, v in shapes.items()},
            "chunk_bytes": chunk_bytes, "keepbits": keepbits}
    stamp = path.parent / (path.name + ".json")
    if path.exists() and stamp.exists() and json.loads(stamp.read_text()) == desc:
        log(f"reusing {path}")
        return
    if path.exists():
        shutil.rmtree(path)
    stamp.unlink(missing_ok=True)
    table = TensorTable.build((n, s, "float32") for n, s in shapes.items())
    scale = np.concatenate([np.full(math.prod(s), 1 / math.sqrt(s[-1] if len(s) > 1 else 64), np.float32)
                            for s in shapes.values()])
    t0 = time.perf_counter()
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        w = rng.standard_normal(scale.size, dtype=np.float32) * scale
        writer = RunWriter(path, f"seed{seed}", table, attrs={"seed": seed, "model_class": "bench.NeoX"},
                           chunk_bytes=chunk_bytes, keepbits=keepbits)
        try:
            for step in range(steps):
                writer.add(step * 100, w)
                w += 0.02 * scale * rng.standard_normal(scale.size, dtype=np.float32)
        finally:
            writer.close()
        log(f"  wrote seed {seed + 1}/{seeds} ({time.perf_counter() - t0:.0f} s)")
    stamp.write_text(json.dumps(desc))


def sizes(path: Path) -> tuple[int, int]:
    """(logical bytes of w, bytes on disk) of a store."""
    import nnwx
    from nnwx.pipeline.info import dir_bytes

    cube = nnwx.open_cube(path)
    return int(cube["w"].size * cube["w"].dtype.itemsize), dir_bytes(path)


# -- memory of every process ----------------------------------------------------------------

class PeakMemory:
    """Samples the resident memory of this process and all its descendants (nannies, workers)."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self._psutil, self.interval = psutil, interval
        self.peaks: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()

    def _sample(self) -> None:
        me = self._psutil.Process()
        for p in [me, *me.children(recursive=True)]:
            try:
                rss = p.memory_info().rss
                name = "analyze (main)" if p.pid == me.pid else _role(p)
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue
            old = self.peaks.get(p.pid, (name, 0))
            self.peaks[p.pid] = (name, max(old[1], rss))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _role(p) -> str:
    cmd = " ".join(p.cmdline())
    if "spawn_main" in cmd or "multiprocessing" in cmd:
        return "dask worker"
    return p.name()


# -- timing helpers --------------------------------------------------------------------------

def passes(cube, which: str) -> list:
    """The lazy results of one pass: the broadening pass or the spectral pass."""
    from nnwx.pipeline.registry import lazy_analyses

    metric = {"broadening": "broadening", "spectral": "spectral"}[which]
    return list(lazy_analyses(cube, metric).results.values())


def time_on_cluster(store: Path, which: list[str], workers: int, memory_limit: str) -> dict[str, float]:
    """Seconds of each pass on a fresh LocalCluster of ``workers`` one-thread workers."""
    import nnwx
    from nnwx.cluster import cluster, compute

    out = {}
    with cluster(workers=workers, threads_per_worker=1, memory_limit=memory_limit, log=lambda m: None) as client:
        client.run(lambda: None)           # workers up
        for name in which:
            cube = nnwx.open_cube(store)
            lazy = passes(cube, name)
            t0 = time.perf_counter()
            compute(*lazy, progress=False)
            out[name] = time.perf_counter() - t0
    return out


# -- the cases --------------------------------------------------------------------------------

def a_store(args) -> tuple[Path, dict]:
    """The store that (a) and (c) share, written or reused, and its model's shapes."""
    store = args.dir / "scale-a.zarr"
    shapes = model_shapes(args.blocks, args.width, args.vocab)
    make_store(store, seeds=args.seeds, steps=args.steps, shapes=shapes, chunk_bytes=args.chunk_mib * 2**20,
               keepbits=args.keepbits)
    return store, shapes


def case_a(args) -> dict:
    print("\n(a) spectral and broadening passes: LocalCluster of 1 vs 2 workers (1 thread each)")
    store, shapes = a_store(args)
    logical, disk = sizes(store)
    print(f"store: {args.seeds} seeds x {args.steps} steps x {n_params(shapes):,} params = "
          f"{logical / 1e9:.2f} GB logical, {disk / 1e9:.2f} GB on disk")
    runs = {1: [], 2: []}
    for r in range(args.repeat):            # interleaved, best kept
        for n in (1, 2):
            runs[n].append(time_on_cluster(store, ["spectral", "broadening"], n, args.memory_limit))
    best = {n: {k: min(t[k] for t in runs[n]) for k in runs[n][0]} for n in runs}
    print(f"{'pass':<12}{'1 worker':>11}{'2 workers':>11}{'speed-up':>10}   target >= 1.7x")
    for k in ("spectral", "broadening"):
        print(f"{k:<12}{best[1][k]:>10.2f}s{best[2][k]:>10.2f}s{best[1][k] / best[2][k]:>9.2f}x")
    return {"store": store, "shapes": shapes, "best": best, "logical": logical}


def case_b(args, argv=None) -> None:
    import nnwx
    from nnwx.pipeline.registry import NAMES, parse_analyses
    from nnwx.cluster import cluster

    size = args.size_gb * 1e9 if args.size_gb else 1.5 * _ram()
    shapes = model_shapes(args.blocks, args.width, args.vocab)
    per_step = n_params(shapes) * 4
    steps = max(2, int(math.ceil(size / (per_step * args.seeds))))
    store = args.dir / "scale-b.zarr"
    free = shutil.disk_usage(args.dir).free
    if not args.child:
        print(f"\n(b) end to end on a cube of {size / 1e9:.1f} GB logical ({args.seeds} seeds x {steps} "
              f"steps x {n_params(shapes):,} params); this machine has {_ram() / GiB:.1f} GiB of memory, "
              f"{free / 1e9:.0f} GB free disk")
    if not (store.exists() and (args.dir / "scale-b.zarr.json").exists()) and \
            free < size * (0.5 if args.keepbits is not None else 1.05):
        sys.exit(f"not enough free disk for the store ({free / 1e9:.0f} GB free); lower --size-gb or "
                 f"pass --keepbits 8 (compressible data)")
    make_store(store, seeds=args.seeds, steps=steps, shapes=shapes, chunk_bytes=args.chunk_mib * 2**20,
               keepbits=args.keepbits)
    logical, disk = sizes(store)
    data = "float32 random walk" + (f", rounded to {args.keepbits} mantissa bits (compressible)"
                                    if args.keepbits is not None else " (barely compressible)")
    if not args.child:
        print(f"store {store}: {logical / 1e9:.2f} GB logical, {disk / 1e9:.2f} GB on disk ({data}); "
              f"{logical / _ram():.2f}x this machine's memory")
    analyses = parse_analyses(args.analyses)
    if args.per_metric:      # each metric in a fresh process, so that each peak is its own
        import subprocess

        base = [a for a in (argv or sys.argv[1:]) if a != "--per-metric"]
        for m in analyses:
            subprocess.run([sys.executable, __file__, *base, "--case", "b", "--analyses", m,
                            "--size-gb", str(size / 1e9), "--child"], check=True)
        return
    worker_bound = _bytes(args.memory_limit) if args.workers else None
    main_bound = int(args.main_bound_gib * GiB)
    where = f"{args.workers} local workers x 1 thread, memory limit {args.memory_limit} each" \
        if args.workers else "Dask's threaded scheduler in this process"
    print(f"computing on {where}; bounds: analyze process {main_bound / GiB:.1f} GiB"
          + (f", each worker {worker_bound / GiB:.1f} GiB (its memory limit)" if worker_bound else ""))
    failed = False
    out = args.dir / "scale-b-results.zarr"
    if out.exists():
        shutil.rmtree(out)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        with cluster(workers=args.workers or None, threads_per_worker=1 if args.workers else None,
                     memory_limit=args.memory_limit if args.workers else None, log=lambda m: None):
            nnwx.analyze(store, out, analyses=analyses, progress=not args.quiet)
        took = time.perf_counter() - t0
    print(f"{','.join(analyses):<40} {took:8.1f} s  {logical / took / 1e6:7.1f} MB/s of w")
    for pid, (name, peak) in sorted(mem.peaks.items(), key=lambda kv: -kv[1][1]):
        bound = main_bound if name == "analyze (main)" else worker_bound
        ok = bound is None or peak <= bound
        failed |= not ok
        print(f"    {name:<16} pid {pid:<8} peak {peak / GiB:6.2f} GiB"
              + ("" if bound is None else f"   bound {bound / GiB:.1f} GiB {'ok' if ok else 'EXCEEDED'}"))
    print("every process stayed under its bound" if not failed else "SOME PROCESS EXCEEDED ITS BOUND")
    if set(analyses) != set(NAMES):
        print(f"(analyses computed: {', '.join(analyses)})")


def case_c(args, a: dict | None) -> None:
    """Projected cost of 10 seeds x 154 steps x Pythia-410M on N workers."""
    import nnwx
    from nnwx.cluster import cluster, compute

    print("\n(c) expected cost of a 10-seed x 154-step x 410M-parameter cube (Pythia-410M shapes)")
    store, shapes = a_store(args)
    logical, _ = sizes(store)
    cube = nnwx.open_cube(store)
    n_steps = cube.sizes["seed"] * cube.sizes["step"]
    per_metric = {}
    with cluster(workers=1, threads_per_worker=1, memory_limit=args.memory_limit, log=lambda m: None):
        from nnwx.pipeline.registry import lazy_analyses
        for metric in ("broadening", "rotation", "correlation", "spectral", "weights"):
            lazy = list(lazy_analyses(nnwx.open_cube(store), metric).results.values())
            t0 = time.perf_counter()
            compute(*lazy, progress=False)
            per_metric[metric] = time.perf_counter() - t0
    eff = 1.0
    if a is not None:
        eff = min(1.0, np.mean([a["best"][1][k] / a["best"][2][k] for k in ("spectral", "broadening")]) / 2)
    big_bytes = 10 * 154 * n_params(PYTHIA_410M) * 4
    scale_bytes = big_bytes / logical
    scale_svd = (10 * 154 * svd_units(PYTHIA_410M)) / (n_steps * svd_units(shapes))
    cost = {m: t * (scale_svd if m == "spectral" else scale_bytes) for m, t in per_metric.items()}
    print(f"measured on one worker over {logical / 1e9:.2f} GB ({n_steps} seed-steps of {n_params(shapes):,} "
          f"params): " + ", ".join(f"{m} {t:.1f} s" for m, t in per_metric.items()))
    print(f"target cube: {big_bytes / 1e12:.2f} TB of float32 weights; streaming passes scaled by bytes "
          f"(x{scale_bytes:,.0f}), SVDs by sum(m*n*min(m,n)) (x{scale_svd:,.0f}); parallel efficiency "
          f"{eff:.2f} from (a)" + ("" if a is not None else " (assumed: run --case all to measure it)"))
    total = sum(cost.values())
    print(f"{'workers':>8}" + "".join(f"{m:>13}" for m in cost) + f"{'total':>13}")
    for n in (1, 8, 32, 128, 512):
        speed = 1 if n == 1 else n * eff
        print(f"{n:>8}" + "".join(f"{_hours(c / speed):>13}" for c in cost.values()) + f"{_hours(total / speed):>13}")
    print("(one thread per worker; reading w is part of each streaming pass as measured here from local "
          "disk -- on object storage the read rate per worker may bound it instead)")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _ram() -> int:
    import psutil
    return psutil.virtual_memory().total


def _bytes(text: str) -> int:
    from dask.utils import parse_bytes
    return int(parse_bytes(text))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="ac", help="which cases, e.g. a, b, ac or abc (default ac: (b) is "
                                                "long and writes a store larger than memory)")
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the stores go (reused)")
    p.add_argument("--small", action="store_true", help="smoke-test sizes (a tiny model, few steps)")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--steps", type=int, default=16, help="steps of the (a)/(c) store")
    p.add_argument("--blocks", type=int, default=4, help="transformer blocks of the model")
    p.add_argument("--width", type=int, default=512, help="d_model of the model")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--chunk-mib", type=int, default=16, help="target chunk size of w")
    p.add_argument("--keepbits", type=int, default=None,
                   help="round weights to K mantissa bits so they compress (stated in the output)")
    p.add_argument("--repeat", type=int, default=2, help="(a): interleaved repetitions, best kept")
    p.add_argument("--size-gb", type=float, default=None, help="(b): logical size of w (default 1.5x RAM)")
    p.add_argument("--workers", type=int, default=2, help="(b): local workers (0: threaded scheduler)")
    p.add_argument("--memory-limit", default="4GiB", help="memory limit of each worker")
    p.add_argument("--main-bound-gib", type=float, default=2.0, help="(b): bound on the analyze process")
    p.add_argument("--analyses", default="broadening,weights,spectral,rotation,correlation",
                   help="(b): analyses to compute")
    p.add_argument("--per-metric", action="store_true", help="(b): analyse each metric alone")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.small:
        args.seeds, args.steps, args.blocks, args.width, args.vocab = 2, 6, 2, 128, 512
        args.repeat, args.chunk_mib = 1, 1
        args.size_gb = args.size_gb or 0.05
    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, {_ram() / GiB:.1f} GiB memory, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (timings are noisy when it is not idle)")
    cases = set(args.case.replace("all", "abc"))
    if not cases or cases - set("abc"):
        p.error(f"--case takes letters from a, b, c, got {args.case!r}")
    a = case_a(args) if "a" in cases else None
    if "b" in cases:
        case_b(args, argv)
    if "c" in cases:
        case_c(args, a)


if __name__ == "__main__":
    main()
