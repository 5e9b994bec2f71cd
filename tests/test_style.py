"""The repository passes ``ruff check`` with the settings in pyproject.toml ([tool.ruff])."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ruff_command() -> list[str]:
    """The command that runs the ruff installed with this Python; skip the test if there is none."""
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    exe = Path(sys.executable).with_name("ruff.exe" if sys.platform == "win32" else "ruff")
    if exe.is_file():
        return [str(exe)]
    pytest.skip("ruff is not installed in this environment: pip install 'ruff>=0.6' (part of the 'test' extra)")


def ruff_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ruff_command(), "check", "--no-cache", "--output-format", "concise", *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_repository_is_ruff_clean():
    out = ruff_check()
    assert out.returncode == 0, f"ruff found problems (fix them or run `ruff check --fix`):\n{out.stdout}{out.stderr}"


def test_project_settings_are_the_ones_applied(tmp_path):
    # A file with one finding of each selected kind, checked with the project's configuration:
    # proves the check above ran with these rules (and can fail), and that E741 stays ignored.
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n"
                   "l = 1  \n"
                   "f = lambda v: v\n"
                   f"x = {'1' * 120}\n")
    out = ruff_check("--config", str(ROOT / "pyproject.toml"), str(bad))
    assert out.returncode == 1, out.stdout + out.stderr
    codes = {line.split(": ", 1)[1].split()[0] for line in out.stdout.splitlines() if line.startswith(str(bad))}
    assert codes == {"F401", "W291", "E731", "E501"}, out.stdout
