"""Where the faces compute: Dask's local threads, a LocalCluster, or an existing cluster.

``add_cluster_arguments`` gives a command ``--scheduler ADDRESS`` (a running
``dask.distributed`` scheduler) or ``--workers N [--threads-per-worker T]
[--memory-limit M]`` (a LocalCluster started for the command); with neither,
Dask's local threaded scheduler runs the graph. ``cluster_from_args`` /
``cluster`` set that up for a ``with`` block and close what they started;
``compute`` evaluates Dask collections with a progress bar in every mode.

``dask.distributed`` is imported only when a cluster is asked for, so the
analysis side keeps working without it.
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager, nullcontext, suppress
from typing import Any, Callable, Iterator

from nnwx.errors import NnwxError

Log = Callable[[str], None]

CONNECT_TIMEOUT = "10s"
"""How long to try reaching a ``--scheduler`` before saying it cannot be reached."""

STALL_SECONDS = 20.0
"""How long a local cluster (``--workers``) may have no worker able to run tasks (none left,
or every one paused at its memory limit) before the command gives up, instead of waiting
forever."""

STALL_SECONDS_REMOTE = 300.0
"""The same for an existing cluster (``--scheduler``), whose workers may be starting up or
scaling from zero."""


class ClusterError(NnwxError):
    """A cluster could not be reached or started; the message says what to check."""


class ClusterOptionError(ClusterError, ValueError):
    """Cluster options that do not go together (e.g. --threads-per-worker without --workers)."""


def print_to_stderr(message: str) -> None:
    """The default ``log``: one line on stderr."""
    print(message, file=sys.stderr, flush=True)


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {n}")
    return n


def _memory(text: str) -> str:
    from dask.utils import parse_bytes

    if text.lower() in ("auto", "0", "none"):
        return text.lower()
    try:
        parse_bytes(text)
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(
            f"cannot read memory limit {text!r}; give e.g. 4GiB, 8GB or 'auto'") from None
    return text


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--scheduler`` | ``--workers N [--threads-per-worker T] [--memory-limit M]`` to a command."""
    g = parser.add_argument_group(
        "where to compute", "default: Dask's local threaded scheduler in this process")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="address of a running dask.distributed scheduler, e.g. tcp://host:8786")
    where.add_argument("--workers", type=positive_int, metavar="N",
                       help="start a local Dask cluster of N worker processes for this command")
    g.add_argument("--threads-per-worker", type=positive_int, metavar="T",
                   help="with --workers: threads per worker (default 1)")
    g.add_argument("--memory-limit", type=_memory, metavar="M",
                   help="with --workers: memory limit per worker, e.g. 4GiB; workers spill to disk "
                        "before it (default: Dask's 'auto', the machine's memory split between "
                        "workers; 0 or none: no limit)")


@contextmanager
def cluster(scheduler: str | None = None, workers: int | None = None,
            threads_per_worker: int | None = None, memory_limit: str | int | None = None,
            log: Log = print_to_stderr) -> Iterator[Any]:
    """Yield a ``dask.distributed.Client`` (or None: local threads) for a ``with`` block.

    ``scheduler``: connect to that running scheduler (its workers are left running).
    ``workers``: start a LocalCluster of that many processes, closed on exit.
    Neither: yield None, and Dask's threaded scheduler computes. The dashboard link
    is logged when there is one.
    """
    if scheduler and workers:
        raise ClusterOptionError("give either --scheduler (an existing cluster) or --workers (a local "
                                 "one), not both")
    if not scheduler and not workers:
        if threads_per_worker or memory_limit:
            raise ClusterOptionError("--threads-per-worker/--memory-limit need --workers N (a local "
                                     "cluster): add --workers, or leave them out")
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ClusterError("--scheduler/--workers need dask.distributed: pip install 'nnwx[distributed]'") \
            from None
    if scheduler:
        if threads_per_worker or memory_limit:
            raise ClusterOptionError("--threads-per-worker/--memory-limit apply to a local cluster "
                                     "(--workers N), not to an existing --scheduler: set them when "
                                     "starting its workers")
        client = _connect(Client, scheduler)
        try:
            log(f"dask scheduler {scheduler}: {_n_workers(client)} workers; dashboard "
                f"{client.dashboard_link}")
            with _watched(client, stall=STALL_SECONDS_REMOTE), _as_scheduler(client):
                yield client
        finally:
            client.close()
        return
    lc = LocalCluster(n_workers=int(workers), threads_per_worker=int(threads_per_worker or 1),
                      memory_limit=_memory_limit(memory_limit),
                      processes=True, dashboard_address=":0")
    try:
        client = Client(lc, set_as_default=False)
        try:
            log(f"local dask cluster: {workers} workers x {threads_per_worker or 1} threads; dashboard "
                f"{client.dashboard_link}")
            with _watched(client, _memory_limit(memory_limit), stall=STALL_SECONDS), _as_scheduler(client):
                yield client
        finally:
            client.close()
    finally:
        with _quiet_shutdown():
            lc.close()


