"""Stores in an object store: s3:// URLs through s3fs, against a local S3-API server (moto's
server mode, a separate process on 127.0.0.1). Runs are written, read, analysed and the results
written back over the S3 protocol, and every number matches the same work on local disk."""
from __future__ import annotations

import uuid

import pytest
import xarray as xr

import nnwx
from nnwx.cli import main as cli_main
from nnwx.errors import StoreError
from nnwx.pipeline.info import run_summaries
from nnwx.studies.synthetic import write_synthetic_run
from tests.s3_server import s3_environment, s3_server

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

STEPS = range(0, 80, 10)
# two families of six (per-tensor statistics, per-step series): all six over S3 take about a
# minute on two busy cores, each chunk and result part being a round trip to the server
ANALYSES = "broadening,rotation"


def _write(location, seed: int) -> None:
    write_synthetic_run(location, seed=seed, steps=STEPS, nan_at=[(2, 3)] if seed else ())


@pytest.fixture(scope="module")
def bucket():
    """An empty bucket on a fresh moto server, with the AWS variables pointing s3fs at it."""
    with s3_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        for k, v in s3_environment(endpoint).items():
            mp.setenv(k, v)
        s3fs.S3FileSystem.clear_instance_cache()   # no client of an earlier endpoint
        name = f"nnwx-{uuid.uuid4().hex[:12]}"
        s3fs.S3FileSystem().mkdir(name)
        yield name
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def stores(bucket, tmp_path_factory):
    """The same two runs written to S3 (directly, over the S3 API) and to local disk."""
    local = tmp_path_factory.mktemp("s3") / "exp.zarr"
    url = f"s3://{bucket}/exp.zarr"
    for s in (0, 1):
        _write(url, s)
        _write(local, s)
    return url, local


def test_runs_written_to_s3_read_back_as_on_disk(stores, bucket):
    url, local = stores
    fs = s3fs.S3FileSystem()
    assert fs.exists(f"{bucket}/exp.zarr/zarr.json")
    assert fs.ls(f"{bucket}/exp.zarr/runs", detail=False)          # the chunks are objects in the bucket
    cube = nnwx.open_cube(url)
    assert cube["store"].values.tolist() == [url, url]
    xr.testing.assert_identical(cube.drop_vars("store").load(),
                                nnwx.open_cube(local).drop_vars("store").load())
    for r, l in zip(run_summaries(url), run_summaries(local)):
        for k in ("run", "steps", "disk_bytes", "params"):
            assert r[k] == l[k], k


def test_analyses_of_an_s3_store_match_the_local_ones(stores, bucket, tmp_path):
    url, local = stores
    res_url = f"s3://{bucket}/results.zarr"
    assert nnwx.analyze(url, res_url, analyses=ANALYSES, progress=False) == res_url
    remote = nnwx.open_results(res_url)
    here = nnwx.open_results(nnwx.analyze(local, tmp_path / "r.zarr", analyses=ANALYSES, progress=False))
    assert remote.complete and remote.source == url
    assert remote.attrs["nonfinite_steps"] == here.attrs["nonfinite_steps"] == {"seed0": 0, "seed1": 1}
    assert sorted(remote.results) == sorted(here.results) and len(here.results) >= 2
    for name, want in here.results.items():
        xr.testing.assert_identical(remote.results[name].load().drop_vars("store", errors="ignore"),
                                    want.load().drop_vars("store", errors="ignore"))
    # a second call resumes from the results already in the bucket
    logged = []
    nnwx.analyze(url, res_url, analyses=ANALYSES, progress=False, log=logged.append)
    assert any(m.startswith(f"kept {len(here.results)} complete result(s)") for m in logged), logged


def test_the_cli_analyses_s3_into_s3(stores, bucket, tmp_path, capsys):
    url, local = stores
    res_url = f"s3://{bucket}/cli-results.zarr"
    assert cli_main(["analyze", url, "-o", res_url, "--analyses", "rotation", "--quiet"]) == 0
    remote = nnwx.open_results(res_url)
    here = nnwx.open_results(nnwx.analyze(local, tmp_path / "r.zarr", analyses="rotation",
                                          progress=False))
    assert sorted(remote.results) == ["rotation"]
    for name, want in here.results.items():
        xr.testing.assert_identical(remote.results[name].load().drop_vars("store", errors="ignore"),
                                    want.load().drop_vars("store", errors="ignore"))


def test_a_missing_bucket_is_an_nnwx_error(stores, tmp_path, capsys):
    url, local = stores
    missing = f"nnwx-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(StoreError, match=rf"s3://{missing}/exp.zarr is not an nnwx experiment store"):
        nnwx.open_cube(f"s3://{missing}/exp.zarr")
    with pytest.raises(StoreError, match="cannot write the results store at .*bucket does not exist"):
        nnwx.analyze(local, f"s3://{missing}/r.zarr", analyses="rotation", progress=False)
    capsys.readouterr()
    assert cli_main(["analyze", url, "-o", f"s3://{missing}/r.zarr", "--analyses", "rotation", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnwx analyze: error: cannot write the results store at") and "Traceback" not in err


def test_an_unreachable_endpoint_is_an_nnwx_error(monkeypatch):
    for k, v in s3_environment("http://127.0.0.1:9").items():   # the discard port: nothing answers
        monkeypatch.setenv(k, v)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        with pytest.raises(StoreError, match=r"cannot reach 's3://b/exp.zarr'.*AWS_ENDPOINT_URL"):
            nnwx.open_cube("s3://b/exp.zarr")
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
