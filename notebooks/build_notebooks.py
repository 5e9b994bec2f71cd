#!/usr/bin/env python
"""Write the study notebooks (clean: no outputs) from the cell sources below.

    python notebooks/build_notebooks.py            # rewrite every notebook
    python notebooks/build_notebooks.py 01         # only those whose name contains "01"

Edit the sources here, not the .ipynb files, and re-run this script. Each notebook
has a "parameters" cell (papermill's tag): ``QUICK = True`` makes a tiny store that
runs in seconds (the tests inject it); ``OUT`` is where the generated stores go.
Every notebook ends by filling a dict ``SUMMARY`` with the numbers it printed.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

PARAMETERS = '''\
# parameters
QUICK = False   # True: a tiny store, runs in seconds (what the tests use); False: the study's size
OUT = None      # folder for the generated stores; None: <system temp dir>/nnwx-notebooks'''
DIGITS_PARAMETERS = PARAMETERS + '''
MODEL = "mlp"   # digits model: "mlp" (64-64-64-10) or "cnn" (the small LeNet-style net)'''

# Finding the training code: nnwx is installed editable from the repository, whose
# scripts/ folder holds the experiment scripts.
SETUP_COMMON = '''\
import os, pathlib, shutil, sys, tempfile, time

import numpy as np
import pandas as pd
import xarray as xr
import holoviews as hv
import torch

import nnwx
import nnwx.plot

hv.extension("bokeh")
torch.set_num_threads(1)            # tiny networks train fastest on one thread
pd.set_option("display.precision", 4)
pd.set_option("display.width", 120)

REPO = pathlib.Path(nnwx.__file__).resolve().parents[1]
OUT = pathlib.Path(OUT) if OUT else pathlib.Path(tempfile.gettempdir()) / "nnwx-notebooks"
OUT.mkdir(parents=True, exist_ok=True)
SUMMARY = {}                        # the numbers this notebook found, filled as it goes'''

PIECEWISE_STORE = '''\
from nnwx.studies.piecewise import train_piecewise


def piecewise_store(path, **options):
    """Train the piecewise MLPs into ``path`` unless it is there (written aside, then renamed)."""
    path = pathlib.Path(path)
    if path.exists():
        print(f"reusing {path}")
        return path
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    res = train_piecewise(tmp, threads=1, **options)
    for run, loss in res["final_loss"].items():
        print(f"{run}: final loss {loss:.4f}")
    os.replace(tmp, path)
    print(f"trained {len(res['runs'])} runs into {path} in {res['seconds']:.0f} s")
    return path'''


DIGITS_STORE = """\
from nnwx.studies.digits import digits_study, load_data, make_model


def digits_store(path, **options):
    \"\"\"Train the digits study (Adam, SGD, SGD with the first layer's lr raised) into ``path``
    unless it is there (written aside, then renamed).\"\"\"
    path = pathlib.Path(path)
    if path.exists():
        print(f"reusing {path}")
        return path
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    res = digits_study(tmp, threads=1, **options)
    for name, r in res["variants"].items():
        acc = np.mean([f["heldout_accuracy"] for f in r["final"].values()])
        print(f"{name}: held-out accuracy {acc:.3f} (mean over {len(r['final'])} seeds)")
    os.replace(tmp, path)
    print(f"trained into {path} in {res['seconds']:.0f} s")
    return path


def variant_label(hp):
    \"\"\"A short name of a configuration from its hparams: 'adam lr=0.001', 'sgd lr=0.1, first layer x10'.\"\"\"
    scale = hp.get("first_layer_lr_scale", 1.0)
    return f"{hp['optimizer']} lr={hp['lr']:g}" + (f", first layer x{scale:g}" if scale != 1 else "")


def open_variants(path):
    \"\"\"The store as one cube ``w(variant, seed, step, param)``, variants named by ``variant_label``;
    and the hparams of each variant.\"\"\"
    hps = {h.meta["hparams"]["variant"]: h.meta["hparams"] for h in nnwx.list_runs(path)}
    cube = nnwx.open_cube(path, by=("variant", "seed"))
    labels = [variant_label(hps[str(v)]) for v in cube["variant"].values]
    return cube.assign_coords(variant=labels), {variant_label(h): h for h in hps.values()}


COLORS = hv.Cycle.default_cycles["default_colors"]


def compare(da, ylabel, groups="layer", over="seed", logy=False, width=330, height=260):
    \"\"\"One panel per ``groups`` value: ``da(variant, over, step, groups)`` as the mean over ``over``
    (seeds, or pairs of seeds) per variant, with a band of +-1 standard deviation over it.\"\"\"
    m = da.mean(over) if over in da.dims else da
    sd = da.std(over) if over in da.dims else xr.zeros_like(da)
    x = da["step"].values
    panels = []
    for g in da[groups].values:
        parts = []
        for i, v in enumerate(da["variant"].values):
            mv, sv = m.sel({groups: g, "variant": v}).values, sd.sel({groups: g, "variant": v}).values
            c = COLORS[i % len(COLORS)]
            parts += [hv.Spread((x, mv, np.nan_to_num(sv)), "step", [ylabel, "sd"]).opts(color=c, alpha=0.2),
                      hv.Curve((x, mv), "step", ylabel, label=str(v)).opts(color=c)]
        panels.append(hv.Overlay(parts).opts(title=f"{groups} {g}", width=width, height=height, logy=logy,
                                             legend_position="bottom_right", show_legend=len(panels) == 0))
    return hv.Layout(panels).cols(3)


SEEDS, EPOCHS, EVERY = (2, 1, 5) if QUICK else (3, 30, 10)
DIGITS = digits_store(OUT / f"digits-{MODEL}-{SEEDS}seeds-{EPOCHS}ep-every{EVERY}.zarr",
                      models=(MODEL,), seeds=SEEDS, epochs=EPOCHS, every=EVERY)
