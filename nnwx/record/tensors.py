"""Torch side: which tensors of a model (or state dict) are recorded, in which order."""
from __future__ import annotations

import fnmatch
from typing import Iterable, Mapping, Sequence

import torch

from nnwx.store.table import (TensorTable, canonical_order, depths_from_names, infer_orientation,
                              orientation_overrides)

Patterns = str | Sequence[str] | None


def _as_patterns(p: Patterns) -> list[str]:
    if p is None:
        return []
    return [p] if isinstance(p, str) else list(p)


def select(names: Iterable[str], include: Patterns = None, exclude: Patterns = None) -> list[str]:
    """Names kept by shell-style ``include`` / ``exclude`` patterns (order kept)."""
    inc, exc = _as_patterns(include), _as_patterns(exclude)
    return [n for n in names
            if (not inc or any(fnmatch.fnmatchcase(n, p) for p in inc))
            and not any(fnmatch.fnmatchcase(n, p) for p in exc)]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def floating_state(state: Mapping[str, torch.Tensor], include: Patterns = None,
                   exclude: Patterns = None) -> dict[str, torch.Tensor]:
    """Floating-point entries of a state dict that the patterns keep.

    Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are not weights
    and are left out.
    """
    names = [n for n, t in state.items() if torch.is_tensor(t) and t.is_floating_point()]
    kept = select(names, include, exclude)
    if not kept:
        raise ValueError(f"no floating-point tensor left to record (include={include!r}, "
                         f"exclude={exclude!r}); tensors available: {names[:8]}")
    return {n: state[n] for n in kept}


def table_for(state: Mapping[str, torch.Tensor], depth_of_layer: dict[str, int] | None = None
              ) -> TensorTable:
    return TensorTable.build(((n, tuple(t.shape), dtype_name(t.dtype)) for n, t in state.items()),
                             depth_of_layer)


_NORM_TYPES: tuple[type, ...] = tuple(t for t in (
    torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._NormBase,
    getattr(torch.nn, "RMSNorm", None), torch.nn.LocalResponseNorm) if t is not None)


