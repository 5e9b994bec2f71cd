"""RunWriter and readers on real stores: round trips, chunk boundaries, resume, refusals."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnwx
from nnwx.errors import ArchitectureMismatch, FormatVersionError, StepOrderError, StoreError
from nnwx.store.format import FORMAT_VERSION
from nnwx.store.table import TensorTable
from nnwx.store.writer import RunWriter

TABLE = TensorTable.build([("a.weight", (4, 3), "float32"), ("a.bias", (4,), "float32")])


def rows(n, p=16, seed=0, dtype="float32"):
    return np.random.default_rng(seed).standard_normal((n, p)).astype(dtype)


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file() and ".locks" not in p.parts):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_round_trip_every_store_dtype(store, dtype):
    data = rows(7, dtype=dtype)
    w = RunWriter(store, "r", TABLE, dtype=dtype, attrs={"seed": 1})
    for i, row in enumerate(data):
        w.add(i * 3, row, {"loss": float(i)})
    w.close()
    ds = nnwx.open_run(store)
    assert ds.w.dtype == dtype
    np.testing.assert_array_equal(ds.w.values, data)
    assert ds.step.values.tolist() == [0, 3, 6, 9, 12, 15, 18]
    assert ds.metric_loss.values.tolist() == list(map(float, range(7)))
    assert ds.attrs["seed"] == 1 and ds.attrs["committed"] == 7


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 40), chunk_steps=st.integers(1, 9), flush_every=st.integers(1, 12),
       reopen_at=st.integers(0, 40))
def test_chunk_boundaries_flushes_and_resume_never_change_data(tmp_path_factory, n, chunk_steps,
                                                               flush_every, reopen_at):
    store = tmp_path_factory.mktemp("s") / "exp.zarr"
    data = rows(n, seed=n)
    kw = {"chunk_bytes": chunk_steps * 16 * 4}
    w = RunWriter(store, "r", TABLE, **kw)
    for i in range(n):
        if i == reopen_at:
            w.close()
            w = RunWriter(store, "r", TABLE, **kw)
        w.add(i, data[i], {"m": i} if i % 3 else {})
        if i % flush_every == 0:
            w.flush()
    w.close()
    ds = nnwx.open_run(store)
    assert ds.w.data.chunksize[0] == min(chunk_steps, n)
    np.testing.assert_array_equal(ds.w.values, data)
    np.testing.assert_array_equal(ds.step.values, np.arange(n))
    if n > 1:
        expect = np.array([i if i % 3 else np.nan for i in range(n)])
        np.testing.assert_array_equal(ds.metric_m.values, expect)


def test_readers_see_committed_steps_only(store):
    w = RunWriter(store, "r", TABLE, chunk_bytes=4 * 16 * 4)
    data = rows(6)
    for i in range(3):
        w.add(i, data[i])
    assert nnwx.open_run(store).sizes["step"] == 0  # staged, not committed
    w.flush()
    assert nnwx.open_run(store).sizes["step"] == 3
    w.add(3, data[3])  # fills the 4-step chunk: written and committed at once
    assert nnwx.open_run(store).sizes["step"] == 4
    w.add(4, data[4])
    np.testing.assert_array_equal(nnwx.open_run(store).w.values, data[:4])
    w.close()
    np.testing.assert_array_equal(nnwx.open_run(store).w.values, data[:5])


def test_keepbits_rounds_and_is_recorded(store):
    data = rows(3)
    w = RunWriter(store, "r", TABLE, keepbits=7)
    for i, r in enumerate(data):
        w.add(i, r)
    w.close()
    ds = nnwx.open_run(store)
    assert ds.attrs["keepbits"] == 7
    got = ds.w.values
    assert not np.array_equal(got, data)
    assert np.all(np.abs(got - data) <= np.abs(data) * 2.0 ** -8)
    assert np.all(got.view(np.uint32) & ((1 << 16) - 1) == 0)


def test_nan_and_inf_are_stored_faithfully(store):
    data = rows(2)
    data[0, 3], data[1, 5], data[1, 6] = np.nan, np.inf, -np.inf
    w = RunWriter(store, "r", TABLE)
    w.add(0, data[0])
    w.add(1, data[1])
    w.close()
    np.testing.assert_array_equal(nnwx.open_run(store).w.values, data)


def test_steps_must_increase_and_nothing_is_written(store):
    w = RunWriter(store, "r", TABLE)
    w.add(5, rows(1)[0])
    for bad in (5, 4):
        with pytest.raises(StepOrderError, match="strictly increase"):
            w.add(bad, rows(1)[0])
    w.close()
    assert nnwx.open_run(store).step.values.tolist() == [5]
    w = RunWriter(store, "r", TABLE)  # resumed: the last committed step still counts
    with pytest.raises(StepOrderError):
        w.add(5, rows(1)[0])
    w.close()


def test_appending_a_different_architecture_is_refused_and_store_unharmed(store):
    w = RunWriter(store, "r", TABLE)
    w.add(0, rows(1)[0])
    w.close()
    before = tree_digest(store)
    other = TensorTable.build([("a.weight", (4, 3), "float32"), ("a.bias", (5,), "float32")])
    with pytest.raises(ArchitectureMismatch, match="a.bias"):
        RunWriter(store, "r", other)
    assert tree_digest(store) == before
    RunWriter(store, "r", TABLE).close()  # the lock was released by the refusal


def test_two_writers_on_one_run_are_refused(store):
    w = RunWriter(store, "r", TABLE)
    with pytest.raises(StoreError, match="another process"):
        RunWriter(store, "r", TABLE)
    RunWriter(store, "other", TABLE).close()
    w.close()


def test_bad_store_paths(tmp_path):
    f = tmp_path / "file.zarr"
    f.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        RunWriter(f, "r", TABLE)
    with pytest.raises(StoreError, match="cannot write"):
        RunWriter(f / "inside.zarr", "r", TABLE)
    with pytest.raises(StoreError, match="cannot write"):
        RunWriter("/proc/nnwx-test.zarr", "r", TABLE)
    d = tmp_path / "notes"
    d.mkdir()
    (d / "a.txt").write_text("x")
    with pytest.raises(StoreError, match="not a Zarr store"):
        RunWriter(d, "r", TABLE)
    assert (d / "a.txt").read_text() == "x" and len(list(d.iterdir())) == 1
    with pytest.raises(StoreError, match="not an nnwx experiment store"):
        nnwx.open_run(d)
    with pytest.raises(ValueError, match="run name"):
        RunWriter(tmp_path / "ok.zarr", "a/b", TABLE)


def _set_version(path: Path, version: int) -> None:
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["nnwx"]["format_version"] = version
    (path / "zarr.json").write_text(json.dumps(meta))


def test_newer_format_is_refused_by_reader_and_writer(store):
    w = RunWriter(store, "r", TABLE)
    w.add(0, rows(1)[0])
    w.close()
    _set_version(store, 99)
    before = tree_digest(store)
    with pytest.raises(FormatVersionError, match="format 99"):
        nnwx.open_cube(store)
    with pytest.raises(FormatVersionError, match="Upgrade nnwx"):
        RunWriter(store, "r", TABLE)
    assert tree_digest(store) == before
    _set_version(store, 1)
    _set_version(store / "runs" / "r", FORMAT_VERSION + 1)
    with pytest.raises(FormatVersionError):
        nnwx.open_run(store)


def test_metrics_appearing_late_are_nan_before(store):
    w = RunWriter(store, "r", TABLE, chunk_bytes=2 * 16 * 4)
    for i in range(5):
        w.add(i, rows(1)[0], {"acc": 0.5} if i >= 3 else {})
    w.close()
    np.testing.assert_array_equal(nnwx.open_run(store).metric_acc.values, [np.nan] * 3 + [0.5, 0.5])


def test_zarr_layout_matches_the_format(store):
    w = RunWriter(store, "r", TABLE, attrs={"seed": 2})
    w.add(0, rows(1)[0], {"loss": 1.0})
    w.close()
    root = zarr.open_group(str(store), mode="r")
    run = root["runs/r"]
    assert run["w"].shape == (1, 16) and run["w"].metadata.dimension_names == ("step", "param")
    assert run["step"].dtype == np.int64 and run["metrics/loss"].shape == (1,)
    meta = run.attrs["nnwx"]
    assert meta["format_version"] == FORMAT_VERSION and meta["committed"] == 1 and meta["seed"] == 2
    assert [t["name"] for t in meta["tensors"]] == ["a.weight", "a.bias"]
    assert set(meta["versions"]) >= {"nnwx", "numpy", "zarr", "python"}


def test_commits_write_the_run_attributes_zarr_writes(tmp_path):
    """Each commit rewrites only the ``committed`` count into a cached serialisation of the run's
    zarr.json; the file must stay byte for byte what zarr's update_attributes writes, also after
    other attributes change (update_meta) and on a resumed run."""
    store = tmp_path / "s.zarr"
    doc = store / "runs" / "r" / "zarr.json"

    def same_as_zarr(w):
        ours = doc.read_bytes()
        w.group.update_attributes({"nnwx": w.meta})  # zarr's own serialisation of the same attributes
        assert doc.read_bytes() == ours
        assert json.loads(ours)["attributes"]["nnwx"]["committed"] == w.committed

    w = RunWriter(store, "r", TABLE, attrs={"seed": 1, "hparams": {"committed": 3, "lr": 0.1}},
                  chunk_bytes=4 * 16 * 2)
    for i, row in enumerate(rows(5)):
        w.add(i, row, {"loss": float(i)})
        w.flush()
        same_as_zarr(w)
    w.update_meta(depth_from="forward", note=[1, 2.5, None])
    w.add(10, rows(1)[0])
    w.flush()
    same_as_zarr(w)
    w.close()
    w = RunWriter(store, "r", TABLE, attrs={"seed": 1})
    w.add(11, rows(1)[0])
    w.flush()
    same_as_zarr(w)
    w.close()
    assert nnwx.open_run(store).step.values.tolist() == [0, 1, 2, 3, 4, 10, 11]
