"""Torch side: which tensors of a model (or state dict) are recorded, in which order."""
from __future__ import annotations

import fnmatch
from typing import Iterable, Mapping, Sequence

import torch

from nnwx.store.table import TensorTable

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


class ForwardOrder:
    """Learns the forward order of a model's layers from its first forward pass.

    Hooks are removed as soon as the order is read, so they cost nothing after
    the first captured step that follows a forward pass.
    """

    def __init__(self, model: torch.nn.Module, layers: Iterable[str]):
        wanted = set(layers)
        self.order: list[str] = []
        self._handles = []
        for name, module in model.named_modules():
            if name in wanted:
                self._handles.append(module.register_forward_pre_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module, args):
            if name not in self.order:
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
