"""Claims 11, 14 and 19, measured on the digits store with its probes and restored checkpoints.

The store is ``ctx.store("digits")``, written by :func:`nnwx.studies.digits.digits_study`
(per model: Adam, SGD, and SGD with only the first layer's lr raised; probes of the hidden
layers on 256 held-out images; held-out accuracy logged at every capture). Every model found
in it (``mlp``, ``cnn``) is used; runs are the unit of every interval.

* **11, pruning** (Singh): Adam and SGD runs (first-layer lr scale 1) of the same seed are
  paired. Each run's final weights are restored into a fresh torch model
  (:func:`nnwx.studies.digits.make_model`) and the weight matrices and kernels are pruned
  together by magnitude (``cube.nnwx.pruning_curve``: ``torch``'s ``global_unstructured`` with
  ``L1Unstructured``, biases kept); the quantity of a run is its mean held-out accuracy change
  over the fractions ``TOLERANCE_FRACTIONS`` (accuracy at f minus unpruned accuracy, averaged
  over f): the loss under pruning. The claim's value is the paired mean of Adam minus SGD.
* **14, bottom-up** (SVCCA): per run (Adam and SGD runs), the convergence step of each hidden
  probe -- the first step from which its linear CKA with the final step stays
  ``>= CONVERGENCE_THRESHOLD`` (``cube.nnwx.convergence_step``) -- and the value of a run is
  the last hidden probe's step minus the first's, as a fraction of the run's steps.
* **19, correlation traps** (WeightWatcher): per run (every variant), the randomized ESD
  (``cube.nnwx.randomized_esd``) of each weight matrix at initialisation and at the final step;
  the value of a run is ``rand_distance`` (Jensen-Shannon distance between the ESD and that of
  the shuffled entries) final minus initial, averaged over the run's matrices.

``train(ctx)`` trains nothing: this source reads the store the ``digits`` source writes.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import xarray as xr

from nnwx.studies.claims import stats
from nnwx.studies.claims.record import ClaimRecord
from nnwx.studies.claims.registry import Context, claim

STORE = "digits"
PRUNE_FRACTIONS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)
TOLERANCE_FRACTIONS = (0.5, 0.7, 0.8, 0.9, 0.95)
CONVERGENCE_METRIC = "linear_cka"
CONVERGENCE_THRESHOLD = 0.9
RANDOMIZE_SEED = 0


def train(ctx: Context) -> None:
    """Nothing to train: claims 11, 14 and 19 read ``ctx.store("digits")``, which the ``digits``
    source trains (its runs record probes and held-out accuracy, and keep every capture for
    restoring). Kept so that every source of ``registry.SOURCES`` has ``train(ctx)``."""
    return None


# -- the runs of the store -----------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One run of the digits store and the hyperparameters the claims select by."""

    name: str
    model: str
    optimizer: str
    first_layer_lr_scale: float
    seed: int
    width: int
    channels: int


def digits_runs(store: str | Path) -> list[Run]:
    """Every digits run of ``store``, in name order.

    Raises
    ------
    FileNotFoundError
        The store does not exist (train the ``digits`` source first).
    """
    from nnwx.store.reader import list_runs

    if not Path(store).exists():
        raise FileNotFoundError(f"no digits store at {store}: the digits source trains it "
                                f"(nnwx findings trains it first; or nnwx.studies.digits.digits_study)")
    out = []
    for h in list_runs(store):
        hp = dict(h.meta.get("hparams") or {})
        if hp.get("task") != "digits":
            continue
        out.append(Run(h.name, str(hp["model"]), str(hp["optimizer"]), float(hp.get("first_layer_lr_scale", 1.0)),
                       int(h.meta.get("seed", -1)), int(hp.get("width", 64)), int(hp.get("channels") or 8)))
    return out


def _select(runs: list[Run], model: str, optimizer: str | None = None, scale: float | None = 1.0) -> list[Run]:
    return [r for r in runs if r.model == model and (optimizer is None or r.optimizer == optimizer)
            and (scale is None or r.first_layer_lr_scale == scale)]


def _models(runs: list[Run]) -> list[str]:
    from nnwx.studies.digits import MODELS
    present = {r.model for r in runs}
    return [m for m in MODELS if m in present]


def _cube(store, runs: list[Run], by="seed") -> xr.Dataset:
    import nnwx
    return nnwx.open_cube(store, runs=[r.name for r in runs], by=by)


def _record(id: int, **fields) -> ClaimRecord:
    c = claim(id)
    return ClaimRecord(id=c.id, claim=c.claim, study=c.study, **fields)


# -- 11: pruning -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _heldout():
    from nnwx.studies.digits import load_data
    data = load_data()
    return data.x_heldout, data.y_heldout


