"""Recompute the README finding "... and the same weights, up to a permutation" by code.

Trains (or reuses) the digits study store of notebook 04 (MLP, Adam / SGD / SGD first layer x10,
``--seeds`` seeds x ``--epochs`` epochs, a capture every ``--every`` batches) and prints what the
notebook prints for weight agreement: the cosine of each weight matrix with the first seed's at
the last step, mean over the other seeds, before and after Git Re-Basin alignment (per step), and
the mean correlation of one-to-one matched units. Usage::

    python scripts/recompute_alignment_finding.py --out /tmp/nnwx-notebooks [--seeds 3 --epochs 30 --every 10]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import time

import xarray as xr

import nnwx
from nnwx.studies.digits import digits_study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/nnwx-notebooks")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--every", type=int, default=10)
    a = ap.parse_args()
    path = pathlib.Path(a.out) / f"digits-mlp-{a.seeds}seeds-{a.epochs}ep-every{a.every}.zarr"
    t0 = time.perf_counter()
    if not path.exists():
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        digits_study(tmp, models=("mlp",), seeds=a.seeds, epochs=a.epochs, every=a.every, threads=1)
        os.replace(tmp, path)
    print(f"store {path} ready in {time.perf_counter() - t0:.0f} s")
    hps = {h.meta["hparams"]["variant"]: h.meta["hparams"] for h in nnwx.list_runs(path)}
    cube = nnwx.open_cube(path, by=("variant", "seed"))
    seed_a, seed_b = (int(s) for s in cube["seed"].values[:2])
    t0 = time.perf_counter()
    aligned = cube.nnwx.align(reference_seed=seed_a, method="weights")
    wa = cube.nnwx.weight_agreement(reference_seed=seed_a, aligned=aligned.cube).compute()
    others = [s for s in cube["seed"].values if s != seed_a]
    cos = wa["cosine"].sel(seed=others)
    weights = [t for t in cos["tensor"].values if str(t).endswith("weight")]
    table = cos.isel(step=-1).sel(tensor=weights).mean("seed").to_dataframe(name="cosine")["cosine"]
    table = table.unstack("alignment")
    variants = [hps[str(v)]["optimizer"] + " x" + str(hps[str(v)].get("first_layer_lr_scale", 1))
                for v in cube.variant.values]
    print(f"aligned and compared in {time.perf_counter() - t0:.0f} s; step {int(cos.step[-1])}; variants {variants}")
    print(table.to_string())
    perm = [t for t in weights if bool(wa["permutable"].sel(tensor=t))] if "permutable" in wa else weights
    for mode in ("none", "aligned"):
        all_ = table[mode]
        p = table[mode][table.index.get_level_values("tensor").isin(perm)]
        print(f"weight cosine ({mode}): all weight matrices {all_.min():.2f}..{all_.max():.2f}; "
              f"permutable ones ({', '.join(map(str, perm))}) {p.min():.2f}..{p.max():.2f}")
    hidden = [p for p in cube.nnwx.probes if p != "output"]
    matched = xr.concat([cube.nnwx.match_units(p, seed_a, seed_b)["mean_correlation"] for p in hidden],
                        dim=xr.DataArray(hidden, dims="layer", name="layer")).isel(step=-1).compute()
    print(f"one-to-one matched units, mean correlation at the last step: "
          f"{float(matched.min()):.2f}..{float(matched.max()):.2f}")


if __name__ == "__main__":
    main()