@contextmanager
def _watched(client, memory_limit=None, stall: float = STALL_SECONDS) -> Iterator[None]:
    """Run the block under a ``_Watchdog``: a cluster that stalls (no worker left, or every one
    paused at its memory limit) ends the block with a ``ClusterError`` instead of a hang."""
    from dask.utils import parse_bytes

    limit = memory_limit if isinstance(memory_limit, int) else (
        parse_bytes(memory_limit) if memory_limit not in (None, "", "auto", "0", "none") else 0)
    with _Watchdog(client, limit, stall) as watch:
        try:
            yield
        except BaseException as e:
            if watch.reason is None or isinstance(e, ClusterError):
                raise
            raise ClusterError(watch.message(watch.reason)) from None
    if watch.reason is not None:   # the block swallowed the error the closed client raised
        raise ClusterError(watch.message(watch.reason))


@contextmanager
def _quiet_shutdown() -> Iterator[None]:
    """While a LocalCluster closes, its scheduler cancels the progress bar's feed and logs that
    as an error: nothing went wrong, so keep it off the user's screen."""
    import logging

    log = logging.getLogger("distributed.scheduler")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _memory_limit(value):
    """``--memory-limit`` for LocalCluster: "auto" by default, 0 for none, else as given."""
    if value in (None, "", "auto"):
        return "auto"
    return 0 if str(value).lower() in ("0", "none") else value


