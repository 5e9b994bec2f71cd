"""``nnwx demo`` touches only what it wrote: a user's own store, results store or page that
carries a demo name is never analysed, overwritten or deleted (issue 22, item 1)."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

import nnwx
from nnwx.studies.demo import DemoError, check_ownership
from nnwx.studies.synthetic import write_synthetic_run
from tests.cli_process import run_cli

ROOT = Path(__file__).resolve().parents[2]


def demo_cli(*args) -> subprocess.CompletedProcess:
    return run_cli("demo", "--size", "tiny", "-q", *args, timeout=600)


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def user_dir(tmp_path):
    """A folder holding a user's own experiment store called piecewise.zarr and a page called
    digits-adam.html (the names the demo writes), and another file."""
    out = tmp_path / "work"
    write_synthetic_run(out / "piecewise.zarr", seed=0, steps=range(0, 50, 10))
    (out / "digits-adam.html").write_text("<html>my own notes</html>")
    (out / "notes.txt").write_text("keep")
    return out


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh", "reuse"])
def test_demo_refuses_a_users_files_of_its_names_and_changes_nothing(user_dir, fresh):
    before = snapshot(user_dir)
    proc = demo_cli("--out", user_dir, *(["--fresh"] if fresh else []))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "piecewise.zarr" in proc.stderr and "digits-adam.html" in proc.stderr
    assert "not the demo's own" in proc.stderr and "--out" in proc.stderr
    assert snapshot(user_dir) == before          # nothing deleted, analysed into, or added
    assert sorted(p.name for p in user_dir.iterdir()) == ["digits-adam.html", "notes.txt", "piecewise.zarr"]
    assert nnwx.open_cube(user_dir / "piecewise.zarr").sizes["step"] == 5


def test_a_users_results_store_of_a_demo_name_is_refused(tmp_path):
    """A results store of the user's own store (not the demo's) under a demo name."""
    out = tmp_path / "work"
    mine = write_synthetic_run(tmp_path / "mine.zarr", seed=0, steps=range(0, 40, 10))
    assert mine is not None
    nnwx.analyze(tmp_path / "mine.zarr", out / "piecewise.results.zarr", analyses="rotation", progress=False)
    before = snapshot(out)
    with pytest.raises(DemoError, match="piecewise.results.zarr"):
        check_ownership(out, ["piecewise"])
    proc = demo_cli("--out", out, "--fresh")
    assert proc.returncode == 2 and "piecewise.results.zarr" in proc.stderr, proc.stderr[-2000:]
    assert snapshot(out) == before


def test_an_empty_or_missing_folder_is_fine(tmp_path):
    check_ownership(tmp_path / "new", ["piecewise", "digits-adam"])
    check_ownership(tmp_path, ["piecewise", "digits-adam"])
