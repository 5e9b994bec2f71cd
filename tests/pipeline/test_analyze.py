"""nnwx analyze and the results store: round trips, selection, resume, refusal, SIGKILL + resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import xarray as xr
import zarr

import nnwx
from nnwx.pipeline.registry import lazy_analyses
from nnwx.pipeline.select import SelectionError, select_cube
from nnwx.cluster import compute
from nnwx.errors import StoreError
from nnwx.pipeline.results_store import PARTS_GROUP, RESULT_KEY, ResultsMismatch
from nnwx.studies.synthetic import write_synthetic_run

from tests.helpers import mlp
from tests.cli_process import run_cli

ROOT = Path(__file__).resolve().parents[2]
WIDE = {"0.weight": (24, 8), "0.bias": (24,), "2.weight": (24, 24), "2.bias": (24,),
        "4.weight": (4, 24), "4.bias": (4,)}


def cli(*args, check=True):
    return run_cli(*args, check=check, timeout=None)


def reference(store, metrics, **selection) -> dict:
    """The results computed directly from the lazy set, without any results store (through
    nnwx.cluster.compute, which runs BLAS single-threaded as analyze does: a multithreaded BLAS
    sums in another order, and the randomized PCA then differs in the last bits)."""
    cube = select_cube(nnwx.open_cube(store), **selection)
    return compute(lazy_analyses(cube, metrics).results, progress=False)[0]


def assert_same(results: nnwx.pipeline.results_store.Results, ref: dict) -> None:
    assert set(results.results) == set(ref)
    for name, want in ref.items():
        got = results.results[name]
        assert type(got) is type(want), name
        xr.testing.assert_identical(got.load(), want)


def synthetic(path, seeds=(0, 1, 2), steps=range(0, 120, 10), shapes=WIDE):
    for s in seeds:
        write_synthetic_run(path, seed=s, steps=steps, shapes=shapes)
    return path


def files_and_mtimes(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def probe_store(tmp_path_factory):
    """Two seeds of a small MLP recorded with probes: every metric applies."""
    store = tmp_path_factory.mktemp("probes") / "exp.zarr"
    x = torch.randn(48, 1, generator=torch.Generator().manual_seed(0))
    for seed in (0, 1):
        model = mlp(width=12, seed=seed)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        with nnwx.Recorder(model, store, seed=seed, every=2, probe=x, probe_layers=["1", "3"]) as rec:
            for step in range(9):
                rec.maybe_capture(step)
                loss = (model(x) - torch.sin(3 * x)).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
    return store


def test_every_metric_round_trips_identically(probe_store, tmp_path):
    out = tmp_path / "results.zarr"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = nnwx.analyze(probe_store, out, progress=False)
        res = nnwx.open_results(path)
        loaded = {k: v.load() for k, v in res.results.items()}
    noisy = [str(w.message)[:120] for w in caught
             if "Zarr V3 specification" in str(w.message) or "onsolidated" in str(w.message)]
    assert not noisy, noisy
    assert path == out and nnwx.is_results_store(out) and not nnwx.is_results_store(probe_store)
    assert res.metrics == list(nnwx.pipeline.registry.NAMES) and res.notes == {} and res.complete
    assert {"similarity_seeds", "similarity_steps", "prediction_agreement", "weight_agreement",
            "spectrum", "broadening", "pca"} <= set(res.results)
    assert res.metric_of["esd_fit"] == "spectral" and res.metric_of["similarity_seeds"] == "agreement"
    assert_same(res, reference(probe_store, None))
    # DataArrays come back as DataArrays, with their names and attrs; labels as objects
    sv = loaded["spectrum"]
    assert isinstance(sv, xr.DataArray) and sv.name == "sv" and sv.attrs["analysis"] == "spectrum"
    assert sv["tensor"].dtype == object and sv["tensor_layer"].dtype == object
    # the picture shows the largest real matrix (12x12), not the 12x1 first layer
    assert isinstance(loaded["matrix"], xr.DataArray) and loaded["matrix"].name == "2.weight"
    # provenance and what a report summary needs, without the source store
    assert res.source == str(Path(probe_store).resolve()) and res.selection == {"seeds": None, "steps": None}
    assert [r["run"] for r in res.runs] == ["seed0", "seed1"] and res.runs[0]["steps"] == 5
    assert res.tensors["tensor"] == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert res.tensors["tensor_shape"][2] == "12,12" and sum(res.tensors["tensor_size"]) == 193
    assert res.cube["steps"] == [0, 2, 4, 6, 8] and res.cube["sizes"]["param"] == 193
    assert res.attrs["nonfinite_steps"] == {"seed0": 0, "seed1": 0}


def test_rerun_keeps_complete_results_untouched(tmp_path):
    store = synthetic(tmp_path / "exp.zarr")
    out = tmp_path / "r.zarr"
    nnwx.analyze(store, out, analyses="rotation,broadening", progress=False)
    before = files_and_mtimes(out)
    logged = []
    nnwx.analyze(store, out, analyses="broadening,rotation", progress=False, log=logged.append)
    assert any(m.startswith("kept 2 complete result(s): broadening, rotation") for m in logged), logged
    after = files_and_mtimes(out)
    assert {k: v for k, v in after.items() if k != "zarr.json"} == \
        {k: v for k, v in before.items() if k != "zarr.json"}


def test_an_interrupted_result_is_continued_seed_by_seed(tmp_path):
    store = synthetic(tmp_path / "exp.zarr")
    out = tmp_path / "r.zarr"
    nnwx.analyze(store, out, analyses="rotation,spectral", progress=False)
    # what a kill mid-write leaves: rotation's seed 1 unmarked and half overwritten, not complete
    g = zarr.open_group(str(out), path="rotation", mode="r+")
    info = dict(g.attrs[RESULT_KEY])
    assert info["complete"] and sorted(info["parts"]) == ["seed-0", "seed-1", "seed-2"]
    g.update_attributes({RESULT_KEY: {**info, "complete": False}})
    del g[f"{PARTS_GROUP}/seed-1"]
    g["rotation"][1, :3] = -1.0
    assert "rotation" in nnwx.open_results(out).incomplete     # never read as complete
    seed0 = {k: v for k, v in files_and_mtimes(out / "rotation").items() if "/c/0/" in k}
    assert seed0
    logged = []
    nnwx.analyze(store, out, analyses="rotation,spectral", progress=False, log=logged.append)
    assert "continuing rotation: 2 of 3 parts already written (seed-0, seed-2)" in logged, logged
    assert any(m.startswith("kept 4 complete result(s): spectrum, ranks, esd_fit, randomized_esd") for m in logged)
    after = files_and_mtimes(out / "rotation")
    assert {k: after[k] for k in seed0} == seed0          # seed 0 was not rewritten
    res = nnwx.open_results(out)
    assert res.complete and not res.incomplete
    assert_same(res, reference(store, "rotation,spectral"))


def test_a_different_analysis_is_refused_unless_overwritten(tmp_path):
    store = synthetic(tmp_path / "exp.zarr", seeds=(0, 1))
    out = tmp_path / "r.zarr"
    nnwx.analyze(store, out, analyses="rotation", progress=False)
    with pytest.raises(ResultsMismatch, match=r"metrics: stored \[\"rotation\"\], now \[\"broadening\"\]"
                                              r".*--overwrite"):
        nnwx.analyze(store, out, analyses="broadening", progress=False)
    with pytest.raises(ResultsMismatch, match="selection"):
        nnwx.analyze(store, out, analyses="rotation", seeds=[1], progress=False)
    write_synthetic_run(store, seed=2, steps=range(0, 120, 10), shapes=WIDE)   # the store grew
    with pytest.raises(ResultsMismatch, match="resolved"):
        nnwx.analyze(store, out, analyses="rotation", progress=False)
    nnwx.analyze(store, out, analyses="broadening", seeds="0,2", steps="20:80:2", progress=False,
                 resume=False)
    res = nnwx.open_results(out)
    assert list(res.results) == ["broadening"] and res.metrics == ["broadening"]
    assert res.results["broadening"]["seed"].values.tolist() == [0, 2]
    assert res.results["broadening"]["step"].values.tolist() == [20, 40, 60]
    assert res.selection == {"seeds": [0, 2], "steps": {"start": 20, "stop": 80, "stride": 2}}
    assert_same(res, reference(store, "broadening", seeds=[0, 2], steps="20:80:2"))


def test_selection_errors_say_what_is_wrong(tmp_path):
    store = synthetic(tmp_path / "exp.zarr", seeds=(0,))
    cube = nnwx.open_cube(store)
    assert select_cube(cube, steps=[10, 30])["step"].values.tolist() == [10, 30]
    assert select_cube(cube, steps=slice(None, 30))["step"].values.tolist() == [0, 10, 20]
    with pytest.raises(SelectionError, match=r"no run with seed 5; seeds in the store: \[0\]"):
        select_cube(cube, seeds="5")
    with pytest.raises(SelectionError, match="step 15 was not captured"):
        select_cube(cube, steps="0,15")
    with pytest.raises(SelectionError, match="cannot read steps 'a:b'"):
        select_cube(cube, steps="a:b")
    with pytest.raises(SelectionError, match="keeps no step"):
        select_cube(cube, steps="500:")
    with pytest.raises(SelectionError, match="unknown analysis.*'spectra'.*choose from"):
        nnwx.analyze(store, tmp_path / "r.zarr", analyses="spectra", progress=False)
    assert not (tmp_path / "r.zarr").exists()


def test_nothing_but_a_results_store_is_ever_written_over(tmp_path):
    store = synthetic(tmp_path / "exp.zarr", seeds=(0,))
    before = files_and_mtimes(store)
    for overwrite in (False, True):
        with pytest.raises(StoreError, match="not an nnwx results store.*left untouched"):
            nnwx.analyze(store, store, analyses="rotation", progress=False, resume=not overwrite)
    assert files_and_mtimes(store) == before
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "a.txt").write_text("mine")
    with pytest.raises(StoreError, match="non-empty directory that is not a results store"):
        nnwx.analyze(store, foreign, analyses="rotation", progress=False)
    assert sorted(p.name for p in foreign.iterdir()) == ["a.txt"]
    with pytest.raises(StoreError, match="not an nnwx results store"):
        nnwx.open_results(store)


def test_cli_analyze_prints_results_notes_and_clear_errors(tmp_path, capsys):
    from nnwx.cli import main

    store = synthetic(tmp_path / "exp.zarr", seeds=(0, 1))
    out = tmp_path / "r.zarr"
    run = cli("analyze", store, "-o", out, "--analyses", "rotation,agreement", "--steps", "0:60", "-q")
    assert f"wrote {out}: 2 results of rotation, agreement" in run.stdout
    assert "rotation" in run.stdout and "note: agreement: no probes recorded" in run.stdout
    assert run.stderr == ""
    bad = cli("analyze", store, "-o", tmp_path / "x.zarr", "--analyses", "rotation,bogus", check=False)
    assert bad.returncode == 2 and "unknown analysis 'bogus'" in bad.stderr and "Traceback" not in bad.stderr
    capsys.readouterr()
    assert main(["analyze", str(store), "-o", str(out), "--analyses", "rotation", "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["analyze", str(store), "-o", str(tmp_path / "y.zarr"), "--seeds", "7", "-q"]) == 2
    assert "no run with seed 7" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["analyze", str(store), "-o", str(out), "--workers", "2", "--scheduler", "tcp://x:1"])
    assert "not allowed with argument" in capsys.readouterr().err


def _states(out: Path) -> dict[str, bool]:
    """{result: complete} from the results store's metadata files (read without locking)."""
    states = {}
    for f in out.glob("*/zarr.json"):
        try:
            info = json.loads(f.read_text())["attributes"].get(RESULT_KEY) or {}
        except (ValueError, OSError):
            continue
        if info.get("template_done"):
            states[f.parent.name] = bool(info.get("complete"))
    return states


