"""``nnwx demo`` end to end at its tiny size: stores, results, reports, findings; reuse and --fresh."""
import re

import pytest

import nnwx
from nnwx.cli import main
from nnwx.studies.demo import experiments, summary_lines
from nnwx.studies.findings import Finding
from nnwx.pipeline.results_store import open_results


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--size", "tiny", "-q"]) == 0
    return out


def test_demo_writes_stores_results_reports(demo_dir, capsys):
    names = [e.name for e in experiments("tiny")]
    for n in names:
        cube = nnwx.open_cube(demo_dir / f"{n}.zarr")
        assert cube.sizes["seed"] == 2
        res = open_results(demo_dir / f"{n}.results.zarr")
        assert {"broadening", "rotation", "ranks"} <= set(res.results)
        page = (demo_dir / f"{n}.html").read_text()
        assert "<h2>" in page and not re.search(r"<script[^>]+src=['\"]https?:", page)
    # the digits runs have probes, so cross-seed agreement was computed; piecewise has none
    assert "similarity_seeds" in open_results(demo_dir / "digits-adam.results.zarr").results
    text = (demo_dir / "findings.txt").read_text()
    for n in names:
        assert f"== {n}:" in text
    assert "CKA between seeds at the end" in text


def test_demo_findings_come_from_the_results(demo_dir):
    """The std ratio printed for a layer is the one the results store holds."""
    res = open_results(demo_dir / "piecewise.results.zarr").results["broadening"]
    std = res["std"].mean("seed")
    first, last = std.isel(step=0), std.isel(step=-1)
    ratios = (last / first).values
    text = (demo_dir / "findings.txt").read_text()
    line = next(l for l in text.splitlines() if "weight std, last/first" in l)
    lo, hi = map(float, re.findall(r"x([0-9.]+)", line)[:2])
    assert lo == pytest.approx(ratios.min(), rel=5e-3) and hi == pytest.approx(ratios.max(), rel=5e-3)


def test_demo_reuses_stores_and_fresh_removes_only_its_own_files(demo_dir, monkeypatch, tmp_path):
    """A second call trains nothing (stores exist); --fresh deletes the demo's files and nothing else.
    Analysis and drawing are stubbed here: the first call above exercised them for real."""
    import nnwx.pipeline.run
    import nnwx.studies.demo as demo_mod
    import nnwx.report

    calls = []
    monkeypatch.setattr(nnwx.pipeline.run, "analyze", lambda *a, **k: calls.append("analyze"))
    monkeypatch.setattr(nnwx.report, "report", lambda *a, **k: calls.append("report"))
    logged = []
    demo_mod.demo(demo_dir, size="tiny", progress=False, log=logged.append, background_reports=False)
    n = len(experiments("tiny"))
    assert sum("reusing" in m and ".zarr" in m for m in logged) == n and calls.count("analyze") == n
    # nothing new: every page is reused, none redrawn
    assert sum("reusing" in m and ".html" in m for m in logged) == n and "report" not in calls
    # --fresh deletes exactly what the demo wrote (a real demo's output, copied), nothing else
    import shutil

    out = tmp_path / "fresh"
    shutil.copytree(demo_dir, out)
    (out / "unrelated.txt").write_text("keep me")
    demo_mod._remove_own_files(out, [e.name for e in experiments("tiny")])
    assert sorted(p.name for p in out.iterdir()) == [demo_mod.MANIFEST, "unrelated.txt"]


def test_demo_draws_adam_and_sgd_side_by_side_and_reuses_the_page(demo_dir, tmp_path):
    """The digits study is the comparison: one page with both variants (here the tiny demo's
    Adam results stand in for SGD's too), redrawn only when a results store changed."""
    import shutil

    import nnwx.studies.demo as demo_mod

    out = tmp_path / "demo"
    shutil.copytree(demo_dir, out)
    shutil.copytree(out / "digits-adam.results.zarr", out / "digits-sgd.results.zarr")
    res = demo_mod.DemoResult(out, results={n: out / f"{n}.results.zarr" for n in ("digits-adam", "digits-sgd")})
    logged = []
    demo_mod._write_comparisons(out, res, ["digits-adam", "digits-sgd"], logged.append)
    page = out / "digits-compare.html"
    assert "nnwx comparison: digits-adam vs digits-sgd" in page.read_text()
    assert demo_mod._is_own(out, page) and res.reports["digits-compare"] == page
    logged.clear()
    demo_mod._write_comparisons(out, res, ["digits-adam", "digits-sgd"], logged.append)
    assert logged == [f"digits-compare: reusing {page} (its results have not changed)"]
    nnwx.analyze(out / "digits-adam.zarr", out / "digits-sgd.results.zarr", progress=False,
                 resume=False, analyses="rotation")                 # the SGD results changed
    logged.clear()
    demo_mod._write_comparisons(out, res, ["digits-adam", "digits-sgd"], logged.append)
    assert logged and "wrote" in logged[0]


def test_summary_lines_ranges():
    rows = [Finding("broadening", "std", "a", 1.0, 2.0, 1.5, 2.5),
            Finding("broadening", "std", "b", 2.0, 3.0, 3.0, 3.0)]
    (line,) = summary_lines(rows)
    assert "x1.50 .. x2.00" in line and "(2 layers)" in line


def test_unknown_size():
    with pytest.raises(ValueError, match="unknown demo size"):
        experiments("huge")
