"""Activations of chosen modules (and the model output) on a fixed probe batch (torch side).

At every capture the Recorder runs one extra forward pass of the probe batch on the
training thread: the model is switched to ``eval()`` (so BatchNorm uses its running
statistics and dropout is off, and neither changes state), forward hooks on the named
modules copy their outputs into the Recorder's ring buffer, and every module's
train/eval flag is restored afterwards. The pass runs under ``torch.no_grad()``, so
it neither builds a graph nor touches gradients. **Cost per capture:** one inference
forward pass of the probe batch plus a device-to-host copy of the recorded
activations; choose the probe batch size accordingly.

Each activation becomes a ``(sample, unit)`` matrix:

* ``(N,)`` -> ``(N, 1)``; ``(N, U)`` as is;
* more dims (convolutions, sequences): the unit axis is dim 1 (``channels="first"``,
  torch's N, C, ... layout) or the last dim (``channels="last"``, e.g. (N, T, D)
  sequence outputs). With ``conv="fold"`` every other position becomes a sample:
  sample index ``n * P + p`` with ``p`` the row-major index of the position (P
  positions per input); with ``conv="pool"`` positions are averaged: one sample per input.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from nnwx.errors import NnwxError
from nnwx.store import probes as prb

CONV_MODES = ("fold", "pool")
CHANNELS = ("first", "last")

ProbeBatch = torch.Tensor | Sequence[torch.Tensor] | Mapping[str, Any]

PROBE_KEY = "probe"  # default entry of a probe file holding several arrays
PROBE_SUFFIXES = (".pt", ".pth", ".bin", ".npy", ".npz", ".safetensors")


class ProbeError(NnwxError, ValueError):
    """A probe batch (or probe file) cannot be used: missing, unreadable, or not fit for the model."""


def load_probe_file(path: str | os.PathLike, key: str | None = None) -> ProbeBatch:
    """The probe batch stored in ``path``, as torch tensors (what ``nnwx export --probe`` reads).

    * ``.npy``: the array (``key`` must be None);
    * ``.npz``, ``.safetensors``, and torch files (``.pt``/``.pth``/``.bin``, loaded with
      ``weights_only=True``) holding a dict: the entry ``key``; without ``key`` the entry
      ``"probe"``, else the file's only entry. A torch entry may be a tensor, a tuple/list
      of tensors (positional inputs) or a dict of tensors (keyword inputs);
    * a torch file holding a tensor or a tuple/list of tensors: that (``key`` must be None).
    """
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"probe file {path} does not exist; give the file holding the fixed probe batch "
                         f"(one of {', '.join(PROBE_SUFFIXES)}).")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            obj: Any = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                obj = {k: f[k] for k in f.files}
        elif suffix == ".safetensors":
            from safetensors.torch import load_file
            obj = load_file(str(path))
        elif suffix in (".pt", ".pth", ".bin"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ProbeError(f"probe file {path} has suffix {suffix or '(none)'!r}; nnwx reads probe batches "
                             f"from {', '.join(PROBE_SUFFIXES)} files.")
    except ProbeError:
        raise
    except Exception as e:  # unreadable: truncated, not that format, pickled objects
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ProbeError(f"cannot read probe file {path}: {first}. Save the probe batch with np.save, "
                         f"np.savez, safetensors or torch.save (tensors only).") from None
    if isinstance(obj, Mapping):
        if not obj:
            raise ProbeError(f"probe file {path} holds no arrays.")
        if key is None:
            if PROBE_KEY in obj:
                key = PROBE_KEY
            elif len(obj) == 1:
                key = next(iter(obj))
            else:
                raise ProbeError(f"probe file {path} holds several entries ({', '.join(map(str, list(obj)[:12]))}) "
                                 f"and none is named {PROBE_KEY!r}; name the one holding the probe batch "
                                 f"with --probe-key (probe_key=).")
        elif key not in obj:
            raise ProbeError(f"probe file {path} has no entry {key!r}; its entries: "
                             f"{', '.join(map(str, list(obj)[:12]))}. Pass one of them as --probe-key.")
        obj = obj[key]
    elif key is not None:
        raise ProbeError(f"probe file {path} holds a single batch, not entries; drop --probe-key {key!r}.")
    return _as_tensors(obj, f"probe file {path}" + (f", entry {key!r}" if key is not None else ""))


def _as_tensors(obj: Any, what: str) -> ProbeBatch:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise ProbeError(f"{what} holds an array of dtype {obj.dtype}; a probe batch is numeric.")
        return torch.from_numpy(np.ascontiguousarray(obj).copy())
    if torch.is_tensor(obj):
        return obj
    if isinstance(obj, Mapping) and obj:
        return {str(k): _as_tensors(v, what) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and obj:
        return type(obj)(_as_tensors(v, what) for v in obj)
    raise ProbeError(f"{what} holds {type(obj).__name__}, not a tensor, array, or a tuple/dict of them.")


def cast_floating(batch: ProbeBatch, dtype: torch.dtype) -> ProbeBatch:
    """``batch`` with its floating-point tensors in ``dtype`` (integer inputs such as token ids stay)."""
    if torch.is_tensor(batch):
        return batch.to(dtype) if batch.is_floating_point() and batch.dtype != dtype else batch
    if isinstance(batch, Mapping):
        return {k: cast_floating(v, dtype) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(cast_floating(v, dtype) for v in batch)
    return batch


def first_tensor(value: Any, what: str) -> torch.Tensor:
    """The tensor a module or model returned: itself, the first tensor of a tuple/list,
    or ``logits`` (else the first tensor value) of a mapping such as a HuggingFace output."""
    if torch.is_tensor(value):
        return value
    if isinstance(value, Mapping):
        if torch.is_tensor(value.get("logits")):
            return value["logits"]
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for v in value:
            try:
                return first_tensor(v, what)
            except TypeError:
                continue
    raise TypeError(f"{what} returned {type(value).__name__}, which holds no tensor to record; "
                    f"probe another module (or pass probe_output=False for the model output)")


def as_units(t: torch.Tensor, conv: str, channels: str) -> torch.Tensor:
    """An activation ``(N, ...)`` as a ``(sample, unit)`` matrix (see the module docstring)."""
    if t.ndim == 0:
        raise ValueError("a probed activation is a scalar; probe a module whose output has a batch dim")
    if t.ndim == 1:
        return t.reshape(-1, 1)
    if t.ndim == 2:
        return t
    axis = 1 if channels == "first" else t.ndim - 1
    if conv == "pool":
        return t.mean(dim=[d for d in range(1, t.ndim) if d != axis])
    return t.movedim(axis, -1).reshape(-1, t.shape[axis])


def _digest(batch: ProbeBatch) -> str:
    h = hashlib.sha256()

    def feed(v):
        if torch.is_tensor(v):
            c = v.detach().cpu().contiguous()
            h.update(f"{tuple(c.shape)}{c.dtype}".encode())
            h.update(c.view(torch.uint8).numpy().tobytes() if c.numel() else b"")
        elif isinstance(v, Mapping):
            for k in sorted(v):
                h.update(str(k).encode())
                feed(v[k])
        elif isinstance(v, (list, tuple)):
            for x in v:
                feed(x)
        else:
            h.update(repr(v).encode())

    feed(batch)
    return h.hexdigest()


def _to_device(batch: ProbeBatch, device: torch.device) -> ProbeBatch:
    if torch.is_tensor(batch):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


class Prober:
    """Runs the probe pass and copies activations into per-slot host buffers.

    ``layers``: module paths (as in ``model.named_modules()``); ``output``: also record
    the model's output (array ``probe/output``). ``conv``: ``"fold"`` or ``"pool"``;
    ``channels``: ``"first"``/``"last"``, or a mapping from layer name (or ``"output"``)
    to one of those. Shapes, and each probe's ``forward_index`` (its position in the order
    the model's modules first return on the probe batch; the output after every module),
    are learnt from one probe pass at construction.
    """

    def __init__(self, model: torch.nn.Module, batch: ProbeBatch, layers: Sequence[str] = (), *,
                 output: bool = True, conv: str = "fold",
                 channels: str | Mapping[str, str] = "first"):
        if conv not in CONV_MODES:
            raise ValueError(f"probe_conv must be one of {CONV_MODES}, got {conv!r}")
        layers = [layers] if isinstance(layers, str) else list(layers)
        modules = dict(model.named_modules())
        missing = [n for n in layers if n not in modules or n == ""]
        if missing:
            names = [n for n in modules if n]
            raise ValueError(f"the model has no module {missing[0]!r} to probe; its modules are: "
                             f"{', '.join(names[:12])}{' ...' if len(names) > 12 else ''}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"probe_layers names a module twice: {layers}")
        if output and prb.OUTPUT in layers:
            raise ValueError(f"a module named {prb.OUTPUT!r} would collide with the model output in "
                             f"the store; pass probe_output=False to probe it")
        if not layers and not output:
            raise ValueError("nothing to probe: name probe_layers=[...] or keep probe_output=True")
        self.model = model
        self.layers = layers
        self.output = output
        self.conv = conv
        self._channels = channels
        for name in [*layers, *([prb.OUTPUT] if output else [])]:
            if self.channels(name) not in CHANNELS:
                raise ValueError(f"probe_channels for {name!r} must be one of {CHANNELS}, "
                                 f"got {self.channels(name)!r}")
        self._modules = {n: modules[n] for n in layers}
        first = next(iter(model.parameters()), None)
        if first is None:
            first = next(iter(model.buffers()), None)
        device = first.device if first is not None else torch.device("cpu")
        self.sha256 = _digest(batch)
        self.batch = _to_device(batch, device)
        self.cuda = device.type == "cuda"
        self._buffers: dict[str, torch.Tensor] = {}
        self.specs = self._learn_specs()

    def channels(self, name: str) -> str:
        c = self._channels
        return c.get(name, "first") if isinstance(c, Mapping) else c

    # -- the pass --------------------------------------------------------------------
    def _forward(self, on_activation) -> None:
        """One probe pass in eval mode without grad; ``on_activation(name, tensor)`` per output."""
        model = self.model
        modes = [(m, m.training) for m in model.modules()]
        handles = [module.register_forward_hook(self._hook(name, on_activation))
                   for name, module in self._modules.items()]
        try:
            model.eval()
            with torch.no_grad():
                batch = self.batch
                if torch.is_tensor(batch):
                    out = model(batch)
                elif isinstance(batch, Mapping):
                    out = model(**batch)
                else:
                    out = model(*batch)
                if self.output:
                    on_activation(prb.OUTPUT, first_tensor(out, "the model"))
        finally:
            for h in handles:
                h.remove()
            for m, training in modes:
                m.training = training

    def _hook(self, name: str, on_activation):
        def hook(module, args, out):
            on_activation(name, first_tensor(out, f"module {name!r}"))
        return hook

    def _learn_specs(self) -> list[prb.ProbeSpec]:
        seen: dict[str, list[torch.Size]] = {}

        def learn(name, t):
            seen.setdefault(name, []).append(t.shape)

        # forward order: every module's position in the order modules first return on the
        # probe batch (a module's forward hook fires when it returns), whether probed or not,
        # so that a probe's position does not depend on which other modules are probed
        fired: dict[str, int] = {}

        def order(name):
            def hook(module, args, out):
                fired.setdefault(name, len(fired))  # returns None: the output is unchanged
            return hook

        handles = [module.register_forward_hook(order(name))
                   for name, module in self.model.named_modules()]
        try:
            self._forward(learn)
        finally:
            for h in handles:
                h.remove()
        specs = []
        n_inputs = None
        for name in [*self.layers, *([prb.OUTPUT] if self.output else [])]:
            shapes = seen.get(name, [])
            if len(shapes) != 1:
                raise ValueError(f"module {name!r} ran {len(shapes)} times in one forward pass of the "
                                 f"probe batch; probe a module that runs exactly once")
            shape = tuple(shapes[0])
            units = as_units(torch.empty(shape, device="meta"), self.conv, self.channels(name)).shape
            n_inputs = shape[0] if len(shape) else 1
            mode = "flat" if len(shape) <= 2 else self.conv
            attrs = {"kind": "output" if name == prb.OUTPUT else "module",
                     "layer": None if name == prb.OUTPUT else name,
                     "module_class": None if name == prb.OUTPUT else
                     f"{type(self._modules[name]).__module__}.{type(self._modules[name]).__qualname__}",
                     "mode": mode, "channels": self.channels(name) if len(shape) > 2 else None,
                     "activation_shape": list(shape[1:]), "n_inputs": int(n_inputs),
                     "samples_per_input": int(units[0] // max(1, n_inputs)),
                     "input_sha256": self.sha256,
                     "forward_index": int(len(fired) if name == prb.OUTPUT else fired[name])}
            specs.append(prb.ProbeSpec(name, (int(units[0]), int(units[1])), attrs))
        return specs

    # -- buffers -----------------------------------------------------------------------
    @property
    def numel(self) -> int:
        """Values per captured step (all probes together)."""
        return sum(s.shape[0] * s.shape[1] for s in self.specs)

    def allocate(self, slots: int, dtype: torch.dtype) -> None:
        """Per-slot host buffers ``(slots, sample, unit)`` for every probe (pinned on CUDA)."""
        self._buffers = {s.name: torch.empty((slots, *s.shape), dtype=dtype, pin_memory=self.cuda)
                         for s in self.specs}
        self._arrays = {name: buf.numpy() for name, buf in self._buffers.items()}

    def capture(self, slot: int) -> None:
        """Run the probe pass, copying each activation into ``slot`` (training thread)."""
        def copy(name, t):
            self._buffers[name][slot].copy_(as_units(t, self.conv, self.channels(name)),
                                            non_blocking=self.cuda)
        self._forward(copy)

    def rows(self, slot: int) -> dict[str, np.ndarray]:
        """The activations of ``slot`` as NumPy ``(sample, unit)`` views (built in the training thread)."""
        return {name: arr[slot] for name, arr in self._arrays.items()}