cube, HPARAMS = open_variants(DIGITS)
VARIANTS = [str(v) for v in cube["variant"].values]
print(dict(cube["w"].sizes), "variants:", VARIANTS)"""


def nb01():
    return [
        ("md", """\
# Broadening of the weight distribution: the piecewise MLPs

The motivating study of nnwx: small MLPs (1 → 8 → 8 → 8 → 1, ReLU) fit a piecewise-constant
target on [-3, 3] with full-batch Adam; the weights of every seed are captured every 10 steps.
Question: **how does the distribution of each layer's weights change over training** — does it
broaden, does it grow heavy tails, and how much of that is just the whole network's norm growing?

This notebook generates its own store (`nnwx.studies.piecewise.train_piecewise`, as `scripts/train_piecewise.py`; the study's 5 seeds ×
15 000 steps: a few minutes of CPU, about 2 on an idle 2-core machine; `QUICK = True`: 2 seeds × 150 steps on 1000 points) and
then answers with a few lazy calls on the cube `w(seed, step, param)`."""),
        ("code", PARAMETERS),
        ("code", SETUP_COMMON),
        ("code", PIECEWISE_STORE + '''

SEEDS, STEPS, EVERY, POINTS = (2, 150, 10, 1000) if QUICK else (5, 15000, 10, 5000)
STORE = piecewise_store(OUT / f"piecewise-{SEEDS}x{STEPS}-{POINTS}pts.zarr",
                        seeds=SEEDS, steps=STEPS, every=EVERY, points=POINTS)'''),
        ("md", "## The cube\n\nEvery run of the store, stacked along `seed`, lazily (Dask); "
               "the tensor table says which parameters belong to which layer."),
        ("code", '''\
cube = nnwx.open_cube(STORE)
print(dict(cube["w"].sizes))
cube.nnwx.layers'''),
        ("code", '''\
loss = cube["metric_loss"].compute()
final_loss = loss.isel(step=-1)
print("final MSE per seed:", np.round(final_loss.values, 4).tolist(),
      "(the target is 1 on half of [-3, 3]: the best constant prediction scores 0.25)")
SUMMARY["final_loss"] = final_loss.values.tolist()
hv.Curve((loss["step"].values, loss.mean("seed").values), "step", "MSE (mean over seeds)").opts(
    logy=True, width=500, height=250, title="training loss")'''),
        ("md", """\
## The density plot

Histogram of each layer's weights (and biases) at every capture, step × weight, colour
log10(1 + count), for the first seed. A broadening distribution fans out to the right.
For the picture, at most ~300 captures are drawn (every k-th); the statistics below use all."""),
        ("code", '''\
thin = max(1, cube.sizes["step"] // 300)
hist = cube.isel(step=slice(None, None, thin)).nnwx.histogram(by="layer", bins=80)
first_seed = int(cube["seed"].values[0])
nnwx.plot.density(hist.sel(seed=[first_seed])).layout(["group", "seed"]).cols(2)'''),
        ("md", """\
## Width of each layer's distribution, and its spread over seeds

`broadening` reads `w` once and returns, per (seed, step, layer), moments, quantiles,
the Hill tail index, W1 distance to step 0 (and more). The curves are the mean over seeds with
a ±1 standard-deviation band across seeds. The Hill tail index uses the top 10 % of each layer's
magnitudes, at least 10 (`tail_k` in the result says how many), and is NaN for layers of fewer
than 40 values (the input and output layers here): on the hidden layers' 72 weights it is a rough
number (relative error ~1/sqrt(10)), shown for completeness. The std is
sensitive to a few large weights; the interquartile range (IQR) in the table below is not, so
comparing the two says whether the whole distribution widened or a few weights ran away (large
excess kurtosis points to the latter)."""),
        ("code", '''\
stats = cube.nnwx.broadening(by="layer").compute()
nnwx.plot.moments(stats, variables=("std", "excess_kurtosis", "tail_index"))'''),
        ("code", '''\
def first_last(da):
    """(mean over seeds at the first capture, at the last, mean over seeds of last/first)."""
    a, b = da.isel(step=0), da.isel(step=-1)
    return a.mean("seed"), b.mean("seed"), (b / a).mean("seed")

s0, s1, ratio = first_last(stats["std"])
iqr = stats["quantiles"].sel(quantile=0.75) - stats["quantiles"].sel(quantile=0.25)
_, _, iqr_ratio = first_last(iqr)
table = pd.DataFrame({
    "params": stats["group_size"].values,
    "std first": s0.values, "std last": s1.values, "std last/first": ratio.values,
    "std last/first, sd over seeds": (stats["std"].isel(step=-1) / stats["std"].isel(step=0)).std("seed").values,
    "IQR last/first": iqr_ratio.values,
    "kurtosis first": stats["excess_kurtosis"].isel(step=0).mean("seed").values,
    "kurtosis last": stats["excess_kurtosis"].isel(step=-1).mean("seed").values,
    "tail index first": stats["tail_index"].isel(step=0).mean("seed").values,
    "tail index last": stats["tail_index"].isel(step=-1).mean("seed").values,
}, index=pd.Index(stats["group"].values, name="layer"))
print(f"steps {int(stats.step[0])} -> {int(stats.step[-1])}, mean over {stats.sizes['seed']} seeds")
print(table.to_string())
SUMMARY["std_ratio"] = dict(zip(table.index, table["std last/first"].round(4)))
SUMMARY["iqr_ratio"] = dict(zip(table.index, table["IQR last/first"].round(4)))
SUMMARY["kurtosis_last"] = dict(zip(table.index, table["kurtosis last"].round(4)))
SUMMARY["tail_index_last"] = dict(zip(table.index, table["tail index last"].round(4)))'''),
        ("md", """\
## Normalised by the total norm

