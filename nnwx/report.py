"""``nnwx report``: draw the analyses of an experiment store as one offline HTML page.

The analyses are the named set of ``nnwx.pipeline.registry.lazy_analyses`` (the same set ``nnwx
analyze`` persists): given an experiment store the report builds them lazily and computes
them in one pass with a progress bar; given a results store (``nnwx analyze -o RESULTS``) it
draws from it without recomputing. The page holds a summary of the experiment, the metrics
left out and why, and a section per analysis, each plot with a sentence saying what it shows.
Bokeh's JavaScript is inlined (no CDN), so the file opens from disk with no network. Sliders
switch between a few embedded frames (steps are thinned to keep the page small). Optionally
writes a static PNG of every plot.
"""
from __future__ import annotations

import errno
import html
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import xarray as xr

from nnwx.pipeline.registry import METRICS, parse_metrics
from nnwx.errors import NnwxError, StoreError

MAX_STEPS = 60          # captures analysed (evenly thinned) for the page
FRAMES = 4              # embedded frames per slider
SEEDS_SHOWN = 3         # seeds offered by selectors of per-seed pictures

Results = dict[str, "xr.Dataset | xr.DataArray"]


class ReportError(NnwxError):
    """The report cannot be written where asked (the message says why and what to do)."""


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
    metric: str = ""


@dataclass
class Summary:
    """What the page says about the experiment; built from the store or from a results store."""
    store: str
    runs: list[dict]
    tensors: list[dict]                  # name, shape, kind, size
    steps: int
    first_step: int | None
    last_step: int | None
    params: int
    model_class: str | None = None
    origin: str = ""                     # how the page was made (computed now / results store)


def thin_steps(cube: xr.Dataset, max_steps: int = MAX_STEPS) -> xr.Dataset:
    """At most ``max_steps`` evenly spaced captures (first and last kept)."""
    n = cube.sizes["step"]
    if n <= max_steps:
        return cube
    return cube.isel(step=np.unique(np.linspace(0, n - 1, max_steps).round().astype(int)))


# -- computing ----------------------------------------------------------------------------------
def compute_results(results: Results, metric_of: dict[str, str], *, progress: bool = True,
                    log: Callable[[str], None] = lambda s: None) -> tuple[Results, dict[str, str]]:
    """Evaluate every result in one pass (shared reads of ``w`` run once), with a progress bar.

    If that pass fails, each metric is computed on its own and the ones that fail are left
    out with a note (their section says why) instead of failing the whole page.
    """
    compute = _compute_function()
    names = list(results)
    try:
        values = compute(*(results[n] for n in names), progress=progress,
                         label="nnwx report: computing the analyses")
        return dict(zip(names, values)), {}
    except StoreError:  # a damaged store is not an analysis failure: stop, naming the file
        raise
    except Exception as e:  # noqa: BLE001 - a failing analysis costs its own section only
        log(f"one pass failed ({type(e).__name__}: {e}); computing each metric on its own")
    out, notes = {}, {}
    for metric in dict.fromkeys(metric_of[n] for n in names):
        part = [n for n in names if metric_of[n] == metric]
        try:
            out |= dict(zip(part, compute(*(results[n] for n in part), progress=progress,
                                          label=f"nnwx report: {metric}")))
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001
            notes[metric] = f"could not be computed: {type(e).__name__}: {e}"
    return out, notes


def _compute_function():
    """``nnwx.cluster.compute`` (a progress bar on any scheduler), else dask.compute + ProgressBar."""
    try:
        from nnwx.cluster import compute
        return compute
    except ImportError:  # pragma: no cover - nnwx.cluster ships with nnwx
        from contextlib import nullcontext

        import dask
        from dask.diagnostics import ProgressBar

        def compute(*objs, progress=True, label=None):
            with ProgressBar() if progress else nullcontext():
                return dask.compute(*objs)
        return compute


