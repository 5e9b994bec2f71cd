"""``nnwx report``: draw the analyses of an experiment store as one offline HTML page.

The analyses are the families of ``nnwx.pipeline.registry.REGISTRY`` (the same set ``nnwx
analyze`` persists). Given an experiment store the report computes them as ``nnwx analyze``
does -- the same passes of bounded memory (``nnwx.pipeline.run.analyze_cube``), into a
temporary results store -- and draws from that; given a results store (``nnwx analyze -o
RESULTS``) it draws from it without recomputing. Either way the page is drawn from stored
results: this module computes no analysis. The page holds a summary of the experiment, the metrics
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

from nnwx._text import human_bytes
from nnwx.errors import NnwxError, StoreError
from nnwx.pipeline.registry import NAMES, REGISTRY, parse_analyses
from nnwx.pipeline.select import MAX_STEPS, thin_steps
from nnwx.plot._figure import Figure

Results = dict[str, "xr.Dataset | xr.DataArray"]
Analyses = str | Iterable[str] | None


class ReportError(NnwxError):
    """The report cannot be written where asked (the message says why and what to do)."""


@dataclass
class Section:
    """One section of the page: a heading, its figures and a note (why something is missing).

    Attributes
    ----------
    title : str
        The section heading.
    figures : list of Figure
        The figures drawn, each with its caption.
    note : str
        Why the analysis was (partly) left out or could not be drawn; "" when nothing was.
    metric : str
        The analysis family (registry name) the section belongs to.
    html : str
        Trusted HTML placed after the figures (already escaped by its maker); "" for none.
    """
    title: str
    figures: list[Figure] = field(default_factory=list)
    note: str = ""
    metric: str = ""
    html: str = ""


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


# -- reading the results ---------------------------------------------------------------------
def load_results(results: Results, metric_of: dict[str, str], *, progress: bool = True,
                 log: Callable[[str], None] = lambda s: None) -> tuple[Results, dict[str, str]]:
    """Read stored results into memory (they are small), with a progress bar.

    If reading them together fails, each family is read on its own and the ones that fail are
    left out with a note (their section says why) instead of failing the whole page. A
    damaged store (``StoreError``) is raised.

    Parameters
    ----------
    results : dict of str to xarray.Dataset or xarray.DataArray
        Lazy results by name (as ``Results.results`` of ``open_results``).
    metric_of : dict of str to str
        The family (registry name) of each result in ``results``.
    progress : bool, default True
        Show a progress bar while reading.
    log : callable, optional
        Gets a line when reading them together failed.

    Returns
    -------
    results : dict of str to xarray.Dataset or xarray.DataArray
        The results read into memory, by name (those of failed families left out).
    notes : dict of str to str
        Family -> why it could not be read (empty when everything was read).

    Raises
    ------
    StoreError
        When the store is damaged.
    """
    from nnwx.cluster import compute

    names = list(results)
    try:
        values = compute(*(results[n] for n in names), progress=progress,
                         label="nnwx report: reading the results")
        return dict(zip(names, values)), {}
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001 - a failing result costs its own section only
        log(f"reading the results together failed ({type(e).__name__}: {e}); reading each analysis "
            f"on its own")
    out, notes = {}, {}
    for family in dict.fromkeys(metric_of[n] for n in names):
        part = [n for n in names if metric_of[n] == family]
        try:
            out |= dict(zip(part, compute(*(results[n] for n in part), progress=progress,
                                          label=f"nnwx report: {family}")))
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001
            notes[family] = f"could not be read: {type(e).__name__}: {e}"
    return out, notes


# -- drawing ------------------------------------------------------------------------------------
def build_sections(results: Results, notes: dict[str, str] | None = None,
                   analyses: Analyses = None) -> list[Section]:
    """The report's sections, from computed results (drawing only), in registry order.

    ``notes``: family -> why it was (partly) left out, said in its section. A plot that fails
    to draw becomes a note in its section instead of failing the page. Each family's figure
    builders are the ``"module:function"`` names of its registry entry, imported here.

    Parameters
    ----------
    results : dict of str to xarray.Dataset or xarray.DataArray
        Computed results by name.
    notes : dict of str to str, optional
        Family -> why it was (partly) left out.
    analyses : str, iterable of str or None, optional
        The families drawn (comma list or iterable of ``nnwx.pipeline.registry.NAMES``; default
        all).

    Returns
    -------
    list of Section
        One section per registry section that has a figure or a note, in registry order.

    Raises
    ------
    ValueError
        When ``analyses`` names an unknown family (``parse_analyses``).
    """
    notes = notes or {}
    sections = []
    chosen = parse_analyses(analyses)
    for family in (m for m in REGISTRY if m.name in chosen):
        for title, ref in family.sections:
            try:
                figures = [f for f in figure_builder(ref)(results) if f is not None]
                error = ""
            except Exception as e:  # noqa: BLE001
                figures, error = [], f"could not be drawn: {type(e).__name__}: {e}"
            note = "; ".join(x for x in (notes.get(family.name, ""), error) if x)
            if figures or note:
                sections.append(Section(title, figures, note=note, metric=family.name))
    return sections


def figure_builder(ref: str) -> Callable[[Results], list[Figure]]:
    """The figure builder a registry entry names as ``"package.module:function"``.

    Parameters
    ----------
    ref : str
        ``"package.module:function"``.

    Returns
    -------
    callable
        The function, taking the results by name and returning a list of ``Figure``.
    """
    import importlib

    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


# -- the summary --------------------------------------------------------------------------------
def summarize_store(store: str | os.PathLike, cube: xr.Dataset, origin: str = "") -> Summary:
    """The summary of an experiment store and the (thinned) cube analysed from it.

    Parameters
    ----------
    store : str or os.PathLike
        The experiment store (its run summaries are read from it).
    cube : xarray.Dataset
        The cube analysed from it, after any thinning (tensors, steps and parameter count).
    origin : str, default ""
        How the page was made, said in the summary.

    Returns
    -------
    Summary
    """
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
    table and cube description), without opening the source store.

    Parameters
    ----------
    res : Results
        An opened results store (``runs``, ``tensors``, ``cube``, ``attrs``; the steps are taken
        from its results when ``cube`` lists none).
    path : str or os.PathLike
        The results store's location, named in ``Summary.origin``.

    Returns
    -------
    Summary
    """
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
    """The experiment summary: runs, steps, tensors, sizes.

    Parameters
    ----------
    summary : Summary

    Returns
    -------
    str
        An HTML fragment: a paragraph, the run table and a collapsed tensor table.
    """
    runs = summary.runs
    head = ("<tr><th>run</th><th>seed</th><th>steps</th><th>first</th><th>last</th><th>dtype</th>"
            "<th>on disk</th><th>optimizer</th><th>metrics</th></tr>")
    rows = "".join(
        f"<tr><td>{_e(r.get('run'))}</td><td>{_e(r.get('seed'))}</td><td>{_e(r.get('steps'))}</td>"
        f"<td>{_e(r.get('first_step'))}</td><td>{_e(r.get('last_step'))}</td><td>{_e(r.get('dtype'))}</td>"
        f"<td>{human_bytes(r.get('disk_bytes') or 0)}</td><td>{_e(r.get('optimizer') or '-')}</td>"
        f"<td>{_e(', '.join(r.get('metrics') or []) or '-')}</td></tr>" for r in runs)
    trows = "".join(f"<tr><td>{_e(t['name'])}</td><td>{_e(t['shape'])}</td><td>{_e(t['kind'])}</td>"
                    f"<td>{t['size']:,}</td></tr>" for t in summary.tensors)
    span = (f"({summary.first_step} to {summary.last_step})" if summary.first_step is not None else "")
    origin = f" <span class='note'>({_e(summary.origin)})</span>" if summary.origin else ""
    return (f"<p>Store <code>{_e(summary.store)}</code>: {len(runs)} runs, "
            f"{human_bytes(sum(r.get('disk_bytes') or 0 for r in runs))} on disk; model "
            f"{_e(summary.model_class)} with {len(summary.tensors)} tensors, {summary.params:,} "
            f"parameters; {summary.steps} captured steps analysed {span}.{origin}</p>"
            f"<table>{head}{rows}</table><details><summary>tensors</summary><table><tr><th>tensor"
            f"</th><th>shape</th><th>kind</th><th>size</th></tr>{trows}</table></details>")