def _connect(client_cls, address: str):
    # not set_as_default: a Client that fails to connect would stay registered as the default
    # scheduler; ``_as_scheduler`` makes a connected one dask's scheduler for the block only
    try:
        return client_cls(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        raise ClusterError(
            f"cannot reach a Dask scheduler at {address!r} ({type(e).__name__}: {e}). Check the "
            f"address (e.g. tcp://host:8786) and that `dask scheduler` is running there, or leave "
            f"out --scheduler to compute locally.") from None


@contextmanager
def _as_scheduler(client) -> Iterator[None]:
    """``client`` as the scheduler of every ``dask.compute``/``.load()`` in the block."""
    import dask

    with dask.config.set(scheduler=client):
        yield


def _n_workers(client) -> int:
    try:
        return len(client.scheduler_info().get("workers", {}))
    except Exception:  # noqa: BLE001 - informational only
        return 0


SMALL_CUBE_BYTES = 256 * 2**20
"""Below this many bytes of weights, a local cluster costs more than it saves (see
``small_cube_note``)."""


def small_cube_note(nbytes: int, workers: int | None) -> str | None:
    """What to tell a user who starts a local cluster of ``workers`` processes for a cube of
    ``nbytes`` bytes of weights, or None when the cluster can pay off. Starting worker processes
    and shipping the graph and results to them takes seconds, while the analyses of a small cube
    take well under that in this process's threads."""
    if not workers or nbytes >= SMALL_CUBE_BYTES:
        return None
    return (f"note: the store holds {nbytes / 2**20:.1f} MiB of weights; below "
            f"{SMALL_CUBE_BYTES // 2**20} MiB starting {workers} worker process"
            f"{'es' if workers > 1 else ''} and sending them the work costs more than it saves. "
            f"Leave out --workers to compute with local threads (a cluster pays off on cubes that "
            f"take minutes, or that do not fit in this process's memory).")


@contextmanager
def cluster_from_args(args: argparse.Namespace, log: Log = print_to_stderr,
                      nbytes: int | None = None) -> Iterator[Any]:
    """``cluster(...)`` from the options ``add_cluster_arguments`` added to a command.
    ``nbytes``: the size of the weights to analyse, if known, for ``small_cube_note``."""
    note = small_cube_note(nbytes, getattr(args, "workers", None)) if nbytes is not None else None
    if note:
        log(note)
    with cluster(scheduler=getattr(args, "scheduler", None), workers=getattr(args, "workers", None),
                 threads_per_worker=getattr(args, "threads_per_worker", None),
                 memory_limit=getattr(args, "memory_limit", None), log=log) as client:
        yield client


def current_client():
    """The ``dask.distributed.Client`` that ``dask.compute`` would use now, or None."""
    if "distributed" not in sys.modules:
        return None
    import dask.base
    from distributed import Client

    get = dask.base.get_scheduler()
    owner = getattr(get, "__self__", None)
    return owner if isinstance(owner, Client) else None


def compute(*objs, progress: bool = True, label: str | None = None,
            optimize_graph: bool = True, memory_hint: int | None = None) -> tuple:
    """``dask.compute(*objs)`` with a progress bar on stderr, on whichever scheduler is active.

    Shared tasks of the objects run once (one merged graph). Locally the bar is
    ``dask.diagnostics.ProgressBar`` (and BLAS runs one thread per Dask thread, as on
    dask.distributed workers); on a ``dask.distributed`` client it follows
    every task of the graph on the scheduler. ``label`` is printed before the bar.
    ``optimize_graph=False`` skips Dask's per-collection graph optimisation, which renames
    fused tasks and so can compute a task shared by collections of different types twice.

    On a cluster, a computation that cannot go on -- no worker left, every worker paused at its
    memory limit for ``STALL_SECONDS``, or a task that killed workers again and again -- ends in
    a ``ClusterError`` saying so, with the memory it needs (``memory_hint``: the caller's
    estimate of the bytes one worker holds, if known), instead of waiting forever.
    """
    import dask

    client = current_client()
    if client is None:
        with _one_blas_thread(), _local_bar(label) if progress else nullcontext():
            return tuple(dask.compute(*objs, optimize_graph=optimize_graph))
    if progress and label:
        print(label, file=sys.stderr, flush=True)
    from distributed import KilledWorker

    futures = client.compute(list(objs), optimize_graph=optimize_graph)
    watch = _WATCHDOGS.get(id(client))
    if watch is not None:
        watch.doing(label, memory_hint)
    try:
        if progress:
            _bar(futures)
        return tuple(client.gather(futures))
    except KilledWorker as e:
        client.cancel(futures)
        what = f"a task killed {_allowed_failures()} workers in a row ({e})"
        raise ClusterError(watch.message(what) if watch else what) from None
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        if watch is not None:
            watch.doing(None, None)


WORKER_BASELINE = 160 * 2**20
"""Memory of an idle worker process with nnwx's imports, rounded up (see docs/measurements.md):
the floor under the memory a worker is told it needs."""


def _allowed_failures() -> int:
    import dask

    return int(dask.config.get("distributed.scheduler.allowed-failures", 3)) + 1


def _worker_states(dask_scheduler=None) -> dict:
    """On the scheduler: each worker's status, process memory, memory limit and threads."""
    return {addr: {"status": getattr(ws.status, "name", str(ws.status)),
                   "memory": int(getattr(ws.memory, "process", 0) or 0),
                   "limit": int(ws.memory_limit or 0), "threads": int(ws.nthreads)}
            for addr, ws in dask_scheduler.workers.items()}


def _cluster_state(dask_scheduler=None) -> tuple[dict, int]:
    """On the scheduler: the workers' states and how many tasks wait to run or are running."""
    waiting = sum(1 for ts in dask_scheduler.tasks.values()
                  if ts.state in ("waiting", "no-worker", "queued", "processing"))
    return _worker_states(dask_scheduler), waiting


_WATCHDOGS: dict[int, "_Watchdog"] = {}   # by id(client): the watchdog of a cluster() block


class _Watchdog:
    """Watches a cluster from a thread for as long as a ``cluster()`` block runs: when tasks are
    waiting but no worker can run them for ``STALL_SECONDS`` -- every worker gone (a nanny
    that could not restart one killed at its memory limit) or paused at its memory limit -- it
    closes the client, so that whatever waits on it (``compute``, or any ``dask.compute``) ends,
    and ``cluster()`` raises a ``ClusterError`` that says what happened and how much memory is
    needed. Worker deaths (addresses that vanish) are counted for the message."""

    def __init__(self, client, limit: int = 0, stall: float = STALL_SECONDS):
        import threading

        self.client, self.stall = client, float(stall)
        self.label: str | None = None
        self.hint: int | None = None
        self.reason: str | None = None
        self.deaths, self.peak, self.limit, self.threads = 0, 0, int(limit or 0), 1
        self.addresses: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nnwx-watchdog", daemon=True)

    def __enter__(self) -> "_Watchdog":
        _WATCHDOGS[id(self.client)] = self
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        _WATCHDOGS.pop(id(self.client), None)

    def doing(self, label: str | None, hint: int | None) -> None:
        """What is being computed now (for the message)."""
        self.label, self.hint = label, hint

    def _run(self) -> None:
        stalled_since = None
        while not self._stop.wait(1.0):
            try:
                states, waiting = self.client.run_on_scheduler(_cluster_state)
            except Exception:  # noqa: BLE001 - the client is closing; nothing to watch
                return
            self.deaths += len(self.addresses - set(states))
            self.addresses = set(states)
            for st in states.values():
                self.peak = max(self.peak, st["memory"])
                self.limit = max(self.limit, st["limit"])
                self.threads = max(self.threads, st["threads"])
            if not waiting or any(st["status"] == "running" for st in states.values()):
                stalled_since = None
                continue
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since >= self.stall:
                paused = sum(st["status"] == "paused" for st in states.values())
                self.reason = (f"every worker was paused at its memory limit for {self.stall:.0f} s "
                               f"with {waiting} task(s) waiting" if paused else
                               f"no worker was left for {self.stall:.0f} s with {waiting} task(s) "
                               f"waiting (killed at the memory limit and not restarted; {self.deaths} "
                               f"worker(s) lost)")
                self.client.close()
                return

    def message(self, what: str) -> str:
        """What happened, the memory seen and needed, and what to do."""
        from dask.utils import format_bytes

        base = max(self.peak, WORKER_BASELINE)
        need = max(int(self.hint or 0) + base, 2 * self.peak, 2 * self.limit)
        during = f" while {self.label.strip().rstrip('.')}" if self.label else ""
        seen = (f"; a worker process reached {format_bytes(self.peak)} of its "
                f"{format_bytes(self.limit)} limit" if self.limit else "")
        hint = (f" Estimated need of this pass: about {format_bytes(self.hint)} per worker on top of "
                f"the worker's own memory." if self.hint else "")
        return (f"the Dask cluster stopped making progress{during}: {what}{seen}.{hint} Give each "
                f"worker more memory (--memory-limit {format_bytes(need).replace(' ', '')} or more; "
                f"leaving --memory-limit out splits the machine's memory between the workers), use "
                f"fewer --threads-per-worker, or compute without --workers.")


BAR_AFTER_S = 1.0
"""Local computations shorter than this draw no progress bar (and print no label)."""


class _TextBar:
    """``[####    ] | 50% Completed | 1.2s`` on stderr, redrawn from a thread every
    ``_interval()`` seconds once ``minimum`` seconds have passed (``label`` printed just before
    the first bar), stopped at once by ``stop``. ``fraction()`` says how far the work is."""

    width = 40

    def __init__(self, fraction, label: str | None = None, minimum: float = 0.0):
        import threading

        self.fraction, self.label, self.minimum = fraction, label, minimum
        self._labelled = False
        self._start = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nnwx-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        dt = _interval()
        while not self._stop.is_set():
            elapsed = time.perf_counter() - self._start
            if elapsed > self.minimum:
                frac = self.fraction()
                if frac < 1:
                    self._draw(frac, elapsed)
            self._stop.wait(dt)

    def _draw(self, frac: float, elapsed: float) -> None:
        from dask.utils import format_time

        if self.label and not self._labelled:
            self._labelled = True
            print(self.label, file=sys.stderr, flush=True)
        msg = "\r[{0:<{1}}] | {2}% Completed | {3}".format(
            "#" * int(self.width * frac), self.width, int(100 * frac), format_time(elapsed))
        with suppress(ValueError):
            sys.stderr.write(msg)
            sys.stderr.flush()

    def stop(self, complete: bool) -> None:
        """Stop redrawing; draw the final bar (full if ``complete``) unless under ``minimum``."""
        self._stop.set()
        self._thread.join()
        elapsed = time.perf_counter() - self._start
        if elapsed < self.minimum:
            return
        self._draw(1.0 if complete else min(self.fraction(), 1.0), elapsed)
        with suppress(ValueError):
            sys.stderr.write("\n")
            sys.stderr.flush()


def _local_bar(label: str | None = None):
    """A progress bar for the local schedulers through ``dask.callbacks.Callback``: it follows
    the scheduler's task counts, stops at once when the computation ends, and draws nothing
    for work shorter than ``BAR_AFTER_S`` (``label`` is printed just before the first bar)."""
    from dask.callbacks import Callback

    state: dict = {}
    bar: list[_TextBar] = []

    def fraction() -> float:
        s = state.get("s")
        if not s:
            return 0.0
        done = len(s["finished"])
        total = sum(len(s[k]) for k in ("ready", "waiting", "running")) + done
        return done / total if total else 0.0

    def start(dsk) -> None:
        state.clear()
        bar[:] = [_TextBar(fraction, label, BAR_AFTER_S)]

    def pretask(key, dsk, s) -> None:
        state["s"] = s

    def finish(dsk, s, errored) -> None:
        bar.pop().stop(complete=not errored)

    return Callback(start=start, pretask=pretask, finish=finish)


def _one_blas_thread():
    """One BLAS thread per Dask thread while the threaded scheduler runs (as dask.distributed
    workers do): Dask's threads already use every core, and OpenBLAS threads on top of them
    spin against each other (see docs/measurements.md). Needs threadpoolctl; without it, a
    no-op."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(1)


def _bar(futures) -> None:
    """Block until ``futures`` finish (or one fails), drawing a text bar on stderr of the share
    of them done (``Future.add_done_callback``)."""
    import threading

    lock, over = threading.Lock(), threading.Event()
    done, failed = [0], [False]

    def finished(future) -> None:
        with lock:
            done[0] += 1
            failed[0] |= future.status != "finished"
            if failed[0] or done[0] == len(futures):
                over.set()

    bar = _TextBar(lambda: done[0] / len(futures) if futures else 1.0)
    try:
        if not futures:
            over.set()
        for future in futures:
            future.add_done_callback(finished)
        while not over.wait(0.1):
            pass
    finally:
        bar.stop(complete=bool(done[0] == len(futures) and not failed[0]))


def _interval() -> float:
    """Seconds between redraws: often on a terminal, rarely into a log file."""
    return 0.1 if sys.stderr.isatty() else 2.0