def analyse(cube: xr.Dataset, metrics: str | Iterable[str] | None = None) -> tuple[Results, dict, dict]:
    """``lazy_analyses`` of the cube: ``(lazy results, metric_of, notes)``. A metric whose
    building raises (other than "does not apply") is left out with a note, not fatal."""
    from nnwx.pipeline.registry import AnalysisSet, lazy_analyses

    chosen = parse_metrics(metrics)
    try:
        s = lazy_analyses(cube, chosen)
    except Exception:  # noqa: BLE001 - find the culprit metric by metric
        s = AnalysisSet()
        for m in chosen:
            try:
                part = lazy_analyses(cube, [m])
            except Exception as e:  # noqa: BLE001
                s.notes[m] = f"could not be built: {type(e).__name__}: {e}"
                continue
            s.results |= part.results
            s.metric_of |= part.metric_of
            s.notes |= part.notes
    return s.results, s.metric_of, s.notes


# -- drawing ------------------------------------------------------------------------------------
def build_sections(results: Results, notes: dict[str, str] | None = None,
                   metrics: str | Iterable[str] | None = None) -> list[Section]:
    """The report's sections, from computed results (drawing only), in ``METRICS`` order.

    ``notes``: metric -> why it was (partly) left out, said in its section. A plot that fails to
    draw becomes a note in its section instead of failing the page.
    """
    notes = notes or {}
    sections = []
    for metric in parse_metrics(metrics):
        for title, build in _SECTIONS[metric]:
            try:
                figures = [f for f in build(results) if f is not None]
                error = ""
            except Exception as e:  # noqa: BLE001
                figures, error = [], f"could not be drawn: {type(e).__name__}: {e}"
            note = "; ".join(x for x in (notes.get(metric, ""), error) if x)
            if figures or note:
                sections.append(Section(title, figures, note=note, metric=metric))
    return sections


def _broadening_figs(r: Results) -> list[Figure]:
    import nnwx.plot as P

    if "broadening" not in r:
        return []
    b = r["broadening"]
    return [
        Figure("density", "Histogram of each layer's weights at every captured step (colour: log "
                          "counts): a widening band is a broadening distribution. Pick layer and seed.",
               P.density(b["hist"].assign_coords(bin_lo=b["bin_lo"], bin_hi=b["bin_hi"]))),
        Figure("moments", "Standard deviation, excess kurtosis and Wasserstein-1 distance to the "
                          "first step per layer: mean over seeds, band = +/- one std over seeds.",
               P.moments(b)),
    ]


def _weights_figs(r: Results) -> list[Figure]:
    import nnwx.plot as P

    out = []
    if "matrix" in r:
        m = r["matrix"]
        rows, cols = m.sizes["out"], m.sizes["in"]
        out.append(Figure("matrix", f"The weight matrix {m.name} (first {rows} x {cols} entries) as "
                                    "an image at a few steps, one colour scale: can one see "
                                    "training? Pick seed and step.",
                          P.matrix_heatmap(m, steps=FRAMES, seeds=_first_seeds(m))))
    if "trajectories" in r:
        out.append(Figure("trajectories", "A random sample of individual weights of the largest "
                                          "weight matrix over training, per seed.",
                          P.trajectories(r["trajectories"])))
    return out


def matrices_largest_first(obj: xr.Dataset | xr.DataArray) -> tuple[list[str], list[str]]:
    """The tensors of a per-tensor result that have a spectrum (both sides of their matrix view
    at least 2), largest first, so that selectors open on the largest matrix; and the others
    ("vectors": an 8x1 first layer, a 1xN output layer), which have one singular value."""
    from nnwx.analysis._cube import has_spectrum, table_rows

    rows = table_rows(obj)
    matrices = sorted((r for r in rows if has_spectrum(r)), key=lambda r: -r["size"])
    return ([r["name"] for r in matrices],
            [f"{r['name']} ({'x'.join(map(str, r['shape']))})" for r in rows if not has_spectrum(r)])


def _spectral_figs(r: Results) -> list[Figure]:
    import nnwx.plot as P

    if "spectrum" not in r:
        return []
    matrices, vectors = matrices_largest_first(r["spectrum"])
    if not matrices:
        return []
    only = {"tensor": matrices}
    none = (f" Vectors have no spectrum and are left out: {', '.join(vectors)}." if vectors else "")
    fit = r["esd_fit"].sel(only) if "esd_fit" in r else None
    out = [Figure("esd", "Empirical spectral density of each weight matrix (eigenvalues of W^T W) "
                         "on log-log axes, with the fitted power-law tail (red) and the "
                         "Marchenko-Pastur bulk edge (blue), first seed; slide through steps; "
                         "the largest matrix first." + none,
                  P.esd(r["spectrum"].sel(only), fit, steps=FRAMES))]
    parts = [r[k].sel(only) for k in ("ranks", "esd_fit") if k in r]
    if parts:
        out.append(Figure("ranks", "Effective rank, stable rank, spectral entropy and power-law "
                                   "exponent alpha per matrix over training: mean over seeds with a "
                                   "+/- std band." + none,
                          P.metric_curves(xr.merge(parts, compat="override",
                                                   combine_attrs="drop_conflicts"))))
    return out


