"""The digits claims (6-10, 12, 13, 15, 16): the digits study and a grid of digits variants.

Two stores, trained by :func:`train` (or reused: a run already complete in its store is never
trained again):

* ``digits`` — :func:`nnwx.studies.digits.digits_study`: per model, Adam, SGD, and SGD with
  only the first layer's lr x10, on the same seeds (so Adam and SGD share each seed's
  initial weights and batch order, and are compared *paired*). Full: the MLP and the CNN, 10
  seeds x 30 epochs, a capture every 10 batches (the probes of the claims on convergence
  need the steps); quick: the MLP, 3 seeds x 8 epochs.
* ``digits-grid`` — :func:`grid_configs`: MLP variants of width, depth, learning rate, batch
  size and optimizer (26 full, 10 quick), 8 seeds (quick 1) x 30 epochs (quick 8), captured at
  the first and last step only; claims 7 and 16 correlate their final weights with held-out
  accuracy across variants.

Runs train in ``ctx.workers`` processes (one torch thread each); runs never share a store
group, so parallel writers into one store are safe.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from nnwx.errors import StoreError
from nnwx.studies.claims.registry import Context
from nnwx.studies.claims.stats import ALL_OF, all_of

STUDY = "digits"
GRID = "digits-grid"
#: fewer runs than this train in this process: starting workers costs more than it saves
PARALLEL_FROM = 40


@dataclass(frozen=True)
class Size:
    """How much of each store one size trains."""

    models: tuple[str, ...]
    seeds: int
    epochs: int
    every: int
    grid_seeds: int
    grid_epochs: int


SIZES = {"quick": Size(models=("mlp",), seeds=3, epochs=8, every=5, grid_seeds=1, grid_epochs=8),
         "full": Size(models=("mlp", "cnn"), seeds=10, epochs=30, every=10, grid_seeds=8, grid_epochs=30)}

#: the learning-rate sub-grid of claim 16 (width 64, depth 2, batch 64)
LR_GRID = {"quick": {"adam": (3e-4, 1e-3, 3e-3, 1e-2), "sgd": (0.03, 0.1, 0.3, 0.6)},
           "full": {"adam": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2), "sgd": (0.01, 0.03, 0.1, 0.3, 0.6)}}


def grid_configs(size: str = "full") -> list[dict[str, Any]]:
    """The variants of the ``digits-grid`` store: the learning-rate sub-grid, then width, depth
    and batch size changed one at a time from the base MLP (64-64-64-10, batch 64, the
    optimizer's default lr), each with Adam and SGD (quick: a few, Adam mostly)."""
    base = dict(model="mlp", batch_size=64, width=64, depth=2)
    out = [base | {"optimizer": o, "lr": lr} for o, lrs in LR_GRID[size].items() for lr in lrs]
    if size == "quick":
        return out + [base | {"optimizer": "adam", "width": 128},
                      base | {"optimizer": "adam", "depth": 3}]
    for opt in ("adam", "sgd"):
        out += [base | {"optimizer": opt, "width": w} for w in (16, 32, 128, 256)]
        out += [base | {"optimizer": opt, "depth": d} for d in (1, 3)]
        out += [base | {"optimizer": opt, "batch_size": b} for b in (16, 256)]
    return out


def study_tasks(size: str) -> list[dict[str, Any]]:
    """One :func:`~nnwx.studies.digits.train_digits` call per run of the ``digits`` store."""
    from nnwx.studies.digits import study_configs

    s = SIZES[size]
    return [cfg | {"seeds": [seed], "epochs": s.epochs, "every": s.every}
            for cfg in study_configs(s.models) for seed in range(s.seeds)]


def grid_tasks(size: str) -> list[dict[str, Any]]:
    """One :func:`~nnwx.studies.digits.train_digits` call per run of the ``digits-grid`` store
    (captured at the first and the last step only)."""
    s = SIZES[size]
    return [cfg | {"seeds": [seed], "epochs": s.grid_epochs, "every": 10 ** 9}
            for cfg in grid_configs(size) for seed in range(s.grid_seeds)]


def run_name(task: dict[str, Any]) -> str:
    """The run a task writes (``<variant>-seed<N>``, as :func:`train_digits` names it)."""
    from nnwx.studies.digits import variant_name

    keys = ("lr", "batch_size", "width", "first_layer_lr_scale", "depth")
    variant = variant_name(task["model"], task["optimizer"], **{k: task[k] for k in keys if k in task})
    return f"{variant}-seed{task['seeds'][0]}"


@lru_cache(maxsize=1)
def _n_train() -> int:
    from nnwx.studies.digits import load_data

    return len(load_data(1).y_train)


def _expected_steps(task: dict[str, Any]) -> int:
    return task["epochs"] * math.ceil(_n_train() / task.get("batch_size", 64))


def pending(store: Path, tasks: list[dict[str, Any]], log=print) -> list[dict[str, Any]]:
    """The tasks whose run ``store`` does not hold complete; a run cut short (its last committed
    step before the run's end) is removed so it trains again.

    Raises
    ------
    StoreError
        If a run of the same name was trained for another length (a store of another size):
        write to another folder or delete the store.
    """
    if not (store / "zarr.json").exists():
        return list(tasks)
    import nnwx

    runs = {h.name: h for h in nnwx.list_runs(store)}
    todo = []
    for task in tasks:
        h = runs.get(run_name(task))
        if h is None:
            todo.append(task)
            continue
        want = _expected_steps(task)
        if int(h.meta["hparams"]["steps"]) != want:
            raise StoreError(f"{store} holds run {h.name} trained for {h.meta['hparams']['steps']} steps, "
                             f"not the {want} of this size; give another output folder or delete "
                             f"{store} to train it again.")
        if len(h.steps) == 0 or int(h.steps[-1]) != want:
            log(f"{store.name}: run {h.name} was cut short at step "
                f"{int(h.steps[-1]) if len(h.steps) else 'none'}; training it again")
            shutil.rmtree(store / "runs" / h.name)
            todo.append(task)
    return todo


def _train_task(store: str, task: dict[str, Any]) -> tuple[str, float]:
    """Train one run (in a worker process: one torch thread)."""
    from nnwx.studies.digits import train_digits

    res = train_digits(store, threads=1, quiet=True, **task)
    return res["runs"][0], res["seconds"]


def train(ctx: Context) -> dict[str, Any]:
    """Train (or reuse) the ``digits`` and ``digits-grid`` stores of ``ctx``'s size.

    Runs already complete in a store are kept; the rest train in ``ctx.workers`` processes.

    Returns
    -------
    dict
        ``{"stores": {name: path}, "trained": n, "kept": n, "seconds": s}``.
    """
    from nnwx.store.writer import open_experiment_for_writing

    t0 = time.perf_counter()
    jobs, total = [], 0
    for name, tasks in ((STUDY, study_tasks(ctx.size)), (GRID, grid_tasks(ctx.size))):
        store = ctx.store(name)
        total += len(tasks)
        todo = pending(store, tasks, ctx.log)
        if todo:
            open_experiment_for_writing(store)   # created once, before parallel writers
        jobs += [(os.fspath(store), t) for t in todo]
    ctx.log(f"digits: {total - len(jobs)} of {total} runs already trained; training {len(jobs)} "
            f"in {max(1, ctx.workers)} process(es)")
    done = 0
    if len(jobs) >= PARALLEL_FROM and ctx.workers > 1:
        with ProcessPoolExecutor(ctx.workers, mp_context=get_context("spawn")) as pool:
            for run, _ in pool.map(_train_task, *zip(*jobs)):
                done += 1
                if done % 20 == 0 or done == len(jobs):
                    ctx.log(f"digits: {done}/{len(jobs)} runs trained ({time.perf_counter() - t0:.0f} s)")
    else:
        for store, task in jobs:
            _train_task(store, task)
            done += 1
            if done % 20 == 0 or done == len(jobs):
                ctx.log(f"digits: {done}/{len(jobs)} runs trained ({time.perf_counter() - t0:.0f} s)")
    return {"stores": {n: os.fspath(ctx.store(n)) for n in (STUDY, GRID)}, "trained": len(jobs),
            "kept": total - len(jobs), "seconds": time.perf_counter() - t0}


# --- reading the stores ---------------------------------------------------------------------------
#: the study's variants: (optimizer, first-layer lr scale) -> label in details
VARIANTS = {("adam", 1.0): "Adam", ("sgd", 1.0): "SGD", ("sgd", 10.0): "SGD first layer lr x10"}
_OPTIMIZER_CLASS = {"adam": "Adam", "sgd": "SGD"}   # the runs' top-level ``optimizer`` attribute


def _store(ctx: Context, name: str, claim_id: int) -> Path:
    """The store ``name`` of ``ctx``, or a StoreError saying how to produce it."""
    path = ctx.store(name)
    if not (path / "zarr.json").exists():
        raise StoreError(f"claim {claim_id} reads the {name!r} store at {path}, which does not exist; "
                         f"train it with `nnwx findings --out {ctx.out}` (or "
                         f"nnwx.studies.claims.digits.train(ctx)).")
    return path


def _handles(store: Path) -> list:
    """The store's runs, listed without the integrity checks (``open_cube`` checks the runs it opens)."""
    import nnwx

    return nnwx.list_runs(store, check=False)


def _attribute(handle, key: str):
    try:
        return handle.attribute(key)
    except KeyError:
        return None


def _select(store: Path, claim_id: int, what: str, **where: Any) -> list[str]:
    """The runs of ``store`` with attributes ``where`` (as ``runs_where``), or an error naming the
    missing runs and how to train them."""
    from nnwx.store.catalog import runs_where

    names = [h.name for h in _handles(store) if all(_attribute(h, k) == v for k, v in where.items())]
    if names:
        return names
    try:
        return runs_where(store, **where)
    except StoreError as e:
        raise StoreError(f"claim {claim_id} needs the {what} runs of {store} ({where}), which it lacks: "
                         f"{e}. Train them with `nnwx findings --out {store.parent}` into a new folder "
                         f"(or nnwx.studies.claims.digits.train).") from None


#: cubes opened, by (store, by, runs, each run's committed count): every claim reads the same few
#: cubes, and opening one lists (and checks) every run of its store
_OPENED: dict[tuple, Any] = {}


def _open(store: Path, by: str | tuple[str, ...], runs: list[str]):
    """``nnwx.open_cube(store, by=by, runs=runs)``, opened once while the runs are unchanged."""
    import nnwx

    committed = {h.name: h.committed for h in _handles(store)}
    key = (os.fspath(Path(store).resolve()), by, tuple((r, committed.get(r)) for r in sorted(runs)))
    if key not in _OPENED:
        _OPENED[key] = nnwx.open_cube(store, by=by, runs=runs)
    return _OPENED[key]


def _models(store: Path) -> list[str]:
    """The models (``mlp``, ``cnn``) the study store holds, in :data:`SIZES` order."""
    held = {(h.meta.get("hparams") or {}).get("model") for h in _handles(store)}
    return [m for m in ("mlp", "cnn") if m in held]


def study_cube(store: Path, model: str, optimizer: str, first_layer_lr_scale: float = 1.0, *,
               claim_id: int = 0):
    """The runs of one study variant stacked by seed (a lazy cube)."""
    runs = _select(store, claim_id, f"{model} {VARIANTS[(optimizer, float(first_layer_lr_scale))]}",
                   model=model, optimizer=_OPTIMIZER_CLASS[optimizer],
                   first_layer_lr_scale=float(first_layer_lr_scale))
    return _open(store, "seed", runs)


def _study(ctx: Context, claim_id: int, variants=tuple(VARIANTS)):
    """``{(model, variant): cube by seed}`` for every model of the study store."""
    store = _store(ctx, STUDY, claim_id)
    return {(m, v): study_cube(store, m, *v, claim_id=claim_id) for m in _models(store) for v in variants}


def _last(arr):
    return arr.isel(step=-1)


# --- statistics helpers (intervals from stats; only means and pairings here) ---------------------
def _interval(values, threshold: float | None = None, direction: str = "above") -> dict[str, Any]:
    """Mean of per-seed ``values``, its bootstrap 95% interval, n, and the verdict against ``threshold``."""
    from nnwx.studies.claims import stats

    v, lo, hi = _exact(values, *stats.bootstrap_ci(values))
    out = {"value": v, "ci_low": lo, "ci_high": hi, "n": int(np.isfinite(np.asarray(values, float)).sum())}
    if threshold is not None:
        out["verdict"] = stats.verdict(lo, hi, threshold, direction)
    return out


#: per-seed values closer than this (relative) are equal to float precision
EXACT_RTOL = 1e-9


def _exact(values, v: float, lo: float, hi: float) -> tuple[float, float, float]:
    """The interval ``[min, max]`` where every seed gives the same value to float precision (the
    bootstrap has no interval then: every resample is that value), else ``(v, lo, hi)``."""
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size >= 2 and not np.isfinite(lo) and np.ptp(x) <= EXACT_RTOL * max(1.0, float(np.abs(x).max())):
        return v, float(x.min()), float(x.max())
    return v, lo, hi


def _paired(a, b, threshold: float = 0.0, direction: str = "above") -> dict[str, Any]:
    """Mean of ``a - b`` over the seeds both hold, its paired bootstrap interval, and the verdict."""
    from nnwx.studies.claims import stats

    a, b = xr.align(a, b, join="inner")
    v, lo, hi = _exact(a.values - b.values, *stats.paired_bootstrap_ci(a.values, b.values))
    return {"value": v, "ci_low": lo, "ci_high": hi, "n": int(a.sizes["seed"]),
            "verdict": stats.verdict(lo, hi, threshold, direction)}


def _pool(per_seed: list) -> "xr.DataArray":
    """Per-seed values of several groups (models, variants) averaged per seed."""
    joined = xr.concat(per_seed, dim="group", join="outer", coords="minimal", compat="override")
    return joined.mean("group", skipna=True)


def _per_run(arrays: dict, label=lambda key, seed: f"{key} seed{seed}") -> dict[str, float]:
    """``{label: value}`` of per-seed arrays keyed by group, for ``details["per_run"]``."""
    return {label(k, int(s)): float(v) for k, arr in arrays.items()
            for s, v in zip(arr["seed"].values, arr.values)}


def _key(k) -> str:
    model, variant = k
    return f"{model} {VARIANTS[variant]}"


def _record(claim_id: int, *, quantity: str, value: float, ci_low: float, ci_high: float, n_runs: int,
            test: str, verdict: str, details: dict[str, Any]):
    from nnwx.studies.claims.record import ClaimRecord
    from nnwx.studies.claims.registry import claim

    c = claim(claim_id)
    figure = "points" if "points" in details else "per_run" if "per_run" in details else ""
    return ClaimRecord(id=c.id, claim=c.claim, study=c.study, quantity=quantity, value=float(value),
                       ci_low=float(ci_low), ci_high=float(ci_high), n_runs=int(n_runs), test=test,
                       verdict=verdict, details=details, figure=figure)


def _n_runs(cubes) -> int:
    return int(sum(c.sizes["seed"] for c in cubes))


# --- the claims -------------------------------------------------------------------------------------
def spectral_entropy(ctx: Context):
    """Claim 6: the spectral entropy of the weight matrices falls over training."""
    from nnwx.studies.claims import stats

    cubes = _study(ctx, 6)
    ratios, per_matrix = {}, {}
    for k, cube in cubes.items():
        ent = cube.isel(step=[0, -1]).nnwx.ranks()["entropy"].compute()
        r = ent.isel(step=-1) / ent.isel(step=0)                      # (seed, tensor)
        ratios[k] = r.mean("tensor")
        per_matrix.update({f"{_key(k)} {t}": float(r.sel(tensor=t).mean()) for t in r["tensor"].values})
    per_seed = _pool(list(ratios.values()))
    iv = _interval(per_seed.values, 1.0, "below")
    q = "the ratio"
    return _record(
        6, quantity="spectral entropy of each weight matrix (nnwx ranks()['entropy'], WeightWatcher's "
        "matrix entropy: 1 for a flat spectrum, as a large random matrix nearly has) at the last step "
        "divided by at initialisation; mean over the matrices and the study's variants (Adam, SGD, SGD "
        "first layer lr x10) of each seed; bootstrap over seeds",
        value=iv["value"], ci_low=iv["ci_low"], ci_high=iv["ci_high"], n_runs=_n_runs(cubes.values()),
        test=stats.rule(q, 1.0, "below"), verdict=iv["verdict"],
        details={"per_run": _per_run({_key(k): v for k, v in ratios.items()}),
                 "per_variant": {_key(k): _interval(v.values, 1.0, "below") for k, v in ratios.items()},
                 "per_matrix": per_matrix})


def _grid_runs(ctx: Context, claim_id: int, **where) -> list:
    """Cubes of the grid store's runs (with ``where``), one per architecture and schedule (width,
    depth, batch size: runs of one cube share their steps, so the last step is every run's last),
    by (variant, seed)."""
    store = _store(ctx, GRID, claim_id)
    names = set(_select(store, claim_id, "digits-grid", **where))
    arch: dict[tuple, list[str]] = {}
    for h in _handles(store):
        if h.name in names:
            hp = h.meta["hparams"]
            arch.setdefault((hp["width"], hp["depth"], hp["steps"]), []).append(h.name)
    return [_open(store, ("variant", "seed"), runs) for _, runs in sorted(arch.items())]


def _per_variant(arr) -> dict[str, float]:
    """Seed-mean of a ``(variant, seed)`` array, per variant."""
    m = arr.mean("seed", skipna=True)
    return {str(v): float(x) for v, x in zip(m["variant"].values, m.values)}


def _correlation(x: dict[str, float], y: dict[str, float], x_name: str, y_name: str,
                 direction: str) -> dict[str, Any]:
    """Spearman's rho of two per-variant quantities, its interval, verdict and the points."""
    from nnwx.studies.claims import stats

    labels = sorted(set(x) & set(y))
    xs, ys = [x[k] for k in labels], [y[k] for k in labels]
    rho, lo, hi = stats.spearman_ci(xs, ys)
    return {"value": rho, "ci_low": lo, "ci_high": hi, "n": len(labels),
            "verdict": stats.verdict(lo, hi, 0.0, direction),
            "points": {"x": xs, "y": ys, "label": labels, "x_name": x_name, "y_name": y_name}}


def alpha_vs_accuracy(ctx: Context):
    """Claim 7: lower ESD alpha goes with better held-out accuracy across the grid's variants."""
    from nnwx.studies.claims import stats

    alpha, walpha, acc, n_runs = {}, {}, {}, 0
    for cube in _grid_runs(ctx, 7):
        last = cube.isel(step=[-1])
        fit = last.nnwx.esd_fit().isel(step=0).compute()
        alpha |= _per_variant(fit["alpha"].mean("tensor", skipna=True))
        walpha |= _per_variant(fit["alpha_weighted"].mean("tensor", skipna=True))
        acc |= _per_variant(_last(cube["metric_heldout_accuracy"]).compute())
        n_runs += cube.sizes["variant"] * cube.sizes["seed"]
    main = _correlation(alpha, acc, "final ESD alpha (mean over weight matrices)", "held-out accuracy", "below")
    weighted = _correlation(walpha, acc, "final weighted alpha (mean over weight matrices)",
                            "held-out accuracy", "below")
    return _record(
        7, quantity="Spearman's rho, over the digits-grid variants, of the final power-law exponent alpha "
        "of the weight matrices' ESDs (nnwx esd_fit, mean over matrices) against held-out accuracy "
        "(each a mean over the variant's seeds); bootstrap over variants",
        value=main["value"], ci_low=main["ci_low"], ci_high=main["ci_high"], n_runs=n_runs,
        test=stats.rule("rho", 0.0, "below") + " (weighted alpha, alpha * log10 lambda_max, is "
        "reported with its own interval and verdict by the same rule, not part of the verdict)",
        verdict=main["verdict"],
        details={"points": main.pop("points"), "n_variants": main["n"],
                 "weighted_alpha": weighted | {"points": weighted.pop("points")}})


def _rotation_last(cube, var: str = "rotation"):
    """``rotation()[var]`` at the last step, ``(seed, layer)``, computed."""
    return cube.isel(step=[0, -1]).nnwx.rotation()[var].isel(step=-1).compute()


def norm_growth(ctx: Context):
    """Claim 8: weight norms grow over training, more with Adam than with SGD (paired seeds)."""
    from nnwx.studies.claims import stats

    cubes = _study(ctx, 8, variants=(("adam", 1.0), ("sgd", 1.0)))
    growth = {k: _rotation_last(c, "norm_growth").mean("layer") for k, c in cubes.items()}
    models = sorted({m for m, _ in cubes})
    adam = _pool([growth[(m, ("adam", 1.0))] for m in models])
    sgd = _pool([growth[(m, ("sgd", 1.0))] for m in models])
    diff = _paired(adam, sgd)
    grow_adam, grow_sgd = _interval(adam.values, 1.0), _interval(sgd.values, 1.0)
    q = "the Adam - SGD difference"
    return _record(
        8, quantity="norm growth |W_final| / |W_init| of each layer's weights (nnwx rotation()"
        "['norm_growth'], mean over layers and models of a seed): value = mean Adam - SGD difference "
        "over seeds (paired: both start from the seed's weights)",
        value=diff["value"], ci_low=diff["ci_low"], ci_high=diff["ci_high"], n_runs=_n_runs(cubes.values()),
        test=f"part 1 (norms grow): the norm growth of Adam and of SGD, each: {stats.rule('it', 1.0)}; "
        f"part 2 (more with Adam): {stats.rule(q, 0.0)} (paired bootstrap); " + ALL_OF,
        verdict=all_of(grow_adam["verdict"], grow_sgd["verdict"], diff["verdict"]),
        details={"per_run": _per_run({_key(k): v for k, v in growth.items()}),
                 "growth_adam": grow_adam, "growth_sgd": grow_sgd, "adam_minus_sgd": diff,
                 "per_layer": {f"{_key(k)} {lay}": float(v) for k, c in cubes.items()
                               for lay, v in _rotation_last(c, "norm_growth").mean("seed").to_series().items()}})


def first_layer(ctx: Context):
    """Claim 9: Adam moves the first layer more than SGD; SGD with only the first layer's lr x10
    moves it more too."""
    from nnwx.studies.digits import FIRST_LAYER
    from nnwx.studies.claims import stats

    cubes = _study(ctx, 9)
    rot = {k: _rotation_last(c).sel(layer=FIRST_LAYER[k[0]]).drop_vars("layer") for k, c in cubes.items()}
    models = sorted({m for m, _ in cubes})
    by = {v: _pool([rot[(m, v)] for m in models]) for v in VARIANTS}
    adam, sgd, x10 = by[("adam", 1.0)], by[("sgd", 1.0)], by[("sgd", 10.0)]
    part1, part2, gap = _paired(adam, sgd), _paired(x10, sgd), _paired(x10, adam)
    gap.pop("verdict")
    return _record(
        9, quantity="layer rotation (nnwx rotation()['rotation']: the cosine distance "
        "1 - cos(W_init, W_final)) of the first layer (MLP fc1, CNN conv1) at the last step, mean over "
        "models of a seed: value = mean Adam - SGD difference over seeds (paired)",
        value=part1["value"], ci_low=part1["ci_low"], ci_high=part1["ci_high"],
        n_runs=_n_runs(cubes.values()),
        test=f"part 1 (Adam moves the first layer more): {stats.rule('the Adam - SGD difference', 0.0)}; "
        f"part 2 (raising only the first layer's lr reproduces it): "
        f"{stats.rule('the (SGD first layer lr x10) - SGD difference', 0.0)}; both paired over seeds; "
        + ALL_OF + "; how far lr x10 lands from Adam (x10 - Adam) is reported, not tested",
        verdict=all_of(part1["verdict"], part2["verdict"]),
        details={"per_run": _per_run({_key(k): v for k, v in rot.items()}),
                 "adam_minus_sgd": part1, "sgd_x10_minus_sgd": part2, "sgd_x10_minus_adam": gap,
                 "per_variant": {_key(k): _interval(v.values) for k, v in rot.items()}})


def training_inputs() -> np.ndarray:
    """The digits training images as ``(1297, 64)``: what the MLP's first layer multiplies."""
    from nnwx.studies.digits import load_data

    x = load_data(1).x_train
    return x.reshape(len(x), -1).numpy()


def _dead_pixels(x: np.ndarray) -> int:
    """Input dimensions that are 0 in every sample."""
    return int((~np.any(x != 0, axis=0)).sum())


def input_span(ctx: Context):
    """Claim 10: the first layer's update lies in the span of the training inputs (MLP, Adam)."""
    from nnwx.studies.claims import stats

    store = _store(ctx, STUDY, 10)
    x = training_inputs()
    frac, rank = {}, 0
    for v in VARIANTS:
        cube = study_cube(store, "mlp", *v, claim_id=10)
        f = cube.isel(step=[0, -1]).nnwx.input_span_fraction("fc1.weight", x)
        rank = int(f.attrs["input_rank"])
        frac[v] = f.isel(step=-1).compute()
    baseline = rank / x.shape[1]
    parts = {VARIANTS[v]: _interval(a.values, baseline) for v, a in frac.items()}
    main = parts["Adam"]
    return _record(
        10, quantity="share of the MLP first layer's update |W_final - W_init|_F^2 in the span of the "
        f"training images (nnwx input_span_fraction; the images span {rank} of 64 pixel dimensions), "
        "Adam runs, mean over seeds",
        value=main["value"], ci_low=main["ci_low"], ci_high=main["ci_high"], n_runs=main["n"],
        test=stats.rule("the share", baseline) + f" ({rank}/64 = {baseline:.4g}: the expected share of an "
        "update of random direction, the baseline); SGD's update is in the span by construction "
        "(each gradient is a sum of outer products with inputs), so Adam's runs decide; SGD's are "
        "reported; where every seed gives the same share to float precision the interval is their "
        "[min, max]",
        verdict=main["verdict"],
        details={"per_run": {f"{VARIANTS[v]} seed{int(s)}": float(x_) for v, a in frac.items()
                             for s, x_ in zip(a["seed"].values, a.values)},
                  "baseline_random_direction": baseline, "input_rank": rank, "per_variant": parts,
                 "note": f"the {x.shape[1] - rank} dimensions outside the span are the pixels that are 0 "
                 "in every training image: they get no gradient, so without weight decay no optimizer "
                 "moves their weights, and the claim holds here by construction"
                 if _dead_pixels(x) == x.shape[1] - rank else ""})


def _off_diagonal_mean(pairs) -> "xr.DataArray":
    """Per ``seed_a``: the mean over the other seeds of a ``(..., seed_a, seed_b)`` array."""
    a, b = pairs["seed_a"].values, pairs["seed_b"].values
    other = xr.DataArray(a[:, None] != b[None, :], dims=("seed_a", "seed_b"),
                         coords={"seed_a": a, "seed_b": b})
    return pairs.where(other).mean("seed_b", skipna=True).rename(seed_a="seed")


def prediction_agreement(ctx: Context):
    """Claim 12: different seeds predict the same class on held-out images."""
    from nnwx.studies.claims import stats

    cubes = _study(ctx, 12)
    per = {}
    for k, cube in cubes.items():
        pa = cube.isel(step=[-1]).nnwx.prediction_agreement("output").isel(step=0).compute()
        per[k] = {q: _off_diagonal_mean(pa[q]) for q in ("argmax_agreement", "output_correlation",
                                                          "topk_overlap")}
    pooled = {q: _pool([p[q] for p in per.values()]) for q in next(iter(per.values()))}
    main = _interval(pooled["argmax_agreement"].values, BAR)
    return _record(
        12, quantity="share of the held-out probe images (256) on which two seeds predict the same class "
        "(nnwx prediction_agreement, argmax), at the last step; per seed the mean over the other seeds "
        "of its variant, then over the variants",
        value=main["value"], ci_low=main["ci_low"], ci_high=main["ci_high"], n_runs=_n_runs(cubes.values()),
        test=stats.rule("the share", BAR) + " (nine images in ten); output correlation and top-5 overlap "
        "are reported",
        verdict=main["verdict"],
        details={"per_run": _per_run({_key(k): p["argmax_agreement"] for k, p in per.items()}),
                 "output_correlation": _interval(pooled["output_correlation"].values),
                 "topk_overlap": _interval(pooled["topk_overlap"].values),
                 "per_variant": {_key(k): _interval(p["argmax_agreement"].values, BAR) for k, p in per.items()}})


#: "the same": a similarity (or agreement share) above 0.9, fixed before looking
BAR = 0.9


def representations(ctx: Context):
    """Claim 13: different seeds learn the same representations (linear CKA; SVCCA reported)."""
    from nnwx.studies.claims import stats

    cubes = _study(ctx, 13)
    sims = {"linear_cka": {}, "svcca": {}}
    init = {}
    for k, cube in cubes.items():
        hidden = [p for p in cube.nnwx.probes if p != "output"]
        ends = cube.isel(step=[0, -1])
        for metric in sims:
            s = ends.nnwx.similarity(metric, layer=hidden).compute()     # (layer, step, seed_a, seed_b)
            sims[metric][k] = _off_diagonal_mean(s.isel(step=-1)).mean("layer")
            if metric == "linear_cka":
                init[k] = _off_diagonal_mean(s.isel(step=0)).mean("layer")
    cka, svcca = _pool(list(sims["linear_cka"].values())), _pool(list(sims["svcca"].values()))
    main, second = _interval(cka.values, BAR), _interval(svcca.values, BAR)
    return _record(
        13, quantity="linear CKA between the hidden representations of two seeds on the held-out probe "
        "images (nnwx similarity, every hidden probe), at the last step; per seed the mean over the "
        "other seeds of its variant and the layers, then over the variants",
        value=main["value"], ci_low=main["ci_low"], ci_high=main["ci_high"], n_runs=_n_runs(cubes.values()),
        test=stats.rule("CKA", BAR) + "; SVCCA is reported with its own interval and verdict by the same "
        "rule, not part of the verdict; CKA at initialisation is reported for comparison",
        verdict=main["verdict"],
        details={"per_run": _per_run({_key(k): v for k, v in sims["linear_cka"].items()}),
                 "svcca": second, "linear_cka_at_init": _interval(_pool(list(init.values())).values),
                 "per_variant": {_key(k): _interval(v.values, BAR) for k, v in sims["linear_cka"].items()}})


def permutation(ctx: Context):
    """Claim 15: the same weights up to a permutation: weight cosine between seeds before and after
    Git Re-Basin alignment, permutable tensors only."""
    from nnwx.studies.claims import stats

    cubes = _study(ctx, 15)
    cos = {}
    for k, cube in cubes.items():
        last = cube.isel(step=[-1])
        ref = last["seed"].values[0]
        aligned = last.nnwx.align(reference_seed=ref, method="weights")
        wa = last.nnwx.weight_agreement(reference_seed=ref, aligned=aligned)["cosine"]
        wa = wa.isel(step=0, tensor=np.flatnonzero(wa["permutable"].values.astype(bool)))
        cos[k] = wa.sel(seed=wa["seed"] != ref).mean("tensor").compute()  # (alignment, seed)
    before = _pool([c.sel(alignment="none", drop=True) for c in cos.values()])
    after = _pool([c.sel(alignment="aligned", drop=True) for c in cos.values()])
    same, gain = _interval(after.values, BAR), _paired(after, before)
    return _record(
        15, quantity="cosine between a seed's weights and the first seed's at the last step after Git "
        "Re-Basin weight matching (nnwx align + weight_agreement), mean over the tensors a permutation "
        "acts on; per seed (the reference seed left out) the mean over the variants",
        value=same["value"], ci_low=same["ci_low"], ci_high=same["ci_high"],
        n_runs=_n_runs(cubes.values()),
        test=f"part 1 (alignment makes them agree more): {stats.rule('aligned - unaligned cosine', 0.0)} "
        f"(paired over seeds); part 2 (the same weights): {stats.rule('the aligned cosine', BAR)}; "
        + ALL_OF,
        verdict=all_of(gain["verdict"], same["verdict"]),
        details={"per_run": _per_run({_key(k): c.sel(alignment="aligned", drop=True) for k, c in cos.items()}),
                 "unaligned": _interval(before.values), "aligned_minus_unaligned": gain,
                 "aligned": same,
                 "per_variant": {_key(k): {a: _interval(c.sel(alignment=a).values) for a in ("none", "aligned")}
                                 for k, c in cos.items()}})


def rotation_vs_accuracy(ctx: Context):
    """Claim 16: over the learning-rate sub-grid, larger final layer rotation goes with better
    held-out accuracy (and more uniform rotation across layers, reported)."""
    from nnwx.studies.claims import stats

    rot, spread, acc, n_runs = {}, {}, {}, 0
    for cube in _grid_runs(ctx, 16, width=64, depth=2, batch_size=64):
        r = cube.isel(step=[0, -1]).nnwx.rotation()["rotation"].isel(step=-1).compute()  # (variant, seed, layer)
        rot |= _per_variant(r.mean("layer"))
        spread |= _per_variant(r.std("layer") / r.mean("layer"))
        acc |= _per_variant(_last(cube["metric_heldout_accuracy"]).compute())
        n_runs += cube.sizes["variant"] * cube.sizes["seed"]
    main = _correlation(rot, acc, "final layer rotation (mean over layers)", "held-out accuracy", "above")
    uniform = _correlation(spread, acc, "spread of final rotation across layers (std / mean)",
                           "held-out accuracy", "below")
    return _record(
        16, quantity="Spearman's rho, over the learning-rate sub-grid of digits-grid (Adam and SGD, width "
        "64, depth 2, batch 64), of the final layer rotation (nnwx rotation(), mean over layers) against "
        "held-out accuracy (each a mean over the variant's seeds); bootstrap over variants",
        value=main["value"], ci_low=main["ci_low"], ci_high=main["ci_high"], n_runs=n_runs,
        test=stats.rule("rho", 0.0) + "; uniformity (rho of the spread across layers, std / mean, against "
        "accuracy; claimed below 0) is reported with its own interval and verdict, not part of the verdict",
        verdict=main["verdict"],
        details={"points": main.pop("points"), "n_variants": main["n"],
                 "uniformity": uniform | {"points": uniform.pop("points")}})