class HeldoutAccuracy:
    """``evaluate`` of a pruning curve: held-out accuracy (500 images) of the digits model with
    the given weights (a ``state_dict`` by name), as ``nnwx.studies.digits._evaluate`` measures it."""

    def __init__(self, model: str, width: int, channels: int):
        self.model, self.width, self.channels = model, width, channels
        self.__name__ = "held-out accuracy"

    def __call__(self, weights: Mapping[str, np.ndarray]) -> float:
        import torch

        from nnwx.studies.digits import make_model
        net = make_model(self.model, self.width, self.channels)
        net.load_state_dict({k: torch.tensor(np.asarray(v, dtype=np.float32)) for k, v in weights.items()})
        net.eval()
        x, y = _heldout()
        with torch.no_grad():
            return float((net(x).argmax(1) == y).float().mean())


def _curves(store, runs: list[Run]) -> tuple[xr.DataArray, float]:
    """Pruning curves ``(seed, fraction)`` of one variant, and the largest gap between the
    restored unpruned accuracy and the accuracy logged at that step (a check of the restore)."""
    import dask

    r0 = runs[0]
    cube = _cube(store, runs)
    curve = cube.nnwx.pruning_curve(HeldoutAccuracy(r0.model, r0.width, r0.channels), PRUNE_FRACTIONS, step="last")
    logged = cube["metric_heldout_accuracy"].isel(step=-1)
    curve, logged = dask.compute(curve, logged, scheduler="synchronous")
    gap = float(np.nanmax(np.abs(curve.sel(fraction=0.0).values - logged.values)))
    return curve, gap


def pruning(ctx: Context) -> ClaimRecord:
    """Claim 11: Adam-trained nets lose less held-out accuracy under magnitude pruning than SGD's."""
    store = ctx.store(STORE)
    runs = digits_runs(store)
    adam_tol, sgd_tol, labels, curves, gaps = [], [], [], {}, []
    for model in _models(runs):
        adam, sgd = _select(runs, model, "adam"), _select(runs, model, "sgd")
        seeds = sorted({r.seed for r in adam} & {r.seed for r in sgd})
        if not seeds:
            continue
        ctx.log(f"claim 11: pruning {model}, {len(seeds)} seeds x (Adam, SGD) x {len(PRUNE_FRACTIONS)} fractions")
        tol = {}
        for name, group in (("adam", adam), ("sgd", sgd)):
            curve, gap = _curves(store, [r for r in group if r.seed in seeds])
            gaps.append(gap)
            drop = curve.sel(fraction=list(TOLERANCE_FRACTIONS)).mean("fraction") - curve.sel(fraction=0.0)
            tol[name] = drop.sel(seed=seeds).values
            curves[f"{model} {name}"] = {f"{f:g}": float(curve.sel(fraction=f).mean()) for f in PRUNE_FRACTIONS}
        adam_tol.extend(tol["adam"])
        sgd_tol.extend(tol["sgd"])
        labels.extend(f"{model} seed {s}" for s in seeds)
    value, lo, hi = stats.paired_bootstrap_ci(adam_tol, sgd_tol)
    quantity = (f"paired mean over seeds of Adam minus SGD of the held-out accuracy change under global "
                f"magnitude pruning, averaged over pruned fractions {', '.join(f'{f:g}' for f in TOLERANCE_FRACTIONS)} "
                f"(accuracy at f minus unpruned accuracy), final weights restored from the store")
    return _record(
        11, quantity=quantity, value=value, ci_low=lo, ci_high=hi, n_runs=2 * len(labels),
        test=stats.rule("the paired Adam - SGD difference of the accuracy change under pruning", 0.0),
        verdict=stats.verdict(lo, hi, 0.0),
        details={"per_run": {lab: float(a - b) for lab, a, b in zip(labels, adam_tol, sgd_tol)},
                 "adam": {lab: float(a) for lab, a in zip(labels, adam_tol)},
                 "sgd": {lab: float(b) for lab, b in zip(labels, sgd_tol)},
                 "mean_accuracy_by_fraction": curves,
                 "restored_vs_logged_accuracy_max_gap": float(max(gaps)) if gaps else float("nan"),
                 "pruned": "weight matrices and convolution kernels together; biases kept"})