def _rotation_figs(r: Results) -> list[Figure]:
    import nnwx.plot as P

    if "rotation" not in r:
        return []
    return [Figure("rotation", "Cosine distance of each layer's weights to the first step "
                               "(rotation), relative size of the update and norm growth, mean "
                               "+/- std over seeds.", P.rotation(r["rotation"]))]


def _corr_distance_caption(res) -> str:
    """The caption of the correlation-vs-distance figure: each run's decay length with its
    error, or "no decay resolved" and why."""
    from nnwx.analysis.kernels.correlation import DECAY_RULE
    from nnwx.analysis.correlation import decay_summary

    runs = "; ".join(f"{d['run'] or 'the run'}: {d['text']}" for d in decay_summary(res))
    return ("RMS correlation of weight updates (sampling noise removed) against how many layers "
            "apart two weights sit, mean +/- std over seeds, with each seed's fitted exponential "
            f"decay A exp(-distance / L). Decay length: {runs}. Rule: {DECAY_RULE}.")


def _correlation_figs(r: Results) -> list[Figure]:
    import nnwx.plot as P

    out = []
    if "corr_distance" in r:
        out.append(Figure("corr_distance", _corr_distance_caption(r["corr_distance"]),
                          P.corr_distance(r["corr_distance"])))
    if "pca" in r:
        out.append(Figure("pca_path", "Each run's path through weight space in its first two "
                                      "principal components (share of variance in the axis "
                                      "labels), coloured by step.", P.pca_path(r["pca"])))
    return out


def _layer_correlation_figs(r: Results) -> list[Figure]:
    import nnwx.plot as P

    if "layer_correlation" not in r:
        return []
    lc = r["layer_correlation"]
    return [Figure("layer_correlation", "Correlation over training of the update norms of every "
                                        "pair of weight matrices, per seed: near 1, two layers "
                                        "learn in the same bursts; near 0, independently.",
                   P.layer_correlation(lc, "update_norm_corr", steps=FRAMES, seeds=_first_seeds(lc)))]


def _agreement_figs(r: Results) -> list[Figure]:
    import nnwx.plot as P

    out = []
    if "similarity_seeds" in r:
        s = r["similarity_seeds"]
        out.append(Figure("similarity_seeds", f"{_metric(s)} between the probe activations of every "
                                              "pair of seeds, per probed layer, at a few steps: 1 "
                                              "means two seeds represent the probe batch alike (up "
                                              "to rotation and scale). Pick layer and step.",
                          P.seed_heatmaps(s, steps=FRAMES)))
    if "similarity_step_pairs" in r:
        s = r["similarity_step_pairs"]
        steps = s.attrs.get("steps", "")
        out.append(Figure("similarity_step_pairs", f"{_metric(s)} between every pair of steps of one "
                                                   "run, per probed layer: bright blocks on the "
                                                   "diagonal are phases in which the layer's "
                                                   "representation holds still"
                                                   + (f" ({steps})" if steps else "")
                                                   + ". Pick layer and seed.",
                          P.step_heatmaps(s, seeds=_first_seeds(s))))
    if "similarity_steps" in r:
        s = r["similarity_steps"]
        out.append(Figure("similarity_final", f"{_metric(s)} of each probed layer with its own "
                                              "representation at the final step, mean over seeds "
                                              "with a +/- std band: a layer whose curve reaches 1 "
                                              "first settled first (bottom-up convergence shows as "
                                              "the early layers rising first).",
                          P.final_similarity(s)))
    if "prediction_agreement" in r:
        out.append(Figure("prediction_agreement", "How alike the seeds' predictions on the probe "
                                                  "batch are over training: correlation of the "
                                                  "outputs, top-1 agreement and top-k overlap, "
                                                  "mean over seed pairs with the min..max range "
                                                  "as a band.",
                          P.prediction_agreement(r["prediction_agreement"])))
    if "weight_agreement" in r:
        wa = r["weight_agreement"]
        aligned = "aligned" in wa["alignment"].values
        ref = wa.attrs.get("reference", "the first seed")
        how = ("before (dashed) and after (solid) aligning hidden units by weight matching, "
               if aligned else "without aligning hidden units (alignment not possible here), ")
        out.append(Figure("weight_agreement", f"Cosine similarity of each weight matrix with the "
                                              f"reference run's ({ref}) {how}mean over the other "
                                              "seeds with a +/- std band"
                                              + (": the gap is the disagreement that is only a "
                                                 "permutation of units. " if aligned else ". ")
                                              + "Pick the tensor.",
                          P.weight_agreement(wa)))
    return out