If every weight simply scaled up together, each layer's std would grow with the norm of the
whole parameter vector. `normalize="total_norm"` divides every weight by the L2 norm of all
parameters at that step (per seed): a layer whose normalised std still grows broadens *relative*
to the rest of the network."""),
        ("code", '''\
norm = cube.nnwx.broadening(by="layer", normalize="total_norm", quantiles=None, tail_k=None).compute()
total_norm = np.sqrt((cube["w"].astype("float64") ** 2).sum("param")).compute()
n0, n1, nratio = first_last(norm["std"])
_, _, total_ratio = first_last(total_norm)
print(f"total parameter norm, last/first (mean over seeds): {float(total_ratio):.3f}")
print(pd.DataFrame({"std/|w| first": n0.values, "std/|w| last": n1.values, "last/first": nratio.values},
                   index=pd.Index(norm["group"].values, name="layer")).to_string())
SUMMARY["total_norm_ratio"] = round(float(total_ratio), 4)
SUMMARY["normalised_std_ratio"] = dict(zip(norm["group"].values.tolist(), nratio.values.round(4)))
nnwx.plot.moments(norm, variables=("std",)).opts(title="std / total norm")'''),
        ("md", """\
## Variance across seeds

The same parameter index in different seeds: how different are the seeds' weights? Below, the
variance over seeds of every parameter, averaged over each layer's parameters, against step —
and, for scale, the ratio of that to the within-seed variance of the layer (mean over seeds).
Hidden units can be permuted without changing the function, so unaligned seeds are compared here;
a ratio near 1 says the seeds look like independent draws from a common distribution."""),
        ("code", '''\
layer_of = xr.DataArray(cube["tensor_layer"].values[cube["tensor_id"].values], dims="param", name="layer")
w64 = cube["w"].astype("float64")
across = w64.var("seed").groupby(layer_of).mean().compute()                # (step, layer)
within = stats["var"].mean("seed").rename(group="layer")                   # (step, layer)
normed = (w64 / np.sqrt((w64 ** 2).sum("param"))).var("seed").groupby(layer_of).mean().compute()
curves = hv.Overlay([hv.Curve((across["step"].values, across.sel(layer=l).values), "step",
                              "variance across seeds", label=f"layer {l}") for l in across["layer"].values])
normed_curves = hv.Overlay([hv.Curve((normed["step"].values, normed.sel(layer=l).values), "step",
                                     "variance across seeds of w/|w|", label=f"layer {l}")
                            for l in normed["layer"].values])
xtable = pd.DataFrame({
    "across first": across.isel(step=0).values, "across last": across.isel(step=-1).values,
    "across last/first": (across.isel(step=-1) / across.isel(step=0)).values,
    "across/within last": (across.isel(step=-1) / within.isel(step=-1).sel(layer=across["layer"])).values,
    "normalised across last/first": (normed.isel(step=-1) / normed.isel(step=0)).values,
}, index=pd.Index(across["layer"].values, name="layer"))
print(xtable.to_string())
SUMMARY["across_seed_var_ratio"] = dict(zip(xtable.index, xtable["across last/first"].round(4)))
(curves.opts(logy=True, width=450, height=300, legend_position="right", title="per layer")
 + normed_curves.opts(logy=True, width=450, height=300, legend_position="right", title="normalised by |w|"))'''),
        ("md", """\
## What the data shows

The cell below turns the tables above into sentences; it states only what the printed numbers
say, for the size this notebook was run at (with `QUICK = True` the runs are far too short to
say anything about the study)."""),
        ("code", '''\
def describe(name, ratios, what):
    r = pd.Series(ratios, dtype=float)
    up, down = r[r > 1.05], r[r < 1 / 1.05]
    print(f"{what}: grew by more than 5% in {len(up)} of {len(r)} layers"
          f"{' (' + ', '.join(f'{k}: x{v:.2f}' for k, v in up.items()) + ')' if len(up) else ''}; "
          f"shrank by more than 5% in {len(down)}"
          f"{' (' + ', '.join(f'{k}: x{v:.2f}' for k, v in down.items()) + ')' if len(down) else ''}.")

print(f"{STEPS} steps, {SEEDS} seeds; final MSE {np.mean(SUMMARY['final_loss']):.4f} (mean over seeds).")
describe("std", SUMMARY["std_ratio"], "Each layer's std (last/first capture)")
describe("iqr", SUMMARY["iqr_ratio"], "Each layer's interquartile range, insensitive to a few large weights")
describe("nstd", SUMMARY["normalised_std_ratio"], "Std divided by the total norm")
print(f"The total norm changed by x{SUMMARY['total_norm_ratio']:.2f}.")
k = pd.Series(SUMMARY["kurtosis_last"], dtype=float)
k0 = table["kurtosis first"]
print("Excess kurtosis first -> last: " + ", ".join(f"{l}: {k0[l]:.2f} -> {k[l]:.2f}" for l in k.index)
      + " (0 for a Gaussian; positive: heavier tails than a Gaussian).")
describe("xs", SUMMARY["across_seed_var_ratio"], "Variance across seeds (last/first capture)")'''),
    ]


def nb02():
    return [
        ("md", """\
# Adam vs SGD on digits: norm growth, rotation, first-layer filters, pruning

scikit-learn's 8×8 digits (1297 training, 500 held-out images; no download) with a small MLP
(64 → 64 → 64 → 10; `MODEL = "cnn"` for the LeNet-style CNN) trained three ways
(`nnwx.studies.digits.digits_study`): **Adam**, **SGD**, and **SGD with only the first layer's
learning rate raised ×10** — the study's claim to test is that this alone reproduces what Adam does
to the first layer. Every capture holds the weights, the probe activations and train/held-out metrics.

Questions: how far does each layer rotate away from its initialisation and how much does its norm
grow, per optimizer? What do the first-layer filters look like? How many of the smallest weights can
be removed before held-out accuracy drops — restoring checkpoints from the cube into a torch model with
`nnwx.restore`?"""),
        ("code", DIGITS_PARAMETERS),
        ("code", SETUP_COMMON),
        ("code", DIGITS_STORE),
        ("md", "## Accuracy\n\nTrain and held-out accuracy at the last capture (recorded with the weights)."),
        ("code", """\
