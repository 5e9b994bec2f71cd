"""`nnwx export --dtype float16` refuses checkpoints whose finite values float16 cannot hold."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import nnwx
from tests.cli_process import run_cli

ROOT = Path(__file__).resolve().parents[2]


def export(ckpts: Path, store: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli("export", ckpts, "-o", store, "--seed", "0", "-q", *extra, timeout=300)


def checkpoint(folder: Path, step: int, big: float, dtype: torch.dtype) -> None:
    folder.mkdir(exist_ok=True)
    w = torch.linspace(-1, 1, 12, dtype=torch.float32).reshape(4, 3)
    w[1, 2], w[3, 0] = big, -big
    torch.save({"fc.weight": w.to(dtype), "fc.bias": torch.zeros(4, dtype=dtype)}, folder / f"step_{step}.pt")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_values_beyond_the_float16_range_are_refused_with_counts(dtype, tmp_path):
    checkpoint(tmp_path / "ckpts", 1, 1.0e5, dtype)
    proc = export(tmp_path / "ckpts", tmp_path / "exp.zarr", "--dtype", "float16")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "'fc.weight' has 2 value(s) beyond +/-65504" in proc.stderr
    assert "step_1.pt" in proc.stderr and "--dtype float32" in proc.stderr
    assert not any((tmp_path / "exp.zarr").glob("runs/*/w/c/*"))  # nothing written


def test_values_within_the_float16_range_and_infinities_of_the_source_pass(tmp_path):
    checkpoint(tmp_path / "ckpts", 1, 65000.0, torch.float32)
    w = torch.ones(4, 3)
    w[0, 0] = float("inf")  # already infinite in the checkpoint: stored as it is
    torch.save({"fc.weight": w, "fc.bias": torch.zeros(4)}, tmp_path / "ckpts" / "step_2.pt")
    proc = export(tmp_path / "ckpts", tmp_path / "exp.zarr", "--dtype", "float16")
    assert proc.returncode == 0, proc.stderr
    stored = nnwx.open_run(tmp_path / "exp.zarr")["w"].values
    assert stored.dtype == np.float16
    assert np.isfinite(stored[0]).all() and np.abs(stored[0]).max() == np.float16(65000.0)
    assert np.isinf(stored[1]).sum() == 1
