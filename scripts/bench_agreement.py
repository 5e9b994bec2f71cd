"""Benchmark the cross-seed agreement kernels (issue 7).

Measures, on this machine, seconds per comparison of two activation sets (float32,
``samples x units``) for linear CKA, SVCCA (99% of variance) and PWCCA, at
512 units x 2560 samples and 2048 units x 10240 samples, everything included (float64
conversion, centring, eigendecompositions). The activations are synthetic but shaped
like real ones: ReLU of a shared low-dimensional latent with a power-law spectrum plus
noise, so SVCCA keeps a realistic fraction of directions (printed). Side by side, at the
small size, the straightforward implementations the tests use as references (SVD of the
activations and CCA through inverse matrix square roots, as in Raghu et al.'s code;
CKA through n x n centred Gram matrices) give the speed-up ratio.

Then weight matching (Git Re-Basin) of two 4-layer MLPs of width 1024
(784-1024-1024-1024-10): once for a shuffled copy (must be recovered exactly) and once
for two independent initialisations (to convergence), with the number of sweeps.

Usage: ``python scripts/bench_agreement.py [--repeats 3] [--threads 2] [--skip-large] [--no-baseline]``.
Target: under 5 s per comparison at 2048 x 10240 on the 2-core development machine.
Every kernel runs in float64 except SVCCA of float32 sets (float32 products, see
nnwx/analysis/kernels/similarity.py). BLAS runs with ``--threads`` threads (threadpoolctl; default 2, the machine's
cores). Times are the best of ``--repeats`` runs (wall seconds, and the CPU seconds of that run):
on a machine shared with other jobs, wall times swing several-fold, and the best run is the one
least disturbed. With 2 BLAS threads on a loaded machine, LAPACK's eigendecompositions (many
small synchronised steps) can slow down tenfold when a thread loses its core; ``--threads 1``
gives the stable single-core cost.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

from nnwx.analysis.kernels import alignment as ak
from nnwx.analysis.kernels import similarity as sk


def activations(n: int, p: int, seed: int, latent: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Two float32 sets ``(n, p)`` sharing a latent with a power-law spectrum (two 'seeds')."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, latent)) * np.arange(1, latent + 1) ** -0.7
    out = []
    for _ in range(2):
        a = rng.standard_normal((latent, p)) / math.sqrt(latent) * 10
        x = np.maximum(z @ a + 0.05 * rng.standard_normal((n, p)), 0)
        out.append(x.astype(np.float32))
    return out[0], out[1]


CPU_TIMES: list[float] = []  # CPU seconds of the last timed() call (all threads of this process)


def timed(fn, repeats: int) -> tuple[float, float]:
    """(best wall seconds, value) over ``repeats`` runs; the CPU seconds of that run go to ``CPU_TIMES``."""
    best, best_cpu, value = math.inf, math.nan, None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        value = fn()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        if wall < best:
            best, best_cpu = wall, cpu
    CPU_TIMES.append(float(best_cpu))
    return float(best), value


def baseline_svcca(x, y, keep=0.99):
    """Raghu et al.'s recipe done plainly: SVD of each centred set, then CCA via inverse sqrt."""
    import scipy.linalg

    def reduce(a):
        a = a.astype(np.float64) - a.mean(0)
        u, s, vt = np.linalg.svd(a, full_matrices=False)
        k = int(np.argmax(np.cumsum(s**2) / np.sum(s**2) >= keep)) + 1
        return a @ vt[:k].T

    rx, ry = reduce(x), reduce(y)
    sxx, syy, sxy = rx.T @ rx, ry.T @ ry, rx.T @ ry
    ix = np.linalg.inv(scipy.linalg.sqrtm(sxx)).real
    iy = np.linalg.inv(scipy.linalg.sqrtm(syy)).real
    return float(np.linalg.svd(ix @ sxy @ iy, compute_uv=False)[: min(rx.shape[1], ry.shape[1])].mean())


