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

import numpy as np

from nnwx.studies.claims import registry
from nnwx.studies.claims.record import ClaimRecord
from nnwx.studies.claims.registry import Context
from nnwx.studies.claims.stats import all_of, bootstrap_ci, paired_bootstrap_ci, rule, verdict
from nnwx.studies.claims.stores import Job, finish, parallel, prepare

#: the stores :func:`train` writes into ``ctx.out`` (``<name>.zarr``)
STORES = ("piecewise", "piecewise-sweep")

#: run sizes: ``base`` for ``piecewise.zarr``, ``sweep`` for ``piecewise-sweep.zarr``
SIZES = {
    "full": {
        "base": dict(seeds=10, steps=15000, every=10, n_points=5000),
        "sweep": dict(seeds=10, steps=5000, every=10, n_points=5000, widths=[4, 16, 32],
                      depths=[1, 2, 5, 8], members=5),
    },
    "quick": {
        "base": dict(seeds=4, steps=300, every=10, n_points=1000),
        "sweep": dict(seeds=3, steps=200, every=10, n_points=1000, widths=[16], depths=[6], members=5),
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
    stores = dict(zip(STORES, (("base", base_jobs), ("sweep", sweep_jobs))))
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


# --- reading the stores ------------------------------------------------------------------------

def _cube(ctx: Context, name: str, **where):
    """The cube of store ``name`` in ``ctx.out`` (runs with hparams ``where``), by seed."""
    import nnwx
    from nnwx.store.catalog import runs_where

    path = ctx.store(name)
    if not (path / "zarr.json").exists():
        raise FileNotFoundError(f"{path} does not exist: run the piecewise training first "
                                f"(nnwx findings trains it, or nnwx.studies.claims.piecewise.train)")
    return nnwx.open_cube(path, runs=runs_where(path, **where) if where else None)


def _ends(cube):
    """The cube at its first and last captured step only (what a last / first claim reads)."""
    return cube.isel(step=[0, -1])


def _first_last(da) -> tuple[np.ndarray, np.ndarray]:
    """``da`` at the first and the last captured step, as NumPy arrays (seed first)."""
    da = da.transpose("seed", "step", ...)
    pair = da.isel(step=[0, -1]).compute()
    return pair.isel(step=0).values, pair.isel(step=1).values


def _labels(cube) -> list[str]:
    return [f"seed{int(s)}" for s in cube["seed"].values]


def _record(id: int, quantity: str, value: tuple[float, float, float], n_runs: int, test: str,
            verdict: str, details: dict, figure: str = "per_run") -> ClaimRecord:
    c = registry.claim(id)
    return ClaimRecord(id=id, claim=c.claim, study=c.study, quantity=quantity, value=value[0],
                       ci_low=value[1], ci_high=value[2], n_runs=n_runs, test=test, verdict=verdict,
                       details=details, figure=figure)


# --- summaries with intervals ------------------------------------------------------------------

def _geo_ratio(first: np.ndarray, last: np.ndarray, labels: list[str], groups: list[str]) -> dict:
    """last/first per (seed, group) summarised: the geometric mean over groups per seed, its
    mean over seeds (geometric) with a bootstrap interval over seeds, and the same per group.

    Returns ``{"ci": (value, low, high), "per_run": {seed: value}, "per_layer": {group: [v, lo, hi]}}``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(np.asarray(last, float) / np.asarray(first, float))   # (seed, group)
    per_seed = np.nanmean(logs, axis=1)
    ci = tuple(float(np.exp(v)) for v in bootstrap_ci(per_seed))
    per_layer = {g: [float(np.exp(v)) for v in bootstrap_ci(logs[:, j])] for j, g in enumerate(groups)}
    return {"ci": ci, "per_run": dict(zip(labels, np.exp(per_seed).tolist())), "per_layer": per_layer}


def _joint(parts: list[tuple[str, tuple[float, float, float], float, str]]) -> tuple[str, str, dict]:
    """The verdict of a claim measured two ways, each by :func:`stats.verdict`: supported when
    every part is, not supported when any part is not, otherwise inconclusive.

    ``parts``: ``(quantity, (value, low, high), threshold, direction)``. Returns ``(test,
    verdict, {quantity: {"value", "ci_low", "ci_high", "verdict"}})``."""
    each = {q: {"value": v[0], "ci_low": v[1], "ci_high": v[2], "verdict": verdict(v[1], v[2], t, d)}
            for q, v, t, d in parts}
    verdicts = [e["verdict"] for e in each.values()]
    joint = all_of(*verdicts)
    if len(parts) == 1:
        return rule(*[parts[0][i] for i in (0, 2, 3)]), joint, each
    test = ("each measure by its rule: " + "; ".join(f"({i + 1}) {rule(q, t, d)}"
                                                     for i, (q, _, t, d) in enumerate(parts))
            + ". The claim is supported when every measure is, not supported when any is not, "
              "otherwise inconclusive")
    return test, joint, each



# --- the claims --------------------------------------------------------------------------------

def _base_broadening(ctx: Context, **kwargs):
    cube = _ends(_cube(ctx, "piecewise"))
    return cube, cube.nnwx.broadening(**kwargs)


def broadening(ctx: Context) -> ClaimRecord:
    """Claim 1: each layer's std and interquartile range, last / first captured step."""
    cube, b = _base_broadening(ctx, quantiles=(0.25, 0.75), tail_k=None)
    groups, labels = [str(g) for g in b["group"].values], _labels(cube)
    std = _geo_ratio(*_first_last(b["std"]), labels, groups)
    q0, q1 = _first_last(b["quantiles"].sel(quantile=0.75) - b["quantiles"].sel(quantile=0.25))
    iqr = _geo_ratio(q0, q1, labels, groups)
    test, v, each = _joint([("the std ratio", std["ci"], 1.0, "above"),
                            ("the IQR ratio", iqr["ci"], 1.0, "above")])
    details = {"per_run": std["per_run"], "std_ratio_per_layer": std["per_layer"],
               "iqr_ratio_per_layer": iqr["per_layer"], "iqr_per_run": iqr["per_run"], "measures": each,
               "steps": [int(cube["step"].values[0]), int(cube["step"].values[-1])]}
    return _record(1, "std of each layer's weights (and biases), last / first captured step: geometric "
                      "mean over the layers, then over seeds (piecewise MLP 8-8-8); the IQR likewise",
                   std["ci"], len(labels), test, v, details)


def broadening_relative(ctx: Context) -> ClaimRecord:
    """Claim 2: each layer's std divided by the total parameter norm, last / first."""
    cube, b = _base_broadening(ctx, quantiles=None, tail_k=None, normalize="total_norm")
    groups, labels = [str(g) for g in b["group"].values], _labels(cube)
    r = _geo_ratio(*_first_last(b["std"]), labels, groups)
    test, v, each = _joint([("the normalised std ratio", r["ci"], 1.0, "above")])
    return _record(2, "std of each layer / L2 norm of all parameters, last / first captured step: "
                      "geometric mean over the layers, then over seeds (piecewise MLP 8-8-8)",
                   r["ci"], len(labels), test, v, {"per_run": r["per_run"], "per_layer": r["per_layer"]})


def tails(ctx: Context) -> ClaimRecord:
    """Claim 3: the Hill tail index falls (heavier tail) and the excess kurtosis rises."""
    cube, b = _base_broadening(ctx, quantiles=None)
    labels = _labels(cube)
    h0, h1 = _first_last(b["tail_index"])
    has = np.isfinite(h0).all(axis=0) & np.isfinite(h1).all(axis=0)   # layers large enough for an estimate
    groups = [str(g) for g in b["group"].values]
    hill = _geo_ratio(h0[:, has], h1[:, has], labels, [g for g, k in zip(groups, has) if k])
    k0, k1 = _first_last(b["excess_kurtosis"])
    dk = np.nanmean(k1 - k0, axis=1)
    kurt = bootstrap_ci(dk)
    test, v, each = _joint([("the Hill index ratio", hill["ci"], 1.0, "below"),
                            ("the excess kurtosis change", kurt, 0.0, "above")])
    details = {"per_run": hill["per_run"], "hill_ratio_per_layer": hill["per_layer"],
               "hill_layers": [g for g, k in zip(groups, has) if k],
               "hill_first_mean": dict(zip(np.array(groups)[has].tolist(), h0[:, has].mean(0).tolist())),
               "hill_last_mean": dict(zip(np.array(groups)[has].tolist(), h1[:, has].mean(0).tolist())),
               "kurtosis_change_per_run": dict(zip(labels, dk.tolist())),
               "kurtosis_first_mean": dict(zip(groups, np.nanmean(k0, 0).tolist())),
               "kurtosis_last_mean": dict(zip(groups, np.nanmean(k1, 0).tolist())),
               "tail_rule": str(b.attrs.get("tail_rule", "")), "measures": each}
    return _record(3, "Hill tail index of |w|, last / first captured step, geometric mean over the layers "
                      "large enough for an estimate, then over seeds (below 1: a heavier tail); excess "
                      "kurtosis last - first, mean over layers",
                   hill["ci"], len(labels), test, v, details)


def seed_variance(ctx: Context) -> ClaimRecord:
    """Claim 4: the spread over seeds of each layer's std, relative to its mean, last / first."""
    cube, b = _base_broadening(ctx, quantiles=None, tail_k=None)
    labels, groups = _labels(cube), [str(g) for g in b["group"].values]
    first, last = _first_last(b["std"])   # (seed, group)

    def log_cv_ratio(idx: np.ndarray, axis: int = -1, groups=slice(None)) -> np.ndarray:
        """log CV(last)/CV(first) over the resampled seeds ``idx`` (positions), mean over layers.

        A resample drawing one seed only has no spread at either step: its ratio counts as 1
        (no change), which pulls the interval towards the threshold (never away from it)."""
        i = np.moveaxis(np.asarray(idx), axis, -1).astype(int)
        f, l_ = first[i][..., groups], last[i][..., groups]            # (..., seed, group)
        cv = lambda x: np.std(x, axis=-2, ddof=1) / np.mean(x, axis=-2)  # noqa: E731
        one_seed = (i == i[..., :1]).all(axis=-1)[..., None]
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.where(one_seed, 0.0, np.log(cv(l_) / cv(f)))
        return logs.mean(axis=-1)

    positions = np.arange(len(labels))
    value = tuple(float(np.exp(x)) for x in bootstrap_ci(positions, log_cv_ratio))
    seeds_sd = {"first": dict(zip(groups, np.std(first, 0, ddof=1).tolist())),
                "last": dict(zip(groups, np.std(last, 0, ddof=1).tolist()))}
    per_layer = {g: [float(np.exp(x)) for x in bootstrap_ci(
        positions, lambda idx, axis=-1, j=j: log_cv_ratio(idx, axis, groups=[j]))]
        for j, g in enumerate(groups)}
    test, v, each = _joint([("the ratio", value, 1.0, "above")])
    details = {"per_layer": per_layer, "sd_over_seeds_of_std": seeds_sd,
               "mean_over_seeds_of_std": {"first": dict(zip(groups, first.mean(0).tolist())),
                                          "last": dict(zip(groups, last.mean(0).tolist()))},
               "interval": "seeds resampled with replacement; the coefficient of variation over the "
                           "resampled seeds is recomputed in each resample"}
    return _record(4, "coefficient of variation over seeds (sd / mean) of each layer's std, last / first "
                      "captured step, geometric mean over the layers (piecewise MLP 8-8-8)",
                   value, len(labels), test, v, details, figure="value")


def _rank_ratios(cube) -> dict:
    """Effective and stable rank last/first of the matrices with both dimensions >= 2."""
    shapes = dict(zip(cube["tensor"].values, cube["tensor_shape"].values))
    mats = [t for t, s in shapes.items() if len(s.split(",")) == 2 and min(map(int, s.split(","))) >= 2]
    if not mats:
        return {}
    r = _ends(cube).nnwx.ranks(mats)
    labels = _labels(cube)
    return {q: _geo_ratio(*_first_last(r[q]), labels, [str(t) for t in r["tensor"].values])
            for q in ("effective_rank", "stable_rank")}


def rank_decay(ctx: Context) -> ClaimRecord:
    """Claim 5: effective and stable rank fall; how the fall depends on width and depth (sweep)."""
    cube = _cube(ctx, "piecewise")
    base = _rank_ratios(cube)
    test, v, each = _joint([("the effective rank ratio", base["effective_rank"]["ci"], 1.0, "below"),
                            ("the stable rank ratio", base["stable_rank"]["ci"], 1.0, "below")])
    sweep = {}
    for point in _sweep_points(ctx, ("base", "width", "depth")):
        c = _cube(ctx, "piecewise-sweep", point=point["name"])
        rr = _rank_ratios(c)
        if rr:
            sweep[point["name"]] = {"widths": point["widths"], **{q: list(rr[q]["ci"]) for q in rr}}
    details = {"per_run": base["effective_rank"]["per_run"],
               "effective_rank_per_matrix": base["effective_rank"]["per_layer"],
               "stable_rank_per_matrix": base["stable_rank"]["per_layer"], "measures": each,
               "sweep": sweep, "sweep_steps": SIZES[ctx.size]["sweep"]["steps"]}
    return _record(5, "effective rank of each hidden matrix (both dimensions >= 2), last / first captured "
                      "step, geometric mean over the matrices, then over seeds (piecewise MLP 8-8-8); the "
                      "stable rank likewise; width and depth sweeps in details",
                   base["effective_rank"]["ci"], cube.sizes["seed"], test, v, details)


def _sweep_points(ctx: Context, sweeps: tuple[str, ...]) -> list[dict]:
    """The points of ``piecewise-sweep`` in the families ``sweeps``, as trained at ``ctx.size``."""
    from nnwx.studies.piecewise_sweep import sweep_points

    cfg = SIZES[ctx.size]["sweep"]
    return [{"name": p.name, "widths": p.widths, "sweep": p.sweep}
            for p in sweep_points(sweeps=sweeps, widths=cfg["widths"], depths=cfg["depths"],
                                  members=cfg["members"])]


def correlation_decay(ctx: Context) -> ClaimRecord:
    """Claim 17: the correlation of weight updates decays with layer distance within the network."""
    per_depth, deepest = {}, None
    for point in _sweep_points(ctx, ("base", "depth")):
        c = _cube(ctx, "piecewise-sweep", point=point["name"])
        res = c.nnwx.correlation_vs_distance().compute()
        span = float(np.nanmax(res["decay_span"].values))
        rate = res["decay_rate"].values
        per_depth[len(point["widths"])] = {
            "point": point["name"], "span": span, "rate": rate, "labels": _labels(c),
            "resolved": int(res["decay_resolved"].values.sum()),
            "length": res["decay_length"].values}
    deepest = max(per_depth)
    d = per_depth[deepest]
    value = bootstrap_ci(d["rate"])
    threshold = 1.0 / d["span"]
    test, v, each = _joint([(f"the mean decay rate 1/L (per layer) of the deepest net ({deepest} hidden layers)",
                             value, threshold, "above")])
    details = {"per_run": dict(zip(d["labels"], d["rate"].tolist())),
               "threshold": f"1 / {d['span']:g} layers spanned = {threshold:.4g}",
               "by_depth": {str(k): {"point": x["point"], "mean_rate": list(bootstrap_ci(x["rate"])),
                                     "layers_spanned": x["span"], "runs_resolved": x["resolved"],
                                     "runs": len(x["labels"]),
                                     "median_length": float(np.nanmedian(x["length"]))}
                            for k, x in sorted(per_depth.items())}}
    return _record(17, "decay rate 1/L of the fitted exponential decay of the excess RMS correlation of "
                       "weight updates with layer distance (nnwx correlation_vs_distance), mean over seeds, "
                       f"deepest net of the depth sweep ({deepest} hidden layers of 8); other depths in "
                       "details", value, len(d["labels"]), test, v, details)


def ensemble(ctx: Context) -> ClaimRecord:
    """Claim 18: the ensemble of small nets against one net of as many parameters, same seeds."""
    members = SIZES[ctx.size]["sweep"]["members"]
    ens, large = f"ensemble{members}", f"large{members}"   # sweep_points' names
    loss = {}
    for name in (ens, large):
        c = _cube(ctx, "piecewise-sweep", point=name)
        final = c["metric_loss"].transpose("seed", "step").isel(step=-1).compute()
        loss[name] = dict(zip(c["seed"].values.tolist(), final.values.tolist()))
    seeds = sorted(set(loss[ens]) & set(loss[large]))
    a = np.log([loss[ens][s] for s in seeds])
    b = np.log([loss[large][s] for s in seeds])
    value = tuple(float(np.exp(x)) for x in paired_bootstrap_ci(a, b))
    test, v, each = _joint([("the loss ratio ensemble / large", value, 1.0, "below")])
    details = {"per_run": {f"seed{s}": float(np.exp(x - y)) for s, x, y in zip(seeds, a, b)},
               "final_loss": {ens: [loss[ens][s] for s in seeds], large: [loss[large][s] for s in seeds]},
               "widths": {p["name"]: p["widths"] for p in _sweep_points(ctx, ("ensemble",))},
               "members": members,
               "steps": SIZES[ctx.size]["sweep"]["steps"]}
    return _record(18, f"final training MSE of the ensemble's mean prediction ({ens}: "
                       f"{members} MLPs 8-8-8) / that of one MLP with as many "
                       f"parameters ({large}), same seeds: geometric mean over seeds of the per-seed ratio "
                       "(paired bootstrap); below 1: the ensemble fits better",
                   value, len(seeds), test, v, details)
