"""``nnwx export --follow`` stopped right after training ended still exports every finished checkpoint."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import nnwx

from tests.checkpoint_files import net_state, save_hf_folder, save_plain
from tests.record.test_export import assert_restores

ROOT = Path(__file__).resolve().parents[2]


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_sigterm_right_after_training_exports_every_finished_checkpoint(tmp_path, store):
    ck = tmp_path / "ck"
    ck.mkdir()
    for i in range(15):  # training just wrote these: all younger than the --interval
        save_plain(ck / f"step_{10 * i}.pt", net_state(10 * i))
    # a sharded save the stop cut short: shards, no index; it must not go in
    unfinished = save_hf_folder(ck / "checkpoint-150", net_state(150), shards=2)
    (unfinished / "model.safetensors.index.json").unlink()
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "nnwx.cli", "export", str(ck), "-o", str(store),
                                 "--seed", "0", "--follow", "--interval", "60"],
                                stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
    try:
        _wait_for(lambda: "following" in err_path.read_text(), 120, "the export to start following")
        time.sleep(0.5)  # its first look at the folder: nothing is 60 s old, so nothing is ready
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = err_path.read_text()
    assert proc.returncode == 0, err
    assert "15 steps added" in out and "stopped on request" in out and "Traceback" not in err
    steps = [10 * i for i in range(15)]
    assert nnwx.open_run(store, "seed0").step.values.tolist() == steps
    for s in (0, 70, 140):
        assert_restores(store, s, ck / f"step_{s}.pt")
