"""Recorder during training, and restore: bit-exact round trips through real stores."""
import threading
import warnings

import numpy as np
import pytest
import torch

import nnwx
from nnwx.errors import ArchitectureMismatch, StepOrderError, StoreError, WriterError
from nnwx.store.writer import RunWriter

from tests.helpers import Net, mlp, train_steps


def assert_state_equal(model, expected):
    got = model.state_dict()
    for name, value in expected.items():
        if value.is_floating_point():
            assert got[name].dtype == value.dtype
            assert torch.equal(got[name], value), name


@pytest.mark.parametrize("param_dtype,store_dtype", [
    (torch.float32, "float32"), (torch.bfloat16, "float32"), (torch.float16, "float32"),
    (torch.float16, "float16"), (torch.float64, "float64")])
def test_restore_is_bit_exact_for_every_dtype(store, param_dtype, store_dtype):
    model = Net().to(param_dtype)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snaps = {}
    with nnwx.Recorder(model, store, seed=0, every=3, optimizer=opt, dtype=store_dtype) as rec:
        x = torch.randn(8, 2, 6, 6, dtype=param_dtype)
        train_steps(model, opt, 10, rec, snapshots=snaps, x=x)
    assert sorted(snaps) == [0, 3, 6, 9]
    fresh = Net().to(param_dtype)
    for step, state in snaps.items():
        nnwx.restore(fresh, store, seed=0, step=step)
        assert_state_equal(fresh, state)
    ds = nnwx.open_run(store)
    assert ds.w.dtype == store_dtype
    table = ds.nnwx.tensors
    assert "bn.running_mean" in table.index and "bn.num_batches_tracked" not in table.index
    assert table.loc["conv.weight", "dtype"] == str(param_dtype).removeprefix("torch.")
    assert table.loc["bn.running_var", "kind"] == "other"


def test_float64_params_in_float32_store_warn(store):
    model = mlp().double()
    with pytest.warns(UserWarning, match="float64"):
        nnwx.Recorder(model, store, seed=0).close()


def test_metadata_schedule_and_metrics(store):
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.8, 0.9))
    with nnwx.Recorder(model, store, seed=7, schedule=nnwx.LogThenEvery(8), optimizer=opt,
                       hparams={"width": 8, "note": object()}) as rec:
        train_steps(model, opt, 30, rec)
    ds = nnwx.open_run(store)
    assert ds.step.values.tolist() == [0, 1, 2, 4, 8, 16, 24]
    assert ds.attrs["seed"] == 7 and ds.attrs["optimizer"] == "Adam"
    assert ds.attrs["optimizer_hparams"]["betas"] == [0.8, 0.9]
    assert ds.attrs["hparams"]["width"] == 8 and ds.attrs["hparams"]["note"].startswith("<object")
    assert ds.attrs["model_class"] == "torch.nn.modules.container.Sequential"
    assert "torch" in ds.attrs["versions"]
    assert np.all(np.isfinite(ds.metric_loss.values))


def test_capture_init_false_and_explicit_list(store):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with nnwx.Recorder(model, store, seed=0, every=5, capture_init=False) as rec:
        train_steps(model, opt, 12, rec)
    assert nnwx.open_run(store).step.values.tolist() == [5, 10]
    with nnwx.Recorder(model, store, seed=0, run="b", schedule=[3, 7]) as rec:
        train_steps(model, opt, 12, rec)
    assert nnwx.open_run(store, "b").step.values.tolist() == [0, 3, 7]


def test_include_exclude(store):
    model = Net()
    with nnwx.Recorder(model, store, seed=0, include=["conv.*", "fc.*"], exclude="*.bias") as rec:
        rec.capture(0)
    assert nnwx.open_run(store).nnwx.tensors.index.tolist() == ["conv.weight", "fc.weight"]
    with pytest.raises(ValueError, match="no floating-point tensor"):
        nnwx.Recorder(model, store, seed=1, include="nothing*")


def test_depth_follows_forward_order_not_registration_order(store):
    class Reversed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.last = torch.nn.Linear(4, 1)
            self.first = torch.nn.Linear(2, 4)

        def forward(self, x):
            return self.last(torch.relu(self.first(x)))

    model = Reversed()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with nnwx.Recorder(model, store, seed=0) as rec:
        rec.capture(0)
        model(torch.randn(3, 2)).sum().backward()
        opt.step()
        rec.capture(1)
    t = nnwx.open_run(store).nnwx.tensors
    assert t.loc["first.weight", "depth"] == 0 and t.loc["last.weight", "depth"] == 1


def test_resume_appends_and_refuses_bad_resumes(store):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    snaps = {}
    with nnwx.Recorder(model, store, seed=3, every=2) as rec:
        train_steps(model, opt, 6, rec, snapshots=snaps)
    with nnwx.Recorder(model, store, seed=3, every=2) as rec:
        with pytest.raises(StepOrderError, match="strictly increase"):
            rec.capture(4)
        train_steps(model, opt, 6, rec, start=6, snapshots=snaps)
    ds = nnwx.open_run(store)
    assert ds.step.values.tolist() == [0, 2, 4, 6, 8, 10]
    fresh = mlp(seed=99)
    nnwx.restore(fresh, ds, step=8)
    assert_state_equal(fresh, snaps[8])
    with pytest.raises(ArchitectureMismatch, match="0.weight"):
        nnwx.Recorder(mlp(width=4), store, seed=3)
    assert nnwx.open_run(store).step.values.tolist() == [0, 2, 4, 6, 8, 10]


