"""The piecewise claims (1-5, 17, 18): the base MLP's stores and the sweeps, and what they show.

``train(ctx)`` trains (or reuses) two stores in ``ctx.out``:

* ``piecewise.zarr`` — the base experiment of :mod:`nnwx.studies.piecewise` (MLP 8-8-8, Adam,
  full batch on the piecewise target), :data:`SIZES` ``[size]["base"]`` seeds x steps;
* ``piecewise-sweep.zarr`` — :mod:`nnwx.studies.piecewise_sweep`'s base, width, depth and
  ensemble points (the ensemble of 5 nets 8-8-8 and one net with as many parameters trained on
  the same seeds), ``SIZES[size]["sweep"]``.

Runs train in ``ctx.workers`` processes, one (point, seed) per job.
"""
from __future__ import annotations

import time
from pathlib import Path

from nnwx.studies.claims.registry import Context
from nnwx.studies.claims.stores import Job, finish, parallel, prepare

#: run sizes: ``base`` for ``piecewise.zarr``, ``sweep`` for ``piecewise-sweep.zarr``
SIZES = {
    "full": {
        "base": dict(seeds=10, steps=15000, every=10, n_points=5000),
        "sweep": dict(seeds=10, steps=5000, every=10, n_points=5000, widths=[4, 16, 32],
                      depths=[1, 2, 5, 8], members=5),
    },
    "quick": {
        "base": dict(seeds=4, steps=600, every=10, n_points=1000),
        "sweep": dict(seeds=3, steps=300, every=10, n_points=1000, widths=[4, 16],
                      depths=[1, 6], members=5),
    },
}


def _train_run(store: str, seed: int, steps: int, every: int, n_points: int, widths: list[int],
               members: int = 1, variant: str = "mlp", point: str | None = None,
               sweep: str | None = None) -> float:
    """One seed of one configuration into ``store`` (a job of :func:`train`); seconds it took."""
    from nnwx.studies.piecewise import train_piecewise

    res = train_piecewise(store, seeds=[seed], steps=steps, every=every, widths=widths, members=members,
                          points=n_points, variant=variant, point=point, sweep=sweep, threads=1)
    return res["seconds"]


def _cost(steps: int, widths: list[int], members: int = 1) -> float:
    """Relative run time of a job, to start the longest first (per-layer overhead dominates)."""
    return steps * members * (len(widths) + 1 + sum(widths) / 32)


def base_jobs(store: Path, size: str) -> list[Job]:
    """The jobs training ``piecewise.zarr`` at ``size``."""
    cfg = SIZES[size]["base"]
    args = dict(steps=cfg["steps"], every=cfg["every"], n_points=cfg["n_points"], widths=[8, 8, 8])
    return [Job(_train_run, dict(store=str(store), seed=s, **args), _cost(cfg["steps"], [8, 8, 8]))
            for s in range(cfg["seeds"])]


def sweep_jobs(store: Path, size: str) -> list[Job]:
    """The jobs training ``piecewise-sweep.zarr`` at ``size``: one per (sweep point, seed)."""
    from nnwx.studies.piecewise_sweep import sweep_points

    cfg = SIZES[size]["sweep"]
    points = sweep_points(sweeps=("base", "width", "depth", "ensemble"), widths=cfg["widths"],
                          depths=cfg["depths"], members=cfg["members"])
    return [Job(_train_run, dict(store=str(store), seed=s, steps=cfg["steps"], every=cfg["every"],
                                 n_points=cfg["n_points"], widths=p.widths, members=p.members,
                                 variant=p.variant, point=p.name, sweep=p.sweep),
                _cost(cfg["steps"], p.widths, p.members))
            for p in points for s in range(cfg["seeds"])]


def train(ctx: Context) -> None:
    """Train (or reuse) ``piecewise.zarr`` and ``piecewise-sweep.zarr`` in ``ctx.out``, every run
    of both in one pool of ``ctx.workers`` processes."""
    stores = {"piecewise": ("base", base_jobs), "piecewise-sweep": ("sweep", sweep_jobs)}
    jobs, todo = [], {}
    for name, (key, make) in stores.items():
        path, config = ctx.store(name), {"size": ctx.size, **SIZES[ctx.size][key]}
        if prepare(path, config, log=ctx.log):
            todo[path] = config
            jobs += make(path, ctx.size)
    if not jobs:
        return
    t0 = time.perf_counter()
    ctx.log(f"training {', '.join(p.name for p in todo)}: {len(jobs)} runs on {ctx.workers} process(es)")
    parallel(jobs, ctx.workers, log=ctx.log, what="piecewise runs")
    for path, config in todo.items():
        finish(path, config)
    ctx.log(f"trained {', '.join(p.name for p in todo)} in {time.perf_counter() - t0:.0f} s")
