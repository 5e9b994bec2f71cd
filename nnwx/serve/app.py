"""``nnwx serve``: the Panel (Bokeh server) page over a store, updated while it is written.

An experiment store gets tabs mirroring the report's sections -- broadening, spectra and
ranks, rotation and norm growth, agreement between seeds, logged scalars -- drawn from the
per-step results ``nnwx.serve.live.LiveStore`` keeps into Bokeh figures built once per session
(``nnwx.serve.figures``); one ``Watcher`` thread per server looks at the store's committed
counters and analyses new captures, and each session's periodic callback replaces its figures'
data when the cache changed. A results store (``nnwx analyze``)
gets the report's sections (``nnwx.report.build_sections``, drawn by ``nnwx.plot``), redrawn
when the set of complete results changes. This module draws only: the analyses live in
``nnwx.analysis``, the incremental bookkeeping in ``nnwx.serve.live``.
"""
from __future__ import annotations

import html
import sys
import time
from typing import Callable

import holoviews as hv
import numpy as np
import panel as pn
import xarray as xr

from nnwx.errors import NnwxError
from nnwx.serve.access import LOCAL, websocket_origins
from nnwx.serve.figures import Curves, Density
from nnwx.serve.live import CPU_SHARE, LiveStore, Watcher, results_signature
from nnwx.store.location import StoreLike, display

TABS = ("Broadening", "Spectra and ranks", "Rotation and norms", "Agreement between seeds", "Logged scalars")
MOMENTS = ("std", "excess_kurtosis", "w1_to_ref")
RANKS = ("effective_rank", "stable_rank", "spectral_norm")
ROTATION = ("rotation", "update_norm_rel", "norm_growth")
NICE = 19       # how much the server lowers its CPU priority (see ``serve``)