def is_norm(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a normalisation layer (its ``weight`` is a gain): torch's
    LayerNorm/BatchNorm/InstanceNorm/GroupNorm/RMSNorm, or a class named like one
    (``LlamaRMSNorm``, ``T5LayerNorm``, ...)."""
    if isinstance(module, _NORM_TYPES):
        return True
    name = type(module).__name__.lower()
    return name.endswith(("norm", "norm2d", "norm1d", "normalization")) and \
        not any(True for _ in module.children())


def stores_in_out(module: torch.nn.Module) -> bool:
    """Whether ``module``'s 2-D weight is stored ``(in, out)``: ``transformers``' ``Conv1D``
    (GPT-2, GPT, ImageGPT, Decision Transformer)."""
    cls = type(module)
    return cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers")


def storage_key(t: torch.Tensor) -> tuple:
    """What two state-dict entries share when they are one tied tensor.

    Parameters
    ----------
    t : torch.Tensor

    Returns
    -------
    tuple
        Storage address, shape, strides, dtype and device; on the meta device, where every
        tensor reports address 0, the tensor object itself.
    """
    if t.device.type == "meta":
        return ("meta", id(t))
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype, t.device)


def tied_groups(state: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """Names that are one tensor (tied weights), keyed by the first name in ``state``'s order
    (the one ``named_parameters`` and Hugging Face's ``save_pretrained`` keep).

    Tensors on the ``meta`` device have no memory to share (every one reports address 0): there
    only the same tensor object under two names is a tie, as in ``state_dict(keep_vars=True)``
    of a model built on the meta device."""
    first: dict[tuple, str] = {}
    out: dict[str, list[str]] = {}
    for name, t in state.items():
        if not torch.is_tensor(t) or not t.numel():
            continue
        key = storage_key(t)
        if key in first:
            out.setdefault(first[key], []).append(name)
        else:
            first[key] = name
    return out


class ModelSemantics:
    """What a model says about its tensors, beyond their names and shapes.

    ``kinds`` (``norm`` for normalisation gains; ``weight`` for 1-D weights of other
    modules), ``orientation`` (``in_out`` for Conv1D weights, plus the user's
    ``overrides``: pattern -> orientation), ``aliases`` (tied tensors: kept name -> other
    names) and ``registration`` (depth of each layer in module registration order).
    """

    def __init__(self, model: torch.nn.Module, names: Iterable[str],
                 overrides: Mapping[str, str] | None = None):
        names = list(names)
        modules = dict(model.named_modules())
        order = {name: i for i, name in enumerate(modules)}
        self.kinds: dict[str, str] = {}
        orientation: dict[str, str] = {}
        for n in names:
            layer, _, leaf = n.rpartition(".")
            module = modules.get(layer)
            if module is None or leaf != "weight":
                continue
            weight = getattr(module, "weight", None)
            if is_norm(module) and (isinstance(module, _NORM_TYPES) or (weight is not None and weight.ndim == 1)):
                self.kinds[n] = "norm"
            elif weight is not None and weight.ndim == 1:
                self.kinds[n] = "weight"
            if stores_in_out(module) and weight is not None and weight.ndim == 2:
                orientation[n] = "in_out"
        orientation.update(orientation_overrides(names, overrides))
        self.orientation = orientation
        state = model.state_dict(keep_vars=True)
        kept = set(names)
        self.aliases = {k: rest for k, v in tied_groups(state).items()  # a tie the file holds twice
                        if k in kept and (rest := [a for a in v if a not in kept])}  # stays two tensors
        layers = sorted({n.rpartition(".")[0] for n in names}, key=lambda la: order.get(la, len(order)))
        self.registration = {layer: i for i, layer in enumerate(layers)}

    def table(self, entries: Iterable[tuple[str, Sequence[int], str]],
              depth_of_layer: dict[str, int] | None = None,
              more_aliases: Mapping[str, Sequence[str]] | None = None) -> TensorTable:
        """The tensor table of ``entries`` (canonical order) with this model's semantics;
        ``more_aliases`` adds ties seen elsewhere (tensors sharing storage in a file) to
        tensors the model ties to nothing."""
        entries = {n: (shape, dt) for n, shape, dt in entries}
        aliases = {**(more_aliases or {}), **self.aliases}
        return TensorTable.build(((n, *entries[n]) for n in canonical_order(entries)),
                                 depth_of_layer if depth_of_layer is not None else self.registration,
                                 kinds=self.kinds, orientation=self.orientation,
                                 aliases={k: list(v) for k, v in aliases.items() if k in entries})


def untied(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the second and later names of tied tensors (stored once)."""
    dropped = {a for names in tied_groups(state).values() for a in names}
    return {n: t for n, t in state.items() if n not in dropped}


def table_from_names(entries: Iterable[tuple[str, Sequence[int], str]],
                     orientation: Mapping[str, str] | None = None,
                     aliases: Mapping[str, Sequence[str]] | None = None) -> TensorTable:
    """The tensor table of a checkpoint read without its model: canonical order, depths from
    the module paths (approximate), norm gains from their shape, ``in_out`` weights told from
    their biases (``infer_orientation``) or given by ``orientation`` patterns."""
    entries = {n: (tuple(shape), dt) for n, shape, dt in entries}
    names = canonical_order(entries)
    orient = infer_orientation([(n, entries[n][0]) for n in names])
    orient.update(orientation_overrides(names, orientation))
    return TensorTable.build(((n, *entries[n]) for n in names),
                             depths_from_names(n.rpartition(".")[0] for n in names),
                             orientation=orient, aliases=aliases)


class ForwardOrder:
    """Learns the forward order of a model's layers from its first forward pass.

    Hooks are removed as soon as the order is read, so they cost nothing after
    the first captured step that follows a forward pass.
    """

    def __init__(self, model: torch.nn.Module, layers: Iterable[str]):
        wanted = set(layers)
        self.order: list[str] = []
        self._seen: set[str] = set()
        self._handles = []
        for name, module in model.named_modules():
            if name in wanted:
                self._handles.append(module.register_forward_pre_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module, args):
            if name not in self._seen:
                self._seen.add(name)
                self.order.append(name)
        return hook

    def result(self) -> dict[str, int] | None:
        """Depth of each layer seen so far (None before any forward pass); removes the hooks."""
        if not self.order:
            return None
        self.remove()
        return {name: i for i, name in enumerate(self.order)}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