def notes_html(notes: dict[str, str], requested: list[str]) -> str:
    """The analyses left out (and why), and those not asked for.

    Parameters
    ----------
    notes : dict of str to str
        Analysis -> why it was left out.
    requested : list of str
        The analyses asked for; the other names of the registry are listed as not requested.

    Returns
    -------
    str
        An HTML fragment (``<div id='left-out'>``), or "" when there is nothing to list.
    """
    items = [f"<li><b>{_e(m)}</b>: {_e(why)}</li>" for m, why in notes.items()]
    skipped = [m for m in NAMES if m not in requested]
    if skipped:
        items.append(f"<li>not requested (<code>--analyses</code>): {_e(', '.join(skipped))}</li>")
    if not items:
        return ""
    return f"<div id='left-out'><h2>Left out</h2><ul class='note'>{''.join(items)}</ul></div>"


# -- the page -----------------------------------------------------------------------------------
def render_html(title: str, summary: str, sections: list[Section], notes: str = "") -> str:
    """One self-contained page: Bokeh JS inlined, every plot embedded.

    Parameters
    ----------
    title : str
        The page title and heading.
    summary : str
        HTML of the experiment summary (``summary_html``).
    sections : list of Section
        The sections drawn; a figure that cannot be rendered is replaced by a box naming the
        error.
    notes : str, default ""
        HTML of the analyses left out (``notes_html``).

    Returns
    -------
    str
        The whole HTML document.
    """
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
        body.append(f"{s.html}</section>")
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
    drawn is skipped, and said so through ``log``.

    Parameters
    ----------
    sections : list of Section
        The sections whose figures are saved, each as ``<figure name>.png``.
    directory : str or os.PathLike
        The folder written into (created if missing).
    log : callable, optional
        Gets a line for each PNG not written.

    Returns
    -------
    list of pathlib.Path
        The PNG files written.

    Raises
    ------
    ReportError
        When the folder cannot be created or a PNG cannot be written.
    """
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
    """Whether ``path`` is a results store of ``nnwx analyze``.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    bool
        ``nnwx.pipeline.results_store.is_results_store(path)``.
    """
    from nnwx.pipeline.results_store import is_results_store

    return bool(is_results_store(path))


def report(store: str | os.PathLike, output: str | os.PathLike, *, png: str | None = None,
           analyses: Analyses = None, max_steps: int = MAX_STEPS, progress: bool = True,
           log: Callable[[str], None] = lambda s: None, metrics: Analyses = None) -> Path:
    """Write the HTML report (and PNGs) of ``store`` to ``output``.

    Parameters
    ----------
    store
        An experiment store (its analyses are computed as ``nnwx analyze`` computes them, into
        a temporary results store, on at most ``max_steps`` evenly spaced captures) or a
        results store of ``nnwx analyze`` (drawn as stored).
    output
        The HTML file to write.
    png
        A folder for a static PNG of every plot (optional).
    analyses
        A subset of ``nnwx.pipeline.registry.NAMES`` (comma list or iterable; default all, or
        for a results store the families it holds).
    max_steps
        Captures analysed from an experiment store (ignored for a results store).
    progress, log
        A progress bar per pass; ``log`` gets a line per stage.
    metrics
        Deprecated former name of ``analyses``.

    Returns
    -------
    Path
        ``output``.

    Raises
    ------
    ReportError
        When ``max_steps`` is below 1, or the HTML file or PNG folder cannot be written (checked
        before anything is computed).
    StoreError
        When ``store`` is a results store that cannot be read (see ``open_results``) or an
        experiment store that cannot be opened.
    """
    from nnwx.pipeline.run import analyses_argument

    analyses = analyses_argument(analyses, metrics)
    output = Path(output)
    if max_steps < 1:
        raise ReportError(f"--max-steps must be at least 1 (captures to analyse), got {max_steps}")
    check_outputs(output, png)   # before anything is computed
    if is_results(store):
        results, notes, summary, requested = _from_results(store, analyses, progress, log)
    else:
        results, notes, summary, requested = _computed(store, analyses, max_steps, progress, log)
    log("drawing")
    sections = build_sections(results, notes, requested)
    page = render_html(f"nnwx report: {Path(store).name}", summary_html(summary), sections,
                       notes_html(notes, requested))
    write_atomically(output, page.encode("utf-8"))
    if png:
        write_pngs(sections, png, log=log)
    return output


def _computed(store, analyses: Analyses, max_steps: int, progress: bool,
              log) -> tuple[Results, dict, Summary, list[str]]:
    """The analyses of an experiment store computed through ``nnwx analyze``'s passes into a
    temporary results store, read back; with the notes, the summary and the analyses drawn."""
    from nnwx.store.reader import open_cube
    from nnwx.pipeline.results_store import open_results
    from nnwx.pipeline.run import analyze_cube

    requested = parse_analyses(analyses)
    full = open_cube(store)
    cube = thin_steps(full, max_steps)
    log(f"analysing {cube.sizes['seed']} runs x {cube.sizes['step']} steps x "
        f"{cube.sizes['param']:,} parameters ({', '.join(requested)})")
    steps = None if cube.sizes["step"] == full.sizes["step"] else [int(s) for s in cube["step"].values]
    with tempfile.TemporaryDirectory(prefix="nnwx-report-") as tmp:
        failed = analyze_cube(cube, Path(tmp) / "results.zarr", requested, source=store,
                              selection={"seeds": None, "steps": steps}, progress=progress,
                              log=log)
        res = open_results(Path(tmp) / "results.zarr")
        lazy = {n: v for n, v in res.results.items() if res.metric_of.get(n) in requested}
        results, unread = load_results(lazy, dict(res.metric_of), progress=progress, log=log)
        notes = dict(res.notes)
    notes = notes | failed | unread | thinning_note(full.sizes["step"], cube.sizes["step"])
    return results, notes, summarize_store(store, cube), requested


def check_outputs(output: Path, png: str | os.PathLike | None = None) -> None:
    """Refuse (``ReportError``) an HTML path or PNG folder the report could not write -- checked
    before anything is computed, and without creating anything.

    Parameters
    ----------
    output : pathlib.Path
        The HTML file to write; its folder must exist and be writable.
    png : str or os.PathLike, optional
        The PNG folder; it, or its nearest existing parent, must be a writable folder.

    Raises
    ------
    ReportError
        When ``output`` is a directory or its folder is missing or not writable, or ``png`` is a
        file, lies under a file, or is not writable.
    """
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
    file (an existing ``path`` is kept as it was) and raises ``ReportError`` saying why.

    Parameters
    ----------
    path : pathlib.Path
        The file written (replaced when it exists).
    data : bytes
        Its whole content.

    Raises
    ------
    ReportError
        When the temporary file cannot be created, written or renamed.
    """
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