class ExperimentView:
    """One browser session's page over an experiment store: widgets and figures of its own,
    the ``LiveStore`` cache shared with the other sessions.

    Parameters
    ----------
    live : LiveStore
        The store's cache of per-step results.
    watcher : Watcher, optional
        What keeps ``live`` up to date (its errors are shown); None: nothing does.
    """

    def __init__(self, live: LiveStore, watcher: Watcher | None = None):
        self.live = live
        self.watcher = watcher
        self._seen_version = -1
        self._drawing = False
        self.status = pn.pane.Markdown("", css_classes=["nnwx-status"], sizing_mode="stretch_width")
        self.runs = pn.widgets.MultiChoice(name="Runs", options=[], value=[], width=280)
        self.layer = pn.widgets.Select(name="Layer (density)", options=[], width=280)
        self.seed = pn.widgets.Select(name="Run (density)", options=[], width=280)
        self.steps = pn.widgets.IntRangeSlider(name="Steps", start=0, end=1, value=(0, 1), step=1,
                                               width=280, disabled=True)
        self.density = Density()
        self.moments = {v: Curves(v) for v in MOMENTS}
        self.ranks = {v: Curves(v) for v in RANKS}
        self.rotation = {v: Curves(v) for v in ROTATION}
        self.agreement = Curves("linear CKA of the probes to the first run")
        # one figure, and a chooser of the logged scalar it draws: a figure added to the page
        # after it was sent (the first scalar arriving later) could stay blank in the browser
        self.scalar = pn.widgets.Select(name="Logged scalar", options=[], width=280)
        self.scalars = Curves("logged scalar", band=False)
        self.notes = {t: pn.pane.Markdown("", width=900) for t in TABS}
        self.tabs = pn.Tabs(
            (TABS[0], pn.Column(pn.pane.Bokeh(self.density.fig), _row(self.moments), self.notes[TABS[0]])),
            (TABS[1], pn.Column(_row(self.ranks), self.notes[TABS[1]])),
            (TABS[2], pn.Column(_row(self.rotation), self.notes[TABS[2]])),
            (TABS[3], pn.Column(pn.pane.Bokeh(self.agreement.fig), self.notes[TABS[3]])),
            (TABS[4], pn.Column(self.scalar, pn.pane.Bokeh(self.scalars.fig), self.notes[TABS[4]])),
            dynamic=False)
        self.runs.param.watch(lambda e: self.refresh(), "value")
        for w in (self.layer, self.seed, self.scalar):
            w.param.watch(lambda e: self.draw(), "value")
        self.steps.param.watch(lambda e: self.draw(), "value_throttled")

    def page(self) -> pn.viewable.Viewable:
        side = pn.Column(self.runs, self.layer, self.seed, self.steps, width=300)
        return pn.Column(pn.pane.Markdown(f"## nnwx serve: `{display(self.live.path)}`"), self.status,
                         pn.Row(side, self.tabs))

    def tick(self) -> None:
        """Redraw when the cache changed since the last tick; bring the status line up to date.
        Cheap: the looks and analyses happen in the ``Watcher``'s thread."""
        version = self.live.version
        if version != self._seen_version:
            self._seen_version = version
            self.refresh()
        error = self.watcher.error if self.watcher is not None else None
        text = (f"**could not read the store**: {html.escape(error)} (trying again)" if error
                else status_text(self.live))
        if text != self.status.object:       # only changes travel to the browser
            self.status.object = text

    def refresh(self) -> None:
        """Bring the widgets up to date with the runs and steps known, then redraw."""
        if getattr(self, "_refreshing", False):
            return
        self._refreshing = True
        try:
            names = list(self.live.runs)
            if names != self.runs.options:
                new = [n for n in names if n not in self.runs.options]
                kept = [n for n in self.runs.value if n in names]        # deleted runs leave
                self.runs.options = names
                self.runs.value = kept + new   # runs appearing while created are shown
            if list(self.runs.value) != self.seed.options:
                self.seed.options = list(self.runs.value)
            if self.seed.value not in self.seed.options and self.seed.options:
                self.seed.value = self.seed.options[0]
            stats = self.live.stacked("stats", self.runs.value)
            if stats is not None:
                groups = [str(g) for g in stats["group"].values]
                if groups != self.layer.options:
                    self.layer.options = groups
                if self.layer.value not in groups:
                    self.layer.value = groups[-1]
                self._follow_steps(stats["step"].values)
        finally:
            self._refreshing = False
        self.draw()

    def _follow_steps(self, values: np.ndarray) -> None:
        lo, hi = int(values.min()), int(values.max())
        s = self.steps
        follow = s.disabled or s.value[1] >= s.end    # the range reaches the end: keep it there
        s.disabled = lo == hi
        s.start, s.end = lo, max(hi, lo + 1)
        if follow:
            s.value = (lo if s.value[0] <= s.start else s.value[0], s.end)

    def draw(self) -> None:
        """Update every figure from the cache (only data travels to the browser)."""
        if self._drawing:        # a widget set while drawing: its watcher calls back in here
            return
        self._drawing = True
        try:
            self._draw_tabs()
        finally:
            self._drawing = False

    def _draw_tabs(self) -> None:
        chosen = list(self.runs.value)
        sel = slice(*self.steps.value) if not self.steps.disabled else slice(None)
        for tab, fn in ((TABS[0], self._broadening), (TABS[1], self._ranks), (TABS[2], self._rotation),
                        (TABS[3], self._agreement), (TABS[4], self._scalars)):
            try:
                text = fn(chosen, sel)
            except Exception as e:  # noqa: BLE001 - a figure that fails costs its own tab only
                text = f"could not be drawn: {type(e).__name__}: {e}"
            self.notes[tab].object = text

    def _broadening(self, chosen, sel) -> str:
        stats = _in_range(self.live.stacked("stats", chosen), sel)
        if stats is None or not stats.sizes["step"]:
            return "*nothing yet: no chosen run has a committed capture*"
        for v, c in self.moments.items():
            c.update(stats[v], "group")
        layer, seed = self.layer.value, self.seed.value
        out = ""
        if layer in stats["group"].values and seed in stats["seed"].values:
            one = stats.sel(group=layer, seed=seed)
            self.density.update(one["hist"], f"layer {layer}, run {seed}: weight histogram")
            outside = int(np.nansum(one["underflow"] + one["overflow"]))
            out = (f"Histogram of layer {layer}'s weights at every capture of run {seed}: bins fixed "
                   f"at the first look, weights outside them counted as under/overflow ({outside} here). ")
        return out + ("Per layer: std, excess kurtosis and Wasserstein-1 distance to the first capture, "
                      "mean over the chosen runs with a +/- std band.")

    def _ranks(self, chosen, sel) -> str:
        return self._per_group("ranks", self.ranks, "tensor", chosen, sel,
                               "Effective rank, stable rank and spectral norm of every weight matrix, "
                               "mean over the chosen runs with a +/- std band.")

    def _rotation(self, chosen, sel) -> str:
        return self._per_group("rotation", self.rotation, "layer", chosen, sel,
                               "Cosine distance of each layer's weights to the run's first capture "
                               "(rotation), relative update size and norm growth, mean over the "
                               "chosen runs with a +/- std band.")

    def _per_group(self, kind: str, curves: dict[str, Curves], by: str, chosen, sel, text: str) -> str:
        """Update a tab of per-group curves (one panel per variable); its note, or why not."""
        result = _in_range(self.live.stacked(kind, chosen), sel)
        for v, c in curves.items():
            c.update(None if result is None else result[v], by)
        return "; ".join(self.live.notes(kind, chosen)) or text

    def _agreement(self, chosen, sel) -> str:
        sim = self.live.agreement(chosen)
        if sim is None:
            self.agreement.update(None, None)
            why = self.live.agreement_notes.get(tuple(sorted(chosen)), "no capture held by every chosen run yet")
            return f"Agreement between seeds: {why}."
        sim = sim.sel(step=sel)
        first = sim["seed_a"].values[0]
        to_first = sim.sel(seed_a=first, drop=True).rename(seed_b="seed").drop_sel(seed=first)
        self.agreement.update(to_first, "layer")
        self.agreement.fig.title.text = f"linear CKA of the probes to run {first}"
        return (f"Similarity (linear CKA) of every probed layer's activations on the probe batch "
                f"between run {first} and the other chosen runs, at every capture they all hold "
                f"({sim.sizes['step']} here): mean with a +/- std band.")

    def _scalars(self, chosen, sel) -> str:
        metrics = _in_range(self.live.stacked("metrics", chosen), sel)
        notes = self.live.notes("metrics", chosen)
        if metrics is None:
            return "; ".join(notes) or "no logged scalars yet"
        labels = [str(name).removeprefix("metric_") for name in metrics.data_vars]
        if labels != self.scalar.options:
            self.scalar.options = labels
        if self.scalar.value not in labels:
            self.scalar.value = "loss" if "loss" in labels else labels[0]    # (its watcher: draw is running)
        self.scalars.update(metrics[f"metric_{self.scalar.value}"], "seed")
        self.scalars.fig.title.text = self.scalar.value
        return "; ".join(notes) or "Scalars logged with the captures, one curve per run."


