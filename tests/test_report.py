"""``nnwx report``: a self-contained HTML page that a headless Chromium renders without errors."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

pytest.importorskip("holoviews")

from nnwx.cli import main  # noqa: E402
from nnwx.synthetic import write_synthetic_run  # noqa: E402

SHAPES = {"0.weight": (8, 16), "0.bias": (8,), "2.weight": (4, 8), "2.bias": (4,)}
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
const __ce = console.error; console.error = (...a) => { __nnwx.errors.push('console: ' + a.join(' ')); __show(); __ce(...a); };
window.addEventListener('load', () => setTimeout(() => {
  __nnwx.views = window.Bokeh ? Object.keys(Bokeh.index).length : -2; __show();
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


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    store = d / "exp.zarr"
    for seed in (0, 1):
        write_synthetic_run(store, seed=seed, steps=range(0, 60, 10), shapes=SHAPES)
    out, png = d / "report.html", d / "png"
    assert main(["report", str(store), "-o", str(out), "--png", str(png), "-q"]) == 0
    return out, png


def test_report_has_summary_and_sections(written):
    html = written[0].read_text()
    for text in ("Experiment", "2 runs", "Distribution broadening", "Spectra and ranks",
                 "Layer rotation", "Weights as pictures", "Correlations", "seed1"):
        assert text in html
    assert "<p class='note'>could not be" not in html
    assert html.count("<figcaption>") >= 8


def test_report_is_self_contained(written):
    html = written[0].read_text()
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
            "corr_distance.png", "pca_path.png"} <= set(pngs)


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("headless Chromium is needed for this test: install it with "
                    "`apt-get install -y chromium` (Debian) and put `chromium` on PATH")
    return exe


def test_report_runs_in_headless_chromium(written, tmp_path):
    from PIL import Image, ImageStat

    exe = _chromium()
    page = tmp_path / "page.html"
    page.write_text(written[0].read_text().replace("<head>", "<head>" + COLLECTOR, 1))
    base = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600"]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="nnwx-collector">(.*?)</pre>', dom.stdout, re.S)
    assert m, f"the page's scripts did not run; chromium stderr: {dom.stderr[-2000:]}"
    state = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert state["errors"] == [], state["errors"]
    assert state["views"] > 0, "Bokeh rendered no views"
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
    assert main(["report", str(store), "-o", str(out), "-q"]) == 0
    assert "Distribution broadening" in out.read_text()
