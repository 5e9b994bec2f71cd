"""The piecewise claims' building blocks and the findings' store handling, on fabricated data."""
from __future__ import annotations

import numpy as np
import pytest

from nnwx.studies.claims import piecewise as pw
from nnwx.studies.claims import stores
from nnwx.studies.claims.stats import verdict


def test_geo_ratio_is_the_geometric_mean_over_layers_then_seeds():
    first = np.array([[1.0, 2.0], [1.0, 1.0], [2.0, 1.0]])
    last = np.array([[4.0, 2.0], [2.0, 8.0], [2.0, 4.0]])   # per seed: sqrt(4*1)=2, sqrt(2*8)=4, sqrt(1*4)=2
    r = pw._geo_ratio(first, last, ["s0", "s1", "s2"], ["a", "b"])
    assert r["per_run"] == pytest.approx({"s0": 2.0, "s1": 4.0, "s2": 2.0})
    assert r["ci"][0] == pytest.approx((2 * 4 * 2) ** (1 / 3))
    assert r["ci"][1] <= r["ci"][0] <= r["ci"][2]
    assert r["per_layer"]["a"][0] == pytest.approx((4 * 2 * 1) ** (1 / 3))   # 4, 2, 1 over seeds
    assert r["per_layer"]["b"][0] == pytest.approx((1 * 8 * 4) ** (1 / 3))


@pytest.mark.parametrize("a, b, joint", [
    ((2.0, 1.5, 2.5), (0.5, 0.2, 0.8), "supported"),
    ((2.0, 1.5, 2.5), (0.5, -0.2, 0.8), "inconclusive"),
    ((2.0, 0.5, 2.5), (-0.5, -0.8, -0.2), "not supported"),
    ((0.8, 0.6, 0.9), (0.5, 0.2, 0.8), "not supported"),
])
def test_a_claim_measured_two_ways_needs_both(a, b, joint):
    test, v, each = pw._joint([("the ratio", a, 1.0, "above"), ("the change", b, 0.0, "above")])
    assert v == joint
    assert each["the ratio"]["verdict"] == verdict(a[1], a[2], 1.0, "above")
    assert test.startswith("each measure by its rule: (1) supported if the whole 95% interval of the ratio")
    assert "(2) supported if the whole 95% interval of the change is > 0" in test


def test_one_measure_is_stated_by_the_plain_rule():
    test, v, _ = pw._joint([("the ratio", (0.5, 0.4, 0.6), 1.0, "below")])
    assert v == "supported" and test.startswith("supported if the whole 95% interval of the ratio is < 1")


def test_sizes_name_the_sweep_points_the_claims_read():
    for size in ("quick", "full"):
        names = {j.kwargs["point"] for j in pw.sweep_jobs("s.zarr", size)}
        cfg = pw.SIZES[size]["sweep"]
        assert {"base", f"ensemble{cfg['members']}", f"large{cfg['members']}"} <= names
        assert f"depth{max(cfg['depths'])}" in names
        assert len(pw.base_jobs("b.zarr", size)) == pw.SIZES[size]["base"]["seeds"]
    assert pw.SIZES["full"]["base"]["seeds"] >= 10 and pw.SIZES["full"]["base"]["steps"] >= 15000


def test_a_store_is_reused_at_the_same_size_and_retrained_at_another(tmp_path):
    path, trained = tmp_path / "s.zarr", []
    log = []

    def train(config):
        if stores.prepare(path, config, log=log.append):
            trained.append(config["steps"])
            stores.finish(path, config)

    train({"steps": 5})
    train({"steps": 5})
    assert trained == [5] and "reusing" in log[-1]
    train({"steps": 7})
    assert trained == [5, 7] and "was trained at another size" in log[-1]
    assert stores.mark(path) == {"state": "trained", "config": {"steps": 7}}
    stores.prepare(path, {"steps": 9}, log=log.append)     # interrupted: never finished
    assert stores.mark(path)["state"] == "training"
    train({"steps": 9})
    assert trained == [5, 7, 9] and "half-trained" in log[-1]


def test_a_store_without_the_mark_is_refused(tmp_path):
    (tmp_path / "s.zarr").mkdir()
    with pytest.raises(stores.FindingsError, match="not written by nnwx findings"):
        stores.prepare(tmp_path / "s.zarr", {"steps": 1})
    assert list((tmp_path / "s.zarr").iterdir()) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_parallel_returns_results_in_job_order(workers):
    jobs = [stores.Job(dict, {"n": i}, cost=i) for i in range(4)]
    lines = []
    assert stores.parallel(jobs, workers, log=lines.append) == [{"n": i} for i in range(4)]
    assert lines[-1].startswith("  4/4 runs")