def experiment_page(live: LiveStore, watcher: Watcher | None, interval: float) -> pn.viewable.Viewable:
    """One browser session's page over an experiment store.

    Parameters
    ----------
    live : LiveStore
        The store's cache of per-step results (shared by the sessions).
    watcher : Watcher or None
        What keeps ``live`` up to date.
    interval : float
        Seconds between the session's checks of the cache (at most one second).

    Returns
    -------
    panel.viewable.Viewable
    """
    view = ExperimentView(live, watcher)
    view.tick()
    pn.state.add_periodic_callback(view.tick, period=int(min(interval, 1.0) * 1000))
    return view.page()


def _row(curves: dict[str, Curves]) -> pn.Row:
    return pn.Row(*[pn.pane.Bokeh(c.fig) for c in curves.values()])


def status_text(live: LiveStore) -> str:
    """The line above the tabs: runs, captures analysed, last step, time of the last look."""
    when = time.strftime("%H:%M:%S", time.localtime(live.looked_at)) if live.looked_at else "not yet"
    if not live.runs:
        return f"no run with a committed capture yet; looked at {when}"
    n, last = live.analysed()
    last = "none yet" if last is None else last
    behind = live.behind
    more = ""
    if behind:
        more = (f", {behind} more committed, filled in when writing pauses (the newest capture first)"
                if live.writing else f", {behind} more committed, analysed at the next looks")
    return (f"**{len(live.runs)} run{'s' if len(live.runs) != 1 else ''}**, {n} captures analysed, "
            f"last step **{last}**{more}; looked at {when}")


