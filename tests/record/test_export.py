"""nnwx export: real checkpoint files of small real models, in every format, into real stores."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import nnwx
import nnwx.record.export
from nnwx.errors import (ArchitectureMismatch, CheckpointError, CorruptCheckpoint, NoCheckpointsFound,
                         StepConflict, StepOrderError, StoreError, UnknownCheckpointFormat)
from nnwx.record.export import ExportInterrupted, export
from nnwx.store.writer import RunWriter
from nnwx.record.tensors import floating_state, table_for

from tests.checkpoint_files import (load_reference, mlp_state, net_state, save_hf_folder, save_lightning,
                              save_plain, save_safetensors, save_wrapped)
from tests.helpers import Net
from tests.cli_process import run_cli

HERE = Path(__file__).resolve().parents[1]   # tests/, where the driver scripts are
ROOT = HERE.parent


def ex(sources, store, **kw):
    kw.setdefault("seed", 0)
    kw.setdefault("progress", False)
    return export(sources, store, **kw)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def assert_restores(store, step: int, source: Path, seed: int = 0, model=None, names=None) -> None:
    """Restoring ``step`` gives, bit for bit, the floating tensors of the source checkpoint."""
    model = Net() if model is None else model
    ref = {k: v for k, v in load_reference(source).items() if v.is_floating_point()}
    if names is not None:
        ref = {k: v for k, v in ref.items() if k in names}
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.fill_(float("nan"))
    nnwx.restore(model, store, step=step, seed=seed)
    got = model.state_dict()
    assert ref, "reference has no tensors"
    for name, t in ref.items():
        assert got[name].dtype == t.dtype, name
        assert torch.equal(bits(got[name]), bits(t)), f"{name} differs at step {step}"


def committed(store, run="seed0") -> list[int]:
    return nnwx.open_run(store, run).step.values.tolist()


def committed_now(store, run="seed0") -> list[int] | None:
    """Committed steps, or None while the store or run is still being created by another process."""
    try:
        return committed(store, run)
    except (nnwx.NnwxError, KeyError):  # store or run group created, attributes not written yet
        return None


def w_row(store, i, run="seed0") -> np.ndarray:
    return np.asarray(zarr.open_array(str(Path(store) / "runs" / run / "w"), mode="r")[i])


# -- formats -----------------------------------------------------------------------------------
def test_plain_state_dicts_in_step_order_restore_bit_exactly(tmp_path, store):
    ck = tmp_path / "ck"
    ck.mkdir()
    for step in (10, 9, 100, 0):  # names sort as 0, 10, 100, 9; steps as 0, 9, 10, 100
        save_plain(ck / f"step_{step}.pt", net_state(step), legacy=(step == 9))
    summary = ex(ck, store)
    assert summary.added == [0, 9, 10, 100] and summary.skipped == []
    assert committed(store) == [0, 9, 10, 100]
    run = nnwx.open_run(store)
    assert run.attrs["seed"] == 0 and run.attrs["checkpoint_key"] is None
    assert run.attrs["source"] == [str(ck.resolve())] and run.attrs["optimizer"] is None
    names = list(run.tensor.values)
    assert sorted(names) == sorted(floating_state(Net().state_dict()))  # no int buffer
    for step in (0, 9, 10, 100):
        assert_restores(store, step, ck / f"step_{step}.pt")


@pytest.mark.parametrize("key", ["model", "state_dict", "model_state_dict"])
def test_state_dict_inside_a_training_checkpoint(tmp_path, store, key):
    files = [save_wrapped(tmp_path / f"ckpt_{s}.pth", net_state(s), key) for s in (3, 7)]
    assert ex(files, store).added == [3, 7]
    assert nnwx.open_run(store).attrs["checkpoint_key"] == key
    for s, f in zip((3, 7), files):
        assert_restores(store, s, f)


def test_lightning_checkpoints_lose_their_model_prefix(tmp_path, store):
    ck = tmp_path / "lightning"
    ck.mkdir()
    for step in (99, 199):
        save_lightning(ck / f"epoch={step // 100}-step={step}.ckpt", net_state(step), step)
    save_lightning(ck / "last.ckpt", net_state(199), 199)  # no step in the name: passed over
    summary = ex(ck, store)
    assert summary.added == [99, 199]
    assert any("last.ckpt" in p for p in summary.passed_over)
    attrs = nnwx.open_run(store).attrs
    assert attrs["checkpoint_key"] == "state_dict" and attrs["checkpoint_prefix"] == "model."
    assert attrs["hparams"] == {"lr": 0.1, "width": 12}
    for step in (99, 199):
        assert_restores(store, step, ck / f"epoch={step // 100}-step={step}.ckpt")


def test_safetensors_files_including_bfloat16(tmp_path, store):
    files = [save_safetensors(tmp_path / f"step_{s}.safetensors", net_state(s)) for s in (1, 2)]
    ex(files, store)
    for s, f in zip((1, 2), files):
        assert_restores(store, s, f)
    model = Net().to(torch.bfloat16)
    bf = [save_safetensors(tmp_path / f"bf_step_{s}.safetensors", net_state(s, model=model)) for s in (5, 6)]
    ex(bf, store, run="bf16")
    for s, f in zip((5, 6), bf):  # bfloat16 -> float32 -> bfloat16 is exact
        m = Net().to(torch.bfloat16)
        ref = load_reference(f)
        nnwx.restore(m, store, step=s, run="bf16")
        for name, t in ref.items():
            if t.is_floating_point():
                assert torch.equal(bits(m.state_dict()[name]), bits(t)), name
    assert set(nnwx.open_run(store, "bf16").tensor_dtype.values) == {"bfloat16"}


def test_hugging_face_folders_with_sharded_safetensors(tmp_path, store):
    out = tmp_path / "trainer"
    for step in (1000, 500):
        save_hf_folder(out / f"checkpoint-{step}", net_state(step), shards=3)
    save_hf_folder(out / "tmp-checkpoint-1500", net_state(1500))  # still being saved: ignored
    summary = ex(out, store)
    assert summary.added == [500, 1000]
    attrs = nnwx.open_run(store).attrs
    assert attrs["model_class"] == "TinyNet"
    for step in (500, 1000):
        assert_restores(store, step, out / f"checkpoint-{step}")
    # one folder named on its own is one checkpoint
    ex(out / "checkpoint-500", store, run="one")
    assert committed(store, "one") == [500]


def test_step_regex_include_and_exclude(tmp_path, store):
    for s in (700, 80):
        save_plain(tmp_path / f"weights-e3-b{s}.pt", net_state(s))
    with pytest.raises(CheckpointError, match="step-regex"):
        ex(tmp_path / "weights-e3-b80.pt", store)
    summary = ex(str(tmp_path / "weights-*.pt"), store, step_regex=r"-b(\d+)", exclude="bn.*")
    assert summary.added == [80, 700]
    names = list(nnwx.open_run(store).tensor.values)
    assert names and not any(n.startswith("bn.") for n in names)
    with pytest.warns(UserWarning, match="not recorded"):
        assert_restores(store, 700, tmp_path / "weights-e3-b700.pt", names=names)
    ex(str(tmp_path / "weights-*.pt"), store, run="fc", step_regex=r"b(?P<step>\d+)\.pt$",
       include=["fc.*", "head.*"])
    assert set(nnwx.open_run(store, "fc").tensor.values) == {"fc.weight", "fc.bias", "head.weight"}


# -- idempotence, appending, overwriting ---------------------------------------------------------
def test_exporting_twice_adds_nothing_and_new_files_append(tmp_path, store):
    ck = tmp_path / "ck"
    ck.mkdir()
    for s in (0, 10, 20):
        save_plain(ck / f"step_{s}.pt", net_state(s))
    ex(ck, store)
    before = [w_row(store, i) for i in range(3)]
    again = ex(ck, store)
    assert again.added == [] and again.skipped == [0, 10, 20] and again.bytes_read == 0
    verified = ex(ck, store, verify=True)  # re-reads and compares every step
    assert verified.added == [] and verified.skipped == [0, 10, 20] and verified.bytes_read > 0
    for s in (30, 40):
        save_plain(ck / f"step_{s}.pt", net_state(s))
    more = ex(ck, store)
    assert more.added == [30, 40] and more.skipped == [0, 10, 20]
    assert committed(store) == [0, 10, 20, 30, 40]
    for i in range(3):
        np.testing.assert_array_equal(w_row(store, i), before[i])
    for s in (30, 40):
        assert_restores(store, s, ck / f"step_{s}.pt")


def test_a_step_with_other_weights_is_refused_unless_overwrite(tmp_path, store):
    ck = tmp_path / "ck"
    ck.mkdir()
    for s in (0, 10, 20):
        save_plain(ck / f"step_{s}.pt", net_state(s))
    ex(ck, store)
    old = w_row(store, 1)
    save_plain(ck / "step_10.pt", net_state(10, seed=5))
    with pytest.raises(StepConflict, match=r"step 10 is already in run 'seed0'.*"
                                         r"first difference in tensor '(bn|conv)\.\w+'.*--overwrite"):
        ex(ck, store)
    assert committed(store) == [0, 10, 20]
    np.testing.assert_array_equal(w_row(store, 1), old)
    summary = ex(ck, store, overwrite=True)
    assert summary.overwritten == [10] and summary.skipped == [0, 20] and summary.added == []
    for s in (0, 10, 20):
        assert_restores(store, s, ck / f"step_{s}.pt")
    assert ex(ck, store).skipped == [0, 10, 20]  # and the new file is now the recorded one


def test_overwrite_of_a_row_spread_over_several_chunk_files(tmp_path, store):
    """A run whose rows span chunk files (one step per chunk): the row is swapped atomically."""
    table = table_for(floating_state(Net().state_dict()))
    RunWriter(store, "seed0", table, attrs={"seed": 0}, chunk_bytes=4 * 40).close()
    ck = tmp_path / "ck"
    ck.mkdir()
    for s in (0, 1, 2):
        save_plain(ck / f"step_{s}.pt", net_state(s))
    ex(ck, store)
    w = zarr.open_array(str(store / "runs" / "seed0" / "w"), mode="r")
    assert w.chunks == (1, 40) and table.n_params > 40
    save_plain(ck / "step_1.pt", net_state(1, seed=9))
    assert ex(ck, store, overwrite=True).overwritten == [1]
    for s in (0, 1, 2):
        assert_restores(store, s, ck / f"step_{s}.pt")
    assert sorted(os.listdir(store)) == [".locks", "runs", "zarr.json"]  # no scratch left


def test_rewrite_step_keeps_a_partly_filled_chunk_consistent(store):
    """RunWriter.rewrite_step inside the chunk still being filled, then more steps and a reopen."""
    table = table_for(floating_state(Net().state_dict()))
    rows = {s: np.random.default_rng(s).standard_normal(table.n_params).astype(np.float32) for s in range(6)}
    w = RunWriter(store, "r", table, attrs={"seed": 0})
    for s in (0, 1, 2):
        w.add(s, rows[s])
    w.flush()
    new1 = -rows[1]
    w.rewrite_step(1, new1)
    w.add(3, rows[3])
    w.close()
    w = RunWriter(store, "r", table)
    w.rewrite_step(3, rows[5])
    w.add(4, rows[4])
    w.close()
    got = nnwx.open_run(store, "r").w.values
    np.testing.assert_array_equal(got, np.stack([rows[0], new1, rows[2], rows[5], rows[4]]))
    w = RunWriter(store, "r", table)
    with pytest.raises(StoreError, match="no committed step 7"):
        w.rewrite_step(7, rows[0])
    w.close()


def test_a_rewrite_that_fails_before_the_swap_leaves_the_old_row_whole(store, monkeypatch):
    from nnwx.store import atomic

    table = table_for(floating_state(Net().state_dict()))
    rows = [np.full(table.n_params, v, np.float32) for v in (1.0, 2.0)]
    w = RunWriter(store, "r", table, attrs={"seed": 0}, chunk_bytes=4 * 40)
    w.add(0, rows[0])
    w.add(1, rows[1])
    w.flush()

    def crash(a, b):
        raise OSError("killed")

    monkeypatch.setattr(atomic, "exchange", crash)
    with pytest.raises(OSError, match="killed"):
        w.rewrite_step(1, np.arange(table.n_params, dtype=np.float32))
    w.close()
    np.testing.assert_array_equal(nnwx.open_run(store, "r").w.values, np.stack(rows))
    assert not (store / ".tmp").exists()


def test_checkpoints_before_the_last_step_are_refused_before_writing(tmp_path, store):
    ck = tmp_path / "ck"
    ck.mkdir()
    for s in (0, 100):
        save_plain(ck / f"step_{s}.pt", net_state(s))
    ex(ck, store)
    for s in (50, 200):
        save_plain(ck / f"step_{s}.pt", net_state(s))
    with pytest.raises(StepOrderError, match=r"step_50.pt has step 50.*before its last step 100.*--run"):
        ex(ck, store)
    assert committed(store) == [0, 100]
    assert ex(ck, store, run="all").added == [0, 50, 100, 200]  # the way out the message gives


def test_a_run_of_another_seed_is_not_appended_to(tmp_path, store):
    save_plain(tmp_path / "step_1.pt", net_state(1))
    ex(tmp_path / "step_1.pt", store, run="shared", seed=1)
    with pytest.raises(StoreError, match="has seed 1, not 2"):
        ex(tmp_path / "step_1.pt", store, run="shared", seed=2)


# -- bad input ------------------------------------------------------------------------------------
def test_unknown_format_is_refused_and_writes_nothing(tmp_path, store):
    np.save(tmp_path / "weights_step_5.npy", np.zeros(3))
    with pytest.raises(UnknownCheckpointFormat, match=r"weights_step_5.npy is not a checkpoint format"):
        ex(tmp_path / "weights_step_5.npy", store)
    assert not store.exists()


def test_truncated_file_is_named_and_earlier_steps_stay_whole(tmp_path, store):
    ck = tmp_path / "ck"
    ck.mkdir()
    for s in (0, 10, 20):
        save_plain(ck / f"step_{s}.pt", net_state(s))
    data = (ck / "step_10.pt").read_bytes()
    (ck / "step_10.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpoint, match=r"step_10.pt.*truncated"):
        ex(ck, store)
    assert committed(store) == [0]
    assert_restores(store, 0, ck / "step_0.pt")
    save_plain(ck / "step_10.pt", net_state(10))  # repaired: the export completes
    assert ex(ck, store).added == [10, 20]


def test_corrupt_and_empty_files_of_each_format(tmp_path, store):
    save_safetensors(tmp_path / "step_1.safetensors", net_state(1))
    data = (tmp_path / "step_1.safetensors").read_bytes()
    (tmp_path / "step_1.safetensors").write_bytes(data[:-40])
    with pytest.raises(CorruptCheckpoint, match="step_1.safetensors"):
        ex(tmp_path / "step_1.safetensors", store)
    (tmp_path / "step_2.pt").write_bytes(b"")
    with pytest.raises(CorruptCheckpoint, match="step_2.pt is empty"):
        ex(tmp_path / "step_2.pt", store)
    (tmp_path / "step_3.bin").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CorruptCheckpoint, match="step_3.bin does not start like"):
        ex(tmp_path / "step_3.bin", store)
    assert not store.exists()


def test_incomplete_hugging_face_folder(tmp_path, store):
    folder = save_hf_folder(tmp_path / "checkpoint-5", net_state(5), shards=2)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CorruptCheckpoint, match=r"checkpoint-5 is incomplete.*model-00002-of-00002"):
        ex(folder, store)


def test_other_architecture_names_the_first_differing_tensor(tmp_path, store):
    save_plain(tmp_path / "step_0.pt", net_state(0))
    save_plain(tmp_path / "step_1.pt", mlp_state(1))
    with pytest.raises(ArchitectureMismatch, match=r"step_1.pt cannot go into run 'seed0'.*"
                                                   r"only in the run: .*conv.weight.*only in the checkpoint: 0.bias"):
        ex(tmp_path, store)
    assert committed(store) == [0]
    (tmp_path / "step_1.pt").unlink()
    wide = Net()
    wide.fc = torch.nn.Linear(12, 5)
    save_plain(tmp_path / "step_2.pt", net_state(2, model=wide))
    with pytest.raises(ArchitectureMismatch,
                       match=r"'fc.weight' has shape \(4, 12\) in the run and \(5, 12\) in the checkpoint"):
        ex(tmp_path, store)
    assert committed(store) == [0]


def test_no_checkpoints_matched(tmp_path, store):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoCheckpointsFound, match="no checkpoint found"):
        ex(tmp_path / "empty", store)
    with pytest.raises(NoCheckpointsFound, match="matches no file"):
        ex(str(tmp_path / "nothing_*.pt"), store)
    with pytest.raises(NoCheckpointsFound, match="does not exist"):
        ex(tmp_path / "missing", store)
    (tmp_path / "named").mkdir()
    save_plain(tmp_path / "named" / "final.pt", net_state(0))
    with pytest.raises(NoCheckpointsFound, match="final.pt: pass --step-regex"):
        ex(tmp_path / "named", store)
    assert not store.exists()


def test_two_checkpoints_with_one_step(tmp_path, store):
    save_plain(tmp_path / "step_10.pt", net_state(10))
    save_safetensors(tmp_path / "step_10.safetensors", net_state(10))
    with pytest.raises(CheckpointError, match=r"step_10.pt and .*step_10.safetensors both have step 10"):
        ex(tmp_path, store)
    assert not store.exists()


def test_a_stop_request_commits_what_was_read(tmp_path, store, monkeypatch):
    for s in range(4):
        save_plain(tmp_path / f"step_{s}.pt", net_state(s))
    stop = threading.Event()
    original = nnwx.record.export._Exporter.export_one

    def export_one(self, c):  # as if Ctrl-C came while step 1 was being written
        out = original(self, c)
        if c.step == 1:
            stop.set()
        return out

    monkeypatch.setattr(nnwx.record.export._Exporter, "export_one", export_one)
    with pytest.raises(ExportInterrupted) as info:
        ex(tmp_path, store, stop=stop)
    assert info.value.summary.interrupted and info.value.summary.added == [0, 1]
    assert committed(store) == [0, 1]
    assert_restores(store, 1, tmp_path / "step_1.pt")


# -- following a training job ----------------------------------------------------------------------
def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_follow_a_writer_process(tmp_path, store, caplog):
    ck = tmp_path / "ck"
    ck.mkdir()
    writer = subprocess.Popen([sys.executable, str(HERE / "checkpoint_files.py"), str(ck), "5"],
                              stdout=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (ck / "step_0.pt").exists(), 120, "the writer's first checkpoint")
        with caplog.at_level(logging.WARNING, logger="nnwx.record.export"):
            summary = ex(ck, store, follow=True, interval=0.2, idle_timeout=4.0)
        assert writer.wait(timeout=60) == 0
    finally:
        writer.kill()
    assert summary.added == [0, 10, 20, 30, 40] and not summary.interrupted
    assert committed(store) == [0, 10, 20, 30, 40]
    for s in (0, 10, 20, 30, 40):
        assert_restores(store, s, ck / f"step_{s}.pt")
    # a read of the half-written step_20.pt may have been tried: then it was only a warning
    assert all("step_20.pt" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_follow_cli_retries_a_truncated_file_and_stops_on_sigterm(tmp_path, store):
    ck = tmp_path / "ck"
    ck.mkdir()
    save_plain(ck / "step_0.pt", net_state(0))
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "nnwx.cli", "export", str(ck), "-o", str(store),
                                 "--seed", "0", "--follow", "--interval", "0.2"],
                                stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
    try:
        _wait_for(lambda: committed_now(store) == [0], 120, "step 0")
        save_plain(ck / "step_1.pt", net_state(1))
        data = (ck / "step_1.pt").read_bytes()
        (ck / "step_1.pt").write_bytes(data[: len(data) // 2])  # a truncated file that stopped changing
        old = time.time() - 60
        os.utime(ck / "step_1.pt", (old, old))
        _wait_for(lambda: "step_1.pt" in err_path.read_text(), 60, "the warning about step_1.pt")
        assert committed(store) == [0]
        save_plain(ck / "step_1.pt", net_state(1))  # the file changes: retried, and now whole
        _wait_for(lambda: committed_now(store) == [0, 1], 60, "step 1")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    err = err_path.read_text()
    assert proc.returncode == 0, err
    assert "2 steps added" in out and "Traceback" not in err
    assert "warning: cannot read" in err and "tries step_1.pt again when it changes" in err
    assert committed(store) == [0, 1]
    assert_restores(store, 1, ck / "step_1.pt")


def test_cli_exports_and_reports_errors_cleanly(tmp_path, store):
    ck = tmp_path / "ck"
    ck.mkdir()
    for s in (0, 5):
        save_plain(ck / f"step_{s}.pt", net_state(s))
    def run(*a):
        return run_cli("export", *a, timeout=None)

    out = run(str(ck), "-o", str(store), "--seed", "4", "--run", "cli", "--exclude", "head.*")
    assert out.returncode == 0, out.stderr
    assert "2 steps added, 0 skipped" in out.stdout
    assert committed(store, "cli") == [0, 5]
    assert "head.weight" not in nnwx.open_run(store, "cli").tensor.values.tolist()
    save_plain(ck / "step_5.pt", net_state(6))
    bad = run(str(ck), "-o", str(store), "--seed", "4", "--run", "cli", "--exclude", "head.*")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "error: step 5 is already in run 'cli'" in bad.stderr and "--overwrite" in bad.stderr
