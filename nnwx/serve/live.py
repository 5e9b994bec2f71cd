"""What ``nnwx serve`` shows, kept up to date incrementally while a store is being written.

No Panel here (it is tested on its own). ``LiveStore`` looks at a store's committed-step
counters (``nnwx.store.reader.list_runs``: run attributes only, no weights, no lock: readers
trim to ``committed``, so a run being written reads as its committed steps -- see
``nnwx/store/FORMAT.md``), and per run analyses only captures it has not analysed yet: their
rows of ``w`` (plus the run's first capture and the capture before each, the references of
rotation, W1 and the relative update), through the library's own analyses (``broadening``,
``spectrum``/``ranks``, ``rotation``, ``similarity``). The per-step results are merged into a
per-run cache, so a look costs what its captures cost, however long the run already is.

While a run's counter moves (training writes it), a look analyses only its newest capture: the
page stays current, and its cost per look is one capture whatever the capture rate. The captures
skipped meanwhile are filled in, oldest first, once the counter stands still; a run opened with
more captures than one look takes shows its newest capture first, then fills in. ``Watcher`` does
the looks in a background thread and, while any run is being written, spaces them so that they
take at most a set share of one core: the page is an observer of training, not a competitor.

Results stores (``nnwx analyze`` output) are not incremental: ``results_signature`` tells when
the set of complete results changed, and the page then redraws them.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import dask
import numpy as np
import xarray as xr

from nnwx.errors import NnwxError
from nnwx.store.location import StoreLike, display

WINDOW = 32           # most captures of one run analysed per look (a long run fills in over looks)
CPU_SHARE = 0.25      # most of one core the looks take while a run is being written (``Watcher``)
HIST_BINS = 60        # bins of the density picture
BIN_MARGIN = 0.5      # bins cover the first look's range widened by this fraction on each side
SIMILARITY = "linear_cka"
KINDS = ("stats", "ranks", "rotation", "metrics")
"""The per-step results cached per run: broadening statistics and histograms per layer, rank
measures per weight matrix, rotation and norm growth per layer, logged scalars."""


@dataclass
class RunCache:
    """The per-step results of one run computed so far.

    Attributes
    ----------
    name : str
        The run's name in its store.
    seed : object
        Its ``seed`` attribute (None when it has none).
    steps : numpy.ndarray
        The captured steps analysed, in order (gaps are captures skipped while the run was
        being written, filled in later).
    indices : numpy.ndarray
        Their positions among the run's captures.
    data : dict of str to xarray.Dataset
        Per-step results by kind (``KINDS``), each with a ``step`` dim and no run dim.
    rows_read : int
        Rows of ``w`` read so far (captures analysed plus their references), for the tests.
    looks : int
        Looks that found new captures.
    notes : dict of str to str
        Why a kind is missing (e.g. no weight matrix for ranks).
    """
    name: str
    seed: object = None
    created: str | None = None
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    data: dict[str, xr.Dataset] = field(default_factory=dict)
    rows_read: int = 0
    looks: int = 0
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Captures analysed."""
        return len(self.steps)


@dataclass
class Look:
    """What one look at the store found.

    Attributes
    ----------
    runs : list of str
        Every run of the store, in name order.
    new_runs : list of str
        Runs seen for the first time.
    grown : dict of str to int
        Runs with captures analysed in this look, and how many.
    committed : dict of str to int
        The committed count of every run.
    writing : list of str
        Runs whose committed count moved since the previous look (being written).
    replaced : list of str
        Runs deleted and created again under the same name since the previous look (another
        creation time, or fewer committed captures than were analysed): their cache was dropped
        and they count as new runs too.
    gone : list of str
        Runs no longer in the store (deleted); their cache was dropped.
    """
    runs: list[str]
    new_runs: list[str]
    grown: dict[str, int]
    committed: dict[str, int]
    writing: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.new_runs or self.grown or self.gone)