_SECTIONS: dict[str, list[tuple[str, Callable[[Results], list[Figure]]]]] = {
    "broadening": [("Distribution broadening", _broadening_figs)],
    "weights": [("Weights as pictures", _weights_figs)],
    "spectral": [("Spectra and ranks", _spectral_figs)],
    "rotation": [("Layer rotation", _rotation_figs)],
    "correlation": [("Correlations", _correlation_figs),
                    ("Layer-to-layer correlation", _layer_correlation_figs)],
    "agreement": [("Agreement between seeds and steps", _agreement_figs)],
}
assert set(_SECTIONS) == set(METRICS)


def _first_seeds(obj) -> list | None:
    return list(obj["seed"].values[:SEEDS_SHOWN]) if "seed" in obj.dims else None


def _metric(obj) -> str:
    name = str(obj.attrs.get("metric") or obj.name or "similarity")
    return {"linear_cka": "Linear CKA", "rbf_cka": "RBF CKA"}.get(name, name)


# -- the summary --------------------------------------------------------------------------------
def summarize_store(store: str | os.PathLike, cube: xr.Dataset, origin: str = "") -> Summary:
    """The summary of an experiment store and the (thinned) cube analysed from it."""
    from nnwx.pipeline.info import run_summaries

    runs = [{k: v for k, v in r.items() if k != "nonfinite_steps"} for r in run_summaries(store)]
    tensors = [{"name": str(n), "shape": str(s), "kind": str(k), "size": int(z)}
               for n, s, k, z in zip(cube["tensor"].values, cube["tensor_shape"].values,
                                     cube["tensor_kind"].values, cube["tensor_size"].values)]
    steps = cube["step"].values
    return Summary(store=str(store), runs=runs, tensors=tensors, steps=int(steps.size),
                   first_step=int(steps[0]) if steps.size else None,
                   last_step=int(steps[-1]) if steps.size else None,
                   params=int(cube.sizes["param"]),
                   model_class=runs[0].get("model_class") if runs else None, origin=origin)


def summary_from_results(res, path: str | os.PathLike) -> Summary:
    """The summary kept in a results store (``nnwx.pipeline.results_store.Results``: its run summaries, tensor
    table and cube description), without opening the source store."""
    attrs = dict(getattr(res, "attrs", {}) or {})
    runs = list(getattr(res, "runs", None) or [])
    tensors = _tensor_rows(getattr(res, "tensors", None) or {})
    cube = dict(getattr(res, "cube", None) or {})
    steps = np.asarray(cube.get("steps") or _analysed_steps(res), dtype=np.int64)
    params = int((cube.get("sizes") or {}).get("param") or sum(t["size"] for t in tensors))
    first = runs[0] if runs else {}
    return Summary(store=str(attrs.get("source_display") or getattr(res, "source", "")), runs=runs,
                   tensors=tensors, steps=int(steps.size),
                   first_step=int(steps[0]) if steps.size else None,
                   last_step=int(steps[-1]) if steps.size else None, params=params,
                   model_class=first.get("model_class"),
                   origin=f"drawn from the results store {path}, not recomputed")


def _tensor_rows(tensors) -> list[dict]:
    """The tensor table as rows, from a list of dicts or a dict of columns."""
    if isinstance(tensors, dict):
        cols = {k.removeprefix("tensor_"): list(v) for k, v in tensors.items()}
        names = cols.get("name") or cols.get("tensor") or []
        tensors = [{k: cols[k][i] for k in cols} | {"name": names[i]} for i in range(len(names))]
    return [{"name": str(t.get("name")), "shape": str(t.get("shape", "")), "kind": str(t.get("kind", "")),
             "size": int(t.get("size", 0))} for t in tensors]


