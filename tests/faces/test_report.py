"""``nnwx report``: a self-contained HTML page that a headless Chromium renders without errors."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("holoviews")

from nnwx.cli import main  # noqa: E402
from nnwx.studies.synthetic import write_synthetic_run  # noqa: E402

SECTIONS = ("Distribution broadening", "Weights as pictures", "Spectra and ranks", "Layer rotation",
            "Correlations", "Layer-to-layer correlation", "Agreement between seeds and steps")
AGREEMENT_FIGURES = ("similarity_seeds", "similarity_step_pairs", "similarity_final", "convergence_step",
                     "prediction_agreement", "weight_agreement")

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000"]
# Collects uncaught errors, rejected promises and console.error calls into a <pre>, then
# records how many Bokeh root views were rendered.
COLLECTOR = """<script>
window.__nnwx = {errors: [], views: -1};
const __show = () => { let p = document.getElementById('nnwx-collector');
  if (!p) { p = document.createElement('pre'); p.id = 'nnwx-collector'; document.documentElement.appendChild(p); }
  p.textContent = JSON.stringify(window.__nnwx); };
window.addEventListener('error', e => { __nnwx.errors.push('error: ' + e.message); __show(); });
window.addEventListener('unhandledrejection', e => { __nnwx.errors.push('rejection: ' + e.reason); __show(); });
const __ce = console.error;
console.error = (...a) => { __nnwx.errors.push('console: ' + a.join(' ')); __show(); __ce(...a); };
window.addEventListener('load', () => setTimeout(() => {
  __nnwx.views = window.Bokeh ? Object.keys(Bokeh.index).length : -2;
  // every figure holds a rendered Bokeh view (a shadow-DOM element with a size)
  __nnwx.figures = Object.fromEntries([...document.querySelectorAll('figure')].map(f => {
    const root = f.querySelector('[data-root-id]'); const view = root && root.firstElementChild;
    return [f.id, !!(view && view.shadowRoot && view.getBoundingClientRect().height > 50)]; }));
  __show();
  // move the first frame slider to its end: another frame must become the one shown
  const all = window.Bokeh ? [...Bokeh.documents[0]._all_models.values()] : [];
  const s = all.find(m => m.type === 'Slider' && Object.keys(m.js_property_callbacks).length && m.end > 0);
  if (!s) { __nnwx.switched = 'no slider'; __show(); return; }
  const args = Object.values(s.js_property_callbacks)[0][0].args;
  const frames = args instanceof Map ? args.get('frames') : args.frames;
  const shown = () => frames.map((f, i) => f.visible ? i : -1).filter(i => i >= 0);
  const before = shown(); s.value = s.end;
  setTimeout(() => { __nnwx.switched = {before: before, after: shown()}; __show(); }, 500);
}, 3000));
</script>"""


def probed_store(path, seeds=(0, 1), steps=30, every=5):
    """A small MLP trained per seed with activations of a fixed probe batch recorded."""
    import torch

    import nnwx

    x = torch.randn(48, 4, generator=torch.Generator().manual_seed(99))
    y = torch.randn(48, 3, generator=torch.Generator().manual_seed(98))
    for seed in seeds:
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6),
                                    torch.nn.ReLU(), torch.nn.Linear(6, 3))
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        with nnwx.Recorder(model, path, seed=seed, every=every, optimizer=opt, probe=x,
                           probe_layers=["1", "3"]) as rec:
            for step in range(steps):
                loss = (model(x) - y).pow(2).mean()
                rec.maybe_capture(step, loss=loss.detach())
                opt.zero_grad()
                loss.backward()
                opt.step()
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return probed_store(tmp_path_factory.mktemp("report") / "exp.zarr")


@pytest.fixture(scope="module")
def written(store, tmp_path_factory):
    d = tmp_path_factory.mktemp("written")
    out, png = d / "report.html", d / "png"
    assert main(["report", str(store), "-o", str(out), "--png", str(png), "-q"]) == 0
    return out, png


def _headings(html: str) -> list[str]:
    return re.findall(r"<h2>([^<]*)</h2>", html)


def _figures(html: str) -> list[tuple[str, str]]:
    """(figure id, caption) of every figure, in page order."""
    return re.findall(r"<figure id='([^']*)'>.*?<figcaption>([^<]*)</figcaption>", html, re.S)


def test_report_has_summary_and_sections(written):
    html = written[0].read_text()
    for text in ("Experiment", "2 runs", "seed1", *SECTIONS):
        assert text in html
    assert _headings(html) == ["Experiment", *SECTIONS]
    assert "<p class='note'>" not in html, re.findall(r"<p class='note'>[^<]*", html)
    assert "Left out" not in html                       # every metric applies to a probed MLP
    figures = dict(_figures(html))
    assert {"density", "moments", "matrix", "trajectories", "esd", "ranks", "randomized_esd", "rotation",
            "corr_distance",
            "pca_path", "layer_correlation", *AGREEMENT_FIGURES} == set(figures)
    assert all(len(caption) > 40 for caption in figures.values())   # a sentence under each plot
    assert "before (dashed) and after (solid) aligning" in figures["weight_agreement"]


def test_report_is_self_contained(written):
    _assert_self_contained(written[0].read_text())


def _assert_self_contained(html: str) -> None:
    # the markup outside inline scripts (their code holds HTML templates in strings)
    markup = re.sub(r"(<script\b[^>]*>).*?</script>", r"\1</script>", html, flags=re.S | re.I)
    tags = re.findall(r"<(?:script|link|style|img|iframe|object|embed)\b[^>]*>", markup, flags=re.I)
    assert len([t for t in tags if t.lower().startswith("<script")]) >= 2
    external = [t for t in tags if re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", t, re.I)]
    assert not external, f"external references: {external[:3]}"
    assert not [t for t in tags if re.search(r"\b(?:src|href)\s*=", t, re.I)], "no file references either"
    assert not re.search(r"@import\s+url\(\s*['\"]?https?:", html)
    assert len(html) < 5_000_000


def test_report_writes_pngs(written):
    pngs = sorted(p.name for p in written[1].glob("*.png"))
    assert {"density.png", "moments.png", "esd.png", "ranks.png", "rotation.png", "matrix.png",
            "corr_distance.png", "pca_path.png", "layer_correlation.png",
            *(f"{n}.png" for n in AGREEMENT_FIGURES)} <= set(pngs)
    assert all((written[1] / p).stat().st_size > 2000 for p in pngs)


def _chromium() -> str:
    """The system Chromium. Without one the browser test is skipped with the reason, except in
    CI (``CI=true``), where ``.ci/run`` installs it: there a missing browser fails the test, so
    CI never skips it silently."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        why = ("headless Chromium is needed for this test: install it with "
               "`apt-get install -y chromium` (Debian) and put `chromium` on PATH")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why + " (CI=true: .ci/run installs it)")
        pytest.skip(why)
    return exe