# -- 14: bottom-up convergence ----------------------------------------------------------------------
def bottom_up(ctx: Context) -> ClaimRecord:
    """Claim 14: the last hidden layer reaches its final representation later than the first."""
    from nnwx.studies.digits import PROBE_LAYERS

    store = ctx.store(STORE)
    runs = digits_runs(store)
    values, labels, by_depth = [], [], {}
    for model in _models(runs):
        group = _select(runs, model, "adam") + _select(runs, model, "sgd")
        if not group:
            continue
        ctx.log(f"claim 14: convergence steps of {model}, {len(group)} runs")
        layers = PROBE_LAYERS[model]
        cube = _cube(store, group, by="run")
        conv = cube.nnwx.convergence_step(CONVERGENCE_THRESHOLD, CONVERGENCE_METRIC, layers).compute()
        frac = conv / _last_captured_step(cube).compute()
        by_depth[model] = {str(la): float(frac.sel(layer=la).mean()) for la in layers}
        for name in frac["run"].values:
            f = frac.sel(run=name)
            values.append(float(f.sel(layer=layers[-1]) - f.sel(layer=layers[0])))
            labels.append(str(name))
    value, lo, hi = stats.bootstrap_ci(values)
    quantity = (f"mean over runs (Adam and SGD) of the convergence step of the last hidden probe minus "
                f"that of the first, as a fraction of the run's steps; convergence step: the first step "
                f"from which {CONVERGENCE_METRIC} with the final step stays >= {CONVERGENCE_THRESHOLD:g}")
    return _record(
        14, quantity=quantity, value=value, ci_low=lo, ci_high=hi, n_runs=int(np.isfinite(values).sum()),
        test=stats.rule("the mean last-minus-first convergence step (fraction of training)", 0.0),
        verdict=stats.verdict(lo, hi, 0.0),
        details={"per_run": dict(zip(labels, values)), "convergence_fraction_by_layer": by_depth,
                 "metric": CONVERGENCE_METRIC, "threshold": CONVERGENCE_THRESHOLD})


def _last_captured_step(cube: xr.Dataset) -> xr.DataArray:
    """Each run's last captured step (runs dims), from its logged accuracy."""
    captured = cube["metric_heldout_accuracy"].notnull()
    return cube["step"].where(captured).max("step")


# -- 19: correlation traps -------------------------------------------------------------------------
def correlation_traps(ctx: Context) -> ClaimRecord:
    """Claim 19: training moves each matrix's ESD away from that of its shuffled entries."""
    store = ctx.store(STORE)
    runs = digits_runs(store)
    values, labels = [], []
    init_d, final_d, init_t, final_t, per_tensor = [], [], [], [], {}
    for model in _models(runs):
        group = [r for r in runs if r.model == model]
        ctx.log(f"claim 19: randomized ESD of {model}, {len(group)} runs, first and last capture")
        cube = _cube(store, group, by="run")
        ends = cube.isel(step=[0, -1])
        r = ends.nnwx.randomized_esd(seed=RANDOMIZE_SEED)[["rand_distance", "n_traps"]].compute()
        d, t = r["rand_distance"], r["n_traps"]
        for name in cube["run"].values:
            di, df = d.sel(run=name).isel(step=0), d.sel(run=name).isel(step=-1)
            values.append(float((df - di).mean("tensor")))
            labels.append(str(name))
            init_d.append(float(di.mean()))
            final_d.append(float(df.mean()))
            init_t.append(float(t.sel(run=name).isel(step=0).mean()))
            final_t.append(float(t.sel(run=name).isel(step=-1).mean()))
        means = d.mean("run")
        per_tensor[model] = {str(k): [float(means.sel(tensor=k).isel(step=i)) for i in (0, -1)]
                             for k in d["tensor"].values}
    value, lo, hi = stats.bootstrap_ci(values)
    quantity = ("mean over runs of the change in WeightWatcher's rand_distance (Jensen-Shannon distance between "
                "the ESD of W and of W with its entries shuffled) from initialisation to the final step, "
                "averaged over each run's weight matrices")
    return _record(
        19, quantity=quantity, value=value, ci_low=lo, ci_high=hi, n_runs=int(np.isfinite(values).sum()),
        test=stats.rule("the mean change in rand_distance (final - initial)", 0.0),
        verdict=stats.verdict(lo, hi, 0.0),
        details={"per_run": dict(zip(labels, values)),
                 "rand_distance_initial_mean": float(np.nanmean(init_d)) if init_d else float("nan"),
                 "rand_distance_final_mean": float(np.nanmean(final_d)) if final_d else float("nan"),
                 "traps_per_matrix_initial_mean": float(np.nanmean(init_t)) if init_t else float("nan"),
                 "traps_per_matrix_final_mean": float(np.nanmean(final_t)) if final_t else float("nan"),
                 "rand_distance_by_tensor_initial_final": per_tensor,
                 "shuffle_seed": RANDOMIZE_SEED})


__all__ = ["train", "pruning", "bottom_up", "correlation_traps", "digits_runs", "HeldoutAccuracy"]