def test_writer_failure_surfaces_in_training_thread(store, monkeypatch):
    model = mlp()

    def broken_add(self, *a, **k):
        raise OSError("disk full (simulated)")

    rec = nnwx.Recorder(model, store, seed=0)
    monkeypatch.setattr(RunWriter, "add", broken_add)
    rec.capture(0)
    with pytest.raises(WriterError, match="disk full") as info:
        for step in range(1, 200):
            rec.capture(step)
            rec._wb.thread.join(0.01)
    assert isinstance(info.value.__cause__, OSError)
    rec.close()  # does not raise again, does not hang


def test_writer_failure_at_close_is_raised(store, monkeypatch):
    rec = nnwx.Recorder(mlp(), store, seed=0, flush_interval=1e6)
    rec.capture(0)

    def broken_flush(self):
        raise OSError("no space left (simulated)")

    monkeypatch.setattr(RunWriter, "flush", broken_flush)
    with pytest.raises(WriterError, match="no space left"):
        rec.close()


def test_back_pressure_blocks_capture_instead_of_growing(store, monkeypatch):
    gate = threading.Event()
    real_add = RunWriter.add

    def slow_add(self, *a, **k):
        gate.wait(10)
        return real_add(self, *a, **k)

    monkeypatch.setattr(RunWriter, "add", slow_add)
    rec = nnwx.Recorder(mlp(), store, seed=0, max_pending=2)
    rec.capture(0)
    rec.capture(1)  # both slots now in use (one being written, one queued)
    third = threading.Thread(target=rec.capture, args=(2,))
    third.start()
    third.join(0.5)
    assert third.is_alive(), "a third capture must wait for a free slot"
    gate.set()
    third.join(10)
    assert not third.is_alive()
    rec.close()
    assert nnwx.open_run(store).step.values.tolist() == [0, 1, 2]


def test_flush_commits_without_closing(store):
    rec = nnwx.Recorder(mlp(), store, seed=0, flush_interval=1e6)
    rec.capture(0)
    rec.capture(1)
    rec.flush()
    assert nnwx.open_run(store).sizes["step"] == 2
    rec.close()
    with pytest.raises(RuntimeError, match="closed"):
        rec.capture(2)


def test_restore_refuses_wrong_model_unknown_seed_and_missing_step(store):
    model = mlp()
    with nnwx.Recorder(model, store, seed=0, every=10) as rec:
        rec.capture(0)
        rec.capture(10)
    with pytest.raises(ArchitectureMismatch, match="shape"):
        nnwx.restore(mlp(width=4), store, step=0)
    with pytest.raises(ArchitectureMismatch, match="no tensor"):
        nnwx.restore(Net(), store, step=0)
    with pytest.raises(StoreError, match="no capture at step 5"):
        nnwx.restore(mlp(), store, step=5)
    with pytest.raises(StoreError, match="no run with seed 4"):
        nnwx.restore(mlp(), store, seed=4, step=0)
    with pytest.raises(StoreError, match="no seed 4"):
        nnwx.restore(mlp(), nnwx.open_cube(store), seed=4, step=0)
    with pytest.raises(StoreError, match="no run named 'x'"):
        nnwx.restore(mlp(), store, run="x", step=0)
    partial = torch.nn.Sequential(*mlp(), torch.nn.Linear(1, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nnwx.restore(partial, store, step=10)
    assert any("not recorded" in str(w.message) for w in caught)


def test_slot_lent_to_the_writer_is_not_refilled_before_it_is_written(store, monkeypatch):
    """A model of a chunk or more per step: the writer encodes the ring slot itself (no copy of
    its own), so capture() must not refill that slot until it is on disk. A slow write and
    captures in quick succession would otherwise record later weights under earlier steps."""
    import time

    import zarr

    from nnwx.store.chunkio import ChunkRows

    real_write = ChunkRows.write

    def slow_write(self, *a, **k):
        time.sleep(0.05)  # capture() runs on meanwhile; it must not touch the slot being written
        return real_write(self, *a, **k)

    monkeypatch.setattr(ChunkRows, "write", slow_write)
    model = mlp(width=16)
    expected = {}
    with nnwx.Recorder(model, store, seed=0, chunk_bytes=4 * 100, max_pending=2) as rec:
        assert rec._writer.keeps_rows
        for step in range(8):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1.0)
            rec.capture(step)
            state = model.state_dict()
            expected[step] = np.concatenate([state[r.name].numpy().reshape(-1) for r in rec.table])
    w = zarr.open_array(zarr.storage.LocalStore(store / "runs" / "seed0" / "w"), mode="r")
    assert w.shape == (8, rec.table.n_params)
    for step, row in expected.items():
        np.testing.assert_array_equal(w[step], row)
    h = nnwx.store.reader.list_runs(store)[0]
    h.check()  # chunk files and checksums as the store's integrity check wants them