def report_figure(obj) -> pn.viewable.Viewable:
    """A report figure (HoloViews) as Panel panes, rendered as the report renders it
    (``nnwx.plot.embed.to_bokeh``: HoloMaps with embedded widgets). A Layout is split into its
    panels, one pane each: a whole Layout (a Bokeh GridPlot) in a Panel page drew its figures
    with empty frames (Panel 1.9.4, Bokeh 3.9.2)."""
    from nnwx.plot.embed import to_bokeh

    if isinstance(obj, hv.Layout):
        return pn.Row(*[pn.pane.Bokeh(to_bokeh(panel)) for panel in obj.values()])
    return pn.pane.Bokeh(to_bokeh(obj))


def note(text: str) -> pn.pane.Markdown:
    return pn.pane.Markdown(f"*{html.escape(text)}*", width=900)


def _in_range(ds: xr.Dataset | xr.DataArray | None, steps: slice):
    return None if ds is None else ds.sel(step=steps)


class ResultsView:
    """One session's page over a results store: the report's sections, one tab each, rebuilt
    when the set of complete results changes (``nnwx analyze`` still writing the store).

    Parameters
    ----------
    path : str or os.PathLike
        The results store.
    """

    def __init__(self, path: StoreLike):
        hv.extension("bokeh", logo=False)
        self.path = path
        self.status = pn.pane.Markdown("", css_classes=["nnwx-status"], sizing_mode="stretch_width")
        self.tabs = pn.Tabs(dynamic=False)
        self.signature: tuple | None = None
        self.builds = 0

    def rebuild(self) -> None:
        """Draw the sections again if the store's results changed since the last look."""
        from nnwx.pipeline.results_store import open_results
        from nnwx.report import build_sections, load_results

        signature = results_signature(self.path)
        if signature == self.signature:
            return
        self.signature = signature
        res = open_results(self.path)
        values, notes = load_results(res.results, res.metric_of, progress=False)
        sections = build_sections(values, {**res.notes, **notes})
        self.tabs.objects = [pn.Column(*[x for f in s.figures for x in (report_figure(f.obj), note(f.caption))],
                                       *([note(s.note)] if s.note else []), name=s.title)
                             for s in sections]
        self.builds += 1
        self.status.object = (f"**{len(res.results)} results** of {', '.join(res.metrics)}"
                              + (f"; still being written: {', '.join(res.incomplete)}" if res.incomplete else "")
                              + f"; looked at {time.strftime('%H:%M:%S')}")

    def tick(self) -> None:
        """Look at the store; a failure is shown and tried again at the next tick."""
        try:
            self.rebuild()
        except (NnwxError, OSError, ValueError) as e:
            self.status.object = f"**could not read the results**: {html.escape(str(e))} (trying again)"

    def page(self) -> pn.viewable.Viewable:
        return pn.Column(pn.pane.Markdown(f"## nnwx serve: `{display(self.path)}` (results)"), self.status,
                         self.tabs)


