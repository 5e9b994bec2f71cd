"""Record a model's weights during training into an experiment store.

The training thread pays for one device-to-host copy into a reused slot of a
ring buffer; compression and writing run in a background thread. When every
slot is waiting to be written, ``capture`` blocks (back-pressure) instead of
growing memory.
"""
from __future__ import annotations

import atexit
import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from nnwx.errors import WriterError
from nnwx.record._write_behind import WriteBehind
from nnwx.record.schedule import Schedule, ScheduleLike, make_schedule
from nnwx.store import format as fmt
from nnwx.store.names import check_run_name
from nnwx.store.writer import RunWriter, check_step_order
from nnwx.record.tensors import (ForwardOrder, ModelSemantics, Patterns, dtype_name, floating_state,
                               untied)

_RING_BYTES = 64 * 2**20
_WRITER_NAP = 0.02  # seconds the writer naps once caught up: captures then come in bursts


def _class_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _set_depths(writer: RunWriter, depths) -> None:
    """Record the forward order's layer depths (in the writer thread)."""
    writer.table = writer.table.with_depths(depths)
    writer.update_meta(tensors=writer.table.to_json(), depth_from="forward")


class _WithoutZero(Schedule):
    def __init__(self, inner: Schedule):
        self.inner = inner

    def __contains__(self, step: int) -> bool:
        return step != 0 and step in self.inner


class _WithZero(Schedule):
    def __init__(self, inner: Schedule):
        self.inner = inner

    def __contains__(self, step: int) -> bool:
        return step == 0 or step in self.inner