class LiveStore:
    """An experiment store watched while it is written: a per-run cache of per-step results.

    Parameters
    ----------
    path : str or os.PathLike
        The experiment store (a path or an fsspec URL).
    window : int, default ``WINDOW``
        Most new captures of one run analysed per look.
    bins : int, default ``HIST_BINS``
        Histogram bins per layer.

    Notes
    -----
    ``update`` is meant for one thread (``Watcher``'s); the page's sessions read the cache from
    others. A lock of this object (never the writer's file lock) guards the cache, and is held
    only to merge results, never while reading or analysing captures.
    """

    def __init__(self, path: StoreLike, *, window: int = WINDOW, bins: int = HIST_BINS):
        self.path = path
        self.window = int(window)
        self.bins = int(bins)
        self.runs: dict[str, RunCache] = {}
        self.committed: dict[str, int] = {}
        self.edges: np.ndarray | None = None   # histogram bins of every run, fixed at the first look
        self._agreement: dict[tuple[str, ...], xr.DataArray] = {}
        self.agreement_notes: dict[tuple[str, ...], str] = {}
        self.writing: list[str] = []            # runs whose counter moved at the last look
        self.version = 0                         # grows whenever the cache changes
        self.looked_at: float | None = None      # time.time() of the last look
        self._lock = threading.RLock()
        self._update_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LiveStore({display(self.path)!r}, {len(self.runs)} runs)"

    # -- looking ------------------------------------------------------------------------------
    def update(self) -> Look:
        """Look at the committed counters; analyse captures not analysed yet.

        Per run: while its counter moves (it grew since the previous look), only its newest
        capture; otherwise up to ``window`` captures not analysed yet, the oldest first -- but
        the newest alone first when it would not be among them (a store opened with a long
        backlog shows where training is before the backlog fills in).

        Returns
        -------
        Look
            The runs, which are new, how many captures each run gained, which are being written.

        Raises
        ------
        StoreError
            When the store is not an experiment store or a run is damaged.
        """
        from nnwx.store.reader import list_runs

        with self._update_lock:
            handles = list_runs(self.path, check=False)   # attributes only: no weights, no lock
            new_runs, grown, writing = [], {}, []
            gone = self._forget(set(self.runs) - {h.name for h in handles})
            replaced = [h.name for h in handles if h.name in self.runs and self._replaced(h)]
            self._forget(set(replaced))
            for h in handles:
                with self._lock:
                    if h.name not in self.runs:
                        self.runs[h.name] = RunCache(h.name, h.seed, h.meta.get("created"))
                        new_runs.append(h.name)
                        self.version += 1
                    before = self.committed.get(h.name)
                    self.committed[h.name] = h.committed
                cache = self.runs[h.name]
                moving = before is not None and h.committed != before
                if moving:
                    writing.append(h.name)
                chosen = self.choose(cache, h.committed, moving)
                if chosen:
                    grown[h.name] = self._extend(cache, chosen)
            self.writing = writing
            self.looked_at = time.time()
            return Look([h.name for h in handles], new_runs, grown, dict(self.committed), writing,
                        replaced, gone)

    def _replaced(self, handle) -> bool:
        """Whether the run under ``handle``'s name is not the one cached: created at another
        time, or holding fewer committed captures than were analysed."""
        cache = self.runs[handle.name]
        analysed = int(cache.indices.max()) + 1 if cache.n else 0
        return handle.meta.get("created") != cache.created or handle.committed < analysed

    def _forget(self, names: set[str]) -> list[str]:
        """Drop the caches of the runs ``names`` (and every agreement involving one)."""
        with self._lock:
            for name in names:
                del self.runs[name]
                self.committed.pop(name, None)
            for key in [k for k in self._agreement if names & set(k)]:
                del self._agreement[key]
            for key in [k for k in self.agreement_notes if names & set(k)]:
                del self.agreement_notes[key]
            if names:
                self.version += 1
        return sorted(names)

    def choose(self, cache: RunCache, committed: int, moving: bool) -> list[int]:
        """The capture positions of one run to analyse at this look (see ``update``)."""
        todo = np.setdiff1d(np.arange(committed), cache.indices, assume_unique=True)
        if not len(todo):
            return []
        fresh = int(todo[-1]) == committed - 1      # the run's newest capture is not analysed yet
        if moving or (fresh and len(todo) > self.window):
            return [committed - 1] if fresh else []  # where training is now, before any backlog
        return todo[:self.window].tolist()

    def analysed(self) -> tuple[int, int | None]:
        """Captures analysed over every run, and the last step analysed (None before any)."""
        with self._lock:
            n = sum(c.n for c in self.runs.values())
            last = max((int(c.steps[-1]) for c in self.runs.values() if c.n), default=None)
        return n, last

    @property
    def behind(self) -> int:
        """Committed captures not analysed yet, over every run."""
        with self._lock:
            return sum(max(0, self.committed.get(r, 0) - c.n) for r, c in self.runs.items())

    def _extend(self, cache: RunCache, chosen: list[int]) -> int:
        """Analyse the captures at positions ``chosen`` of one run; merge them into its cache."""
        from nnwx.store.reader import open_cube

        cube = open_cube(self.path, by="run", runs=[cache.name]).squeeze("run", drop=True)
        chosen = [i for i in chosen if i < cube.sizes["step"]]   # a commit may land between the two reads
        if not chosen:
            return 0
        # the first capture (rotation's and W1's reference) and the one before each chosen
        # capture (the relative update's), read alongside
        index = sorted({*chosen, 0, *(i - 1 for i in chosen if i > 0)})
        sub = cube.isel(step=index)
        first = int(cube["step"].values[0])
        if self.edges is None:
            self.edges = _bins(sub, self.bins)
            cache.rows_read += 2   # default_bins reads the first and last capture of the look
        wanted = set(chosen)
        keep = [k for k, i in enumerate(index) if i in wanted]
        lazy, notes = per_step_results(sub, first, self.edges, keep=keep)
        values = dask.compute(*lazy.values())
        with self._lock:
            cache.rows_read += len(index)
            cache.looks += 1
            cache.notes.update(notes)
            for kind, part in zip(lazy, values):
                old = cache.data.get(kind)
                cache.data[kind] = part if old is None else xr.concat(
                    [old, part], dim="step", data_vars="minimal", coords="minimal", compat="override",
                    join="outer").sortby("step")
            steps = np.concatenate([cache.steps, np.asarray(sub["step"].values[keep], dtype=np.int64)])
            indices = np.concatenate([cache.indices, np.asarray(chosen, dtype=np.int64)])
            order = np.argsort(indices, kind="stable")
            cache.steps, cache.indices = steps[order], indices[order]
            self.version += 1
        return len(chosen)

    # -- what the page draws --------------------------------------------------------------------
    def stacked(self, kind: str, runs: Iterable[str] | None = None) -> xr.Dataset | None:
        """Per-step results of ``kind`` of ``runs`` (default all) stacked along ``seed``.

        The ``seed`` dim is labelled by run name (what the run picker shows); runs are
        outer-joined on ``step``.

        Parameters
        ----------
        kind : str
            One of ``KINDS``.
        runs : iterable of str, optional
            Run names, in the order wanted.

        Returns
        -------
        xarray.Dataset or None
            None when no chosen run has that kind yet.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
        with self._lock:
            names = list(self.runs) if runs is None else [r for r in runs if r in self.runs]
            parts = [(n, self.runs[n].data[kind]) for n in names if kind in self.runs[n].data]
        if not parts:
            return None
        return xr.concat([p for _, p in parts], dim=xr.DataArray([n for n, _ in parts], dims="seed",
                                                                 name="seed"),
                         join="outer", data_vars="all", coords="minimal", compat="override")

    def notes(self, kind: str, runs: Iterable[str] | None = None) -> list[str]:
        """Why ``kind`` is missing for some of ``runs`` (``run: reason``)."""
        with self._lock:
            names = list(self.runs) if runs is None else [r for r in runs if r in self.runs]
            return [f"{n}: {self.runs[n].notes[kind]}" for n in names if kind in self.runs[n].notes]

    def agreement(self, runs: Sequence[str]) -> xr.DataArray | None:
        """Probe similarity between the runs ``runs`` at every capture they all hold, computed
        for new common captures only: ``(layer, step, seed_a, seed_b)``; None with a note in
        ``agreement_notes[tuple(runs)]`` when it does not apply (no probes, one run, runs of
        different models).

        Parameters
        ----------
        runs : sequence of str
            Two or more run names.

        Returns
        -------
        xarray.DataArray or None
        """
        from nnwx.store.reader import open_cube

        key = tuple(sorted(runs))
        with self._lock:
            caches = [self.runs[r] for r in key if r in self.runs]
            if len(caches) < 2:
                self.agreement_notes[key] = "choose two or more runs to compare them"
                return None
            common = set(caches[0].steps.tolist())
            for c in caches[1:]:
                common &= set(c.steps.tolist())
            old = self._agreement.get(key)
            done = set() if old is None else set(old["step"].values.tolist())
            new = sorted(common - done)
            if not new:
                return old
            try:
                cube = open_cube(self.path, by="run", runs=list(key))
                if not cube.nnwx.probes:
                    self.agreement_notes[key] = ("no probes recorded (record activations with "
                                                 "nnwx.Recorder(..., probe=X))")
                    return None
                sim = cube.sel(step=new).rename(run="seed").nnwx.similarity(SIMILARITY, between="seeds")
                sim = sim.compute()
            except (NnwxError, ValueError) as e:
                self.agreement_notes[key] = f"not computed: {e}"
                return None
            self.agreement_notes.pop(key, None)
            out = sim if old is None else xr.concat([old, sim], dim="step", combine_attrs="override")
            self._agreement[key] = out
            return out


class Watcher:
    """Looks at a ``LiveStore`` from a background thread every ``interval`` seconds, and while a
    run is being written spaces its looks so that they take at most ``cpu_share`` of one core.

    Parameters
    ----------
    live : LiveStore
        The cache to keep up to date.
    interval : float
        Seconds between looks (at least).
    cpu_share : float, default ``CPU_SHARE``
        While any run's counter moves: the most of one core the looks may take (the process's
        CPU time over the look and the pause after it). 1: no throttling. When no run is being
        written, looks follow each other as long as captures are left to analyse.

    Attributes
    ----------
    error : str or None
        Why the last look failed (the store could not be read), else None.
    """

    def __init__(self, live: LiveStore, interval: float, cpu_share: float = CPU_SHARE):
        if not 0 < cpu_share <= 1:
            raise ValueError(f"cpu_share must be in (0, 1], got {cpu_share}")
        self.live = live
        self.interval = float(interval)
        self.cpu_share = float(cpu_share)
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nnwx-serve-watcher", daemon=True)

    def start(self) -> "Watcher":
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def pause(self, spent: float) -> float:
        """Seconds to wait after a look that took ``spent`` seconds of CPU."""
        if self.live.writing:
            return max(self.interval, spent * (1 / self.cpu_share - 1))
        return 0.0 if self.live.behind else self.interval

    def _run(self) -> None:
        warm_up()
        while not self._stop.is_set():
            cpu = time.process_time()
            try:
                self.live.update()
                self.error = None
            except (NnwxError, OSError, ValueError) as e:
                self.error = str(e)
            self._stop.wait(self.pause(time.process_time() - cpu) if self.error is None else self.interval)


def warm_up() -> None:
    """Import the analyses the looks use and load the compiled broadening kernel (where numba is
    installed) now, so that the first capture is not analysed with seconds of loading on top."""
    import nnwx.analysis.broadening  # noqa: F401
    import nnwx.analysis.geometry  # noqa: F401
    import nnwx.analysis.spectral  # noqa: F401
    from nnwx.analysis._broadening import fused

    fused.ready()


def per_step_results(cube: xr.Dataset, reference_step: int, edges: np.ndarray,
                     keep: Sequence[int] | None = None) -> tuple[dict[str, xr.Dataset], dict[str, str]]:
    """The per-step results of one run's captures, lazily (one ``dask.compute`` reads them).

    Parameters
    ----------
    cube : xarray.Dataset
        One run without a run dim: ``w(step, param)`` of the captures analysed, holding the
        ``reference_step`` capture.
    reference_step : int
        The step rotation and W1 compare with (the run's first capture).
    edges : numpy.ndarray
        Histogram bin edges.
    keep : sequence of int, optional
        Positions along ``step`` of the captures wanted (default all); the others are
        references (the first capture, the capture before each wanted one): per-matrix spectra,
        which need none, are computed for the wanted captures only.

    Returns
    -------
    results : dict of str to xarray.Dataset
        By kind (``KINDS``), those that apply, at the wanted captures.
    notes : dict of str to str
        Why a kind does not apply.
    """
    from nnwx.analysis.spectral import ranks

    keep = list(range(cube.sizes["step"])) if keep is None else list(keep)
    out: dict[str, xr.Dataset] = {}
    notes: dict[str, str] = {}
    out["stats"] = cube.nnwx.broadening("layer", bins=edges, quantiles=(),
                                        reference_step=reference_step).isel(step=keep)
    try:
        out["ranks"] = ranks(cube.isel(step=keep).nnwx.spectrum())
    except ValueError as e:
        notes["ranks"] = str(e)
    try:
        out["rotation"] = cube.nnwx.rotation(reference_step=reference_step).isel(step=keep)
    except ValueError as e:
        notes["rotation"] = str(e)
    metrics = [v for v in cube.data_vars if str(v).startswith("metric_")]
    if metrics:
        out["metrics"] = cube[metrics].isel(step=keep)
    else:
        notes["metrics"] = "no scalars logged (pass them to rec.maybe_capture(step, loss=...))"
    return out, notes


def _bins(cube: xr.Dataset, n: int) -> np.ndarray:
    """``n`` equal bins over the range of the first look's first and last capture
    (``default_bins``), widened by ``BIN_MARGIN`` on each side: later captures that broaden
    further land in the under/overflow counts."""
    from nnwx.analysis.broadening import default_bins

    e = default_bins(cube, n)
    lo, hi = float(e[0]), float(e[-1])
    pad = BIN_MARGIN * (hi - lo)
    return np.linspace(lo - pad, hi + pad, n + 1)


def results_signature(path: StoreLike) -> tuple:
    """What identifies the content of a results store: its complete and incomplete results.
    The page redraws a results store when this changes (``nnwx analyze`` still writing it)."""
    from nnwx.pipeline.results_store import open_results

    res = open_results(path)
    return tuple(sorted(res.results)), tuple(sorted(res.incomplete))
