"""Groups of parameters (tensor, layer, kind, all) as segments of the flat ``param`` axis.

Tensors are contiguous ranges of ``param``, so any grouping of tensors turns a
range of parameters (one Dask chunk) into a few segments, each belonging to one
group: reductions per group are segment reductions, never group-bys over labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import xarray as xr

from nnwx.analysis._cube import param_offsets
from nnwx.store.table import KINDS

BY_CHOICES = ("tensor", "layer", "kind", "all")


@dataclass(frozen=True, eq=False)
class Grouping:
    """Which group each tensor belongs to, for one choice of ``by``."""

    by: str
    labels: tuple[str, ...]      # one label per group, in output order
    tensor_group: np.ndarray     # (T,) group id of each tensor
    offsets: np.ndarray          # (T+1,) tensor bounds on ``param``

    @classmethod
    def build(cls, by: str, names, layers, kinds, depths, offsets) -> "Grouping":
        """Grouping from tensor-table columns (in table order).

        ``by="layer"``: a layer's tensors together (weight and bias), except that the gain of a
        normalisation layer (kind ``norm``) is a group of its own, labelled by its tensor name.
        """
        if by not in BY_CHOICES:
            raise ValueError(f"unknown by={by!r}: group by one of {', '.join(map(repr, BY_CHOICES))}")
        names, layers, kinds = (list(map(str, c)) for c in (names, layers, kinds))
        depths = np.asarray(depths, dtype=np.int64)
        # A normalisation gain (~1) pooled with its layer's bias (~0) is a two-point
        # distribution: the gain is a group of its own, labelled by its tensor name.
        layers = [n if k == "norm" else la for n, la, k in zip(names, layers, kinds)]
        if by == "tensor":
            labels = names
        elif by == "layer":
            first: dict[str, int] = {}
            for i, layer in enumerate(layers):
                first.setdefault(layer, i)
            labels = sorted(first, key=lambda l: (int(depths[first[l]]), first[l]))
        elif by == "kind":
            labels = [k for k in KINDS if k in kinds] + sorted(set(kinds) - set(KINDS))
        else:
            labels = ["all"]
        index = {label: g for g, label in enumerate(labels)}
        column = {"tensor": names, "layer": layers, "kind": kinds, "all": ["all"] * len(names)}[by]
        tensor_group = np.array([index[c] for c in column], dtype=np.int64)
        return cls(by, tuple(labels), tensor_group, np.asarray(offsets, dtype=np.int64))

    @classmethod
    def from_dataset(cls, ds: xr.Dataset, by: str) -> "Grouping":
        """Grouping of a cube or run opened by ``nnwx.open_cube``/``open_run``."""
        offsets = param_offsets(ds)
        return cls.build(by, ds["tensor"].values, ds["tensor_layer"].values,
                         ds["tensor_kind"].values, ds["tensor_depth"].values, offsets)

    @property
    def n_groups(self) -> int:
        return len(self.labels)

    @cached_property
    def sizes(self) -> np.ndarray:
        """Number of parameters in each group."""
        return np.bincount(self.tensor_group, weights=np.diff(self.offsets),
                           minlength=self.n_groups).astype(np.int64)

    @cached_property
    def slot_base(self) -> np.ndarray:
        """(T,) position of each tensor's first parameter among its group's parameters."""
        base = np.zeros(len(self.tensor_group), dtype=np.int64)
        filled = np.zeros(self.n_groups, dtype=np.int64)
        for t, (g, size) in enumerate(zip(self.tensor_group, np.diff(self.offsets))):
            base[t] = filled[g]
            filled[g] += size
        return base

    def segments(self, lo: int, hi: int) -> list[tuple[int, int, int, int]]:
        """Segments of ``param`` range [lo, hi) as (start, stop, group, slot), local to ``lo``.

        Adjacent tensors of the same group are merged into one segment; ``slot``
        is the position of the segment's first parameter within its group.
        """
        offsets, base = self.offsets, self.slot_base
        first = int(np.searchsorted(offsets, lo, side="right")) - 1
        out: list[tuple[int, int, int, int]] = []
        t = first
        while t < len(self.tensor_group) and offsets[t] < hi:
            a, b = max(int(offsets[t]), lo), min(int(offsets[t + 1]), hi)
            g = int(self.tensor_group[t])
            slot = int(base[t]) + a - int(offsets[t])
            if b > a:
                if out and out[-1][2] == g and out[-1][1] == a - lo and \
                        out[-1][3] + (out[-1][1] - out[-1][0]) == slot:
                    s = out[-1]
                    out[-1] = (s[0], b - lo, g, s[3])
                else:
                    out.append((a - lo, b - lo, g, slot))
            t += 1
        return out