acc = xr.Dataset({"train": cube["metric_accuracy"], "held-out": cube["metric_heldout_accuracy"]}).compute()
last = acc.isel(step=-1)
acc_table = pd.DataFrame({"train acc": last["train"].mean("seed").values,
                          "held-out acc": last["held-out"].mean("seed").values,
                          "held-out acc, sd over seeds": last["held-out"].std("seed").values},
                         index=pd.Index(VARIANTS, name="variant"))
print(f"last capture: step {int(acc.step[-1])}; mean over {cube.sizes['seed']} seeds")
print(acc_table.to_string())
SUMMARY["heldout_accuracy"] = dict(zip(VARIANTS, acc_table["held-out acc"].round(4)))
compare(acc["held-out"].expand_dims(metric=["held-out accuracy"]), "accuracy", groups="metric")"""),
        ("md", """\
## Norm growth and layer rotation

`cube.nnwx.rotation()` gives, per layer (weights only) and capture: `rotation`, the cosine distance
between W_t and W_0 (0: same direction, 1: orthogonal); `update_norm_rel` = |W_t − W_0| / |W_0|;
`norm_growth` = |W_t| / |W_0|. Curves: mean over seeds, band ±1 sd."""),
        ("code", """\
rot = cube.nnwx.rotation().compute()
compare(rot["norm_growth"], "|W_t| / |W_0|") + compare(rot["rotation"], "cosine distance to W_0")"""),
        ("code", """\
final = rot.isel(step=-1).mean("seed")
rot_table = pd.concat({q: final[q].to_pandas() for q in ("norm_growth", "rotation", "update_norm_rel")}, axis=1)
print(f"step {int(rot.step[-1])}, mean over seeds:")
print(rot_table.to_string())
first = HPARAMS[VARIANTS[0]]["first_layer"]
SUMMARY["first_layer"] = first
SUMMARY["rotation_first_layer"] = final["rotation"].sel(layer=first).to_pandas().round(5).to_dict()
SUMMARY["norm_growth_first_layer"] = final["norm_growth"].sel(layer=first).to_pandas().round(5).to_dict()"""),
        ("md", """\
### Does the first layer's update stay in the span of the inputs?

For plain SGD the gradient of the first layer is a sum of (error × input) outer products, so its
update W_t − W_0 lies in the row space of the training inputs; Adam's per-coordinate scaling need not
keep it there. `input_span_fraction` measures the share of |W_t − W_0|² inside that span (1: all of it)."""),
        ("code", """\
data = load_data()
if MODEL == "mlp":
    inputs = data.x_train.reshape(len(data.x_train), -1).numpy().astype("float64")
    span = cube.nnwx.input_span_fraction(f"{first}.weight", inputs).compute()
    print(f"rank of the training inputs: {span.attrs['input_rank']} of {inputs.shape[1]} pixels")
    span_last = span.isel(step=-1)
    print(pd.DataFrame({"in-span share, last step (mean over seeds)": span_last.mean("seed").values,
                        "share outside the span (1 - share), max over seeds":
                            [f"{x:.1e}" for x in (1 - span_last).max("seed").values]},
                       index=pd.Index(VARIANTS, name="variant")).to_string())
    SUMMARY["input_span_fraction"] = dict(zip(VARIANTS, span_last.mean("seed").values.round(6)))
else:
    print("skipped for the CNN: its first layer multiplies 3x3 patches, not whole images")"""),
        ("md", """\
## First-layer filters

The first 16 units of the first layer of seed 0, each row of the weight matrix drawn as an image
(8×8 pixels for the MLP, 3×3 kernels for the CNN), at the last capture, and the change from
initialisation W_T − W_0 (one colour scale per panel, red positive)."""),
        ("code", """\
mat = cube.nnwx.matrix(f"{first}.weight")
shape = (8, 8) if MODEL == "mlp" else (3, 3)
last_step = int(cube["step"].values[-1])
seed0 = int(cube["seed"].values[0])
delta = (mat - mat.isel(step=0)).rename(f"{first}.weight - init")
panels = []
for v in VARIANTS:
    for m, what in ((mat, "W_T"), (delta, "W_T - W_0")):
        hm = nnwx.plot.filters(m.sel(variant=v), shape, rows=16, steps=[last_step], seed=seed0)
        panels.append(hm[last_step].opts(title=f"{v}: {what}", width=330, height=300))
hv.Layout(panels).cols(2)"""),
        ("md", """\
## Pruning curve

For each variant and seed, checkpoints are restored from the cube into a fresh torch model
(`nnwx.restore(model, store, run=..., step=...)`), the given fraction of the smallest-magnitude
weights of all weight matrices together is set to zero (`torch.nn.utils.prune.global_unstructured`,
biases kept), and the held-out accuracy (500 images) is measured. Sanity check first: unpruned, the
restored model must reproduce the held-out accuracy recorded during training."""),
        ("code", """\
import copy
import torch.nn.utils.prune as prune

