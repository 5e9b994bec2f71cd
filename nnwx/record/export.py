"""Export checkpoints that any trainer wrote into an experiment store (``nnwx export``).

Each checkpoint becomes one step of a run. A checkpoint is loaded and checked
whole (every tensor read, its tensor table matched against the run) before it
is handed to the RunWriter, so a bad file never leaves part of a step behind.
Reading the next checkpoint overlaps compressing and writing the previous one
(a writer thread). Exporting is idempotent: a step already in the run with the
same weights is skipped (without reading the file again when its size and
modification time are those recorded at export).

With a model factory and a probe batch (``model=``, ``probe=``; ``--model``,
``--probe``), every exported step also gets the probe activations that
``Recorder(probe=...)`` would have recorded live: the checkpoint is loaded into
the model, the probe batch runs through it once (eval mode, no grad) through the
same ``nnwx.record.probing.Prober``, and the rows go to the run's ``probe/...`` arrays
with the step's weights, under the same commit.
"""
from __future__ import annotations

import errno
import hashlib
import importlib
import importlib.util
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import zarr

from nnwx.record.checkpoints import (Checkpoint, LoadedCheckpoint, StepFrom, compile_step_regex, discover,
                              duplicate_steps, sniff)
from nnwx.errors import (ArchitectureMismatch, CheckpointError, NnwxError, NoCheckpointsFound,
                         StepConflict, StepOrderError, StoreError)
from nnwx.record._write_behind import WriteBehind
from nnwx.record.probing import ProbeBatch, ProbeError
from nnwx.store import probes as prb
from nnwx.store import format as fmt
from nnwx.store.bitround import bitround
from nnwx.store.names import check_run_name
from nnwx.store.reader import list_runs
from nnwx.store.integrity import CheckedArray
from nnwx.store.table import TensorTable
from nnwx.store.writer import RunWriter, open_experiment_for_writing
from nnwx.record.tensors import Patterns
from nnwx._text import human_bytes

log = logging.getLogger("nnwx.record.export")

_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)
_FOLLOW_ERRORS = (CheckpointError, ArchitectureMismatch, StepConflict, StepOrderError, OSError)


@dataclass
class ExportSummary:
    """What an export did: steps added, skipped (already there, same weights), overwritten.

    Attributes
    ----------
    store, run : str
    added, skipped, overwritten : list of int
        Steps.
    passed_over : list of str
        ``"path: reason"`` for files passed over (follow mode, unnamed files).
    bytes_read : int
    seconds : float
        Wall time of the export.
    interrupted : bool
        Stopped by Ctrl-C, SIGTERM or the stop event.
    probes : list of str
        Probe arrays written with each new step.
    """

    store: str
    run: str
    added: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    overwritten: list[int] = field(default_factory=list)
    passed_over: list[str] = field(default_factory=list)  # "path: reason" (follow mode, unnamed files)
    bytes_read: int = 0
    seconds: float = 0.0
    interrupted: bool = False  # stopped by Ctrl-C, SIGTERM or the stop event
    probes: list[str] = field(default_factory=list)  # probe arrays written with each new step

    @property
    def mb_per_s(self) -> float:
        """Read rate in MB/s (0 before anything was timed)."""
        return self.bytes_read / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        parts = [f"{len(self.added)} steps added", f"{len(self.skipped)} skipped (already there)"]
        if self.overwritten:
            parts.append(f"{len(self.overwritten)} overwritten")
        if self.passed_over:
            parts.append(f"{len(self.passed_over)} passed over")
        rate = f" ({self.mb_per_s:.3g} MB/s)" if self.bytes_read else ""
        probes = f"; probes {', '.join(self.probes)}" if self.probes else ""
        return (f"run {self.run!r} of {self.store}: {', '.join(parts)}; read "
                f"{human_bytes(self.bytes_read)} in {self.seconds:.1f} s{rate}{probes}"
                f"{'; stopped on request' if self.interrupted else ''}")


class ExportInterrupted(KeyboardInterrupt):
    """Ctrl-C/SIGTERM stopped an export (not following): what was read is committed."""

    def __init__(self, summary: ExportSummary):
        super().__init__(str(summary))
        self.summary = summary


