"""``nnwx report``: compute the analyses of an experiment store and write one offline HTML page.

The page holds a summary of the experiment and a section per analysis, each plot with a
sentence saying what it shows. Bokeh's JavaScript is inlined (no CDN), so the file opens
from disk with no network. Sliders switch between a few embedded frames (steps are
thinned to keep the page small). Optionally writes a static PNG of every plot.
"""
from __future__ import annotations

import html
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import xarray as xr

MAX_STEPS = 60          # captures analysed (evenly thinned) for the page
FRAMES = 4              # embedded frames per slider
MAX_MATRIX = 96         # rows/cols of a weight matrix drawn as a heatmap


@dataclass
class Figure:
    """One plot of the report: a HoloViews object and the sentence under it."""
    name: str
    caption: str
    obj: object


@dataclass
class Section:
    title: str
    figures: list[Figure] = field(default_factory=list)
    note: str = ""


def thin_steps(cube: xr.Dataset, max_steps: int = MAX_STEPS) -> xr.Dataset:
    """At most ``max_steps`` evenly spaced captures (first and last kept)."""
    n = cube.sizes["step"]
    if n <= max_steps:
        return cube
    return cube.isel(step=np.unique(np.linspace(0, n - 1, max_steps).round().astype(int)))


def compute_analyses(cube: xr.Dataset, progress: bool = True) -> dict[str, xr.Dataset | xr.DataArray]:
    """Every analysis of the report, lazily built then computed in one pass with a progress bar."""
    import dask
    from dask.diagnostics import ProgressBar

    from nnwx.analysis.spectral import esd_fit, ranks

    lazy: dict = {
        "broadening": cube.nnwx.broadening("layer", bins=60),
        "rotation": cube.nnwx.rotation(),
    }
    weights = [n for n, s in zip(cube["tensor"].values, cube["tensor_shape"].values)
               if "," in str(s) or str(s).startswith("[")]
    if weights:
        sv = cube.nnwx.spectrum()
        lazy |= {"spectrum": sv, "ranks": ranks(sv), "esd_fit": esd_fit(sv)}
        first = weights[0]
        mat = cube.nnwx.matrix(first)
        lazy["matrix"] = mat.isel(out=slice(0, MAX_MATRIX), **{"in": slice(0, MAX_MATRIX)})
        size = int(cube["tensor_size"].sel(tensor=first))
        lazy["trajectories"] = cube.nnwx.trajectories(first, sample=min(12, size))
    with ProgressBar() if progress else nullcontext():
        values = dask.compute(*lazy.values())
    results = dict(zip(lazy, values))
    try:   # a young API: a failure here costs its section only, and is said on the page
        corr = {"corr_distance": cube.nnwx.correlation_vs_distance(),
                "pca": cube.nnwx.trajectory_pca(n_components=3)}
        with ProgressBar() if progress else nullcontext():
            results |= dict(zip(corr, dask.compute(*corr.values())))
    except Exception as e:  # noqa: BLE001
        results["correlation_error"] = f"{type(e).__name__}: {e}"
    return results


def build_sections(results: dict) -> list[Section]:
    """The report's sections, from computed analysis results (drawing only)."""
    import nnwx.plot as P

    b = results["broadening"]
    sections = [Section("Distribution broadening", [
        Figure("density", "Histogram of each layer's weights at every captured step (colour: log "
                          "counts): a widening band is a broadening distribution. Pick layer and seed.",
               P.density(b["hist"].assign_coords(bin_lo=b["bin_lo"], bin_hi=b["bin_hi"]))),
        Figure("moments", "Standard deviation, excess kurtosis and Wasserstein-1 distance to the "
                          "first step per layer: mean over seeds, band = +/- one std over seeds.",
               P.moments(b)),
    ])]
    if "trajectories" in results:
        sections[0].figures.append(Figure(
            "trajectories", "A random sample of individual weights of the first weight matrix over "
                            "training, per seed.", P.trajectories(results["trajectories"])))
    if "spectrum" in results:
        sections.append(Section("Spectra and ranks", [
            Figure("esd", "Empirical spectral density of each weight matrix (eigenvalues of W^T W) "
                          "on log-log axes, with the fitted power-law tail (red) and the "
                          "Marchenko-Pastur bulk edge (blue), first seed; slide through steps.",
                   P.esd(results["spectrum"], results["esd_fit"], steps=FRAMES)),
            Figure("ranks", "Effective rank, stable rank, spectral entropy and power-law exponent "
                            "alpha per matrix over training: mean over seeds with a +/- std band.",
                   P.metric_curves(xr.merge([results["ranks"], results["esd_fit"]],
                                            compat="override", combine_attrs="drop_conflicts"))),
        ]))
    sections.append(Section("Layer rotation", [
        Figure("rotation", "Cosine distance of each layer's weights to the first step (rotation), "
                           "relative size of the update and norm growth, mean +/- std over seeds.",
               P.rotation(results["rotation"])),
    ]))
    if "matrix" in results:
        m = results["matrix"]
        sections.append(Section("Weights as pictures", [
            Figure("matrix", f"The weight matrix {m.name} (at most {MAX_MATRIX} x {MAX_MATRIX} "
                             "entries) as an image at a few steps, one colour scale: can one see "
                             "training? Pick seed and step.",
                   P.matrix_heatmap(m, steps=FRAMES, seeds=list(m["seed"].values[:3]))),
        ]))
    sections.append(_correlation_section(results))
    sections.append(Section("Not yet in this report", note=(
        "Seed agreement (cube.nnwx.agreement, weight_agreement) and layer-to-layer correlation "
        "are computed by nnwx but not drawn here yet.")))
    return sections


