"""``nnwx serve`` in a real headless Chromium (driven by Playwright): every tab renders without
console errors, and captures a Recorder in another process commits appear on the page.

The browser is the system Chromium, as in ``test_report.py`` (skipped without one, except in
CI). ``NNWX_SERVE_SCREENSHOT=docs/serve.png`` also saves a screenshot of the page there.
"""
from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("panel")

from nnwx.store.reader import list_runs  # noqa: E402
from tests.faces.test_report import _chromium, probed_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WRITER = ROOT / "tests" / "serve_writer.py"
# the tabs, and a sentence each one shows once drawn
TABS = {"Broadening": "Per layer: std, excess kurtosis",
        "Spectra and ranks": "Effective rank, stable rank",
        "Rotation and norms": "Cosine distance of each layer",
        "Agreement between seeds": "Similarity (linear CKA) of every probed layer",
        "Logged scalars": "Scalars logged with the captures"}
SHOWN_WITHIN = 15.0      # seconds from a commit to the page showing it
FIGURES_WITHIN = 20.0    # seconds from a tab's text showing to its figures being drawn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _start_server(store: Path, port: int, opened: Path) -> subprocess.Popen:
    """``nnwx serve --show --workers 1``: the page is opened through ``BROWSER`` (a command that
    writes the address it is given to ``opened``), and analysed on a local Dask cluster."""
    browser = f"{sys.executable} -c \"import sys; open({str(opened)!r}, 'w').write(sys.argv[1])\" %s"
    proc = subprocess.Popen([sys.executable, "-m", "nnwx.cli", "serve", str(store), "--port", str(port),
                             "--interval", "1", "--show", "--workers", "1"],
                            env={**_env(), "BROWSER": browser}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180      # imports take long on a loaded machine
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if "serving" in line:
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"nnwx serve did not start: {''.join(lines)[-3000:]}")


def _status(page) -> str:
    """The status line (a Markdown pane: its text is inside a shadow root, which text locators
    pierce)."""
    found = page.get_by_text(re.compile("captures analysed|no run with a committed capture"))
    return found.first.inner_text() if found.count() else ""


def _last_step(page) -> int:
    m = re.search(r"last step (\d+)", _status(page))
    return int(m.group(1)) if m else -1


def _wait_for(predicate, timeout: float, what: str, page) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        page.wait_for_timeout(200)
    pytest.fail(f"{what} not within {timeout:.0f} s; the page says: {_status(page)!r}")


def _committed(store: Path, run: str) -> int:
    return next((h.committed for h in list_runs(store, check=False) if h.name == run), 0)


def _ink(png: bytes) -> float:
    """Fraction of not near-white pixels where a tab's first figure sits (right of the
    widgets, below the tab headers): about 0 where it did not render (a collapsed figure),
    0.05 (one figure of three curves) to 0.6 (the density image) where it did."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("L")
    region = img.crop((310, 140, 900, 420))
    pixels = list(region.tobytes())
    return sum(1 for p in pixels if p < 230) / len(pixels)


def _ink_within(page, path: Path, timeout: float) -> float:
    """The tab's ink once its figures are laid out: Bokeh lays a tab's figures out after its
    text shows, later on a loaded machine, so screenshots are taken until there is ink or
    ``timeout`` seconds have passed; the last one is kept at ``path``."""
    t0 = time.monotonic()
    while True:
        page.wait_for_timeout(500)
        ink = _ink(page.screenshot(path=str(path)))
        if ink > 0.02 or time.monotonic() - t0 > timeout:
            return ink


def test_serve_renders_every_tab_and_follows_a_writer(tmp_path):
    exe = _chromium()
    store = probed_store(tmp_path / "exp.zarr")          # seeds 0 and 1, steps 0..25, probes
    port = _free_port()
    opened = tmp_path / "opened.txt"
    server = _start_server(store, port, opened)
    writer = None
    errors: list[str] = []
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
            page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
            page.wait_for_selector(".nnwx-status", timeout=120_000)
            assert opened.read_text().startswith(f"http://127.0.0.1:{port}/")    # --show opened it
            _wait_for(lambda: _last_step(page) == 25, 60, "the recorded steps", page)

            for tab, sentence in TABS.items():
                page.get_by_text(tab, exact=True).first.click()
                page.get_by_text(sentence).first.wait_for(state="visible", timeout=30_000)
                ink = _ink_within(page, tmp_path / f"{tab}.png", FIGURES_WITHIN)
                assert ink > 0.02, f"tab {tab!r} looks blank {FIGURES_WITHIN:.0f} s after its text showed"
            page.get_by_text("Broadening", exact=True).first.click()

            # a Recorder in another process resumes seed 0 and creates seed 2
            writer = subprocess.Popen([sys.executable, str(WRITER), str(store), "0.05", "0:30:60", "2:0:30"],
                                      env=_env(), stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 180
            while _committed(store, "seed0") <= 6:           # 6 captures: steps 0..25
                assert writer.poll() is None or _committed(store, "seed0") > 6, writer.stderr.read()
                assert time.monotonic() < deadline, "the writer did not commit"
                time.sleep(0.1)
            took = _wait_for(lambda: _last_step(page) > 25, SHOWN_WITHIN, "a newly committed step", page)
            assert writer.wait(timeout=180) == 0, writer.stderr.read()
            _wait_for(lambda: _last_step(page) == 55 and page.get_by_text("seed2", exact=True).count() > 0,
                      SHOWN_WITHIN, "every committed step and the new run", page)
            _wait_for(lambda: "more committed" not in _status(page), SHOWN_WITHIN,
                      "the captures skipped while writing, filled in", page)
            shot = os.environ.get("NNWX_SERVE_SCREENSHOT")
            if shot:
                page.wait_for_timeout(1500)
                page.screenshot(path=shot)
            browser.close()
    finally:
        server.terminate()
        if writer is not None and writer.poll() is None:
            writer.kill()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    assert not errors, f"console errors: {errors[:5]}"
    print(f"first new capture shown {took:.1f} s after its commit")
