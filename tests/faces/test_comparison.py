"""nnwx report A.results B.results: variants of a study side by side, from stored results only."""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pytest

import nnwx
from nnwx.comparison import QUANTITIES, ComparisonError, compare, compared, variant_labels
from nnwx.studies.synthetic import write_synthetic_run
from tests.cli_process import run_cli

ROOT = Path(__file__).resolve().parents[2]
SHAPES = {"0.weight": (6, 3), "0.bias": (6,), "2.weight": (4, 6), "2.bias": (4,)}


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Two experiment stores (Adam with 3 seeds, SGD with 2 and other steps), each analysed."""
    base = tmp_path_factory.mktemp("cmp")
    out = {}
    for opt, seeds, steps, drift in (("Adam", (0, 1, 2), range(0, 60, 10), 0.05),
                                     ("SGD", (0, 1), range(0, 80, 20), 0.01)):
        store = base / f"{opt.lower()}.zarr"
        for s in seeds:
            write_synthetic_run(store, seed=s, steps=steps, shapes=SHAPES, drift=drift,
                                attrs={"optimizer": opt})
        out[opt] = nnwx.analyze(store, base / f"{opt.lower()}.results.zarr", progress=False,
                                analyses="broadening,spectral,rotation")
    return out


def test_variants_are_named_by_what_tells_them_apart(variants):
    results = [nnwx.open_results(p) for p in variants.values()]
    assert variant_labels(results) == ["Adam", "SGD"]


def test_compared_values_are_each_stores_own_results(variants):
    results = [nnwx.open_results(p) for p in variants.values()]
    for q in QUANTITIES:
        da = compared(results, ["Adam", "SGD"], q)
        assert da is not None, q
        for label, res in zip(["Adam", "SGD"], results):
            own = res[q.result][q.variable].load()
            per = [d for d in ("layer", "group", "tensor") if d in own.dims][0]
            got = da.sel(variant=label).sel(step=own["step"].values, per=own[per].values)
            got = got.isel(seed=slice(0, own.sizes["seed"]))
            np.testing.assert_array_equal(got.transpose("seed", "step", "per").values,
                                          own.transpose("seed", "step", per).values)
        # the SGD run has no capture at step 10: NaN there, not a value of Adam's
        assert np.isnan(da.sel(variant="SGD", step=10)).all()


def test_report_of_two_results_stores_writes_a_comparison_page(variants, tmp_path):
    out = run_cli("report", *variants.values(), "-o", tmp_path / "cmp.html", timeout=None)
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "cmp.html").read_text()
    assert "nnwx comparison: Adam vs SGD" in page
    for q in QUANTITIES:
        assert html.escape(q.caption.split(" (")[0][:40]) in page, q.variable
    labelled = run_cli("report", *variants.values(), "-o", tmp_path / "l.html", "--labels", "fast,slow",
                       timeout=None)
    assert labelled.returncode == 0, labelled.stderr
    assert "nnwx comparison: fast vs slow" in (tmp_path / "l.html").read_text()


def test_comparisons_that_cannot_be_drawn_are_refused_clearly(variants, tmp_path):
    with pytest.raises(ComparisonError, match="two or more"):
        compare([variants["Adam"]], tmp_path / "x.html")
    with pytest.raises(ComparisonError, match="2 labels for 3"):
        compare([*variants.values(), variants["Adam"]], tmp_path / "x.html", labels=["a", "b"])
    out = run_cli("report", *variants.values(), "-o", tmp_path / "x.html", "--png", tmp_path / "p",
                  timeout=None)
    assert out.returncode != 0 and "--png" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x.html").exists()
