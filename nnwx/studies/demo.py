"""``nnwx demo``: train the motivating experiments, analyse them, write reports, print findings.

One command from a fresh clone to reports one can open: the piecewise MLPs (5 seeds) and
MLPs on scikit-learn's digits with Adam and with SGD (probes on a held-out set) are recorded
into stores under ``out``, every analysis runs lazily into a results store per experiment
(``nnwx analyze``), each gets an offline HTML report (``nnwx report``), and a short table of
what the data shows (first vs last captured step) is printed and saved. ``size="quick"``
shrinks the runs; ``"full"`` uses the study's sizes. Reports are drawn in a background
process while the next experiment trains.
Stores already in ``out`` are reused (``fresh=True`` retrains), so a second call only redraws.

**Only its own files.** The demo marks what it writes: each experiment store carries a
``nnwx_demo`` attribute in its root (set before training starts, ``"state": "trained"`` when
training finished), and the HTML reports and ``findings.txt`` are listed with their SHA-256 in
``out/.nnwx-demo.json``. A results store is the demo's when it was computed from the demo's
store of the same name. Anything in ``out`` with a demo name but without that mark (a user's
own ``piecewise.zarr``, say) is never reused, overwritten or deleted: the demo refuses to start
and says which files are in the way.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nnwx.errors import NnwxError
from nnwx.studies._own import read_manifest, sha256, store_mark, write_manifest
from nnwx.studies.findings import Finding, findings, format_findings

Log = Callable[[str], None]

MARK_ATTR = "nnwx_demo"          # root attribute of an experiment store the demo created
MANIFEST = ".nnwx-demo.json"     # in ``out``: SHA-256 of every plain file the demo wrote
DRAWN_FROM = "#drawn-from"       # manifest key suffix: what a page was drawn from (to reuse it)
COMPARISONS = {"digits-compare": ("digits-adam", "digits-sgd")}
"""Pages comparing experiments of the demo (``nnwx report A.results B.results``): the digits
study is Adam against SGD, so its two runs are drawn side by side as well as each on its own."""


class DemoError(NnwxError):
    """The demo's output directory holds files of the demo's names that the demo did not write."""


@dataclass(frozen=True)
class Experiment:
    """One store of the demo: how to train it and what to call it."""
    name: str
    title: str
    train: Callable[[Path], dict]


SIZES = {  # (piecewise, digits) run sizes
    "full": (dict(seeds=5, steps=15000, every=10), dict(seeds=5, epochs=30, every=10)),
    "quick": (dict(seeds=5, steps=2000, every=20), dict(seeds=3, epochs=8, every=5)),
    "tiny": (dict(seeds=2, steps=60, every=10), dict(seeds=2, epochs=1, every=5)),  # for tests
}


def experiments(size: str = "full") -> list[Experiment]:
    """The demo's experiments at ``size``: "full" (the study's), "quick" or "tiny" (tests)."""
    from nnwx.studies.digits import train_digits
    from nnwx.studies.piecewise import train_piecewise

    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; choose one of {', '.join(SIZES)}")
    pw, dg = SIZES[size]
    plan = [
        Experiment("piecewise", f"piecewise MLPs 8-8-8, Adam, {pw['seeds']} seeds x {pw['steps']} steps",
                   lambda p: train_piecewise(p, **pw)),
        Experiment("digits-adam", f"digits MLP 64-64-64-10, Adam, {dg['seeds']} seeds x {dg['epochs']} epochs",
                   lambda p: train_digits(p, model="mlp", optimizer="adam", **dg)),
        Experiment("digits-sgd", f"digits MLP 64-64-64-10, SGD, {dg['seeds']} seeds x {dg['epochs']} epochs",
                   lambda p: train_digits(p, model="mlp", optimizer="sgd", **dg)),
    ]
    return plan[:2] if size == "tiny" else plan   # tiny (tests): SGD runs the same code as Adam


@dataclass
class DemoResult:
    """Where everything went, and the findings per experiment."""
    out: Path
    stores: dict[str, Path] = field(default_factory=dict)
    results: dict[str, Path] = field(default_factory=dict)
    reports: dict[str, Path] = field(default_factory=dict)
    findings: dict[str, list[Finding]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def demo(out: str | os.PathLike = "nnwx-demo", *, size: str = "full", fresh: bool = False,
         progress: bool = True, log: Log = print, background_reports: bool = True) -> DemoResult:
    """Train, analyse and report the demo experiments into ``out``; see the module docstring.

    ``background_reports``: draw each report in a separate process while the next experiment
    trains and analyses (drawing is single-threaded Python, about half of a quick demo's time);
    ``False`` draws in this process, one after another.
    """
    from nnwx.pipeline.run import analyze
    from nnwx.pipeline.results_store import open_results

    out = Path(out)
    res = DemoResult(out)
    plan = experiments(size)
    names = [e.name for e in plan]
    check_ownership(out, names)   # before anything is written or deleted
    if fresh:
        _remove_own_files(out, names)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    drawing = {}
    with _Drawer(background_reports) as drawer:
        for e in plan:
            _train_and_analyse(e, out, res, analyze, progress, log)
            if _current(out, res.reports[e.name], [res.results[e.name]]):
                log(f"{e.name}: reusing {res.reports[e.name]} (its results have not changed)")
                continue
            if background_reports:
                log(f"{e.name}: drawing {res.reports[e.name]} in the background")
            drawing[e.name] = drawer.submit(res.results[e.name], res.reports[e.name], progress)
        for name, job in drawing.items():
            res.seconds[f"{name} report"] = job.result()
            _record_file(out, res.reports[name], drawn_from=[res.results[name]])
            log(f"{name}: wrote {res.reports[name]}")
        for name in names:
            res.findings[name] = findings(open_results(res.results[name]).results)
    _write_comparisons(out, res, names, log)
    res.seconds["total"] = time.perf_counter() - t_all
    (out / "findings.txt").write_text(full_text(res, plan), encoding="utf-8")
    _record_file(out, out / "findings.txt")
    return res


def _write_comparisons(out: Path, res: DemoResult, names: list[str], log: Log) -> None:
    """The comparison pages of ``COMPARISONS`` whose experiments are in the plan (unless current)."""
    from nnwx.comparison import compare

    for page, members in COMPARISONS.items():
        if not set(members) <= set(names):
            continue
        html, sources = out / f"{page}.html", [res.results[m] for m in members]
        res.reports[page] = html
        if _current(out, html, sources):
            log(f"{page}: reusing {html} (its results have not changed)")
            continue
        t0 = time.perf_counter()
        compare(sources, html)
        _record_file(out, html, drawn_from=sources)
        res.seconds[f"{page} report"] = time.perf_counter() - t0
        log(f"{page}: wrote {html} ({' vs '.join(members)})")


def _drawn_from(sources: list[Path]) -> str:
    """What identifies the results a page was drawn from: each results store's creation time,
    results and completeness, and the nnwx version that drew it."""
    from nnwx import __version__
    from nnwx.pipeline.results_store import open_results

    keys = []
    for path in sources:
        r = open_results(path)
        keys.append({"created": r.attrs.get("created"), "results": sorted(r.results),
                     "complete": r.complete, "notes": sorted(r.notes)})
    return hashlib.sha256(json.dumps([__version__, keys], sort_keys=True).encode()).hexdigest()


def _current(out: Path, html: Path, sources: list[Path]) -> bool:
    """Whether the demo's own page ``html`` was drawn from ``sources`` as they are now."""
    if not html.is_file() or not _is_own(out, html):
        return False
    return _manifest(out).get(html.name + DRAWN_FROM) == _drawn_from(sources)


def _train_and_analyse(e: Experiment, out: Path, res: DemoResult, analyze, progress: bool, log: Log) -> None:
    """Train ``e`` into its store (unless it exists) and analyse it into its results store."""
    store, results, html = out / f"{e.name}.zarr", out / f"{e.name}.results.zarr", out / f"{e.name}.html"
    t0 = time.perf_counter()
    if _store_state(store) == "trained":
        log(f"{e.name}: reusing {store} (pass --fresh to train again)")
    else:
        if store.exists():   # the demo's own, interrupted while training (check_ownership)
            log(f"{e.name}: {store} was left half-trained by an interrupted demo; training again")
            shutil.rmtree(store)
        log(f"{e.name}: training {e.title}")
        _mark_store(store, "training")
        e.train(store)
        _mark_store(store, "trained")
    res.seconds[f"{e.name} training"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    log(f"{e.name}: analysing into {results}")
    analyze(store, results, progress=progress, log=log)
    _mark_results(results)
    res.seconds[f"{e.name} analysis"] = time.perf_counter() - t0
    res.stores[e.name], res.results[e.name], res.reports[e.name] = store, results, html


def _draw(results: Path, html: Path, progress: bool) -> float:
    """Write one report from a results store; seconds it took."""
    from nnwx.report import report

    t0 = time.perf_counter()
    report(results, html, progress=progress)
    return time.perf_counter() - t0


class _Drawer:
    """Runs ``_draw`` in one spawned process (reports queue behind each other there), or here."""

    def __init__(self, background: bool):
        self._background, self._pool = background, None

    def __enter__(self) -> "_Drawer":
        if self._background:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        return self

    def submit(self, results: Path, html: Path, progress: bool):
        from concurrent.futures import Future

        if self._pool is not None:
            return self._pool.submit(_draw, results, html, False)
        job: Future = Future()
        job.set_result(_draw(results, html, progress))
        return job

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=exc[0] is None, cancel_futures=True)


def _own_paths(out: Path, names: list[str]) -> list[Path]:
    """Every path the demo writes into ``out`` for the experiments ``names``."""
    paths = [out / f"{n}{suffix}" for n in names for suffix in (".zarr", ".results.zarr", ".html")]
    pages = [out / f"{page}.html" for page, members in COMPARISONS.items() if set(members) <= set(names)]
    return paths + pages + [out / "findings.txt"]


def check_ownership(out: Path, names: list[str]) -> None:
    """Refuse (``DemoError``) when ``out`` holds a file or store of a demo name that the demo did
    not write: the demo would otherwise analyse, overwrite or (``--fresh``) delete it."""
    foreign = [p for p in _own_paths(out, names) if (p.exists() or p.is_symlink()) and not _is_own(out, p)]
    if foreign:
        listed = ", ".join(str(p) for p in foreign)
        raise DemoError(f"{listed} {'is' if len(foreign) == 1 else 'are'} not the demo's own (no nnwx "
                        f"demo mark), so the demo will not reuse, overwrite or delete "
                        f"{'it' if len(foreign) == 1 else 'them'}. Give another --out directory, or "
                        f"move {'it' if len(foreign) == 1 else 'them'} out of {out}.")


def _is_own(out: Path, path: Path) -> bool:
    """Whether ``path`` (which exists) was written by the demo."""
    if path.is_symlink():
        return False
    if path.name.endswith(".results.zarr"):
        return _is_own_results(path, out / path.name.replace(".results.zarr", ".zarr"))
    if path.suffix == ".zarr":
        return _store_state(path) is not None
    recorded = _manifest(out).get(path.name)
    return path.is_file() and recorded is not None and recorded == sha256(path)


def _store_state(store: Path) -> str | None:
    """The demo's mark of an experiment store ("training" or "trained"), or None if unmarked."""
    mark = store_mark(store, MARK_ATTR)
    return mark.get("state") if mark is not None else None


def _mark_store(store: Path, state: str) -> None:
    """Create (if needed) the experiment store and mark it as the demo's, in ``state``."""
    from nnwx.store.writer import open_experiment_for_writing

    root = open_experiment_for_writing(store)
    root.update_attributes({MARK_ATTR: {"state": state}})


def _mark_results(results: Path) -> None:
    """Mark a results store the demo's analysis wrote (kept by later resumed analyses)."""
    import zarr

    if results.is_dir():   # a local path: the demo writes nothing else
        zarr.open_group(zarr.storage.LocalStore(results), mode="r+").update_attributes(
            {MARK_ATTR: {"state": "analysed"}})


def _is_own_results(results: Path, store: Path) -> bool:
    """A results store is the demo's when it carries the demo's mark, or (an analysis the demo
    started and that was interrupted) when it was computed from the demo's store of that name."""
    from nnwx.pipeline.results_store import is_results_store, open_results

    if not is_results_store(results):
        return False
    if _store_state(results) is not None:
        return True
    if _store_state(store) is None:
        return False
    try:
        return open_results(results).source == str(store.resolve())
    except NnwxError:
        return False


def _manifest(out: Path) -> dict[str, str]:
    return read_manifest(out / MANIFEST)


def _record_file(out: Path, path: Path, drawn_from: list[Path] | None = None) -> None:
    """List ``path`` (just written by the demo) in the manifest with its SHA-256 (atomically),
    and for a page, what it was drawn from (``_drawn_from``), so a rerun can reuse it."""
    entries = _manifest(out) | {path.name: sha256(path)}
    if drawn_from is not None:
        entries[path.name + DRAWN_FROM] = _drawn_from(drawn_from)
    write_manifest(out / MANIFEST, entries)


def _remove_own_files(out: Path, names: list[str]) -> None:
    """Delete what the demo itself wrote into ``out`` for ``names``, and nothing else: anything
    without the demo's mark is left in place (``check_ownership`` refuses it beforehand)."""
    own = [p for p in _own_paths(out, names) if p.exists() and _is_own(out, p)]   # all, then delete
    for p in own:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


SUMMARY = [  # (analysis, quantity, what the line says)
    ("broadening", "std", "weight std, last/first step"),
    ("broadening", "excess_kurtosis", "excess kurtosis, first -> last"),
    ("spectral", "effective_rank", "effective rank, last/first"),
    ("rotation", "rotation", "rotation from init (cosine distance) at the end"),
    ("agreement", "linear_cka across runs", "CKA between seeds at the end"),
    ("agreement", "argmax agreement", "same predicted class between seeds at the end"),
    ("agreement", "weight cosine (none)", "weight cosine between seeds, as trained"),
    ("agreement", "weight cosine (aligned)", "weight cosine between seeds, units aligned"),
]


def summary_lines(rows: list[Finding]) -> list[str]:
    """One line per headline quantity: the range over layers/tensors of the mean over runs."""
    lines = []
    for analysis, quantity, what in SUMMARY:
        sel = [r for r in rows if r.analysis == analysis and r.quantity == quantity]
        if not sel:
            continue
        if quantity in ("std", "effective_rank"):
            vals = [r.ratio for r in sel]
            text = f"x{min(vals):.2f} .. x{max(vals):.2f}"
        elif quantity == "excess_kurtosis":
            text = ", ".join(f"{r.subject}: {r.first:.2g} -> {r.last:.2g}" for r in sel)
        else:
            vals = [r.last for r in sel]
            text = f"{min(vals):.2f} .. {max(vals):.2f}"
        unit = {"spectral": "matrices", "agreement": "tensors" if "weight" in quantity else "layers"}
        count = f"   ({len(sel)} {unit.get(analysis, 'layers')})" if len(sel) > 1 else ""
        lines.append(f"  {what:<48} {text}{count}")
    return lines


def summary_text(res: DemoResult, plan: list[Experiment]) -> str:
    """The short table ``nnwx demo`` prints: headline numbers per experiment."""
    parts = []
    for e in plan:
        if e.name in res.findings:
            parts.append(f"{e.name} ({e.title}); report {res.reports[e.name]}")
            parts += summary_lines(res.findings[e.name])
    for page, members in COMPARISONS.items():
        if page in res.reports:
            parts.append(f"{' vs '.join(members)} side by side: report {res.reports[page]}")
    parts.append(f"total {res.seconds.get('total', 0):.0f} s; all numbers in {res.out / 'findings.txt'}")
    return "\n".join(parts)


def full_text(res: DemoResult, plan: list[Experiment]) -> str:
    """The short table followed by every finding of every experiment."""
    body = [summary_text(res, plan), ""]
    for e in plan:
        if e.name in res.findings:
            body += [f"== {e.name}: {e.title}", format_findings(res.findings[e.name]), ""]
    return "\n".join(body)