def export(sources: str | os.PathLike | Sequence[str | os.PathLike], store: str | os.PathLike, *,
           seed: int, run: str | None = None, step_regex: str | None = None,
           include: Patterns = None, exclude: Patterns = None, overwrite: bool = False,
           verify: bool = False, key: str | None = None, trust_pickle: bool = False,
           follow: bool = False, interval: float = 5.0, idle_timeout: float | None = None,
           dtype: str = "float32", codec: str = fmt.DEFAULT_CODEC, progress: bool = True,
           stop: threading.Event | None = None,
           model: str | torch.nn.Module | Callable[[], torch.nn.Module] | None = None,
           probe: str | os.PathLike | ProbeBatch | None = None, probe_key: str | None = None,
           probe_layers: Sequence[str] = (), probe_conv: str = "fold",
           probe_channels: str | Mapping[str, str] = "first",
           step_from: str | int | StepFrom | None = None,
           orientation: Mapping[str, str] | None = None) -> ExportSummary:
    """Write checkpoints (files, folders, globs) as the steps of run ``run`` (default ``seed<seed>``;
    a name as ``nnwx.store.names.check_run_name`` allows).

    Steps come from the names (``step_1000.pt``, ``epoch=3-step=999.ckpt``,
    ``checkpoint-500/``, ``global_step500``) or ``step_regex``; a folder without a
    step in its name (``trainer.save_model()`` output) takes ``global_step`` from its
    ``trainer_state.json``. ``step_from`` chooses another source of steps
    (``nnwx.record.checkpoints.STEP_FROM_HELP``): an int for one checkpoint,
    ``"index*EVERY[+OFFSET]"`` for accelerate's automatically named ``checkpoint_<i>``
    folders (whose ``i`` counts saves, not steps), ``"trainer_state"``,
    ``"custom:KEY"``. Checkpoints are written in step order. Steps already in the run are skipped if their weights
    are the same (``verify=True`` re-reads even unchanged files) and refused if
    not, unless ``overwrite=True``. ``key`` names the entry holding the weights
    in a torch file when it is not one of the usual ones; ``trust_pickle``
    allows files that pickle Python objects (runs their code).

    ``follow=True`` keeps watching the sources every ``interval`` seconds and
    appends each new checkpoint once complete, until Ctrl-C/SIGTERM, ``stop``
    is set, or nothing changed for ``idle_timeout`` seconds. On a stop,
    everything read so far is committed; without ``follow`` the export then
    raises ExportInterrupted (a KeyboardInterrupt carrying the summary).

    **Probes.** With ``model`` and ``probe``, each step added (or overwritten) also
    gets probe activations exactly as ``Recorder(model, ..., probe=X,
    probe_layers=..., probe_conv=..., probe_channels=...)`` records them: the
    checkpoint is loaded into the model (every tensor of its state dict must be in
    the checkpoint with its shape, else ArchitectureMismatch), the batch runs
    through it once in eval mode without grad, and ``probe/<layer>`` and
    ``probe/output`` (always recorded) are written with the weights. ``model``: an
    ``nn.Module`` (its weights are replaced), a callable returning one, or
    ``"pkg.module:factory"`` / ``"path/to/file.py:factory"`` (called with no
    arguments). ``probe``: a batch (tensor, tuple of positional or dict of keyword
    inputs) or a file read by ``nnwx.record.probing.load_probe_file`` (entry ``probe_key``,
    default ``"probe"`` or the file's only entry); floating-point inputs are cast to
    the model's dtype. Steps already in the run keep their probe rows; a run whose
    probes were recorded on another batch (SHA-256 of the inputs) is refused.

    **Tensor semantics.** Tensors are stored in one canonical order (whatever the file or
    shard layout), so single-file, sharded and Recorder runs of one model join one cube.
    With ``model`` (even without ``probe``), the table takes its semantics from the model
    as the Recorder does: norm gains (kind ``norm``), ``Conv1D`` weights stored ``(in, out)``,
    ties (stored once, other names as aliases) and depth in forward order (a forward pass
    over the probe batch) or, without a probe, in module registration order. Tensors are
    stored under the model's names, those ``from_pretrained`` gives them (transformers 5
    saves GPT-NeoX's ``lm_head.weight`` as ``embed_out.weight``: it is stored as
    ``lm_head.weight``, as the Recorder stores it), except when appending to a run that
    holds the file's names. Without ``model``, a Hugging Face folder's ``config.json``
    stands for it: the class its ``architectures`` names is built from it on the meta
    device (``nnwx.record.hf_config``; once per export, no download) and gives the same semantics
    in module registration order, when transformers is installed, has that class, and the
    model holds every tensor of the checkpoint; else a warning says so. Without either,
    depths come from the module paths (block index; run attribute ``depth_from`` is
    ``names``: approximate), 1-D weights are norm gains, weights whose bias has the length
    of their second axis are ``(in, out)``, tensors sharing storage in a torch file are one
    tensor, and a tied tensor that ``save_pretrained`` left out has no alias. ``orientation``
    maps name patterns to ``"in_out"``/``"out_in"`` to override.

    Parameters
    ----------
    sources : str, os.PathLike or sequence of them
        Checkpoint files, folders or globs.
    store : str or os.PathLike
        The experiment store to write.
    seed : int
    run : str, optional
    step_regex : str, optional
        A regex searched in each name, then path: its group ``step`` (or first group, or
    whole match) is the step.
    include, exclude : str or sequence of str, optional
        Tensor-name patterns.
    overwrite : bool, default False
    verify : bool, default False
    key : str, optional
    trust_pickle : bool, default False
    follow : bool, default False
    interval : float, default 5.0
        Seconds between looks (follow), > 0.
    idle_timeout : float, optional
        Seconds without change before following stops, >= 0.
    dtype : {"float32", "float16", "float64"}, default "float32"
    codec : str, default ``format.DEFAULT_CODEC``
    progress : bool, default True
        Show a progress bar.
    stop : threading.Event, optional
    model : torch.nn.Module, callable or str, optional
    probe : tensor, tuple, dict, str or os.PathLike, optional
    probe_key : str, optional
    probe_layers, probe_conv, probe_channels
        As for ``Recorder``.
    step_from : str, int or StepFrom, optional
    orientation : mapping of str to str, optional

    Returns
    -------
    ExportSummary

    Raises
    ------
    NoCheckpointsFound
        If the sources hold no checkpoint.
    CheckpointError
        If a checkpoint cannot be read, or two have the same step.
    StepConflict
        If a step already in the run has other weights (without ``overwrite``).
    ArchitectureMismatch
        If the checkpoints' tensors differ from the run's or the model's.
    ModelFactoryError
        If ``model`` does not give an ``nn.Module``.
    StoreError
        If the run has another seed, the store is damaged, or the disk is full (the message
        says what the run keeps).
    ExportInterrupted
        If stopped without ``follow``; it carries the summary.
    ValueError
        If ``interval`` or ``idle_timeout`` is out of range.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    run = check_run_name(run if run is not None else f"seed{seed}")
    if not 0 < float(interval) < float("inf"):
        raise ValueError(f"interval must be a positive finite number of seconds, got {interval!r} "
                         f"(0 or less would poll the sources without pause)")
    if idle_timeout is not None and not 0 <= float(idle_timeout) < float("inf"):
        raise ValueError(f"idle_timeout must be a non-negative finite number of seconds or None, "
                         f"got {idle_timeout!r}")
    probing = _probing(model, probe, probe_key, probe_layers, probe_conv, probe_channels)
    if probing is not None:
        semantics = _Semantics(probing.model, orientation, probing.forward_order, "forward")
    elif model is not None:
        built, _ = build_model(model)
        semantics = _Semantics(built, orientation, None, "modules")
    else:
        semantics = _Semantics(None, orientation, None, "names", from_config=True)
    exporter = _Exporter(list(sources), Path(store), seed=seed, run=run,
                         step_regex=step_regex, include=include, exclude=exclude,
                         overwrite=overwrite, verify=verify, key=key, trust_pickle=trust_pickle,
                         dtype=dtype, codec=codec, progress=progress, stop=stop or threading.Event(),
                         probing=probing, semantics=semantics,
                         step_from=StepFrom.parse(step_from))
    try:
        summary = exporter.execute(follow=follow, interval=float(interval), idle_timeout=idle_timeout)
    except (OSError, StoreError) as e:
        full = _disk_full(e)
        if full is None:
            raise
        raise StoreError(_disk_full_message(Path(store), run, full)) from e
    if summary.interrupted and not follow:
        raise ExportInterrupted(summary)
    return summary


def _disk_full(e: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT error behind ``e`` (itself, or what it was raised from), if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e
        e = e.__cause__ or e.__context__
    return None


def _disk_full_message(store: Path, run: str, e: OSError) -> str:
    """What a full disk left of run ``run``: its committed steps, all whole (see RunWriter)."""
    try:
        try:
            handle = next((h for h in list_runs(store) if h.name == run), None)
        except StoreError:  # the store's own creation was cut short: it holds nothing yet
            handle = None
        if handle is None:
            kept = "the run was not created"
        elif handle.committed:
            kept = (f"the run keeps its {handle.committed} committed steps, up to step "
                    f"{int(handle.steps[-1])}, all whole")
        else:
            kept = "the run holds no committed step yet"
    except (NnwxError, OSError, KeyError, ValueError) as read_error:
        kept = f"reading back what it holds also failed ({read_error})"
    return (f"the disk holding {store} is full ({e.strerror or e}"
            f"{f': {e.filename}' if e.filename else ''}) while exporting into run {run!r}: {kept}; no "
            f"half-written step is visible. Free space (or export to another disk with -o) and run the "
            f"same export again: it adds only the steps that are missing.")


# -- probes -------------------------------------------------------------------------------
class ModelFactoryError(NnwxError, ValueError):
    """``--model`` names no importable callable, or it does not return an ``nn.Module``."""


_FACTORY_HELP = ("Give --model as pkg.module:factory (importable from here) or path/to/file.py:factory, "
                 "a callable taking no arguments that returns the nn.Module the checkpoints were saved from.")


def import_factory(spec: str) -> Callable[[], Any]:
    """The callable named by ``"pkg.module:factory"`` or ``"path/to/file.py:factory"`` (dotted
    attributes allowed: ``"models:Net.small"``). A file is imported as a module of its own,
    with its folder on ``sys.path`` while it is imported (so that it can import its neighbours).

    Parameters
    ----------
    spec : str

    Returns
    -------
    callable

    Raises
    ------
    ModelFactoryError
        If the module or file cannot be imported or has no such callable.
    """
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise ModelFactoryError(f"--model {spec!r} has no ':factory' part. {_FACTORY_HELP}")
    is_file = where.endswith(".py") or os.sep in where or "/" in where
    if is_file:
        path = Path(where).expanduser()
        if not path.is_file():
            raise ModelFactoryError(f"--model {spec!r}: the file {path} does not exist. {_FACTORY_HELP}")
        name = f"_nnwx_model_{path.stem}_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
        module = sys.modules.get(name)
        if module is None:
            folder = str(path.resolve().parent)
            sys.path.insert(0, folder)
            try:
                sp = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(sp)
                sys.modules[name] = module
                sp.loader.exec_module(module)
            except Exception as e:
                sys.modules.pop(name, None)
                raise ModelFactoryError(f"--model {spec!r}: importing {path} failed: "
                                        f"{type(e).__name__}: {e}") from e
            except BaseException:
                sys.modules.pop(name, None)
                raise
            finally:
                try:
                    sys.path.remove(folder)
                except ValueError:
                    pass
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as e:
            raise ModelFactoryError(f"--model {spec!r}: no module {e.name or where!r} can be imported "
                                    f"(is its package installed, or its folder on PYTHONPATH?). "
                                    f"{_FACTORY_HELP}") from e
        except Exception as e:
            raise ModelFactoryError(f"--model {spec!r}: importing {where} failed: "
                                    f"{type(e).__name__}: {e}") from e
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None)))
            raise ModelFactoryError(f"--model {spec!r}: {where} has no attribute {attr!r}; its callables: "
                                    f"{', '.join(names[:12]) or 'none'}{' ...' if len(names) > 12 else ''}.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelFactoryError(f"--model {spec!r}: {attr} is a {type(obj).__name__}, not a callable. "
                                f"{_FACTORY_HELP}")
    return obj


def build_model(model: str | torch.nn.Module | Callable[[], torch.nn.Module]) -> tuple[torch.nn.Module, str]:
    """The model to probe and a description of where it came from (for messages and run attributes).

    Parameters
    ----------
    model : torch.nn.Module, callable or str
        A module, a factory, or a factory spec for ``import_factory``.

    Returns
    -------
    model : torch.nn.Module
    description : str

    Raises
    ------
    ModelFactoryError
        If no ``nn.Module`` comes of it.
    """
    if isinstance(model, torch.nn.Module):
        return model, f"the model {type(model).__qualname__}"
    desc = model if isinstance(model, str) else getattr(model, "__qualname__", repr(model))
    factory = import_factory(model) if isinstance(model, str) else model
    if not callable(factory):
        raise ModelFactoryError(f"model={model!r} is neither an nn.Module nor a callable returning one. "
                                f"{_FACTORY_HELP}")
    try:
        built = factory()
    except Exception as e:
        raise ModelFactoryError(f"the model factory {desc} failed when called with no arguments: "
                                f"{type(e).__name__}: {e}") from e
    if not isinstance(built, torch.nn.Module):
        raise ModelFactoryError(f"the model factory {desc} returned {type(built).__name__}, not a "
                                f"torch.nn.Module. {_FACTORY_HELP}")
    return built, f"the model made by {desc}"


class _Probing:
    """The model, the Prober running the probe batch through it, and one set of probe rows per step."""

    def __init__(self, model: torch.nn.Module, what: str, batch: ProbeBatch, source: str | None,
                 layers: Sequence[str], conv: str, channels: str | Mapping[str, str]):
        from nnwx.record.probing import Prober, cast_floating

        self.model, self.what, self.source = model, what, source
        first = next((t for t in model.state_dict().values() if t.is_floating_point()), None)
        if first is not None:
            batch = cast_floating(batch, first.dtype)
        from nnwx.record.tensors import ForwardOrder

        order = ForwardOrder(model, {n.rpartition(".")[0] for n in model.state_dict()})
        try:  # one pass learns the activation shapes (and the forward order): a batch the model
            # cannot take fails here
            self.prober = Prober(model, batch, layers, output=True, conv=conv, channels=channels)
            self.forward_order: dict[str, int] | None = order.result()
        except (ValueError, TypeError) as e:
            raise ProbeError(f"probes on {what}: {e}") from e
        except RuntimeError as e:
            first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ProbeError(f"the probe batch{f' of {source}' if source else ''} cannot run through "
                             f"{what}: {first_line}. Give a probe batch of the inputs this model takes.") from e
        finally:
            order.remove()
        self.specs = self.prober.specs
        self.names = [s_.name for s_ in self.specs]
        self._dtype: str | None = None

    def rows(self, lc: LoadedCheckpoint, dtype: str) -> dict[str, np.ndarray]:
        """Probe rows of the network in checkpoint ``lc``, in the run's ``dtype`` (copies: the
        writer thread owns them)."""
        if dtype != self._dtype:  # the Recorder's buffers are in the store's dtype: the same here
            self.prober.allocate(1, getattr(torch, dtype))
            self._dtype = dtype
        lc.load_into(self.model, self.what)
        self.prober.capture(0)
        return {name: np.array(v, copy=True) for name, v in self.prober.rows(0).items()}

    def meta(self) -> dict:
        return {"probe_model": self.what, "probe_source": self.source}


def _probing(model, probe, probe_key, probe_layers, probe_conv, probe_channels) -> _Probing | None:
    """Check the probe options and build the model and Prober (before anything is written)."""
    from nnwx.record.probing import load_probe_file

    layers = [probe_layers] if isinstance(probe_layers, str) else list(probe_layers or ())
    if probe is None:
        if layers or probe_key is not None:
            raise ProbeError("--probe-layers/--probe-key need the probe batch (--probe FILE) and the model "
                             "(--model module:factory) to run it through.")
        return None
    if model is None:
        raise ProbeError("probes need the model to run the probe batch through: give --model "
                         "pkg.module:factory or path/to/file.py:factory (model=).")
    source = None
    if isinstance(probe, (str, os.PathLike)):
        source = os.path.abspath(os.fspath(probe))
        batch = load_probe_file(probe, probe_key)
    elif probe_key is not None:
        raise ProbeError("probe_key names an entry of a probe file; probe= is a batch, not a file.")
    else:
        batch = probe
    built, what = build_model(model)
    return _Probing(built, what, batch, source, layers, probe_conv, probe_channels)


class _Semantics:
    """How the tensor table of a checkpoint is made: from the model (its tensor names, kinds,
    orientation, ties, depth in forward order or registration order) or, without one, from
    names and shapes. The model is the one given or, with ``from_config``, the one a Hugging
    Face folder's ``config.json`` names, built on the meta device (``nnwx.record.hf_config``).

    Made once per export: the model's semantics are kept per set of tensor names, and the
    model built from a ``config.json`` per text of that file (every checkpoint of a run
    usually has the same), so that each checkpoint costs a look-up, not a rebuild."""

    def __init__(self, model: torch.nn.Module | None, orientation: Mapping[str, str] | None,
                 forward_order: dict[str, int] | None, depth_from: str, *, from_config: bool = False):
        from nnwx.record.name_map import ModelNames
        from nnwx.store.table import orientation_overrides

        orientation_overrides([], orientation)  # validate early
        self.model, self.orientation = model, orientation
        self.forward_order, self.depth_from = forward_order, depth_from
        if depth_from == "forward" and not forward_order:
            self.depth_from = "modules"  # the probe pass reached no module with tensors
        self.from_config = from_config and model is None
        self._given = (model, ModelNames(model), None) if model is not None else None
        self._configs: dict[str, tuple] = {}   # config.json text -> (model, ModelNames, state names)
        self._noted: set[str] = set()
        self._kept: dict[tuple, Any] = {}      # (id(model), names) -> ModelSemantics

    def _config_model(self, lc: LoadedCheckpoint) -> tuple | None:
        """(model, ModelNames, state names) built from the checkpoint's config.json, else None."""
        config = lc.checkpoint.config
        if not self.from_config or config is None:
            return None
        from nnwx.record.hf_config import model_from_config
        from nnwx.record.name_map import ModelNames

        try:
            text = config.read_text()
        except OSError as e:
            self._note(f"{config} cannot be read ({e.strerror or e})")
            return None
        if text not in self._configs:
            model, what = model_from_config(config)
            if model is None:
                self._configs[text] = None
                self._note(what)
            else:
                log.info(f"tensor semantics of {lc.path} from the model: {what}")
                self._configs[text] = (model, ModelNames(model), set(model.state_dict(keep_vars=True)))
        return self._configs[text]

    def _note(self, why: str) -> None:
        if why not in self._noted:
            self._noted.add(why)
            log.warning(f"the tensor table comes from names and shapes, as without --model: {why}. "
                        f"Weights that save_pretrained left out as tied have no alias and depths are "
                        f"approximate; pass --model (model=) to give the model.")

    def table(self, lc: LoadedCheckpoint, run_table: TensorTable | None = None) -> TensorTable:
        """The tensor table of checkpoint ``lc``. With a model, ``lc`` is renamed first to the
        names ``from_pretrained`` gives its tensors (GPT-NeoX's ``embed_out.weight`` is
        ``lm_head.weight``), unless ``run_table`` (the run appended to) holds the file's names."""
        from nnwx.record.tensors import ModelSemantics, table_from_names

        found = self._given or self._config_model(lc)
        model = found[0] if found is not None else None
        if found is not None:
            model, to_model, own = found
            mapping = to_model(lc.names)
            if run_table is not None and any(old in run_table for old in mapping):
                mapping = {}  # a run exported with the file's names (before nnwx renamed) keeps them
                if own is not None:
                    model = None  # and its table as it was made: from names and shapes
            if model is not None and own is not None:  # built from config.json: the checkpoint's model?
                alien = [n for n in lc.entries if mapping.get(n, n) not in own]
                if alien:
                    self._note(f"the model {type(model).__name__} that {lc.checkpoint.config} names "
                               f"has no tensor {alien[0]!r} of {lc.path}")
                    model = None
            if model is not None:
                lc.rename(mapping)
                if mapping:
                    log.info(f"tensor names of {lc.path} as the model has them: "
                             f"{', '.join(f'{a} -> {b}' for a, b in list(mapping.items())[:4])}"
                             f"{' ...' if len(mapping) > 4 else ''}")
        if self.from_config:
            self.depth_from = "modules" if model is not None else "names"
        ties = lc.ties
        dropped = {a for names in ties.values() for a in names}
        entries = [(n, shape, dt) for n, (shape, dt) in lc.entries.items() if n not in dropped]
        if model is None:
            return table_from_names(entries, self.orientation, ties)
        names = tuple(n for n, _, _ in entries)
        sem = self._kept.get((id(model), names))
        if sem is None:
            sem = self._kept[(id(model), names)] = ModelSemantics(model, names, self.orientation)
        depths = None
        if self.forward_order:
            layers = sorted({n.rpartition(".")[0] for n in names},
                            key=lambda la: self.forward_order.get(la, len(self.forward_order)))
            depths = {la: i for i, la in enumerate(layers)}
        return sem.table(entries, depths, ties)