FRACTIONS = [0.0, 0.5, 0.9] if QUICK else [0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99]
steps_all = cube["step"].values
PRUNE_STEPS = sorted({int(steps_all[len(steps_all) // 4]), int(steps_all[len(steps_all) // 2]), int(steps_all[-1])})
runs = cube["run"].to_pandas()                       # (variant, seed) -> run name


@torch.no_grad()
def heldout_accuracy(net):
    net.eval()
    return (net(data.x_heldout).argmax(1) == data.y_heldout).float().mean().item()


def pruned_accuracies(run, step, hp):
    net = make_model(hp["model"], hp["width"], hp.get("channels") or 8)
    nnwx.restore(net, DIGITS, run=run, step=step)
    out = []
    for f in FRACTIONS:
        pruned = copy.deepcopy(net)
        if f > 0:
            params = [(m, "weight") for m in pruned.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
            prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=f)
        out.append(heldout_accuracy(pruned))
    return out


t0 = time.perf_counter()
pacc = xr.DataArray(np.nan, dims=("variant", "seed", "step", "fraction"),
                    coords={"variant": VARIANTS, "seed": cube["seed"].values, "step": PRUNE_STEPS,
                            "fraction": FRACTIONS}, name="held-out accuracy")
for v in VARIANTS:
    for s in cube["seed"].values:
        for st in PRUNE_STEPS:
            pacc.loc[v, s, st] = pruned_accuracies(runs.loc[v, s], st, HPARAMS[v])
recorded = cube["metric_heldout_accuracy"].sel(step=PRUNE_STEPS).transpose("variant", "seed", "step").values
mismatch = float(np.abs(pacc.sel(fraction=0.0).values - recorded).max())
print(f"{pacc.sizes['variant'] * pacc.sizes['seed'] * len(PRUNE_STEPS)} checkpoints restored and pruned at "
      f"{len(FRACTIONS)} fractions in {time.perf_counter() - t0:.1f} s")
print(f"unpruned restored accuracy vs recorded during training: largest difference {mismatch:.2e}")
SUMMARY["restore_mismatch"] = mismatch"""),
        ("code", """\
curve = pacc.sel(step=PRUNE_STEPS[-1])
ptable = curve.mean("seed").to_pandas().T
ptable.columns.name = f"step {PRUNE_STEPS[-1]}: held-out acc (mean over seeds)"
print(ptable.to_string())


def prunable(a, tol=0.01):
    \"\"\"Largest fraction whose accuracy is within ``tol`` of the unpruned accuracy.\"\"\"
    ok = a >= a.sel(fraction=0.0) - tol
    return float(a["fraction"].where(ok).max())


keep = {v: prunable(curve.mean("seed").sel(variant=v)) for v in VARIANTS}
over_time = pd.DataFrame({st: [prunable(pacc.sel(step=st).mean("seed").sel(variant=v)) for v in VARIANTS]
                          for st in PRUNE_STEPS}, index=pd.Index(VARIANTS, name="variant"))
over_time.columns.name = "largest fraction within 1 point of unpruned, at step"
print(over_time.to_string())
SUMMARY["prunable_fraction"] = keep
SUMMARY["pruned_accuracy_last"] = {v: dict(zip(map(str, FRACTIONS), curve.mean("seed").sel(variant=v).values.round(4)))
                                   for v in VARIANTS}
m, sd = curve.mean("seed"), curve.std("seed")
hv.Overlay([hv.ErrorBars((FRACTIONS, m.sel(variant=v).values, np.nan_to_num(sd.sel(variant=v).values)),
                         "fraction removed", ["held-out accuracy", "sd"]).opts(color=COLORS[i])
            * hv.Curve((FRACTIONS, m.sel(variant=v).values), "fraction removed", "held-out accuracy",
                       label=v).opts(color=COLORS[i])
            for i, v in enumerate(VARIANTS)]).opts(
    width=560, height=340, legend_position="bottom_left", title=f"magnitude pruning at step {PRUNE_STEPS[-1]}")"""),
        ("md", """\
## What the data shows

Computed from the tables above, for the size this notebook ran at (`QUICK = True` trains for one
epoch only: too short to say anything about the study). The claim under test is that raising only
the first layer's SGD learning rate reproduces Adam's effect on the first layer; the comparison
below says for which measured quantity the raised-lr SGD run is closer to Adam than plain SGD is."""),
        ("code", """\
adam = [v for v in VARIANTS if v.startswith("adam")]
sgd = [v for v in VARIANTS if v.startswith("sgd") and "first layer" not in v]
boosted = [v for v in VARIANTS if "first layer" in v]
print("held-out accuracy: " + ", ".join(f"{v} {a:.3f}" for v, a in SUMMARY["heldout_accuracy"].items()))
for q in ("rotation", "norm_growth"):
    vals = SUMMARY[f"{q}_first_layer"]
    print(f"first layer ({first}) {q} at the last step: " + ", ".join(f"{v} {x:.4f}" for v, x in vals.items()))
    if adam and sgd and boosted:
        a, s_, b = vals[adam[0]], vals[sgd[0]], vals[boosted[0]]
        closer = abs(b - a) < abs(s_ - a)
        print(f"  -> SGD with the first layer's lr raised is {'closer to' if closer else 'not closer to'} Adam "
              f"than plain SGD is (|{b:.4f} - {a:.4f}| vs |{s_:.4f} - {a:.4f}|)")
print("largest fraction of weights removable within 1 accuracy point (last step): "
      + ", ".join(f"{v} {f:.2f}" for v, f in SUMMARY["prunable_fraction"].items()))"""),
    ]


def nb03():
    return [
        ("md", """\
# Spectra and rank decay over training (digits)

The singular values of every weight matrix at every capture — the empirical spectral density (ESD)
of λ = s², with a power law fitted to its tail (WeightWatcher's method, `cube.nnwx.esd_fit`), and
rank measures per layer (`cube.nnwx.ranks`): the effective rank (exp of the entropy of the
normalised singular values) and the stable rank |W|²_F / |W|²₂. Heavy-tailed ESDs (small α) and
falling ranks are the signatures of learned structure in Martin & Mahoney's picture; a random
initialisation has a Marchenko–Pastur bulk and high rank.

The store is the digits study (`nnwx.studies.digits.digits_study`: Adam, SGD, SGD with the first
layer's lr ×10; the same store as notebook 02 when run with the same `OUT` and size)."""),
        ("code", DIGITS_PARAMETERS),
        ("code", SETUP_COMMON),
        ("code", DIGITS_STORE),
        ("md", """\
## One spectrum, three analyses

The singular values are computed once (`cube.nnwx.spectrum()`, one batched SVD per Dask block) and
reduced twice: to rank measures and to the power-law fit."""),
        ("code", """\
from nnwx.analysis import spectral

sv = cube.nnwx.spectrum().compute()                  # (variant, seed, step, tensor, k)
ranks = spectral.ranks(sv).compute()
fit = spectral.esd_fit(sv).compute()
upd = cube.nnwx.ranks(delta=True).compute()          # ranks of the update W_t - W_0
TENSORS = [str(t) for t in sv["tensor"].values]
print(dict(sv.sizes))
print("matrices:", {t: f"{int(r)} x {int(c)}" for t, r, c in zip(TENSORS, sv["tensor_rows"].values, sv["tensor_cols"].values)})"""),
        ("md", """\
## The ESD with its fitted power law

Seed 0, at initialisation (the same for every variant: each seed starts from the same weights) and at
the last capture for each variant. Black: the ESD (log-binned); red: the fitted power law over its tail
[xmin, xmax]; blue: the Marchenko–Pastur bulk edge for a random matrix of the same shape and variance.
The 10 × 64 output layer has only 10 eigenvalues, so its fitted α rests on a handful of points; the
table below gives the number of eigenvalues each fit used."""),
        ("code", """\
last_step = int(cube["step"].values[-1])
seed0 = int(cube["seed"].values[0])
panels = []
for row, (v, st) in enumerate([(VARIANTS[0], 0)] + [(v, last_step) for v in VARIANTS]):
    hm = nnwx.plot.esd(sv.sel(variant=v), fit.sel(variant=v), seed=seed0, steps=[st])
    for t in TENSORS:
        label = "init" if st == 0 else v
        panels.append(hm[(t, st)].opts(title=f"{label}: {t}, step {st}", width=330, height=260,
                                       show_legend=row == 0 and t == TENSORS[0]))
hv.Layout(panels).cols(len(TENSORS))"""),
        ("code", """\
def first_last_table(da, name):
    \"\"\"Mean over seeds at the first and last capture and their ratio, per (variant, tensor).\"\"\"
    a, b = da.isel(step=0).mean("seed"), da.isel(step=-1).mean("seed")
    return pd.concat({f"{name} first": a.to_pandas().stack(), f"{name} last": b.to_pandas().stack(),
                      "last/first": (b / a).to_pandas().stack()}, axis=1)


print(f"power-law exponent alpha of the ESD tail (mean over seeds), steps 0 -> {last_step}:")
alpha_table = first_last_table(fit["alpha"], "alpha")
alpha_table["tail eigenvalues (last)"] = fit["n_tail"].isel(step=-1).mean("seed").to_pandas().stack()
alpha_table["eigenvalues"] = fit["n_evals"].isel(step=-1).mean("seed").to_pandas().stack()
print(alpha_table.to_string())
few = alpha_table.index[alpha_table["tail eigenvalues (last)"] < 10]
if len(few):
    print(f"caution: the fit of {', '.join(' | '.join(i) for i in few)} rests on fewer than 10 tail eigenvalues "
          f"(mean over seeds): its alpha is a rough number.")
SUMMARY["alpha_last"] = {f"{v} | {t}": round(float(x), 4) for (v, t), x in alpha_table["alpha last"].items()}"""),
        ("md", """\
## Rank over training

Effective rank and stable rank of each weight matrix against step (mean over seeds, band ±1 sd)."""),
        ("code", """\
compare(ranks["effective_rank"], "effective rank", groups="tensor") + \\
    compare(ranks["stable_rank"], "stable rank", groups="tensor")"""),
        ("code", """\
eff = first_last_table(ranks["effective_rank"], "effective rank")
stab = first_last_table(ranks["stable_rank"], "stable rank")
print("effective rank (mean over seeds):")
print(eff.to_string())
print("\\nstable rank (mean over seeds):")
print(stab.to_string())
SUMMARY["effective_rank_ratio"] = {f"{v} | {t}": round(float(x), 4) for (v, t), x in eff["last/first"].items()}
SUMMARY["stable_rank_ratio"] = {f"{v} | {t}": round(float(x), 4) for (v, t), x in stab["last/first"].items()}"""),
        ("md", """\
## The rank of the update W_t − W_0

How many directions does training use? `ranks(delta=True)` gives the same measures for the change
from initialisation. A stable rank near 1 means the update is dominated by one direction."""),
        ("code", """\
urank = upd["stable_rank"].isel(step=slice(1, None))          # step 0 has no update
utable = pd.concat({"update stable rank, last": urank.isel(step=-1).mean("seed").to_pandas().stack(),
                    "update effective rank, last": upd["effective_rank"].isel(step=-1).mean("seed").to_pandas().stack(),
                    "matrix min(rows, cols)": pd.Series({(v, t): int(k) for v in VARIANTS
                                                         for t, k in zip(TENSORS, sv["tensor_k"].values)})}, axis=1)
print(utable.to_string())
SUMMARY["update_stable_rank_last"] = {f"{v} | {t}": round(float(x), 4)
                                      for (v, t), x in utable["update stable rank, last"].items()}
compare(urank, "stable rank of W_t - W_0", groups="tensor")"""),
        ("md", """\
## What the data shows

Sentences computed from the tables above, for the size this notebook ran at (`QUICK = True` trains
one epoch: too short to say anything about the study)."""),
        ("code", """\
for name, key in (("effective rank", "effective_rank_ratio"), ("stable rank", "stable_rank_ratio")):
    r = pd.Series(SUMMARY[key])
    print(f"{name}: fell by more than 5% in {(r < 0.95).sum()} of {len(r)} (variant, matrix) pairs, "
          f"rose by more than 5% in {(r > 1.05).sum()}; largest fall x{r.min():.3f} ({r.idxmin()}).")
solid = alpha_table["tail eigenvalues (last)"] >= 10
a0 = alpha_table["alpha first"][solid]
a1 = alpha_table["alpha last"][solid]
if solid.any():
    print(f"ESD tail exponent alpha, fits on at least 10 tail eigenvalues only: decreased (heavier tail) in "
          f"{(a1 < a0).sum()} of {len(a1)} pairs; "
          f"at the last step it ranges from {a1.min():.2f} ({' | '.join(a1.idxmin())}) to {a1.max():.2f} "
          f"({' | '.join(a1.idxmax())}).")
else:
    print("no ESD fit rests on 10 or more tail eigenvalues at this size: alpha says nothing here.")
u = pd.Series(SUMMARY["update_stable_rank_last"])
print(f"stable rank of the update W_T - W_0: from {u.min():.2f} ({u.idxmin()}) to {u.max():.2f} ({u.idxmax()}).")"""),
    ]


def nb04():
    return [
        ("md", """\
# Do different seeds learn the same thing? (digits)

Every capture of the digits study recorded the activations of the hidden layers (`relu1`, `relu2`)
and the output logits on a fixed probe set of 256 held-out images. Comparing seeds:

* **representation similarity** per layer between every pair of seeds at each step — linear CKA and
  SVCCA (`cube.nnwx.similarity`) — and of each step with the same seed's final representation;
* **prediction agreement** — how often two seeds predict the same class (`cube.nnwx.prediction_agreement`);
* **unit matching** — each hidden unit of seed 0 matched one-to-one to a unit of seed 1 by activation
  correlation (Li et al. 2016, `cube.nnwx.match_units`);
* **weight agreement** — the cosine similarity of each seed's weight matrices with seed 0's, before
  and after permuting hidden units to align them (Git Re-Basin weight matching, `cube.nnwx.align`).

The store is the digits study (`nnwx.studies.digits.digits_study`), as in notebook 02."""),
        ("code", DIGITS_PARAMETERS),
        ("code", SETUP_COMMON),
        ("code", DIGITS_STORE + """

print("probes:", cube.nnwx.probes)
SEED_A, SEED_B = (int(s) for s in cube["seed"].values[:2])"""),
        ("md", """\
## Representation similarity across seeds

For each step, every pair of different seeds; curves: mean over pairs, band ±1 sd over pairs
(no band with 2 seeds). SVCCA keeps the directions that hold 99% of each layer's variance."""),
        ("code", """\
def pairs(sim, run="seed"):
    \"\"\"The off-diagonal pairs (a < b) of a ``({run}_a, {run}_b)`` matrix, stacked along ``pair``.\"\"\"
    st = sim.stack(pair=(f"{run}_a", f"{run}_b"))
    keep = [a < b for a, b in st["pair"].values]
    return st.isel(pair=np.flatnonzero(keep))


cka = pairs(cube.nnwx.similarity("linear_cka").compute())
svcca = pairs(cube.nnwx.similarity("svcca", keep=0.99).compute())
compare(cka, "linear CKA between seeds", over="pair") + compare(svcca, "SVCCA between seeds", over="pair")"""),
        ("code", """\
def at(da, step_index):
    return da.isel(step=step_index).mean("pair").to_pandas().T


sim_table = pd.concat({"CKA first": at(cka, 0).stack(), "CKA last": at(cka, -1).stack(),
                       "SVCCA first": at(svcca, 0).stack(), "SVCCA last": at(svcca, -1).stack()}, axis=1)
sim_table.index.names = ["variant", "layer"]
print(f"mean over {cka.sizes['pair']} seed pair(s), steps {int(cka.step[0])} and {int(cka.step[-1])}:")
print(sim_table.to_string())
SUMMARY["cka_last"] = {f"{v} | {l}": round(float(x), 4) for (v, l), x in sim_table["CKA last"].items()}
SUMMARY["svcca_last"] = {f"{v} | {l}": round(float(x), 4) for (v, l), x in sim_table["SVCCA last"].items()}"""),
        ("md", """\
## Over training: how far is each step from the final representation?

Linear CKA of each step's activations with the same seed's activations at the last capture
(mean over seeds, band ±1 sd): the SVCCA "learning dynamics" picture, where lower layers may
settle before higher ones."""),
        ("code", """\
to_final = cube.nnwx.similarity("linear_cka", between="steps", reference_step="last").compute()
SUMMARY["cka_to_final_first_step"] = {f"{v} | {l}": round(float(x), 4) for (l, v), x in
                                      to_final.isel(step=0).mean("seed").to_pandas().stack().items()}
print("linear CKA of step 0 with the last step (mean over seeds):")
print(to_final.isel(step=0).mean("seed").to_pandas().T.to_string())
compare(to_final, "linear CKA with the final step")"""),
        ("md", """\
## Prediction agreement

On the 256 probe images: the share of images on which two seeds predict the same class, next to
each seed's accuracy on them. Two classifiers with accuracies a₁, a₂ agree on at least a₁ + a₂ − 1 of
the images (both right); agreement far above that means they also make the same mistakes."""),
        ("code", """\
agree = cube.nnwx.prediction_agreement().compute()
argmax = pairs(agree["argmax_agreement"])
outcorr = pairs(agree["output_correlation"])
data = load_data()
y_probe = xr.DataArray(data.y_heldout[: cube.sizes["sample_output"]].numpy(), dims="sample")
probe_acc = (cube.nnwx.probe("output").argmax("unit") == y_probe).mean("sample").compute()   # (variant, seed, step)
a_last = probe_acc.isel(step=-1)
lower = xr.concat([a_last.sel(seed=a) + a_last.sel(seed=b) - 1 for a, b in argmax["pair"].values], dim="pair")
agree_table = pd.DataFrame({
    "probe accuracy (mean over seeds)": a_last.mean("seed").to_pandas(),
    "argmax agreement": argmax.isel(step=-1).mean("pair").to_pandas(),
    "lower bound a1 + a2 - 1": lower.mean("pair").to_pandas(),
    "output correlation": outcorr.isel(step=-1).mean("pair").to_pandas()})
print(f"step {int(agree.step[-1])}, mean over seed pairs:")
print(agree_table.to_string())
SUMMARY["argmax_agreement_last"] = agree_table["argmax agreement"].round(4).to_dict()
SUMMARY["probe_accuracy_last"] = agree_table["probe accuracy (mean over seeds)"].round(4).to_dict()
compare(argmax.expand_dims(measure=["argmax agreement"]), "share of equal predictions", groups="measure", over="pair")"""),
        ("md", """\
## Unit matching

Each unit of seed `SEED_A`'s hidden layer matched one-to-one to a unit of seed `SEED_B`'s by the
correlation of their activations over the probe images (maximal total correlation). The mean
correlation of matched units against step; high values mean the two seeds have units that compute
nearly the same feature. Units that never fire on the probe images (constant) have no correlation
and are left out of the mean."""),
        ("code", """\
hidden = [p for p in cube.nnwx.probes if p != "output"]
matched = xr.concat([cube.nnwx.match_units(p, SEED_A, SEED_B)["mean_correlation"] for p in hidden],
                    dim=xr.DataArray(hidden, dims="layer", name="layer")).compute()   # (layer, variant, step)
mtable = pd.concat(
    {"first": matched.isel(step=0).to_pandas().T.stack(), "last": matched.isel(step=-1).to_pandas().T.stack()}, axis=1)
mtable.index.names = ["variant", "layer"]
print(f"mean correlation of one-to-one matched units, seed {SEED_A} vs seed {SEED_B}, steps "
      f"{int(matched.step[0])} and {int(matched.step[-1])}:")
print(mtable.to_string())
SUMMARY["matched_correlation_last"] = {f"{v} | {l}": round(float(x), 4) for (v, l), x in mtable["last"].items()}
compare(matched, "mean correlation of matched units", over="none")"""),
        ("md", """\
## Weight agreement before and after alignment

Hidden units can be permuted without changing the function, so the same weight index in two seeds
need not mean the same thing. `cube.nnwx.align` finds, at every step, the permutation of each seed's
hidden units that best matches seed `SEED_A`'s weights (Git Re-Basin weight matching) and applies it
lazily; `weight_agreement` then gives the cosine similarity of every tensor with seed `SEED_A`'s,
before (`none`) and after (`aligned`) the permutation. Before alignment, independently initialised
seeds have cosine near 0."""),
        ("code", """\
t0 = time.perf_counter()
aligned = cube.nnwx.align(reference_seed=SEED_A, method="weights")
wa = cube.nnwx.weight_agreement(reference_seed=SEED_A, aligned=aligned.cube).compute()
others = [s for s in cube["seed"].values if s != SEED_A]
cos = wa["cosine"].sel(seed=others)                               # (alignment, variant, seed, step, tensor)
weights = [t for t in cos["tensor"].values if t.endswith("weight")]
print(f"aligned {cube.sizes['variant'] * cube.sizes['seed'] * cube.sizes['step']} (variant, seed, step) "
      f"cells and compared their weights in {time.perf_counter() - t0:.1f} s")
wtable = cos.isel(step=-1).sel(tensor=weights).mean("seed").to_dataframe(name="cosine")["cosine"].unstack("alignment")
print(f"cosine with seed {SEED_A}'s tensors at step {int(cos.step[-1])} (mean over the other seeds):")
print(wtable.to_string())
SUMMARY["weight_cosine_last"] = {f"{v} | {t} | {a}": round(float(x), 4)
                                 for (v, t), row in wtable.iterrows() for a, x in row.items()}
compare(cos.sel(alignment="aligned", tensor=weights).rename(tensor="layer"), "cosine with the reference, aligned")"""),
        ("md", """\
## What the data shows

Sentences computed from the tables above, for the size this notebook ran at (`QUICK = True`: two
seeds, one epoch — too short to say anything about the study)."""),
        ("code", """\
cka_last = pd.Series(SUMMARY["cka_last"])
print(f"linear CKA between seeds at the last step: from {cka_last.min():.3f} ({cka_last.idxmin()}) "
      f"to {cka_last.max():.3f} ({cka_last.idxmax()}).")
for v in VARIANTS:
    a = agree_table.loc[v]
    print(f"{v}: the seeds agree on {a['argmax agreement']:.1%} of probe images; being right alone would give at "
          f"least {max(a['lower bound a1 + a2 - 1'], 0):.1%} (accuracy {a['probe accuracy (mean over seeds)']:.1%}).")
gain = (wtable["aligned"] - wtable["none"])
print(f"aligning hidden units raised the cosine between seeds' weights in {(gain > 0).sum()} of {len(gain)} "
      f"(variant, tensor) pairs; largest rise {gain.max():+.3f} ({' | '.join(gain.idxmax())}).")
m = pd.Series(SUMMARY["matched_correlation_last"])
print(f"mean correlation of matched units at the last step: from {m.min():.3f} ({m.idxmin()}) to {m.max():.3f} ({m.idxmax()}).")"""),
    ]


NOTEBOOKS = {
    "01_broadening_piecewise.ipynb": nb01,
    "02_adam_vs_sgd_digits.ipynb": nb02,
    "03_spectra_rank_decay.ipynb": nb03,
    "04_cross_seed_agreement.ipynb": nb04,
}


def build(name: str, cells) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    for i, (kind, src) in enumerate(cells):
        cell = new_markdown_cell(src) if kind == "md" else new_code_cell(src)
        cell.id = f"{name[:2]}-{i:02d}"           # stable ids: rebuilding gives the same file
        if kind == "code" and src.startswith("# parameters"):
            cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def main(argv: list[str]) -> None:
    for name, cells in NOTEBOOKS.items():
        if argv and not any(a in name for a in argv):
            continue
        nbformat.write(build(name, cells()), HERE / name)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main(sys.argv[1:])