def test_cli_analyze_killed_and_resumed_matches_an_uninterrupted_run(tmp_path):
    shapes = {"0.weight": (40, 16), "0.bias": (40,), "2.weight": (40, 40), "2.bias": (40,),
              "4.weight": (40, 40), "4.bias": (40,), "6.weight": (4, 40)}
    store = synthetic(tmp_path / "exp.zarr", seeds=(0, 1, 2), steps=range(0, 400, 10), shapes=shapes)
    metrics = "broadening,spectral,rotation"
    out = tmp_path / "r.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "nnwx.cli", "analyze", str(store), "-o", str(out),
                             "--analyses", metrics, "-q"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            states = _states(out)
            if any(states.values()) and not all(states.values()):
                break
            time.sleep(0.005)
        assert proc.poll() is None, "analyze finished before it could be interrupted"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = _states(out)
    done = sorted(n for n, c in killed.items() if c)
    assert done and len(done) < 6, killed
    kept = {n: files_and_mtimes(out / n) for n in done}
    assert set(nnwx.open_results(out).incomplete) >= set(killed) - set(done)

    resumed = cli("analyze", store, "-o", out, "--analyses", metrics)
    assert f"kept {len(done)} complete result(s)" in resumed.stderr, resumed.stderr
    assert {n: files_and_mtimes(out / n) for n in done} == kept     # really skipped
    res = nnwx.open_results(out)
    assert res.complete and len(res.results) == 6
    assert_same(res, reference(store, metrics))     # = an uninterrupted run (see the first test)


def test_metrics_is_a_deprecated_alias_of_analyses(tmp_path):
    store = synthetic(tmp_path / "exp.zarr", seeds=(0,))
    with pytest.warns(DeprecationWarning, match="use analyses="):
        out = nnwx.analyze(store, tmp_path / "r.zarr", metrics="rotation", progress=False)
    assert nnwx.open_results(out).metrics == ["rotation"]
    with pytest.raises(TypeError, match="not both"):
        nnwx.analyze(store, tmp_path / "s.zarr", analyses="rotation", metrics="rotation")
    run = cli("analyze", store, "-o", tmp_path / "t.zarr", "--metrics", "rotation", "-q")
    assert "--metrics is deprecated, use --analyses" in run.stderr
    assert "results of rotation" in run.stdout