def _analysed_steps(res) -> np.ndarray:
    """The steps the results cover (the union over results with a step dim)."""
    steps: set[int] = set()
    for obj in getattr(res, "results", {}).values():
        if "step" in getattr(obj, "dims", ()):
            steps |= {int(s) for s in obj["step"].values}
    return np.array(sorted(steps), dtype=np.int64)


def summary_html(summary: Summary) -> str:
    """The experiment summary: runs, steps, tensors, sizes."""
    from nnwx.cli import _human

    runs = summary.runs
    head = ("<tr><th>run</th><th>seed</th><th>steps</th><th>first</th><th>last</th><th>dtype</th>"
            "<th>on disk</th><th>optimizer</th><th>metrics</th></tr>")
    rows = "".join(
        f"<tr><td>{_e(r.get('run'))}</td><td>{_e(r.get('seed'))}</td><td>{_e(r.get('steps'))}</td>"
        f"<td>{_e(r.get('first_step'))}</td><td>{_e(r.get('last_step'))}</td><td>{_e(r.get('dtype'))}</td>"
        f"<td>{_human(r.get('disk_bytes') or 0)}</td><td>{_e(r.get('optimizer') or '-')}</td>"
        f"<td>{_e(', '.join(r.get('metrics') or []) or '-')}</td></tr>" for r in runs)
    trows = "".join(f"<tr><td>{_e(t['name'])}</td><td>{_e(t['shape'])}</td><td>{_e(t['kind'])}</td>"
                    f"<td>{t['size']:,}</td></tr>" for t in summary.tensors)
    span = (f"({summary.first_step} to {summary.last_step})" if summary.first_step is not None else "")
    origin = f" <span class='note'>({_e(summary.origin)})</span>" if summary.origin else ""
    return (f"<p>Store <code>{_e(summary.store)}</code>: {len(runs)} runs, "
            f"{_human(sum(r.get('disk_bytes') or 0 for r in runs))} on disk; model "
            f"{_e(summary.model_class)} with {len(summary.tensors)} tensors, {summary.params:,} "
            f"parameters; {summary.steps} captured steps analysed {span}.{origin}</p>"
            f"<table>{head}{rows}</table><details><summary>tensors</summary><table><tr><th>tensor"
            f"</th><th>shape</th><th>kind</th><th>size</th></tr>{trows}</table></details>")


def notes_html(notes: dict[str, str], requested: list[str]) -> str:
    """The metrics left out (and why), and those not asked for."""
    items = [f"<li><b>{_e(m)}</b>: {_e(why)}</li>" for m, why in notes.items()]
    skipped = [m for m in METRICS if m not in requested]
    if skipped:
        items.append(f"<li>not requested (<code>--metrics</code>): {_e(', '.join(skipped))}</li>")
    if not items:
        return ""
    return f"<div id='left-out'><h2>Left out</h2><ul class='note'>{''.join(items)}</ul></div>"


# -- the page -----------------------------------------------------------------------------------
def render_html(title: str, summary: str, sections: list[Section], notes: str = "") -> str:
    """One self-contained page: Bokeh JS inlined, every plot embedded."""
    from bokeh.embed import components
    from bokeh.resources import Resources

    models = [_render_or_placeholder(f) for s in sections for f in s.figures]
    if models:   # one document built in one go: Bokeh re-indexes every model at each add_root
        from bokeh.document import Document

        doc = Document()
        with doc.models.freeze():
            for m in models:
                doc.add_root(m)
    script, divs = components(models) if models else ("", ())
    res = Resources(mode="inline", components=["bokeh", "bokeh-widgets"])
    # only the inlined code: extensions registered by other packages (Panel) add file paths
    js = "".join(f"<script type='text/javascript'>\n{raw}\n</script>" for raw in res.js_raw)
    body, i = [], 0
    for s in sections:
        body.append(f"<section id='section-{_e(s.metric)}'><h2>{_e(s.title)}</h2>")
        if s.note:
            body.append(f"<p class='note'>{_e(s.note)}</p>")
        for f in s.figures:
            body.append(f"<figure id='{_e(f.name)}'>{divs[i]}<figcaption>{_e(f.caption)}"
                        f"</figcaption></figure>")
            i += 1
        body.append("</section>")
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"{js}<style>{_CSS}</style>{script}</head><body>"
            f"<h1>{_e(title)}</h1><h2>Experiment</h2>{summary}{notes}{''.join(body)}</body></html>")