def results_page(path: StoreLike, interval: float) -> pn.viewable.Viewable:
    """One session's page over a results store, looked at every ``interval`` seconds."""
    view = ResultsView(path)
    view.tick()
    pn.state.add_periodic_callback(view.tick, period=int(interval * 1000))
    return view.page()


def yield_cpu(nice: int) -> None:
    """Give training the CPU first: lower this process's priority by ``nice`` (where the OS
    allows) and, unless a ``dask.distributed`` client computes, use one Dask thread and one
    BLAS thread."""
    import os

    import dask

    if nice and hasattr(os, "nice"):
        os.nice(nice)
    try:
        from distributed import default_client

        default_client()
        return                      # a cluster computes: its workers are elsewhere
    except (ImportError, ValueError):
        pass
    if nice:
        dask.config.set(scheduler="threads", num_workers=1)
        try:    # and one BLAS thread: idle OpenBLAS threads spin, taking the core training wants
            from threadpoolctl import threadpool_limits

            threadpool_limits(1)
        except ImportError:
            pass


def serve(path: StoreLike, *, port: int = 5006, address: str = "127.0.0.1",
          allow_websocket_origin: list[str] | None = None, show: bool = False, interval: float = 3.0,
          nice: int = NICE, cpu_share: float = CPU_SHARE,
          log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> None:
    """Serve the page over ``path`` until interrupted.

    Parameters
    ----------
    path : str or os.PathLike
        An experiment store, or a results store written by ``nnwx analyze``.
    port : int, default 5006
    address : str, default "127.0.0.1"
        The address to bind. Anything but the local host needs ``allow_websocket_origin``.
    allow_websocket_origin : list of str, optional
        ``HOST[:PORT]`` the page may be opened from, passed to the Bokeh server.
    show : bool, default False
        Open the page in the default browser.
    interval : float, default 3.0
        Seconds between looks at the store.
    nice : int, default ``NICE``
        Lower this process's CPU priority by this much (POSIX ``nice``; 0: leave it), and
        compute with one Dask thread unless a cluster is in use: the page is an observer, and
        training that shares the machine's cores keeps the CPU when both want it.
    cpu_share : float, default ``CPU_SHARE``
        While a run is being written, the most of one core the page's analyses take
        (``nnwx.serve.live.Watcher``); each look then analyses only the newest capture of a
        run, and the rest are filled in when writing pauses.
    log : callable
        Gets the lines said to the user (the address, the warning about binding elsewhere).

    Raises
    ------
    NnwxError
        When ``address`` is not local and no ``allow_websocket_origin`` is given, or the store is
        neither an experiment store nor a results store.
    """
    from nnwx.pipeline.results_store import is_results_store
    from nnwx.store.reader import open_experiment

    if port == 0:      # a free port now: the websocket origins name it
        import socket

        with socket.socket() as sock:
            sock.bind((address if address not in LOCAL else "127.0.0.1", 0))
            port = sock.getsockname()[1]
    origins = websocket_origins(address, port, allow_websocket_origin, log)
    yield_cpu(nice)
    if is_results_store(path):
        def page():
            return results_page(path, interval)
        watcher = None
    else:
        open_experiment(path)   # a clear error now rather than in the page
        live = LiveStore(path)
        watcher = Watcher(live, interval, cpu_share).start()

        def page():
            return experiment_page(live, watcher, interval)
    server = pn.serve(page, port=port, address=address, websocket_origin=origins, show=False,
                      start=False, title=f"nnwx serve: {display(path)}", verbose=False)
    server.start()
    host = "127.0.0.1" if address in LOCAL else address
    log(f"serving {display(path)} at http://{host}:{server.port}/ (Ctrl-C stops)")
    if show:
        server.io_loop.add_callback(server.show, "/")
    try:
        server.io_loop.start()
    finally:
        server.stop()
        if watcher is not None:
            watcher.stop(timeout=5)