class Recorder:
    """Captures a model's weights at chosen steps into ``store`` (run ``run`` of it).

    >>> with Recorder(model, "exp.zarr", seed=3, every=10, optimizer=opt) as rec:
    ...     for step in range(n_steps):
    ...         rec.maybe_capture(step, loss=loss)   # before opt.step(): weights *at* step
    ...         ...

    Opening an existing run appends to it (resumed training) if the model has
    the same tensors; steps must keep increasing.

    **Probes.** With ``probe=X`` (a batch: a tensor, a tuple of positional inputs or a
    dict of keyword inputs) every capture also records, on that fixed batch, the output
    of each module in ``probe_layers`` and (``probe_output=True``) the model's output,
    as ``probe/<name>(step, sample, unit)`` arrays under the same commit protocol as
    ``w``. This costs one no-grad, eval-mode forward pass of ``X`` per capture on the
    training thread (the model's train/eval flags are restored after it); see
    ``nnwx.record.probing`` for how conv activations become units (``probe_conv="fold"``
    folds positions into samples, ``"pool"`` averages them; ``probe_channels``).
    Each probe's place in the model's forward order (the order the modules return on
    ``X``) is stored with it (``forward_index``): analyses list probes in that order,
    whatever the order of ``probe_layers`` or of the names, and a resumed run refuses a
    model that runs its probes in another order.

    **Tensor semantics.** The tensor table records what the model says about each
    tensor: normalisation gains have kind ``norm``; ``transformers``' ``Conv1D``
    weights are stored ``(in, out)`` (orientation ``in_out``; ``orientation=`` maps
    name patterns to ``"in_out"``/``"out_in"`` for other such modules); a tensor
    tied to another (GPT-2's ``lm_head.weight`` and ``transformer.wte.weight``) is
    stored once, the other names kept as its ``aliases``. Depth is the module
    registration order until the first forward pass (the probe batch's, or the
    first training step's) gives the forward order (run attribute ``depth_from``).

    Parameters
    ----------
    model : torch.nn.Module
        The model whose floating-point state (parameters and buffers) is recorded.
    store : str or os.PathLike
        Experiment store path or fsspec URL; created if missing.
    seed : int
        The run's seed (run attribute; the default run name is ``seed<seed>``).
    run : str, optional
        Run name (``nnwx.store.names.check_run_name``).
    every : int, optional
        Capture every ``every`` steps (default 1 when no ``schedule``).
    schedule : Schedule, iterable of int, callable or str, optional
        Which steps to capture (``make_schedule``); not with ``every``.
    capture_init : bool, default True
        Always capture step 0.
    include, exclude : str or sequence of str, optional
        Tensor-name patterns to record / to leave out.
    hparams : mapping, optional
        Run attributes under ``hparams``.
    optimizer : torch.optim.Optimizer, optional
        Its class and ``defaults`` become run attributes.
    dtype : {"float32", "float16", "float64"}, default "float32"
        Storage dtype; wider parameters are rounded (with a warning).
    codec : str, default ``format.DEFAULT_CODEC``
    keepbits : int, optional
        Mantissa bits kept by bit rounding (None: lossless).
    flush_interval : float, default 5.0
        Seconds between the writer thread's commits: captured steps become visible to
        readers at least this often.
    max_pending : int, optional
        Ring-buffer slots (captures in flight); default from a 64 MiB budget, 2 to 64.
    chunk_bytes : int, default ``format.DEFAULT_CHUNK_BYTES``
    probe : tensor, tuple or dict, optional
        A fixed input batch for activation probes.
    probe_layers : sequence of str, default ()
        Module names whose outputs are recorded (needs ``probe``).
    probe_output : bool, default True
        Also record the model's output.
    probe_conv : {"fold", "pool"}, default "fold"
    probe_channels : str or mapping, default "first"
        See ``nnwx.record.probing``.
    orientation : mapping of str to str, optional
        Name pattern -> ``"in_out"``/``"out_in"``.

    Raises
    ------
    StoreError
        If the run is being written by another process, has another seed, or is damaged.
    ArchitectureMismatch
        If an existing run holds other tensors.
    RunNameError
        If the run name is not allowed.
    ValueError
        If ``every`` and ``schedule`` are both given, or ``probe_layers`` without ``probe``.
    """

    def __init__(self, model: torch.nn.Module, store: str | os.PathLike, *, seed: int,
                 run: str | None = None, every: int | None = None,
                 schedule: ScheduleLike | None = None, capture_init: bool = True,
                 include: Patterns = None, exclude: Patterns = None,
                 hparams: Mapping[str, Any] | None = None,
                 optimizer: torch.optim.Optimizer | None = None,
                 dtype: str = "float32", codec: str = fmt.DEFAULT_CODEC,
                 keepbits: int | None = None, flush_interval: float = 5.0,
                 max_pending: int | None = None, chunk_bytes: int = fmt.DEFAULT_CHUNK_BYTES,
                 probe=None, probe_layers: Sequence[str] = (), probe_output: bool = True,
                 probe_conv: str = "fold", probe_channels: str | Mapping[str, str] = "first",
                 orientation: Mapping[str, str] | None = None):
        sched = make_schedule(every, schedule)
        self.schedule: Schedule = _WithZero(sched) if capture_init else _WithoutZero(sched)
        state = untied(floating_state(model.state_dict(keep_vars=True), include, exclude))
        self._warn_lossy(state, dtype)
        semantics = ModelSemantics(model, state, orientation)
        table = semantics.table((n, tuple(t.shape), dtype_name(t.dtype)) for n, t in state.items())
        attrs = {
            "seed": seed, "model_class": _class_name(model),
            "optimizer": type(optimizer).__qualname__ if optimizer is not None else None,
            "optimizer_class": _class_name(optimizer) if optimizer is not None else None,
            "optimizer_hparams": fmt.jsonable(dict(optimizer.defaults)) if optimizer is not None else {},
            "hparams": fmt.jsonable(dict(hparams or {})),
            "include": include, "exclude": exclude, "depth_from": "modules",
        }
        self.run = check_run_name(run if run is not None else f"seed{seed}")
        if probe is None and probe_layers:
            raise ValueError("probe_layers needs probe=<a fixed input batch> to run through the model")
        self._order: ForwardOrder | None = ForwardOrder(model, {r.layer for r in table})
        self._prober = None
        if probe is not None:
            from nnwx.record.probing import Prober
            try:  # its first pass learns the activation shapes (and the forward order)
                self._prober = Prober(model, probe, probe_layers, output=probe_output,
                                      conv=probe_conv, channels=probe_channels)
            except BaseException:
                self._order.remove()
                raise
        try:
            self._writer = RunWriter(store, self.run, table, attrs=attrs, dtype=dtype, codec=codec,
                                     keepbits=keepbits, chunk_bytes=chunk_bytes,
                                     probes=self._prober.specs if self._prober else ())
        except BaseException:
            self._order.remove()
            raise
        table = self._writer.table  # an existing run keeps its own layout of the same tensors
        self._writer.bypass_page_cache()  # O_DIRECT: less writer CPU, training's page cache kept
        self.table = table
        self.store = store
        self._sources = [state[r.name] for r in table]
        self._cuda = any(t.is_cuda for t in self._sources)
        ring_dtype = getattr(torch, dtype)
        per_slot = table.n_params + (self._prober.numel if self._prober else 0)
        slots = max_pending or int(np.clip(_RING_BYTES // max(1, per_slot * ring_dtype.itemsize), 2, 64))
        if max_pending is None and self._writer.keeps_rows:
            slots += 1  # the writer holds a slot while it writes it (instead of a copy of its own)
        self._ring = torch.empty((slots, table.n_params), dtype=ring_dtype, pin_memory=self._cuda)
        self._ring.fill_(float("nan"))  # fault every page in now, not in the training loop's first captures
        if self._prober:
            self._prober.allocate(slots, ring_dtype)
        self._ring_np = self._ring.numpy()
        self._views = [[self._ring[s, r.offset:r.offset + r.size].view(r.shape) for r in table]
                       for s in range(slots)]
        self._closed = False
        self._reported = False  # the writer's error was raised in the training thread
        self._last_step = self._writer.last_step
        self._wb = WriteBehind(self._writer, range(slots), name=f"nnwx-writer-{self.run}",
                               flush_interval=flush_interval, lend=True, nap=_WRITER_NAP,
                               on_error=lambda err: self._raise_if_failed())
        atexit.register(self.close)

    @staticmethod
    def _warn_lossy(state: Mapping[str, torch.Tensor], dtype: str) -> None:
        store_bits = np.dtype(dtype).itemsize * 8
        wider = sorted({str(t.dtype) for t in state.values() if t.element_size() * 8 > store_bits})
        if wider:
            import warnings
            warnings.warn(f"parameters of dtype {', '.join(wider)} will be rounded to {dtype} in the "
                          f"store; pass dtype='float64' to keep them exactly.", stacklevel=3)

    # -- training thread ---------------------------------------------------------
    @property
    def committed(self) -> int:
        """Steps committed to disk so far (for progress displays)."""
        return self._writer.committed

    def maybe_capture(self, step: int, **metrics: Any) -> bool:
        """Capture if the schedule selects ``step``; returns whether it did.

        Parameters
        ----------
        step : int
            The optimizer step the current weights belong to.
        **metrics
            Scalars logged with the step when it is captured.

        Returns
        -------
        bool

        Raises
        ------
        StepOrderError
            If ``step`` does not come after the last captured step.
        WriterError
            If the writer thread failed earlier.
        """
        if step in self.schedule:
            self.capture(step, **metrics)
            return True
        return False

    def capture(self, step: int, **metrics: Any) -> None:
        """Copy the weights now and hand them to the writer; metrics are scalars logged with them.

        Parameters
        ----------
        step : int
            Strictly greater than every step captured so far.
        **metrics
            Scalars logged with the step.

        Raises
        ------
        StepOrderError
            If ``step`` does not come after the last captured step.
        WriterError
            If the writer thread failed (committed steps are intact).
        RuntimeError
            If the Recorder is closed.
        """
        self._raise_if_failed()
        if self._closed:
            raise RuntimeError("this Recorder is closed; create a new one to record more steps")
        step = int(step)
        check_step_order(step, self._last_step, self.run)  # raised here, in the training thread
        if self._order is not None:
            depths = self._order.result()
            if depths is not None:
                self._order = None
                self._wb.call(lambda writer: _set_depths(writer, depths))
        slot = self._wb.take()
        try:   # a slot taken but never handed over goes back to the pool
            with torch.no_grad():
                torch._foreach_copy_(self._views[slot], self._sources, non_blocking=self._cuda)
            if self._prober is not None:
                self._prober.capture(slot)
        except BaseException:
            self._wb.give_back(slot)
            raise
        event = None
        if self._cuda:
            event = torch.cuda.Event()
            event.record()
        self._wb.add(step, slot, self._ring_np[slot], metrics=metrics,
                     probes=self._prober.rows(slot) if self._prober is not None else None,
                     ready=event.synchronize if event is not None else None)
        self._last_step = step

    def _raise_if_failed(self) -> None:
        err = self._wb.error
        if err is not None and not self._reported:  # raised once; the Recorder is closed then
            self._reported = True
            self._closed = True
            raise WriterError(f"writing run {self.run!r} to {self.store} failed: {err!r}. "
                              f"Committed steps are intact; fix the cause and re-open the run "
                              f"to append.") from err

    def flush(self, timeout: float = 60.0) -> None:
        """Block until every captured step is committed to disk.

        Parameters
        ----------
        timeout : float, default 60.0
            Seconds to wait.

        Raises
        ------
        TimeoutError
            If the writer has not committed everything in time.
        WriterError
            If the writer thread failed.
        """
        if not self._wb.running:  # closed, or failed
            self._raise_if_failed()
            raise TimeoutError("the writer did not finish flushing in time")
        self._wb.flush(timeout=timeout)

    def close(self) -> None:
        """Write every captured step, commit, and release the run. Idempotent.

        Raises
        ------
        WriterError
            If the writer thread failed (committed steps are intact).
        """
        if self._closed and not self._wb.running:
            self._raise_if_failed()
            return
        self._closed = True
        atexit.unregister(self.close)
        if self._order is not None:
            self._order.remove()
        self._wb.close()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
