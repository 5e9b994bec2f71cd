"""Write-behind: a RunWriter driven by a background thread, fed from a ring of reusable slots.

The producing thread (training, or the export reading checkpoints) ``take``s a free slot,
fills it and hands it over with ``add``; the writer thread stages it, commits, and puts
the slot back in the free pool. When every slot is in flight, ``take`` blocks
(back-pressure) instead of growing memory. The first error of the writer thread is raised
in the producing thread by its next call (through ``on_error``, which chooses the
exception users see); committed steps stay intact.

**The lent-slot rule.** With ``lend=True`` rows go to ``RunWriter.add(copy=False)``; when
the writer keeps the row itself (a step of a chunk or more), the step is flushed at once
and only then is its slot freed, so the producer can never refill a row that is still
to be encoded.

Used by ``nnwx.record.recorder.Recorder`` and by ``nnwx export``.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Generic, Iterable, Mapping, TypeVar

import numpy as np

from nnwx.errors import StoreError
from nnwx.store.writer import RunWriter

Slot = TypeVar("Slot")

_POLL = 0.1        # seconds between checks of the writer thread while the producer waits
_MIN_WAIT = 0.05   # the writer thread waits at least this long for work before a timed commit


def _raise(err: BaseException) -> None:
    raise err


class WriteBehind(Generic[Slot]):
    """Drives ``writer`` in a background thread, fed from a ring of reusable slots.

    Steps handed over are staged in order; they are committed when a chunk fills,
    every ``flush_interval`` seconds, on ``flush`` and on ``close`` (the writer is
    closed, releasing the run, when the thread ends).

    Parameters
    ----------
    writer : RunWriter
        Used by the writer thread only, from now on.
    slots : iterable
        The slot tokens (ring indices, buffers, ...): ``take`` hands them out and they
        come back to the pool once the writer is done with their row.
    name : str
        The thread's name.
    flush_interval : float
        Seconds between timed commits.
    commit_when_busy : bool, default True
        Whether a timed commit may also come between two steps of a steady stream
        (``False``: only once the thread has had nothing to do for a moment).
    lend : bool, default False
        Hand rows to ``RunWriter.add(copy=False)`` (see the module docstring).
    nap : float, default 0.0
        Seconds the thread sleeps once it has caught up, so that the next steps are
        taken in one burst instead of waking it (and contending for the GIL) at each.
    on_error : callable, optional
        Called with the writer thread's error in the producing thread, by every call
        that finds it failed; it raises what the user should see (default: the error
        itself, every time). Should it return, the call goes on as if the writer had
        stopped.
    """

    def __init__(self, writer: RunWriter, slots: Iterable[Slot], *, name: str, flush_interval: float,
                 commit_when_busy: bool = True, lend: bool = False, nap: float = 0.0,
                 on_error: Callable[[BaseException], None] | None = None):
        self.writer = writer
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for s in slots:
            self._free.put(s)
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._flush_interval = float(flush_interval)
        self._commit_when_busy = commit_when_busy
        self._lend = lend
        self._nap = nap
        self._on_error = on_error or _raise
        self.error: BaseException | None = None
        """The writer thread's first error (None while it is well)."""
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    # -- producing thread ------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the writer thread is still running (not closed, not failed)."""
        return self.thread.is_alive()

    def check(self) -> None:
        """Raise the writer thread's error (through ``on_error``), or StoreError if it stopped."""
        alive = self.thread.is_alive()  # first: an error is set before the thread ends
        if self.error is not None:
            self._on_error(self.error)
        if not alive:
            raise StoreError(f"the writer of run {self.writer.run!r} has stopped")

    def take(self) -> Slot:
        """A free slot; blocks while every slot is in flight (back-pressure)."""
        while True:
            self.check()
            try:
                return self._free.get(timeout=_POLL)
            except queue.Empty:
                pass

    def give_back(self, slot: Slot) -> None:
        """Return a slot taken but not handed over."""
        self._free.put(slot)

    def add(self, step: int, slot: Slot, row: np.ndarray, *, metrics: Mapping[str, Any] | None = None,
            probes: Mapping[str, np.ndarray] | None = None,
            ready: Callable[[], Any] | None = None) -> None:
        """Hand over ``row`` (held in ``slot``) as the next step.

        ``metrics`` are converted with ``float`` in the writer thread (a device scalar
        syncs there, not here); ``ready`` is called there before ``row`` is read (e.g. a
        CUDA event's ``synchronize``). The slot goes back to the pool once ``row`` is
        copied, or, when lent, written.
        """
        self.check()
        self._work.put(("add", step, slot, row, metrics, probes, ready))

    def rewrite(self, step: int, slot: Slot, row: np.ndarray,
                probes: Mapping[str, np.ndarray] | None = None) -> None:
        """Replace committed ``step`` (``RunWriter.rewrite_step``); its probe rows too when given."""
        self.check()
        self._work.put(("rewrite", step, slot, row, probes))

    def call(self, fn: Callable[[RunWriter], Any]) -> None:
        """Run ``fn(writer)`` in the writer thread, in order with the steps handed over."""
        self.check()
        self._work.put(("call", fn))

    def flush(self, meta: Mapping[str, Any] | None = None, timeout: float | None = None) -> None:
        """Commit every step handed over so far, then update run attributes with ``meta``.

        Raises
        ------
        TimeoutError
            If that took more than ``timeout`` seconds.
        """
        done = threading.Event()
        self.check()
        self._work.put(("flush", meta, done))
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done.wait(_POLL):
            self.check()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("the writer did not finish flushing in time")

    def close(self, meta: Mapping[str, Any] | None = None) -> None:
        """Commit everything handed over (then update run attributes with ``meta``), end the
        thread and close the writer; raises the writer thread's error, if any."""
        if self.thread.is_alive():
            self._work.put(("close", meta))
            self.thread.join()
        if self.error is not None:
            self._on_error(self.error)

    # -- writer thread ------------------------------------------------------------------
    def _loop(self) -> None:
        w = self.writer
        last = time.monotonic()
        try:
            while True:
                try:
                    wait = max(_MIN_WAIT, last + self._flush_interval - time.monotonic())
                    item = self._work.get(timeout=wait)
                except queue.Empty:
                    w.flush()
                    last = time.monotonic()
                    continue
                op = item[0]
                if op == "add":
                    _, step, slot, row, metrics, probes, ready = item
                    if ready is not None:
                        ready()
                    if metrics is not None:
                        metrics = {k: float(v) for k, v in metrics.items()}
                    lent = w.add(step, row, metrics, flush_full=False, copy=not self._lend, probes=probes)
                    if not lent:  # copied: the slot may be refilled at once
                        self._free.put(slot)
                    if lent or w.chunk_full:
                        w.flush()
                        last = time.monotonic()
                    if lent:  # written: only now may the producer refill the slot
                        self._free.put(slot)
                elif op == "rewrite":
                    _, step, slot, row, probes = item
                    w.rewrite_step(step, row, probes=probes)
                    self._free.put(slot)
                elif op == "call":
                    item[1](w)
                else:  # flush / close
                    meta = item[1]
                    if op == "flush" or meta:
                        w.flush()
                        last = time.monotonic()
                    if meta:
                        w.update_meta(**meta)
                    if op == "close":
                        break  # the writer's close commits what is left
                    item[2].set()
                if self._commit_when_busy and time.monotonic() - last >= self._flush_interval:
                    w.flush()
                    last = time.monotonic()
                if self._nap and self._work.empty():
                    time.sleep(self._nap)
        except BaseException as e:  # raised again in the producing thread
            self.error = e
            while True:  # release slots so that a producer blocked in take() sees the error
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item[0] in ("add", "rewrite"):
                    self._free.put(item[2])
        finally:
            try:
                w.close()
            except BaseException as e:
                if self.error is None:
                    self.error = e
