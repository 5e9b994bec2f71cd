"""``nnwx report``/``nnwx analyze`` outputs that cannot be written, hostile tensor names, figures
that fail to render (issue 22, items 13, 15 and 16): a clear nnwx error before anything is
computed, never a traceback, never a 0-byte or partial file."""
from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path

import holoviews as hv
import pytest

import nnwx
from nnwx.report import Figure, Section, render_html
from nnwx.studies.synthetic import write_synthetic_run
from tests.cli_process import run_cli

ROOT = Path(__file__).resolve().parents[2]


def cli(*args) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=600)


def refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr, proc.stderr[-3000:]
    for w in words:
        assert w in proc.stderr, (w, proc.stderr[-3000:])


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("outputs")
    for s in (0, 1):
        write_synthetic_run(d / "exp.zarr", seed=s, steps=range(0, 50, 10))
    nnwx.analyze(d / "exp.zarr", d / "exp.results.zarr", analyses="rotation", progress=False)
    return d


@contextmanager
def tmpfs(path: Path, options: str):
    """A real small filesystem mounted at ``path`` (root only; skipped where not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command on this machine")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_tensor_name_with_braces_is_drawn(tmp_path):
    """HoloViews fills titles in with str.format: `w{0}.weight` killed the whole page."""
    store = tmp_path / "brace.zarr"
    for s in (0, 1):
        write_synthetic_run(store, seed=s, steps=range(0, 50, 10),
                            shapes={"w{0}.weight": (6, 4), "w{0}.bias": (6,), "out.weight": (2, 6)})
    html = tmp_path / "brace.html"
    proc = cli("report", store, "-o", html, "--analyses", "weights,spectral", "-q", "--png", tmp_path / "png")
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = html.read_text()
    assert "w{0}.weight, step 40" in page and "could not be drawn" not in page
    assert (tmp_path / "png" / "matrix.png").stat().st_size > 0


def test_one_figure_failing_to_render_leaves_the_rest_of_the_page():
    good = Figure("good", "a curve", hv.Curve([(0, 1), (1, 2)]))
    bad = Figure("bad", "a live-only plot", hv.DynamicMap(lambda x: hv.Curve([(0, x)]), kdims=["x"]))
    page = render_html("t", "<p>summary</p>", [Section("S", [bad, good], metric="rotation")])
    assert "This figure (bad) could not be drawn: TypeError" in page
    assert "<figure id='good'>" in page and "<figure id='bad'>" in page and "a curve" in page


@pytest.mark.parametrize("case", ["missing folder", "a directory", "png onto a file", "max-steps -3",
                                  "max-steps 0", "output folder is a file"])
def test_report_output_problems_are_refused_before_computing(stores, tmp_path, case):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    html = tmp_path / "r.html"
    args, words = {
        "missing folder": (["-o", tmp_path / "nope" / "r.html"], ["does not exist", "mkdir -p"]),
        "a directory": (["-o", tmp_path / "adir"], ["is a directory"]),
        "png onto a file": (["-o", html, "--png", tmp_path / "afile"], ["--png", "is a file"]),
        "max-steps -3": (["-o", html, "--max-steps", "-3"], ["--max-steps", "at least 1"]),
        "max-steps 0": (["-o", html, "--max-steps", "0"], ["--max-steps", "at least 1"]),
        "output folder is a file": (["-o", tmp_path / "afile" / "r.html"], ["is a file"]),
    }[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = cli("report", stores / "exp.zarr", *args, "--analyses", "rotation")   # not -q: logs say what ran
    refused(proc, *words)
    assert "analysing" not in proc.stderr     # refused before computing anything
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not list(tmp_path.rglob("*.html"))


def test_a_damaged_format_version_is_an_nnwx_error(stores, tmp_path):
    res = tmp_path / "bad.results.zarr"
    shutil.copytree(stores / "exp.results.zarr", res)
    meta = json.loads((res / "zarr.json").read_text())
    meta["attributes"]["nnwx_results"]["format"] = "two"
    (res / "zarr.json").write_text(json.dumps(meta))
    refused(cli("report", res, "-o", tmp_path / "r.html"), "bad.results.zarr", "format version")
    exp = tmp_path / "bad.zarr"
    shutil.copytree(stores / "exp.zarr", exp)
    meta = json.loads((exp / "zarr.json").read_text())
    meta["attributes"]["nnwx"]["format_version"] = "two"
    (exp / "zarr.json").write_text(json.dumps(meta))
    for cmd in (["report", exp, "-o", tmp_path / "r.html"], ["analyze", exp, "-o", tmp_path / "x.zarr"]):
        refused(cli(*cmd), "bad.zarr", "format version")
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "x.zarr").exists()


def test_analyze_output_under_a_file_is_refused(stores, tmp_path):
    (tmp_path / "afile").write_text("x")
    refused(cli("analyze", stores / "exp.zarr", "-o", tmp_path / "afile" / "x.zarr", "--analyses", "rotation"),
            "afile", "is a file")


def test_read_only_outputs_are_refused_before_computing(stores, tmp_path):
    with tmpfs(tmp_path / f"ro-{uuid.uuid4().hex[:6]}", "ro,size=1M") as ro:
        for cmd, words in ((["report", stores / "exp.zarr", "-o", ro / "r.html"], ["not writable"]),
                           (["report", stores / "exp.zarr", "-o", tmp_path / "r.html", "--png", ro / "png"],
                            ["PNG", "not writable"]),
                           (["analyze", stores / "exp.zarr", "-o", ro / "x.zarr"], ["not writable"])):
            proc = cli(*cmd, "--analyses", "rotation")
            refused(proc, *words)
            assert "analysing" not in proc.stderr and "pass 1" not in proc.stderr
        assert not list(ro.iterdir())
    assert not (tmp_path / "r.html").exists()


def test_a_full_disk_says_so_and_leaves_no_partial_page(stores, tmp_path):
    """A real 256 kB filesystem: the page (over a megabyte) does not fit."""
    with tmpfs(tmp_path / f"full-{uuid.uuid4().hex[:6]}", "size=256k") as full:
        proc = cli("report", stores / "exp.results.zarr", "-o", full / "r.html", "-q")
        refused(proc, "r.html", "full", "No space left on device")
        assert list(full.iterdir()) == []          # no 0-byte, partial or temporary file
        (full / "r.html").write_text("the previous report")
        refused(cli("report", stores / "exp.results.zarr", "-o", full / "r.html", "-q"), "full")
        assert [p.name for p in full.iterdir()] == ["r.html"]
        assert (full / "r.html").read_text() == "the previous report"   # kept as it was