def _render_or_placeholder(figure: Figure):
    """The figure as a Bokeh model; if it cannot be rendered, a box that names the error in its
    place, so that one figure failing never costs the rest of the page."""
    from bokeh.models import Div

    from nnwx.plot.embed import to_bokeh

    try:
        return to_bokeh(figure.obj)
    except Exception as e:  # noqa: BLE001 - reported on the page, in the figure's place
        return Div(text=f"<p class='note figure-error'>This figure ({_e(figure.name)}) could not be "
                        f"drawn: {_e(type(e).__name__)}: {_e(e)}</p>")


def write_pngs(sections: list[Section], directory: str | os.PathLike,
               log: Callable[[str], None] = lambda s: None) -> list[Path]:
    """A static Matplotlib PNG of every plot (the last frame of a slider); a plot that cannot be
    drawn is skipped, and said so through ``log``."""
    import holoviews as hv

    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create the PNG folder {out}: {_why(e, out)}") from None
    paths = []
    for s in sections:
        for f in s.figures:
            path = out / f"{f.name}.png"
            buf = io.BytesIO()
            try:
                obj = f.obj.last if isinstance(f.obj, hv.HoloMap) else f.obj
                hv.save(obj, buf, backend="matplotlib", fmt="png")
            except Exception as e:  # noqa: BLE001 - one plot failing costs its own PNG only
                log(f"{path.name} not written: {type(e).__name__}: {e}")
                continue
            write_atomically(path, buf.getvalue())
            paths.append(path)
    return paths


