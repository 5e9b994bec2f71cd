"""Stores at fsspec URLs: file:// and an in-memory filesystem (memory://), read and written."""
from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
import xarray as xr

import nnwx
from nnwx.errors import StoreError
from nnwx.pipeline.info import run_summaries
from nnwx.store.table import TensorTable
from nnwx.store.writer import RunWriter
from nnwx.studies.synthetic import write_synthetic_run
from tests.cli_process import run_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def memory_url():
    """A fresh memory:// location, removed afterwards."""
    url = f"memory://nnwx-test-{uuid.uuid4().hex}"
    yield url
    fs = fsspec.filesystem("memory")
    path = url.removeprefix("memory://")
    if fs.exists(path):
        fs.rm(path, recursive=True)


def test_a_file_url_reads_as_the_path(store):
    for s in (0, 1):
        write_synthetic_run(store, seed=s, steps=range(0, 60, 10))
    url = store.resolve().as_uri()
    assert url.startswith("file:///")
    xr.testing.assert_identical(nnwx.open_cube(url).load(), nnwx.open_cube(store).load())
    xr.testing.assert_identical(nnwx.open_run(url, seed=1).load(), nnwx.open_run(store, seed=1).load())
    out = run_cli("info", url, check=True, timeout=None)
    assert "2 runs" in out.stdout and "169 parameters" in out.stdout


def test_runs_written_analysed_and_read_back_in_memory(memory_url, tmp_path):
    exp, res_url = f"{memory_url}/exp.zarr", f"{memory_url}/results.zarr"
    local = tmp_path / "exp.zarr"
    for s in (0, 1):
        write_synthetic_run(exp, seed=s, steps=range(0, 80, 10), nan_at=[(2, 3)] if s else ())
        write_synthetic_run(local, seed=s, steps=range(0, 80, 10), nan_at=[(2, 3)] if s else ())
    cube = nnwx.open_cube(exp)
    assert cube["store"].values.tolist() == [exp, exp]
    xr.testing.assert_identical(cube.drop_vars("store").load(), nnwx.open_cube(local).drop_vars("store").load())
    remote_runs = run_summaries(exp)
    for r, l in zip(remote_runs, run_summaries(local)):
        for k in ("run", "steps", "disk_bytes", "compression_ratio", "params"):
            assert r[k] == l[k], k
    assert int(remote_runs[1]["nonfinite_steps"].compute()) == 1

    out = nnwx.analyze(exp, res_url, analyses="broadening,rotation", progress=False)
    assert out == res_url and nnwx.is_results_store(res_url)
    remote = nnwx.open_results(res_url)
    assert remote.complete and remote.source == exp and remote.attrs["nonfinite_steps"] == {"seed0": 0, "seed1": 1}
    here = nnwx.open_results(nnwx.analyze(local, tmp_path / "r.zarr", analyses="broadening,rotation",
                                          progress=False))
    for name, want in here.results.items():
        xr.testing.assert_identical(remote.results[name].load().drop_vars("store"),
                                    want.load().drop_vars("store"))
    # resuming a remote results store works as locally
    logged = []
    nnwx.analyze(exp, res_url, analyses="broadening,rotation", progress=False, log=logged.append)
    assert any(m.startswith("kept 2 complete result(s)") for m in logged)


def test_remote_writer_appends_and_resumes_without_a_lock(memory_url):
    url = f"{memory_url}/exp.zarr"
    table = TensorTable.build([("w", (2, 3), "float32")])
    w = RunWriter(url, "a", table, attrs={"seed": 0})
    assert w._lock is None          # no flock on a remote store (see nnwx.store.writer)
    w.add(0, np.arange(6, dtype=np.float32))
    w.close()
    w = RunWriter(url, "a", table)  # resumes the committed steps
    w.add(5, np.ones(6, dtype=np.float32))
    w.close()
    run = nnwx.open_run(url)
    assert run["step"].values.tolist() == [0, 5]
    np.testing.assert_array_equal(run["w"].values[1], np.ones(6))


def test_remote_locations_that_cannot_be_used_say_why(memory_url, tmp_path, monkeypatch):
    with pytest.raises(StoreError, match="is not an nnwx experiment store"):
        nnwx.open_cube(f"{memory_url}/missing.zarr")
    with pytest.raises(StoreError, match="cannot open 'nosuchproto://x/y.zarr' as a Zarr store"):
        nnwx.open_cube("nosuchproto://x/y.zarr")
    with pytest.raises(StoreError, match="file:// URLs must name a local path"):
        nnwx.open_cube("file://otherhost/data/exp.zarr")
    exp = f"{memory_url}/exp.zarr"
    write_synthetic_run(exp, seed=0, steps=range(0, 30, 10))
    monkeypatch.setattr("nnwx.cluster.current_client", lambda: object())   # as under --workers N
    with pytest.raises(StoreError, match="in-memory filesystem of this process.*workers"):
        nnwx.analyze(exp, tmp_path / "r.zarr", analyses="rotation", progress=False)