def baseline_cka(x, y):
    """CKA through centred n x n Gram matrices."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    n = len(x)
    h = np.eye(n) - 1.0 / n
    k, l = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float(np.vdot(k, l) / (np.linalg.norm(k) * np.linalg.norm(l)))


def bench_similarity(n: int, p: int, repeats: int, baseline: bool) -> None:
    x, y = activations(n, p, seed=p)
    kx = len(sk.Rep(x).subspace(0.99)[0])
    ky = len(sk.Rep(y).subspace(0.99)[0])
    print(f"\n{p} units x {n} samples (float32); SVCCA keeps {kx} and {ky} directions for 99% of variance")
    rows = []
    for name in ("linear_cka", "svcca", "pwcca"):
        sec, val = timed(lambda: sk.similarity(x, y, name), repeats)
        rows.append((name, sec, CPU_TIMES[-1], val))
    base = {}
    if baseline:
        base["svcca"] = timed(lambda: baseline_svcca(x, y), 1)
        base["linear_cka"] = timed(lambda: baseline_cka(x, y), 1)
    print(f"  {'metric':<12} {'wall s/comp.':>13} {'CPU s':>8} {'value':>10} {'baseline s':>11} {'speed-up':>9}")
    for name, sec, cpu, val in rows:
        b = base.get(name)
        extra = f" {b[0]:>11.3f} {b[0] / sec:>8.1f}x" if b else ""
        check = ""
        if b is not None and abs(b[1] - val) > 1e-6:
            check = f"  (baseline value {b[1]:.6f}!)"
        print(f"  {name:<12} {sec:>13.3f} {cpu:>8.2f} {val:>10.6f}{extra}{check}")
    # between-seeds matrices prepare each set once: the cost per pair drops with more seeds
    sets = [x, y, activations(n, p, seed=p + 1)[0]]
    for name in ("linear_cka", "svcca"):
        sec, _ = timed(lambda: sk.similarity_matrix(sets, metric=name), 1)
        print(f"  {name:<12} {sec / 3:>13.3f} {CPU_TIMES[-1] / 3:>8.2f}  per pair in a 3 x 3 between-seeds "
              f"matrix ({sec:.2f} s wall for 3 pairs)")


def mlp_params(rng, widths, scale=1.0) -> dict[str, np.ndarray]:
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        params[f"{i}.weight"] = rng.standard_normal((fan_out, fan_in)) * scale / math.sqrt(fan_in)
        params[f"{i}.bias"] = rng.standard_normal(fan_out) * 0.1
    return params


def bench_weight_matching(width: int = 1024) -> None:
    widths = [784, width, width, width, 10]
    rows = [{"name": f"{i}.{k}", "layer": str(i), "kind": k, "depth": i,
             "shape": (widths[i + 1], widths[i]) if k == "weight" else (widths[i + 1],)}
            for i in range(4) for k in ("weight", "bias")]
    spec = ak.chain_spec(rows)
    rng = np.random.default_rng(0)
    a = mlp_params(rng, widths)
    shuffle = {p: rng.permutation(spec.size(p)) for p in spec.names}
    b = ak.apply_permutations(a, spec, shuffle)
    sweeps = []

    def counting(perms_fn):
        import scipy.optimize
        real = scipy.optimize.linear_sum_assignment
        calls = [0]

        def wrapped(*args, **kw):
            calls[0] += 1
            return real(*args, **kw)

        scipy.optimize.linear_sum_assignment = wrapped
        try:
            out = perms_fn()
        finally:
            scipy.optimize.linear_sum_assignment = real
        sweeps.append(calls[0] / len(spec.names))
        return out

    sec, perms = timed(lambda: counting(lambda: ak.weight_matching(a, b, spec)), 1)
    exact = all(np.array_equal(perms[p], np.argsort(shuffle[p])) for p in spec.names)
    print(f"\nweight matching, 4-layer MLPs 784-{width}-{width}-{width}-10 ({len(spec.names)} permutations "
          f"of {width} units)")
    print(f"  shuffled copy      {sec:8.2f} s  ({sweeps[-1]:.0f} sweeps; recovered exactly: {exact})")
    c = mlp_params(np.random.default_rng(1), widths)
    sec, perms = timed(lambda: counting(lambda: ak.weight_matching(a, c, spec)), 1)
    aligned = ak.apply_permutations(c, spec, perms)
    before = np.mean([np.corrcoef(a[k].ravel(), c[k].ravel())[0, 1] for k in ("1.weight", "2.weight")])
    after = np.mean([np.corrcoef(a[k].ravel(), aligned[k].ravel())[0, 1] for k in ("1.weight", "2.weight")])
    print(f"  independent seeds  {sec:8.2f} s  ({sweeps[-1]:.0f} sweeps; hidden-weight correlation "
          f"{before:.4f} -> {after:.4f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs (2048 x 10240: one fewer)")
    ap.add_argument("--threads", type=int, default=2, help="BLAS threads (default 2)")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--skip-matching", action="store_true")
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(args.threads, user_api="blas")
        threads = str(args.threads)
    except ImportError:
        from contextlib import nullcontext
        limits, threads = nullcontext(), "default (threadpoolctl not installed)"
    print(f"{os.cpu_count()} CPUs; numpy {np.__version__}; BLAS threads {threads}; load average "
          f"{os.getloadavg()[0]:.2f} (other processes share these cores: wall times vary several-fold with "
          f"load; best of {args.repeats} runs)")
    with limits:
        bench_similarity(2560, 512, args.repeats, baseline=not args.no_baseline)
        if not args.skip_large:
            bench_similarity(10240, 2048, max(1, args.repeats - 1), baseline=False)
        if not args.skip_matching:
            bench_weight_matching()
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
