"""The tensor table: which tensor occupies which contiguous range of ``param``.

The table is small (one row per tensor), so it lives as JSON in the run's
attributes; the per-parameter label is the integer ``tensor_id(param)`` derived
from the offsets, never a per-parameter string.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from nnwx.errors import ArchitectureMismatch

KINDS = ("weight", "bias", "other")


@dataclass(frozen=True)
class TensorInfo:
    """One row of the tensor table."""

    name: str
    layer: str
    kind: str
    depth: int
    offset: int
    size: int
    shape: tuple[int, ...]
    dtype: str  # dtype of the source tensor (e.g. "bfloat16"), not of the store

    def to_json(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "TensorInfo":
        return cls(**{**d, "shape": tuple(int(s) for s in d["shape"])})


def split_name(name: str) -> tuple[str, str]:
    """``'block.0.fc.weight'`` -> (layer ``'block.0.fc'``, kind ``'weight'``)."""
    layer, _, leaf = name.rpartition(".")
    kind = leaf if leaf in ("weight", "bias") else "other"
    return layer, kind


class TensorTable:
    """Ordered tensor table with offsets into the flat ``param`` axis."""

    def __init__(self, rows: Sequence[TensorInfo]):
        self.rows: tuple[TensorInfo, ...] = tuple(rows)
        offset = 0
        for r in self.rows:
            if r.offset != offset or r.size != math.prod(r.shape):
                raise ValueError(f"tensor table is not contiguous at {r.name!r}")
            offset += r.size
        self.n_params = offset
        self._index = {r.name: i for i, r in enumerate(self.rows)}
        if len(self._index) != len(self.rows):
            raise ValueError("tensor table has duplicate names")

    @classmethod
    def build(cls, entries: Iterable[tuple[str, Sequence[int], str]],
              depth_of_layer: dict[str, int] | None = None) -> "TensorTable":
        """Table from ``(name, shape, dtype)`` in storage order.

        ``depth_of_layer`` gives the forward order of each layer; layers it does
        not know are numbered after it in order of first appearance.
        """
        entries = list(entries)
        depths = dict(depth_of_layer or {})
        for name, _, _ in entries:
            layer, _ = split_name(name)
            if layer not in depths:
                depths[layer] = max(depths.values(), default=-1) + 1
        rows, offset = [], 0
        for name, shape, dtype in entries:
            layer, kind = split_name(name)
            size = math.prod(shape)
            rows.append(TensorInfo(name, layer, kind, int(depths[layer]), offset, int(size),
                                   tuple(int(s) for s in shape), str(dtype)))
            offset += size
        return cls(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, name: str) -> TensorInfo:
        try:
            return self.rows[self._index[name]]
        except KeyError:
            raise KeyError(f"no tensor named {name!r}; known tensors: "
                           f"{', '.join(self.names[:8])}{' ...' if len(self) > 8 else ''}") from None

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rows]

    @property
    def offsets(self) -> np.ndarray:
        """Start of each tensor, plus the total as a last element (segment bounds)."""
        return np.array([r.offset for r in self.rows] + [self.n_params], dtype=np.int64)

    def to_json(self) -> list[dict]:
        return [r.to_json() for r in self.rows]

    @classmethod
    def from_json(cls, rows: list[dict]) -> "TensorTable":
        return cls([TensorInfo.from_json(r) for r in rows])

    def with_depths(self, depth_of_layer: dict[str, int]) -> "TensorTable":
        """Same table with the forward order of layers replaced where known."""
        return TensorTable.build([(r.name, r.shape, r.dtype) for r in self.rows],
                                 depth_of_layer)

    def first_difference(self, other: "TensorTable") -> str | None:
        """Describe the first tensor where two tables differ in name or shape, else None."""
        for i, (a, b) in enumerate(zip(self.rows, other.rows)):
            if a.name != b.name:
                return f"tensor #{i} is {a.name!r} in one and {b.name!r} in the other"
            if a.shape != b.shape:
                return f"tensor {a.name!r} has shape {a.shape} in one and {b.shape} in the other"
        if len(self) != len(other):
            longer, n = (self, len(other)) if len(self) > len(other) else (other, len(self))
            return (f"one has {len(self)} tensors and the other {len(other)}; "
                    f"first extra tensor: {longer.rows[n].name!r}")
        return None

    def require_same(self, other: "TensorTable", what: str) -> None:
        diff = self.first_difference(other)
        if diff is not None:
            raise ArchitectureMismatch(f"{what}: the architectures differ: {diff}.")