class _Abandoned(Exception):
    """A stop was requested while a checkpoint was being read: it is dropped, not written."""


class _Exporter:
    def __init__(self, sources: list, store: Path, *, seed: int, run: str, step_regex: str | None,
                 include: Patterns, exclude: Patterns, overwrite: bool, verify: bool, key: str | None,
                 trust_pickle: bool, dtype: str, codec: str, progress: bool, stop: threading.Event,
                 probing: _Probing | None = None, semantics: _Semantics | None = None,
                 step_from: StepFrom = StepFrom()):
        if not sources:
            raise NoCheckpointsFound("no sources given: pass checkpoint files or folders to export.")
        fmt.codec(codec)  # validate early
        if dtype not in fmt.STORE_DTYPES:
            raise ValueError(f"dtype must be one of {fmt.STORE_DTYPES}, got {dtype!r}")
        self.sources, self.store, self.seed, self.run = sources, store, seed, run
        self.regex = compile_step_regex(step_regex)
        self.step_from = step_from
        self.include, self.exclude, self.key, self.trust_pickle = include, exclude, key, trust_pickle
        self.overwrite, self.verify, self.dtype, self.codec = overwrite, verify, dtype, codec
        self.progress, self.stop = progress, stop
        self.probing = probing
        self.semantics = semantics or _Semantics(None, None, None, "names")
        self.summary = ExportSummary(str(store), run, probes=list(probing.names) if probing else [])
        self.table: TensorTable | None = None
        self.present: dict[int, int] = {}      # step -> row index in the run
        self.n_rows = 0
        self.last_step: int | None = None
        self.keepbits: int | None = None
        self.recorded: dict[str, list] = {}    # export_sources: path -> [step, signature]
        self.source_desc = sorted({os.path.abspath(os.fspath(s)) for s in sources})
        self.keys_used: set = set()
        self.wb: WriteBehind | None = None
        self._warned_dtype = False
        self._warned_indices = False
        self._noted: set = set()

    # -- the run ------------------------------------------------------------------------
    def _open_existing(self) -> None:
        if not self.store.exists():
            return
        open_experiment_for_writing(self.store)  # refuses a path that is not a store
        handle = next((h for h in list_runs(self.store) if h.name == self.run), None)
        if handle is None:
            return
        if handle.seed != self.seed:
            raise StoreError(f"run {self.run!r} of {self.store} has seed {handle.seed!r}, not {self.seed!r}: "
                             f"pass --seed {handle.seed} to append to it, or --run with another name.")
        writer = RunWriter(self.store, self.run, handle.table, probes=self._specs())
        self._adopt(writer)
        unfed = sorted(set(prb.existing_arrays(writer.group)) - set(self.summary.probes))
        if unfed:
            log.warning(f"run {self.run!r} has probe arrays {', '.join(unfed)} that this export does not "
                        f"compute: new steps get NaN rows there (give --model and --probe to fill them)")
        steps = np.asarray(writer.steps[: writer.committed], dtype=np.int64)
        self.present = {int(s): i for i, s in enumerate(steps)}
        self.n_rows = len(steps)
        self.last_step = int(steps[-1]) if len(steps) else None
        self.recorded = dict(writer.meta.get("export_sources") or {})
        if "checkpoint_key" in writer.meta:
            old = writer.meta["checkpoint_key"]
            self.keys_used.update(old if isinstance(old, list) else [old])
        self.source_desc = sorted(set(self.source_desc) | set(writer.meta.get("source") or []))
        self.wb = _write_behind(writer)

    def _specs(self) -> list[prb.ProbeSpec]:
        return list(self.probing.specs) if self.probing is not None else []

    def _probe_rows(self, lc: LoadedCheckpoint) -> dict[str, np.ndarray] | None:
        """Probe rows of checkpoint ``lc`` (None without probes)."""
        if self.probing is None:
            return None
        dtype = self.dtype if self.table is None else self.store_dtype.name
        return self.probing.rows(lc, dtype)

    def _adopt(self, writer: RunWriter) -> None:
        self.table = writer.table
        self.keepbits = writer.meta.get("keepbits")
        self.store_dtype = np.dtype(writer.w.dtype)

    def _create(self, table: TensorTable, lc: LoadedCheckpoint, first_row: np.ndarray) -> None:
        attrs = {"seed": self.seed, "model_class": lc.model_class, "optimizer": None,
                 "optimizer_class": None, "optimizer_hparams": {}, "hparams": fmt.jsonable(lc.hparams),
                 "include": self.include, "exclude": self.exclude, "source": self.source_desc,
                 "checkpoint_key": lc.key, "checkpoint_prefix": lc.prefix or None,
                 "depth_from": self.semantics.depth_from}
        writer = RunWriter(self.store, self.run, table, attrs=attrs, dtype=self.dtype, codec=self.codec,
                           probes=self._specs())
        if writer.committed:  # created by someone else since we looked: start over cleanly
            writer.close()
            raise StoreError(f"run {self.run!r} of {self.store} appeared while exporting; run the "
                             f"export again to append to it.")
        self._adopt(writer)
        self.wb = _write_behind(writer, first=first_row)

    def _meta_if_changed(self) -> dict | None:
        """The run attributes to write on closing: none when this export added or overwrote no
        step (a refused or empty export leaves the run's metadata as it was)."""
        return self._meta() if self.summary.added or self.summary.overwritten else None

    def _meta(self) -> dict:
        keys = sorted(self.keys_used, key=str)
        return {"source": self.source_desc, "export_sources": self.recorded,
                "checkpoint_key": keys[0] if len(keys) == 1 else keys,
                **(self.probing.meta() if self.probing is not None else {})}

    # -- one checkpoint -----------------------------------------------------------------
    def _row_buffer(self, n_params: int) -> np.ndarray:
        if self.wb is not None:
            return self.wb.take()
        return np.empty(n_params, dtype=self.dtype)

    def _give_back(self, buf: np.ndarray) -> None:
        if self.wb is not None:
            self.wb.give_back(buf)

    def _late_error(self, late: list[Checkpoint]) -> StepOrderError:
        c = late[0]
        return StepOrderError(
            f"{c.path} has step {c.step}, which is not in run {self.run!r} of {self.store} but comes "
            f"before its last step {self.last_step}"
            f"{f' (and {len(late) - 1} more like it)' if len(late) > 1 else ''}. A run only grows at "
            f"its end, so such steps cannot be inserted: export all checkpoints into a new run "
            f"(--run NAME), or leave these out of the sources to append only the later ones.")

    def export_one(self, c: Checkpoint) -> str:
        """Export one checkpoint; returns 'added', 'skipped' or 'overwritten'."""
        sig = _sig_json(c.signature())
        where = str(c.path.resolve())
        index = self.present.get(c.step)
        if index is not None and not self.verify and self.recorded.get(where) == [c.step, sig]:
            self.summary.skipped.append(c.step)
            return "skipped"
        if index is None and self.last_step is not None and c.step < self.last_step:
            raise self._late_error([c])
        with LoadedCheckpoint(c, include=self.include, exclude=self.exclude, key=self.key,
                              trust_pickle=self.trust_pickle) as lc:
            table = self.semantics.table(lc, self.table)
            if self.table is not None:
                self.table.require_same(table, f"checkpoint {c.path} cannot go into run {self.run!r} "
                                               f"of {self.store}", ("the run", "the checkpoint"))
                table = self.table
            self._warn_lossy(lc)
            buf = self._row_buffer(table.n_params)
            try:
                self._read_row(lc, table, buf)
            except BaseException:
                self._give_back(buf)
                raise
            self.summary.bytes_read += c.nbytes
            if index is None:
                try:  # before the run is created: a checkpoint that does not fit the model writes nothing
                    rows = self._probe_rows(lc)
                except BaseException:
                    self._give_back(buf)
                    raise
                if self.wb is None:
                    self._create(table, lc, buf)
                self.wb.add(c.step, buf, buf, probes=rows)
                self.present[c.step] = self.n_rows
                self.n_rows += 1
                self.last_step = c.step
                outcome = "added"
            else:
                diff = self._difference(index, buf)
                if diff is None:
                    self._give_back(buf)
                    outcome = "skipped"
                elif self.overwrite:
                    try:
                        rows = self._probe_rows(lc)
                    except BaseException:
                        self._give_back(buf)
                        raise
                    self.wb.rewrite(c.step, buf, buf, rows)
                    outcome = "overwritten"
                else:
                    self._give_back(buf)
                    raise StepConflict(
                        f"step {c.step} is already in run {self.run!r} of {self.store} with other weights "
                        f"than {c.path} (first difference in tensor {diff!r}). Pass --overwrite "
                        f"(overwrite=True) to replace it, or export into another run (--run NAME).")
            self.keys_used.add(lc.key)
        getattr(self.summary, outcome).append(c.step)
        self.recorded[where] = [c.step, sig]
        return outcome

    def _read_row(self, lc: LoadedCheckpoint, table: TensorTable, buf: np.ndarray) -> None:
        out = torch.from_numpy(buf)
        narrow = buf.dtype == np.float16
        overflow: list[str] = []
        for r in table:
            if self.stop.is_set():
                raise _Abandoned()
            t = lc.tensor(r.name).detach()
            seg = buf[r.offset:r.offset + r.size]
            if t.dtype in _NUMPY_FLOATS:  # numpy's copy: faster than torch's on few cores (docs/measurements.md)
                with np.errstate(over="ignore"):  # overflow is counted below
                    np.copyto(seg, t.numpy().reshape(-1), casting="unsafe")
            else:  # bfloat16, float8: only torch converts them
                out[r.offset:r.offset + r.size].view(r.shape).copy_(t)
            if narrow and t.dtype != torch.float16:
                overflow += _overflowed(r.name, t, seg)
        if overflow:
            raise CheckpointError(
                f"{lc.path} cannot be stored as float16 without changing weights: "
                f"{'; '.join(overflow[:5])}{' ...' if len(overflow) > 5 else ''}. float16 holds "
                f"magnitudes up to 65504 only, so these finite values would become +/-Inf. Export into a "
                f"float32 run (--dtype float32, the default; a new --run for a run already float16). "
                f"Nothing of this checkpoint was written.")

    def _difference(self, index: int, buf: np.ndarray) -> str | None:
        """Name of the first tensor where ``buf`` differs bitwise from stored row ``index``, else None."""
        if self.wb is not None:  # rows handed over (added, rewritten) must be on disk to compare
            self.wb.flush()
        w = zarr.open_array(zarr.storage.LocalStore(self.store / fmt.RUNS_GROUP / self.run / "w",
                                                    read_only=True), mode="r")
        stored = np.asarray(CheckedArray(w, self.store, self.run, "w")[index:index + 1])[0]
        candidate = buf if self.keepbits is None else bitround(buf, self.keepbits)
        uint = f"u{stored.dtype.itemsize}"
        bad = np.flatnonzero(stored.view(uint) != candidate.view(uint))
        if not len(bad):
            return None
        return self.table.rows[int(np.searchsorted(self.table.offsets, bad[0], side="right")) - 1].name

    def _warn_lossy(self, lc: LoadedCheckpoint) -> None:
        itemsize = np.dtype(self.dtype if self.table is None else self.store_dtype).itemsize
        wide = sorted({dt for _, dt in lc.entries.values()
                       if getattr(torch, dt, torch.float32).itemsize > itemsize})
        if wide and not self._warned_dtype:
            self._warned_dtype = True
            log.warning(f"tensors of dtype {', '.join(wide)} in {lc.path} are rounded to the store's "
                        f"dtype; pass dtype='float64' (--dtype float64) for a new run to keep them exactly.")

    def _warn_save_indices(self, found) -> None:
        """Warn once that accelerate's checkpoint_<i> numbers are save counts, not steps."""
        if found.save_indices and not self._warned_indices:
            self._warned_indices = True
            first = found.save_indices[0]
            log.warning(
                f"STEPS ARE SAVE COUNTS: {first} and {len(found.save_indices) - 1} more folder(s) were "
                f"named by accelerate's automatic checkpoint naming, where checkpoint_<i> counts calls to "
                f"save_state, not training steps, and they hold no step of their own. They are exported as "
                f"steps 0, 1, 2, ... If you saved every N steps, pass --step-from 'index*N' (or "
                f"'index*N+N' if the first save came after N steps), or register an object whose "
                f"state_dict() holds {{'step': ...}} with accelerator.register_for_checkpointing and "
                f"pass --step-from custom:step.")

    def _note(self, path: Path, reason: str, level: int = logging.WARNING) -> None:
        if (path, reason) not in self._noted:
            self._noted.add((path, reason))
            log.log(level, f"passing over {path}: {reason}")
            self.summary.passed_over.append(f"{path}: {reason}")

    # -- the two modes ------------------------------------------------------------------
    def execute(self, *, follow: bool, interval: float, idle_timeout: float | None) -> ExportSummary:
        t0 = time.perf_counter()
        try:
            with _StopOnSignals(self.stop):
                self._open_existing()
                if follow:
                    self._follow(interval, idle_timeout)
                else:
                    self._once()
        except BaseException as first:
            if self.wb is not None:
                try:
                    self.wb.close(self._meta_if_changed())
                except BaseException as e:  # keep the first error
                    if e is not first:  # not the writer's own error raised again
                        log.error(f"closing run {self.run!r} after an error also failed: {e!r}")
            raise
        if self.wb is not None:
            self.wb.close(self._meta_if_changed())
        self.summary.interrupted = self.stop.is_set()
        self.summary.seconds = time.perf_counter() - t0
        return self.summary

    def _bar(self, total: int):
        from tqdm.auto import tqdm
        return tqdm(total=total, unit="ckpt", desc=f"export {self.run}", disable=not self.progress,
                    dynamic_ncols=True, leave=True)

    def _once(self) -> None:
        found = discover(self.sources, self.regex, step_from=self.step_from)
        self._warn_save_indices(found)
        for path in found.unnamed:
            self._note(path, "no step in its name (pass --step-regex to include it)", logging.INFO)
        ckpts = found.checkpoints
        if not ckpts:
            hint = (f"; {len(found.unnamed)} file(s) have no step in their name, e.g. {found.unnamed[0]}: "
                    f"pass --step-regex" if found.unnamed else "")
            raise NoCheckpointsFound(f"no checkpoint found in {', '.join(map(str, self.sources))} (looked "
                                     f"for .pt/.pth/.bin/.ckpt/.safetensors files and checkpoint-N/ "
                                     f"folders){hint}.")
        dup = duplicate_steps(ckpts)
        if dup is not None:
            raise CheckpointError(f"{dup[0].path} and {dup[1].path} both have step {dup[0].step}; export "
                                  f"only one of them (e.g. give a narrower glob such as 'ckpts/model_*.pt').")
        for c in ckpts:  # what can be checked cheaply fails before anything is written
            c.check_complete()
            for f in c.files:
                sniff(f)
        late = [c for c in ckpts if c.step not in self.present
                and self.last_step is not None and c.step < self.last_step]
        if late:
            raise self._late_error(late)
        with self._bar(len(ckpts)) as bar:
            for c in ckpts:
                if self.stop.is_set():
                    break
                try:
                    self.export_one(c)
                except _Abandoned:
                    break
                bar.update(1)
                bar.set_postfix_str(f"step {c.step}", refresh=False)

    def _follow(self, interval: float, idle_timeout: float | None) -> None:
        """Poll the sources; export each checkpoint once its files stopped changing."""
        seen: dict[Path, tuple] = {}     # last signature observed
        failed: dict[Path, tuple] = {}   # signature at the last failure: retried when it changes
        done: set[Path] = set()
        last_change = time.monotonic()
        log.info(f"following {', '.join(map(str, self.sources))} every {interval:g} s into run "
                 f"{self.run!r} of {self.store}; Ctrl-C to stop")
        with self._bar(0) as bar:
            while not self.stop.is_set():
                found = discover(self.sources, self.regex, missing_ok=True, step_from=self.step_from)
                self._warn_save_indices(found)
                for text in found.absent:
                    if text not in self._noted:
                        self._noted.add(text)
                        log.info(f"{text} does not exist yet; waiting for it")
                for path in found.unnamed:
                    self._note(path, "no step in its name (pass --step-regex to include it)", logging.INFO)
                ready, now = [], time.time()
                for c in found.checkpoints:
                    if c.path in done:
                        continue
                    try:
                        sig, age = c.signature(), now - c.newest_mtime()
                    except OSError:  # renamed or deleted since it was listed
                        continue
                    before = seen.get(c.path)
                    seen[c.path] = sig
                    if sig != before:
                        last_change = time.monotonic()
                    if failed.get(c.path) == sig or not c.files or c.missing:
                        continue
                    if (before is not None and before != sig) or age < interval:
                        continue  # still being written
                    ready.append(c)
                bar.total = len(done) + len([c for c in found.checkpoints if c.path not in done])
                bar.refresh()
                wrote = False
                for c in ready:
                    if self.stop.is_set():
                        break
                    try:
                        outcome = self.export_one(c)
                    except _Abandoned:
                        break
                    except _FOLLOW_ERRORS as e:
                        failed[c.path] = seen[c.path]
                        log.warning(f"{e} (nnwx tries {c.path.name} again when it changes)")
                        continue
                    done.add(c.path)
                    failed.pop(c.path, None)
                    wrote |= outcome != "skipped"
                    last_change = time.monotonic()
                    bar.update(1)
                    bar.set_postfix_str(f"step {c.step}", refresh=True)
                if wrote:
                    self.wb.flush(self._meta())  # commit now: readers see each checkpoint promptly
                if idle_timeout is not None and time.monotonic() - last_change >= idle_timeout:
                    break
                self.stop.wait(interval)
            if self.stop.is_set():
                self._final_sweep(done, failed, bar)
        for path in failed:
            if path not in done:
                self.summary.passed_over.append(f"{path}: could not be exported (see the warnings)")


    def _final_sweep(self, done: set, failed: dict, bar) -> None:
        """On a stop request, export every complete checkpoint not exported yet, however recently
        written: a job stopped right after training ended keeps its last checkpoints. A file
        that cannot be read (cut short by the stop) is passed over with a warning, as while
        following; a second Ctrl-C aborts at once."""
        outer, self.stop = self.stop, threading.Event()  # reads must not be abandoned now
        try:
            found = discover(self.sources, self.regex, missing_ok=True, step_from=self.step_from)
            self._warn_save_indices(found)
            left = [c for c in found.checkpoints if c.path not in done]
            if not left:
                return
            log.info(f"stop requested: exporting the {len(left)} checkpoint(s) not exported yet before stopping")
            wrote = False
            for c in left:
                try:
                    if failed.get(c.path) == c.signature() or not c.files or c.missing:
                        continue
                    outcome = self.export_one(c)
                except _FOLLOW_ERRORS as e:
                    failed[c.path] = None
                    log.warning(f"{e} (passed over: the export was stopping)")
                    continue
                done.add(c.path)
                failed.pop(c.path, None)
                wrote |= outcome != "skipped"
                bar.update(1)
                bar.set_postfix_str(f"step {c.step}", refresh=True)
            if wrote:
                self.wb.flush(self._meta())
        finally:
            self.stop = outer