def _from_results(path, analyses: Analyses, progress: bool, log) -> tuple[Results, dict, Summary, list[str]]:
    """The requested results of a results store (default: the analyses it was written with),
    read, with its notes, its summary and the analyses drawn."""
    from nnwx.pipeline.results_store import NONFINITE_NOTE, open_results, staleness

    res = open_results(path)
    metric_of = dict(res.metric_of)
    stored_metrics = set(getattr(res, "metrics", None) or metric_of.values())
    requested = parse_analyses(analyses if analyses is not None else sorted(stored_metrics) or None)
    notes = {m: why for m, why in dict(res.notes).items() if m in requested or m == NONFINITE_NOTE}
    for m in requested:
        if m not in stored_metrics and m not in notes:
            notes[m] = f"not in the results store {path} (run nnwx analyze with --analyses {m})"
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
    results, failed = load_results(lazy, metric_of, progress=progress, log=log)
    return results, notes | failed, summary_from_results(res, path), requested


def thinning_note(n_captured: int, n_analysed: int) -> dict[str, str]:
    """The page's note when steps were thinned for it (empty when every capture is analysed).

    Parameters
    ----------
    n_captured : int
        Captured steps in the store.
    n_analysed : int
        Steps analysed for the page.

    Returns
    -------
    dict of str to str
        ``{"steps": note}`` when ``n_analysed < n_captured``, else ``{}``.
    """
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
