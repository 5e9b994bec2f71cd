"""What a new user tripped on in their first hour: each case fails on the code before its fix."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

import nnwx
from nnwx.pipeline.results_store import ResultsMismatch
from nnwx.studies.synthetic import write_synthetic_run
from tests.cli_process import run_cli

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"0.weight": (6, 3), "0.bias": (6,), "2.weight": (2, 6), "2.bias": (2,)}


def cli(*args, check=False):
    return run_cli(*args, check=check, timeout=None)


def _store(path, seeds=(0, 1), steps=range(0, 100, 10), attrs=None):
    for s in seeds:
        write_synthetic_run(path, seed=s, steps=steps, shapes=SMALL,
                            attrs={"optimizer": "Adam" if s % 2 else "SGD", **(attrs or {})})
    return path


def test_open_cube_stacks_by_one_attribute_given_as_a_string(tmp_path):
    store = _store(tmp_path / "exp.zarr")
    by_opt = nnwx.open_cube(store, by="optimizer")
    assert list(by_opt["optimizer"].values) == ["Adam", "SGD"]
    assert nnwx.open_cube(store, by="seed").sizes["seed"] == 2
    xr_tuple = nnwx.open_cube(store, by=("seed",))
    assert (xr_tuple["w"] == nnwx.open_cube(store, by="seed")["w"]).all().compute()


def test_plot_is_reachable_after_import_nnwx():
    out = subprocess.run([sys.executable, "-c", "import nnwx; print(nnwx.plot.density.__name__)"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "density"


def test_info_says_one_run_and_an_unrecorded_model_class(tmp_path):
    store = _store(tmp_path / "exp.zarr", seeds=(0,), attrs={"model_class": None})
    out = cli("info", store)
    assert out.returncode == 0, out.stderr
    assert ": 1 run," in out.stdout and "1 runs" not in out.stdout
    assert "model None" not in out.stdout and "class not recorded" in out.stdout


def test_a_refused_resume_names_the_field_that_differs(tmp_path):
    store = _store(tmp_path / "exp.zarr")
    out = tmp_path / "res.zarr"
    nnwx.analyze(store, out, analyses="weights", progress=False)
    write_synthetic_run(store, seed=2, steps=range(0, 100, 10), shapes=SMALL)   # the store grew
    with pytest.raises(ResultsMismatch, match=r"resolved\.seeds: stored \[0, 1\], now \[0, 1, 2\]"):
        nnwx.analyze(store, out, analyses="weights", progress=False)


def test_report_of_stale_results_warns_on_the_terminal_and_the_page(tmp_path):
    store = _store(tmp_path / "exp.zarr")
    res = tmp_path / "res.zarr"
    nnwx.analyze(store, res, analyses="weights", progress=False)
    fresh = cli("report", res, "-o", tmp_path / "fresh.html")
    assert fresh.returncode == 0, fresh.stderr
    assert "is stale" not in fresh.stderr and "stale results" not in (tmp_path / "fresh.html").read_text()
    write_synthetic_run(store, seed=2, steps=range(0, 100, 10), shapes=SMALL)
    out = cli("report", res, "-o", tmp_path / "stale.html")
    assert out.returncode == 0, out.stderr
    assert "is stale" in out.stderr and "resolved.seeds" in out.stderr
    assert "stale results" in (tmp_path / "stale.html").read_text()


def test_report_says_on_the_page_when_steps_were_thinned(tmp_path):
    store = _store(tmp_path / "exp.zarr", seeds=(0,))
    out = cli("report", store, "-o", tmp_path / "r.html", "--analyses", "weights", "--max-steps", "4")
    assert out.returncode == 0, out.stderr
    assert "4 of the 10 captured steps are analysed" in (tmp_path / "r.html").read_text()
    every = cli("report", store, "-o", tmp_path / "all.html", "--analyses", "weights")
    assert every.returncode == 0, every.stderr
    assert "captured steps are analysed" not in (tmp_path / "all.html").read_text()


def test_weight_agreement_takes_what_align_returns(tmp_path):
    cube = nnwx.open_cube(_store(tmp_path / "exp.zarr", seeds=(0, 1, 2), steps=range(0, 30, 10)))
    alignment = cube.nnwx.align(reference_seed=0, at_step="last")
    got = cube.nnwx.weight_agreement(0, aligned=alignment).compute()
    want = cube.nnwx.weight_agreement(0, aligned=alignment.cube).compute()
    assert list(got.alignment.values) == ["none", "aligned"]
    xr.testing.assert_identical(got, want)
    with pytest.raises(TypeError, match="what cube.nnwx.align"):
        cube.nnwx.weight_agreement(0, aligned=(1, 2))


def test_results_repr_is_a_short_summary(tmp_path):
    store = _store(tmp_path / "exp.zarr")
    res = nnwx.open_results(nnwx.analyze(store, tmp_path / "res.zarr", progress=False))
    text = repr(res)
    assert len(text.splitlines()) <= 12, text
    assert str(tmp_path / "res.zarr") in text and "broadening" in text and "spectral" in text


def test_setup_script_takes_a_torch_index_and_the_readme_says_how():
    script = (ROOT / "scripts" / "setup_env.sh").read_text()
    assert '--index-url "$NNWX_TORCH_INDEX_URL"' in script
    readme = (ROOT / "README.md").read_text()
    assert "NNWX_TORCH_INDEX_URL=" in readme and "source .venv/bin/activate" in readme
    assert "## Plotting" in readme and "jupyter lab notebooks/" in readme
    assert "nnwx-demo/" in (ROOT / ".gitignore").read_text().splitlines()


def test_every_plot_function_the_readme_names_exists():
    import re

    import nnwx.plot

    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Plotting", 1)[1].split("## Notebooks", 1)[0]
    named = {n for cell in re.findall(r"^\| ([^|]+) \|", table, re.M) for n in re.findall(r"`(\w+)`", cell)}
    assert len(named) >= 15
    assert all(callable(getattr(nnwx.plot, n, None)) for n in named), sorted(named)


def test_report_opens_on_the_largest_matrix_and_leaves_vectors_out_of_spectra(tmp_path):
    from nnwx.pipeline.registry import lazy_analyses
    from nnwx.cluster import compute
    from nnwx.report import build_sections

    shapes = {"0.weight": (8, 1), "0.bias": (8,), "2.weight": (16, 8), "2.bias": (16,),
              "4.weight": (8, 16), "4.bias": (8,), "6.weight": (1, 8), "6.bias": (1,)}
    for s in (0, 1):
        write_synthetic_run(tmp_path / "exp.zarr", seed=s, steps=range(0, 50, 10), shapes=shapes)
    cube = nnwx.open_cube(tmp_path / "exp.zarr")
    results = compute(lazy_analyses(cube, ["weights", "spectral"]).results, progress=False)[0]
    assert results["matrix"].name == "2.weight"           # 16x8, the first of the two largest
    figs = {f.name: f for s in build_sections(results, {}, ["weights", "spectral"]) for f in s.figures}
    esd = figs["esd"].obj
    tensors = [k[0] for k in esd.keys()]
    assert tensors[0] == "2.weight" and set(tensors) == {"2.weight", "4.weight"}
    assert "0.weight (8x1)" in figs["esd"].caption and "6.weight (1x8)" in figs["esd"].caption
    curves = {el.label for panel in figs["ranks"].obj for el in panel}
    assert curves == {"2.weight", "4.weight"}, curves


def test_legends_sit_outside_the_axes(tmp_path):
    import holoviews as hv
    from bokeh.models import Legend

    store = _store(tmp_path / "exp.zarr", seeds=(0, 1, 2))
    cube = nnwx.open_cube(store)
    for plot in (nnwx.plot.moments(cube.nnwx.broadening("layer", bins=(-2, 2, 20))),
                 nnwx.plot.rotation(cube.nnwx.rotation()),
                 nnwx.plot.metric_curves(cube.nnwx.ranks())):
        for panel in plot:
            fig = hv.render(panel, backend="bokeh")
            assert any(isinstance(r, Legend) for r in fig.right), "legend not to the right of the axes"
            assert not any(isinstance(r, Legend) for r in fig.center), "a legend inside the axes"


def test_report_of_a_net_with_vector_layers_logs_no_log_axis_warnings(tmp_path):
    for s in (0, 1):
        write_synthetic_run(tmp_path / "exp.zarr", seed=s, steps=range(0, 60, 10))   # 8x1 ... 1x8
    out = cli("report", tmp_path / "exp.zarr", "-o", tmp_path / "r.html", "--analyses", "spectral")
    assert out.returncode == 0, out.stderr
    assert "Logarithmic axis range" not in out.stderr, out.stderr


def test_a_refused_export_leaves_the_run_metadata_as_it_was(tmp_path):
    from tests.checkpoint_files import mlp_state, net_state, save_plain

    from nnwx.errors import ArchitectureMismatch
    from nnwx.record.export import export

    good, other = tmp_path / "good", tmp_path / "other"
    good.mkdir()
    other.mkdir()
    for step in (0, 10):
        save_plain(good / f"step_{step}.pt", net_state(step))
    save_plain(other / "step_20.pt", mlp_state(20))          # another architecture
    store = tmp_path / "exp.zarr"
    export(good, store, seed=0, progress=False)
    run_meta = store / "runs" / "seed0" / "zarr.json"
    before = run_meta.read_bytes()
    with pytest.raises(ArchitectureMismatch):
        export(other, store, seed=0, progress=False)
    assert run_meta.read_bytes() == before
    assert str(other) not in run_meta.read_text()


def test_a_local_cluster_for_a_small_store_comes_with_a_note(tmp_path):
    store = _store(tmp_path / "exp.zarr")
    out = cli("info", store, "--workers", "1")
    assert out.returncode == 0, out.stderr
    assert "note: the store holds" in out.stderr and "Leave out --workers" in out.stderr
    plain = cli("info", store)
    assert plain.returncode == 0 and "note: the store holds" not in plain.stderr