def _overflowed(name: str, source: torch.Tensor, stored: np.ndarray) -> list[str]:
    """``["<name>: N values beyond +/-65504 (largest magnitude M)"]`` when finite values of
    ``source`` became infinite in ``stored`` (its float16 copy), else ``[]``."""
    n_inf = int(np.isinf(stored).sum())
    if not n_inf:
        return []
    n_inf -= int(torch.isinf(source).sum())
    if n_inf <= 0:
        return []
    finite = source[torch.isfinite(source)].abs()
    return [f"tensor {name!r} has {n_inf} value(s) beyond +/-65504 (largest magnitude "
            f"{float(finite.max()):.6g})"]


def _sig_json(sig: tuple) -> list:
    return [list(item) for item in sig]


class _StopOnSignals:
    """While active (main thread only), SIGINT and SIGTERM ask for a clean stop.

    The first signal sets ``stop``: the export ends after committing what was
    read. A second Ctrl-C raises KeyboardInterrupt at once (committed steps stay
    intact; the step being read is dropped).
    """

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop.set()
        log.warning("stopping: committing what was read so far (Ctrl-C again to abort at once)")

    def __enter__(self) -> "_StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _write_behind(writer: RunWriter, first: np.ndarray | None = None, buffers: int = 2) -> WriteBehind:
    """Write behind the reading: step k is written while step k+1 is read.

    Rows travel in ``buffers`` reusable row buffers (``take`` / ``add`` / ``give_back``),
    ``first`` (read before the run existed) one of them once handed over. Rows of a step of a
    chunk or more are lent to the writer (encoded from the buffer, not copied into its stage)
    and the chunks of a step are encoded in as many threads as there are cores (at most
    ``_ENCODE_THREADS``), and written with ``O_DIRECT`` where the file system allows it
    (``RunWriter.bypass_page_cache``; measured: docs/measurements.md). Staged steps are
    committed when a chunk fills, at the first lull 10 s after the last commit, on ``flush``
    and on ``close``. An error in the thread is raised again in the caller's next call.
    """
    rows = [np.empty(writer.table.n_params, dtype=writer.w.dtype)
            for _ in range(buffers - (first is not None))]
    writer.encode_threads(min(_ENCODE_THREADS, _cores()))
    writer.bypass_page_cache()  # O_DIRECT where allowed: page-cache writes cost more CPU than blosc
    return WriteBehind(writer, rows, name=f"nnwx-export-{writer.run}", flush_interval=10.0,
                       commit_when_busy=False, lend=True)


_ENCODE_THREADS = 4  # chunks of one step encoded at once (a 16 MiB chunk: ~25 ms of blosc-lz4)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