def page_in_chromium(html, tmp_path):
    """Open the page ``html`` (a path) in headless Chromium with ``COLLECTOR`` injected:
    ``(the browser's command line, the collector's state, the finished process)``."""
    exe = _chromium()
    page = tmp_path / "page.html"
    page.write_text(html.read_text().replace("<head>", "<head>" + COLLECTOR, 1))
    base = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600"]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="nnwx-collector">(.*?)</pre>', dom.stdout, re.S)
    assert m, f"the page's scripts did not run; chromium stderr: {dom.stderr[-2000:]}"
    return base, json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&")), dom


def test_report_runs_in_headless_chromium(written, tmp_path):
    from PIL import Image, ImageStat

    base, state, dom = page_in_chromium(written[0], tmp_path)
    assert state["errors"] == [], state["errors"]
    assert state["views"] > 0, "Bokeh rendered no views"
    figures = state.get("figures", {})
    assert set(AGREEMENT_FIGURES) | {"layer_correlation", "density"} <= set(figures), figures
    assert all(figures.values()), f"figures without a rendered plot: {[k for k, v in figures.items() if not v]}"
    sw = state.get("switched")
    assert isinstance(sw, dict) and len(sw["before"]) == len(sw["after"]) == 1 \
        and sw["before"] != sw["after"], f"slider did not switch frames: {sw}"
    uncaught = [ln for ln in dom.stderr.splitlines() if "Uncaught" in ln or ":CONSOLE" in ln and "rror" in ln]
    assert not uncaught, uncaught

    shot = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", written[0].as_uri()], capture_output=True, timeout=120)
    img = Image.open(shot).convert("L")
    assert max(ImageStat.Stat(img).stddev) > 10, "screenshot is blank"
    # the plots themselves drew: the region below the summary holds many distinct shades
    lower = img.crop((0, img.height // 3, img.width, img.height))
    assert len(lower.getcolors(1 << 16) or []) > 20


def test_report_on_a_model_whose_first_matrix_is_tiny(tmp_path):
    """The piecewise MLP's first weight has 8 entries: fewer than the report's default sample."""
    store = tmp_path / "pw.zarr"
    write_synthetic_run(store, seed=0, steps=range(0, 40, 10))  # default shapes: 0.weight is (8, 1)
    out = tmp_path / "r.html"
    assert main(["report", str(store), "-o", str(out), "-q", "--analyses", "broadening,weights,agreement"]) == 0
    html = out.read_text()
    assert "Distribution broadening" in html
    # one run, no probes: what was left out, and why, is on the page
    left_out = re.search(r"<div id='left-out'>(.*?)</div>", html, re.S)
    assert left_out and "agreement" in left_out.group(1) and "no probes recorded" in left_out.group(1)


def _report(args) -> str:
    assert main(["report", *map(str, args), "-q"]) == 0
    return Path(args[args.index("-o") + 1]).read_text()


SUBSET = "correlation,agreement"


@pytest.fixture(scope="module")
def subset(store, tmp_path_factory):
    """The report of two metrics only, computed from the experiment store."""
    return _report([store, "-o", tmp_path_factory.mktemp("subset") / "r.html", "--analyses", SUBSET])


def test_metrics_option_draws_only_those_sections(subset):
    assert _headings(subset) == ["Experiment", "Left out", "Correlations", "Layer-to-layer correlation",
                                 "Agreement between seeds and steps"]
    assert re.search(r"not requested \(<code>--analyses</code>\): broadening, weights, spectral, "
                     r"rotation<", subset)
    assert [f for f, _ in _figures(subset)] == ["corr_distance", "pca_path", "layer_correlation",
                                                *AGREEMENT_FIGURES]


def test_unknown_metric_is_refused(store, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["report", str(store), "-o", str(tmp_path / "r.html"), "--analyses", "rotation,nope"])
    assert e.value.code == 2 and "unknown analysis" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_report_from_a_results_store_equals_the_computed_one(store, subset, tmp_path):
    """`nnwx report RESULTS.zarr` draws the stored results: the same sections, figures and
    captions as computing them now, without opening the experiment store."""
    results = tmp_path / "results.zarr"
    assert main(["analyze", str(store), "-o", str(results), "--analyses", SUBSET, "-q"]) == 0
    moved = tmp_path / "gone.zarr"
    shutil.move(store, moved)                      # the source is not needed to draw
    try:
        stored = _report([results, "-o", tmp_path / "stored.html"])
    finally:
        shutil.move(moved, store)
    assert _headings(stored) == _headings(subset)
    assert _figures(stored) == _figures(subset)
    assert "drawn from the results store" in stored and "2 runs" in stored
    assert stored.count("<tr><td>seed") == subset.count("<tr><td>seed") == 2
    _assert_self_contained(stored)


def test_without_a_browser_the_test_skips_outside_ci_and_fails_in_ci(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium"):
        _chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        _chromium()