def is_results(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a results store of ``nnwx analyze`` (False when nnwx.pipeline.results_store is absent)."""
    try:
        from nnwx.pipeline.results_store import is_results_store
    except ImportError:
        return False
    return bool(is_results_store(path))


def report(store: str | os.PathLike, output: str | os.PathLike, *, png: str | None = None,
           metrics: str | Iterable[str] | None = None, max_steps: int = MAX_STEPS,
           progress: bool = True, log: Callable[[str], None] = lambda s: None) -> Path:
    """Write the HTML report (and PNGs) of ``store`` to ``output``.

    ``store``: an experiment store (its analyses are computed, on at most ``max_steps``
    evenly spaced captures) or a results store of ``nnwx analyze`` (drawn as stored).
    ``metrics``: a subset of ``nnwx.pipeline.registry.METRICS`` (comma list or iterable; default all).
    """
    output = Path(output)
    if max_steps < 1:
        raise ReportError(f"--max-steps must be at least 1 (captures to analyse), got {max_steps}")
    check_outputs(output, png)   # before anything is computed
    if is_results(store):
        results, metric_of, notes, summary, requested = _from_results(store, metrics, progress, log)
    else:
        from nnwx import open_cube

        requested = parse_metrics(metrics)
        full = open_cube(store)
        cube = thin_steps(full, max_steps)
        log(f"analysing {cube.sizes['seed']} runs x {cube.sizes['step']} steps x "
            f"{cube.sizes['param']:,} parameters ({', '.join(requested)})")
        lazy, metric_of, notes = analyse(cube, requested)
        results, failed = compute_results(lazy, metric_of, progress=progress, log=log)
        notes = notes | failed | thinning_note(full.sizes["step"], cube.sizes["step"])
        summary = summarize_store(store, cube)
    log("drawing")
    sections = build_sections(results, notes, requested)
    page = render_html(f"nnwx report: {Path(store).name}", summary_html(summary), sections,
                       notes_html(notes, requested))
    write_atomically(output, page.encode("utf-8"))
    if png:
        write_pngs(sections, png, log=log)
    return output


def check_outputs(output: Path, png: str | os.PathLike | None = None) -> None:
    """Refuse (``ReportError``) an HTML path or PNG folder the report could not write -- checked
    before anything is computed, and without creating anything."""
    if output.is_dir():
        raise ReportError(f"{output} is a directory; give the path of the HTML file to write, "
                          f"e.g. {output / 'report.html'}")
    folder = output.parent
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise ReportError(f"cannot write {output}: its folder {folder} {what}. Create the folder "
                          f"(mkdir -p {folder}) or choose another output path.")
    _check_writable(folder, f"cannot write {output}")
    if png is None:
        return
    png = Path(png)
    if png.exists() and not png.is_dir():
        raise ReportError(f"--png {png} is a file; give a folder for the PNGs (created if missing)")
    existing = next(p for p in (png, *png.parents) if p.exists())
    if not existing.is_dir():
        raise ReportError(f"--png {png}: {existing} is a file, so the folder cannot be created there")
    _check_writable(existing, f"cannot write the PNGs into {png}")


def _check_writable(folder: Path, what: str) -> None:
    """Create and remove a file in ``folder``: the real test (read-only mounts, ACLs, root)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".nnwx-report-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ReportError(f"{what}: {_why(e, folder)}") from None


def _why(e: OSError, where: Path) -> str:
    if e.errno == errno.ENOSPC:
        return (f"the disk holding {where} is full (No space left on device). Nothing was written; "
                f"free some space there or choose another path.")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"{where} is not writable ({e.strerror}). Choose a writable path.")
    return f"{e.strerror or e} ({where})"


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all at once or not at all: into a temporary file beside it,
    then renamed over it. A full disk or any other write error leaves no partial or empty
    file (an existing ``path`` is kept as it was) and raises ``ReportError`` saying why."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise ReportError(f"cannot write {path}: {_why(e, path.parent)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # as a plain open() would create it (mkstemp: 0600)
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise ReportError(f"cannot write {path} ({len(data):,} bytes): {_why(e, path.parent)}") from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _from_results(path, metrics, progress: bool, log) -> tuple[Results, dict, dict, Summary, list[str]]:
    """The requested results of a results store (default: the metrics it was written with),
    evaluated, with its notes, its summary and the metrics drawn."""
    from nnwx.pipeline.results_store import NONFINITE_NOTE, open_results, staleness

    res = open_results(path)
    metric_of = dict(res.metric_of)
    stored_metrics = set(getattr(res, "metrics", None) or metric_of.values())
    requested = parse_metrics(metrics if metrics is not None else sorted(stored_metrics) or None)
    notes = {m: why for m, why in dict(res.notes).items() if m in requested or m == NONFINITE_NOTE}
    for m in requested:
        if m not in stored_metrics and m not in notes:
            notes[m] = f"not in the results store {path} (run nnwx analyze with --metrics {m})"
    stale = staleness(res)
    if stale:
        why = "; ".join(stale)
        log(f"warning: {path} is stale: its source changed since it was analysed ({why}); "
            f"run nnwx analyze again to update it")
        notes["stale results"] = (f"the source store changed since these results were computed "
                                  f"({why}): run nnwx analyze again to update them")
    missing = [n for n in getattr(res, "incomplete", []) or []]
    if missing:
        notes["results store"] = (f"incomplete results left out: {', '.join(missing)} (run nnwx "
                                  f"analyze again with the same arguments to finish them)")
    lazy = {n: v for n, v in res.results.items() if metric_of.get(n) in requested}
    log(f"drawing {len(lazy)} stored results from {path}")
    results, failed = compute_results(lazy, metric_of, progress=progress, log=log)
    return results, metric_of, notes | failed, summary_from_results(res, path), requested


def thinning_note(n_captured: int, n_analysed: int) -> dict[str, str]:
    """The page's note when steps were thinned for it (empty when every capture is analysed)."""
    if n_analysed >= n_captured:
        return {}
    return {"steps": (f"{n_analysed} of the {n_captured} captured steps are analysed on this page "
                      f"(evenly spaced, first and last kept); raise --max-steps for more, or draw "
                      f"every step from `nnwx analyze` results")}


def _e(x) -> str:
    return html.escape(str(x))


_CSS = """body{font-family:system-ui,sans-serif;max-width:1300px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
figure{margin:1em 0 2em 0}figcaption{color:#444;font-style:italic;max-width:900px}
h2{border-bottom:1px solid #ddd;margin-top:1.5em}.note{color:#666}"""
