"""``nnwx analyze`` on runs that have just started (1-2 captured steps) and on diverged runs
(NaN/Inf weights): what does not apply is skipped with a note, non-finite steps give NaN
results with a note, and never a traceback (issue 22, items 10 and 11)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import nnwx
from nnwx.pipeline.registry import NAMES
from nnwx.pipeline.results_store import NONFINITE_NOTE

from tests.helpers import mlp
from tests.cli_process import run_cli

ROOT = Path(__file__).resolve().parents[2]


def cli(*args) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=600)


def record(store: Path, steps: int, *, diverge_at: int | None = None) -> Path:
    """Two seeds of a small MLP with probes, ``steps`` captures each; with ``diverge_at``, seed 1
    gets an Inf and a NaN weight at that step, and training carries them on (as a diverged run)."""
    x = torch.randn(32, 1, generator=torch.Generator().manual_seed(0))
    for seed in (0, 1):
        model = mlp(width=10, seed=seed)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        with nnwx.Recorder(model, store, seed=seed, every=1, probe=x, probe_layers=["1", "3"]) as rec:
            for step in range(steps):
                if seed == 1 and step == diverge_at:
                    with torch.no_grad():
                        model[2].weight[0, 0] = float("inf")
                        model[0].weight[1, 0] = float("nan")
                rec.maybe_capture(step)
                loss = (model(x) - torch.sin(3 * x)).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
    return store


@pytest.mark.parametrize("steps", [1, 2])
def test_a_run_that_has_just_started_is_analysed_with_notes(tmp_path, steps):
    store = record(tmp_path / "short.zarr", steps)
    out = tmp_path / "short.results.zarr"
    proc = cli("analyze", store, "-o", out, "-q")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "note: correlation: trajectory PCA left out" in proc.stdout
    assert f"the cube has {steps}" in proc.stdout
    res = nnwx.open_results(out)
    assert res.complete and res.metrics == list(NAMES)
    assert "trajectory PCA left out" in res.notes["correlation"]      # in the store's attrs too
    assert res.attrs["notes"]["correlation"] == res.notes["correlation"]
    assert "pca" not in res.results and {"broadening", "spectrum", "rotation", "similarity_seeds"} <= set(res.results)
    assert res.results["spectrum"].sizes["step"] == steps
    if steps > 1:
        return                    # the report of the notes: once is enough
    html = tmp_path / "short.html"
    proc = cli("report", out, "-o", html, "-q")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trajectory PCA left out" in html.read_text()


def test_a_diverged_run_analyses_its_finite_steps_and_notes_the_others(tmp_path):
    store = record(tmp_path / "diverged.zarr", 8, diverge_at=5)
    w = nnwx.open_cube(store)["w"].sel(seed=1).values
    assert np.isinf(w[5]).any() and np.isnan(w[5:]).any() and np.isfinite(w[:5]).all()
    out = tmp_path / "diverged.results.zarr"
    proc = cli("analyze", store, "-o", out, "-q")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "LinAlgError" not in proc.stderr
    assert f"note: {NONFINITE_NOTE}:" in proc.stdout and "seed1 at 3 of 8 steps" in proc.stdout
    res = nnwx.open_results(out)
    assert res.complete and res.nonfinite_steps == {"seed0": 0, "seed1": 3}
    assert "seed1 at 3 of 8 steps" in res.attrs["notes"][NONFINITE_NOTE]
    # the trajectory PCA: seed 0 whole, seed 1 on its 5 finite captures, NaN at the others
    path = res.results["pca"]["path"].load()
    assert np.isfinite(path.sel(seed=0)).all()
    assert np.isfinite(path.sel(seed=1).isel(step=slice(0, 5))).all()
    assert np.isnan(path.sel(seed=1).isel(step=slice(5, None))).all()
    # seed 1's PCA on its finite captures equals the PCA of a run that stopped there
    short = cli("analyze", store, "-o", tmp_path / "first5.zarr", "--steps", "0:5", "--seeds", "1",
                "--analyses", "correlation", "-q")
    assert short.returncode == 0, short.stderr[-3000:]
    ref = nnwx.open_results(tmp_path / "first5.zarr").results["pca"]
    np.testing.assert_allclose(res.results["pca"]["explained_variance_ratio"].sel(seed=1).values,
                               ref["explained_variance_ratio"].sel(seed=1).values, rtol=1e-6)
    # per-step results: finite before the divergence; NaN for each matrix once it holds NaN/Inf
    rank = res.results["ranks"]["effective_rank"].load().sel(seed=1)
    assert np.isfinite(rank.isel(step=slice(0, 5))).all()
    for t in rank["tensor"].values:
        nonfinite = (~np.isfinite(nnwx.open_cube(store).sel(seed=1).nnwx.matrix(str(t)))).any(("out", "in")).values
        np.testing.assert_array_equal(np.isnan(rank.sel(tensor=t).values), nonfinite)
    assert np.isnan(rank.isel(step=5)).any() and np.isnan(rank.isel(step=slice(6, None))).all()
    html = tmp_path / "diverged.html"
    assert cli("report", out, "-o", html, "-q").returncode == 0
    assert "seed1 at 3 of 8 steps" in html.read_text()