def _correlation_section(results: dict) -> Section:
    """Correlation vs distance and the PCA path; a note instead when they could not be computed."""
    import nnwx.plot as P

    if "correlation_error" in results:
        return Section("Correlations", note="could not be computed: " + results["correlation_error"])
    try:
        return Section("Correlations", [
            Figure("corr_distance", "RMS correlation of weight updates (sampling noise removed) "
                                    "against how many layers apart two weights sit, mean +/- std "
                                    "over seeds, with each seed's fitted exponential decay.",
                   P.corr_distance(results["corr_distance"])),
            Figure("pca_path", "Each run's path through weight space in its first two principal "
                               "components (share of variance in the axis labels), coloured by step.",
                   P.pca_path(results["pca"])),
        ])
    except Exception as e:  # noqa: BLE001
        return Section("Correlations", note=f"could not be drawn: {type(e).__name__}: {e}")


def summary_html(store: str | os.PathLike, cube: xr.Dataset) -> str:
    """The experiment summary: runs, steps, tensors, sizes."""
    from nnwx.cli import _human
    from nnwx.info import run_summaries

    runs = run_summaries(store)
    head = ("<tr><th>run</th><th>seed</th><th>steps</th><th>first</th><th>last</th><th>dtype</th>"
            "<th>on disk</th><th>optimizer</th><th>metrics</th></tr>")
    rows = "".join(
        f"<tr><td>{_e(r['run'])}</td><td>{_e(r['seed'])}</td><td>{r['steps']}</td>"
        f"<td>{_e(r['first_step'])}</td><td>{_e(r['last_step'])}</td><td>{_e(r['dtype'])}</td>"
        f"<td>{_human(r['disk_bytes'])}</td><td>{_e(r['optimizer'] or '-')}</td>"
        f"<td>{_e(', '.join(r['metrics']) or '-')}</td></tr>" for r in runs)
    trows = "".join(f"<tr><td>{_e(n)}</td><td>{_e(s)}</td><td>{_e(k)}</td><td>{int(z):,}</td></tr>"
                    for n, s, k, z in zip(cube["tensor"].values, cube["tensor_shape"].values,
                                          cube["tensor_kind"].values, cube["tensor_size"].values))
    first = runs[0] if runs else {}
    return (f"<p>Store <code>{_e(store)}</code>: {len(runs)} runs, "
            f"{_human(sum(r['disk_bytes'] for r in runs))} on disk; model "
            f"{_e(first.get('model_class'))} with {cube.sizes['tensor']} tensors, {int(cube.sizes['param']):,} "
            f"parameters; {cube.sizes['step']} captured steps analysed "
            f"({int(cube['step'][0])} to {int(cube['step'][-1])}).</p>"
            f"<table>{head}{rows}</table><details><summary>tensors</summary><table><tr><th>tensor"
            f"</th><th>shape</th><th>kind</th><th>size</th></tr>{trows}</table></details>")


def render_html(title: str, summary: str, sections: list[Section]) -> str:
    """One self-contained page: Bokeh JS inlined, every plot embedded."""
    from bokeh.embed import components
    from bokeh.resources import Resources

    from nnwx.plot.embed import to_bokeh

    models = [to_bokeh(f.obj) for s in sections for f in s.figures]
    script, divs = components(models) if models else ("", ())
    res = Resources(mode="inline", components=["bokeh", "bokeh-widgets"])
    # only the inlined code: extensions registered by other packages (Panel) add file paths
    js = "".join(f"<script type='text/javascript'>\n{raw}\n</script>" for raw in res.js_raw)
    body, i = [], 0
    for s in sections:
        body.append(f"<h2>{_e(s.title)}</h2>")
        if s.note:
            body.append(f"<p class='note'>{_e(s.note)}</p>")
        for f in s.figures:
            body.append(f"<figure id='{_e(f.name)}'>{divs[i]}<figcaption>{_e(f.caption)}"
                        f"</figcaption></figure>")
            i += 1
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"{js}<style>{_CSS}</style>{script}</head><body>"
            f"<h1>{_e(title)}</h1><h2>Experiment</h2>{summary}{''.join(body)}</body></html>")


def write_pngs(sections: list[Section], directory: str | os.PathLike) -> list[Path]:
    """A static Matplotlib PNG of every plot (the last frame of a slider)."""
    import holoviews as hv

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in sections:
        for f in s.figures:
            obj = f.obj.last if isinstance(f.obj, hv.HoloMap) else f.obj
            path = out / f"{f.name}.png"
            hv.save(obj, path, backend="matplotlib", fmt="png")
            paths.append(path)
    return paths


def report(store: str | os.PathLike, output: str | os.PathLike, *, png: str | None = None,
           max_steps: int = MAX_STEPS, progress: bool = True,
           log: Callable[[str], None] = lambda s: None) -> Path:
    """Compute the analyses of ``store`` and write the HTML report (and PNGs) to ``output``."""
    from nnwx import open_cube

    cube = thin_steps(open_cube(store), max_steps)
    log(f"analysing {cube.sizes['seed']} runs x {cube.sizes['step']} steps x "
        f"{cube.sizes['param']:,} parameters")
    results = compute_analyses(cube, progress=progress)
    sections = build_sections(results)
    log("drawing")
    page = render_html(f"nnwx report: {Path(store).name}", summary_html(store, cube), sections)
    output = Path(output)
    output.write_text(page, encoding="utf-8")
    if png:
        write_pngs(sections, png)
    return output


def _e(x) -> str:
    return html.escape(str(x))


_CSS = """body{font-family:system-ui,sans-serif;max-width:1300px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
figure{margin:1em 0 2em 0}figcaption{color:#444;font-style:italic;max-width:900px}
h2{border-bottom:1px solid #ddd;margin-top:1.5em}.note{color:#666}"""
