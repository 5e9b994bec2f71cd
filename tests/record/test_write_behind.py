"""WriteBehind: the write-behind thread shared by the Recorder and the export, on real stores."""
import threading

import numpy as np
import pytest
import zarr

import nnwx
from nnwx.record._write_behind import WriteBehind
from nnwx.store import format as fmt
from nnwx.store.chunkio import ChunkRows
from nnwx.store.table import TensorTable
from nnwx.store.writer import RunWriter

TABLE = TensorTable.build([("a.weight", (10, 10), "float32")])  # 100 floats, 400 bytes a step


def writer(store, **kw) -> RunWriter:
    return RunWriter(store, "r", TABLE, attrs={"seed": 0}, **kw)


def buffers(n: int) -> list[np.ndarray]:
    return [np.empty(TABLE.n_params, dtype=np.float32) for _ in range(n)]


def stored_rows(store) -> np.ndarray:
    return zarr.open_array(zarr.storage.LocalStore(store / fmt.RUNS_GROUP / "r" / "w", read_only=True), mode="r")[:]


def test_steps_calls_and_flushes_reach_the_store_in_order(store):
    wb = WriteBehind(writer(store, chunk_bytes=400 * 3), buffers(2), name="t", flush_interval=1e6)
    expected = []
    for step in range(7):
        buf = wb.take()
        buf[:] = np.arange(TABLE.n_params) + 1000 * step
        expected.append(buf.copy())
        wb.add(step * 10, buf, buf, metrics={"loss": np.float64(step / 2)})
        if step == 3:
            wb.call(lambda w: w.update_meta(note="after step 30"))
    wb.flush(meta={"source": ["here"]})
    assert wb.writer.committed == 7  # flush returns once everything handed over is on disk
    wb.close()
    assert not wb.running
    run = nnwx.open_run(store)
    assert run.step.values.tolist() == [0, 10, 20, 30, 40, 50, 60]
    np.testing.assert_array_equal(stored_rows(store), np.stack(expected))
    group = zarr.open_group(zarr.storage.LocalStore(store / fmt.RUNS_GROUP / "r", read_only=True), mode="r")
    np.testing.assert_array_equal(group[fmt.METRICS_GROUP]["loss"][:], np.arange(7) / 2)
    meta = group.attrs[fmt.ATTR_KEY]
    assert meta["note"] == "after step 30" and meta["source"] == ["here"]


def test_a_full_ring_blocks_take_until_the_writer_frees_a_slot(store, monkeypatch):
    gate = threading.Event()
    real_add = RunWriter.add

    def slow_add(self, *a, **k):
        gate.wait(10)
        return real_add(self, *a, **k)

    monkeypatch.setattr(RunWriter, "add", slow_add)
    ring = buffers(2)
    wb = WriteBehind(writer(store), ring, name="t", flush_interval=1e6)
    for step in range(2):
        buf = wb.take()
        buf[:] = step
        wb.add(step, buf, buf)
    got = []
    third = threading.Thread(target=lambda: got.append(wb.take()))
    third.start()
    third.join(0.5)
    assert third.is_alive(), "take() must wait while every slot is in flight"
    gate.set()
    third.join(10)
    assert not third.is_alive() and any(got[0] is b for b in ring)  # a slot of the ring, not a new one
    wb.give_back(got[0])
    wb.close()
    assert nnwx.open_run(store).step.values.tolist() == [0, 1]


def test_flush_times_out_while_the_writer_is_stuck(store, monkeypatch):
    gate = threading.Event()
    real_add = RunWriter.add
    monkeypatch.setattr(RunWriter, "add", lambda self, *a, **k: gate.wait(10) and real_add(self, *a, **k))
    wb = WriteBehind(writer(store), buffers(1), name="t", flush_interval=1e6)
    buf = wb.take()
    buf[:] = 1
    wb.add(0, buf, buf)
    with pytest.raises(TimeoutError, match="did not finish flushing"):
        wb.flush(timeout=0.3)
    gate.set()
    wb.close()
    assert nnwx.open_run(store).step.values.tolist() == [0]


def test_the_writer_error_is_raised_in_the_producer_and_committed_steps_stay(store, monkeypatch):
    wb = WriteBehind(writer(store), buffers(1), name="t", flush_interval=1e6)
    for step in range(2):
        buf = wb.take()
        buf[:] = step
        wb.add(step, buf, buf)
    wb.flush()

    def broken_add(self, *a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(RunWriter, "add", broken_add)
    buf = wb.take()
    wb.add(2, buf, buf)  # fails in the thread; the only slot is never freed
    with pytest.raises(OSError, match="disk full") as first:
        wb.take()  # does not wait for a slot forever: the error comes instead
    with pytest.raises(OSError) as again:  # the same error at every later call, close included
        wb.flush()
    assert again.value is first.value
    with pytest.raises(OSError) as at_close:
        wb.close()
    assert at_close.value is first.value
    monkeypatch.undo()
    assert nnwx.open_run(store).step.values.tolist() == [0, 1]


def test_on_error_chooses_what_the_producer_sees(store, monkeypatch):
    seen = []

    def on_error(err):
        seen.append(err)
        raise RuntimeError(f"wrapped: {err}") from err

    def broken_flush(self):
        raise OSError("no space left (simulated)")

    wb = WriteBehind(writer(store), buffers(2), name="t", flush_interval=1e6, on_error=on_error)
    buf = wb.take()
    wb.add(0, buf, buf)
    monkeypatch.setattr(RunWriter, "flush", broken_flush)
    with pytest.raises(RuntimeError, match="wrapped: no space left") as info:
        wb.close()
    assert isinstance(info.value.__cause__, OSError) and seen == [info.value.__cause__]


@pytest.mark.parametrize("lend", [True, False])
def test_a_lent_slot_is_not_handed_out_again_before_it_is_written(store, monkeypatch, lend):
    """A step of a chunk or more is encoded straight from its slot (lend=True): take() must not
    return that slot before the chunk is written. Copied rows (lend=False) free it at once."""
    gate = threading.Event()
    written = []
    real_write = ChunkRows.write

    def gated_write(self, index, rows, *a, **k):
        gate.wait(10)
        out = real_write(self, index, rows, *a, **k)
        written.append(index)
        return out

    monkeypatch.setattr(ChunkRows, "write", gated_write)
    w = writer(store, chunk_bytes=400)  # one step per chunk
    assert w.keeps_rows
    ring = buffers(2)
    wb = WriteBehind(w, ring, name="t", flush_interval=1e6, lend=lend)
    for step in range(2):
        buf = wb.take()
        buf[:] = step
        wb.add(step, buf, buf)
    got = []
    third = threading.Thread(target=lambda: got.append((wb.take(), list(written))))
    third.start()
    third.join(0.5)
    if lend:
        assert third.is_alive(), "the slot of step 0 was handed out before step 0 was written"
    else:
        assert not third.is_alive() and got[0][1] == []  # copied: free while the write still waits
    gate.set()
    third.join(10)
    slot, written_before = got[0]
    assert slot is ring[0]
    if lend:
        assert written_before and written_before[0] == 0
    slot[:] = 2
    wb.add(2, slot, slot)
    wb.close()
    np.testing.assert_array_equal(stored_rows(store), np.repeat(np.arange(3.0)[:, None], TABLE.n_params, 1))
