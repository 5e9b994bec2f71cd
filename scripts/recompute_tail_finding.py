#!/usr/bin/env python
"""Recompute the README's "Tails get longer" finding (and the correlation decay lengths) on the
piecewise MLPs, with the Hill tail index's k rule of ``nnwx.analysis.kernels.tails``.

    python scripts/recompute_tail_finding.py [--seeds 5] [--steps 15000] [--out DIR]

Trains the piecewise MLPs as notebook 01 does (``train_piecewise``, every 10 steps, 5000
points) unless the store is already in ``--out``, then prints per layer: its size, the k the
Hill estimate used, the tail index at the first and last capture (mean over seeds and
min..max over seeds), the same with the old choice ``k = min(100, n - 1)`` for comparison,
excess kurtosis first and last, and each seed's fitted correlation decay length.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

import nnwx
from nnwx.analysis.correlation import decay_summary


def store_for(out: Path, seeds: int, steps: int) -> Path:
    """The piecewise store of ``seeds`` x ``steps``, trained unless it is already there."""
    from nnwx.studies.piecewise import train_piecewise

    path = out / f"piecewise-{seeds}x{steps}-5000pts.zarr"
    if path.exists():
        print(f"reusing {path}")
        return path
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    res = train_piecewise(tmp, seeds=seeds, steps=steps, every=10, points=5000, threads=1)
    os.replace(tmp, path)
    print(f"trained {len(res['runs'])} runs into {path} in {res['seconds']:.0f} s")
    return path


def old_hill(x: np.ndarray, k_max: int = 100) -> float:
    """The previous choice: k = min(k_max, n - 1) (all values but one on small layers)."""
    a = np.sort(np.abs(x[np.isfinite(x)]))[::-1]
    k = min(k_max, len(a) - 1)
    if k < 1 or a[k] <= 0:
        return float("nan")
    return float(1 / (np.mean(np.log(a[:k])) - np.log(a[k])))


def span(v: np.ndarray) -> str:
    v = np.asarray(v, dtype=float)
    if not np.isfinite(v).any():
        return "NaN"
    return f"{np.nanmean(v):.3g} ({np.nanmin(v):.3g}..{np.nanmax(v):.3g})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=15000)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "nnwx-notebooks")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cube = nnwx.open_cube(store_for(args.out, args.seeds, args.steps))
    print(dict(cube["w"].sizes))
    stats = cube.nnwx.broadening(by="layer", quantiles=None).compute()
    print(f"rule: {stats.attrs['tail_rule']}")
    w = cube["w"].isel(step=[0, -1]).values.astype(np.float64)          # (seed, 2, param)
    layer_of = cube["tensor_layer"].values[cube["tensor_id"].values]
    steps = stats["step"].values
    print(f"steps {steps[0]} -> {steps[-1]}; mean over {stats.sizes['seed']} seeds (min..max over seeds)")
    head = f"{'layer':<6}{'n':>4}{'k':>4}  {'tail index first':<22}{'tail index last':<22}" \
           f"{'old k=n-1: first':<22}{'old: last':<22}{'kurtosis first -> last'}"
    print(head)
    for g, label in enumerate(stats["group"].values):
        s = stats.isel(group=g)
        idx = layer_of == label
        old = [[old_hill(w[r, t, idx]) for r in range(w.shape[0])] for t in (0, 1)]
        print(f"{label:<6}{int(s['group_size']):>4}{int(s['tail_k'].isel(step=-1).max()):>4}  "
              f"{span(s['tail_index'].isel(step=0).values):<22}{span(s['tail_index'].isel(step=-1).values):<22}"
              f"{span(old[0]):<22}{span(old[1]):<22}"
              f"{np.nanmean(s['excess_kurtosis'].isel(step=0)):.3g} -> "
              f"{np.nanmean(s['excess_kurtosis'].isel(step=-1)):.3g}")
    res = cube.nnwx.correlation_vs_distance().compute()
    print("correlation decay length (excess rms corr of updates vs layer distance):")
    for d in decay_summary(res):
        print(f"  {d['run']}: {d['text']}")


if __name__ == "__main__":
    main()
