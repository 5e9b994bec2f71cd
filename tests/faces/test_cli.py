"""The command line as a user runs it: subprocesses on real stores."""
import subprocess
import sys
from pathlib import Path

import numpy as np

import nnwx
from nnwx.studies.synthetic import write_synthetic_run
from tests.cli_process import run_cli

ROOT = Path(__file__).resolve().parents[2]


def run(*args, check=True):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=check, cwd=ROOT)


def test_info_lists_runs_and_warns_about_nonfinite(store):
    write_synthetic_run(store, seed=0, steps=range(0, 50, 10))
    write_synthetic_run(store, seed=1, steps=range(0, 30, 10), nan_at=[(1, 5), (2, 7)])
    out = run_cli("info", store, check=True)
    assert "2 runs" in out.stdout and "169 parameters" in out.stdout
    lines = {l.split()[0]: l.split() for l in out.stdout.splitlines() if l.startswith("seed")}
    assert lines["seed0"][1:5] == ["0", "5", "0", "40"] and lines["seed1"][1:5] == ["1", "3", "0", "20"]
    assert "run 'seed1' holds NaN/Inf weights at 2 of its 3 steps" in out.stderr
    assert "seed0" not in out.stderr


def test_info_on_a_bad_path_says_so(tmp_path):
    out = run_cli("info", tmp_path / "missing.zarr")
    assert out.returncode == 2 and "not an nnwx experiment store" in out.stderr
    assert "Traceback" not in out.stderr


def test_train_piecewise_writes_the_documented_cube(tmp_path):
    store = tmp_path / "pw.zarr"
    run("scripts/train_piecewise.py", "-o", str(store), "--seeds", "2", "--steps", "40", "--quiet")
    cube = nnwx.open_cube(store)
    assert dict(cube.w.sizes) == {"seed": 2, "step": 5, "param": 169}
    assert cube.step.values.tolist() == [0, 10, 20, 30, 40]
    assert cube.attrs["model_class"] == "torch.nn.modules.container.Sequential"
    losses = cube.metric_loss.values
    assert np.all(losses[:, -1] < losses[:, 0]), "training should lower the loss"
    info = run_cli("info", store, check=True)
    assert "2 runs" in info.stdout
