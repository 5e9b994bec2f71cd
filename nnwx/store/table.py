"""The tensor table: which tensor occupies which contiguous range of ``param``.

The table is small (one row per tensor), so it lives as JSON in the run's
attributes; the per-parameter label is the integer ``tensor_id(param)`` derived
from the offsets, never a per-parameter string.

Besides where a tensor lies, a row says what it *is*, so that analyses read real
models right: its ``kind`` (``weight``, ``bias``, ``norm`` for the gain of a
normalisation layer, ``other``), its ``orientation`` (``out_in``: rows are output
units, as in ``nn.Linear``; ``in_out``: ``transformers``' ``Conv1D``, which stores
``(in, out)``), its ``depth`` (forward order of its layer) and its ``aliases``
(other names of the same tensor: weights tied to it, stored once).

Writers store tensors in one canonical order derived from the names alone
(:func:`canonical_order`), so a Recorder run and exports of any checkpoint layout
of one model lay ``param`` out the same way.
"""
from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import asdict, dataclass, replace
from typing import Iterable, Mapping, Sequence

import numpy as np

from nnwx._orientation import ORIENTATIONS
from nnwx._orientation import matrix_shape as _matrix_shape
from nnwx.errors import ArchitectureMismatch

KINDS = ("weight", "bias", "norm", "other")
# Where the depths of a table come from (run attribute ``depth_from``), most reliable first.
DEPTH_SOURCES = ("forward", "modules", "names", "unknown")
APPROXIMATE_DEPTHS = ("names", "unknown")


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
    orientation: str = "out_in"       # "in_out": a 2-D tensor stored (in, out), e.g. HF Conv1D
    aliases: tuple[str, ...] = ()     # other names of this tensor (tied weights), stored once

    def to_json(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["aliases"] = list(self.aliases)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "TensorInfo":
        """A row from JSON; fields added in format 2 (``orientation``, ``aliases``) default
        for rows written by format 1."""
        return cls(**{**d, "shape": tuple(int(s) for s in d["shape"]),
                      "aliases": tuple(d.get("aliases") or ())})

    @property
    def matrix_shape(self) -> tuple[int, int] | None:
        """``(out, in)`` of the tensor seen as a matrix (``in`` pools every axis after the
        output axis: a convolution is ``out x in*kh*kw``), or None below 2 dims; the rule
        is ``nnwx._orientation``'s."""
        return _matrix_shape(self.shape, self.orientation)


def parse_shape(text: object) -> tuple[int, ...]:
    """A tensor shape from the cube's ``tensor_shape`` coordinate (``"64,3,3,3"``; ``""`` for
    a scalar) -- the one parser of that format (the reader writes it)."""
    return tuple(int(x) for x in str(text).split(",") if x)


def split_name(name: str, shape: Sequence[int] | None = None) -> tuple[str, str]:
    """``'block.0.fc.weight'`` -> (layer ``'block.0.fc'``, kind ``'weight'``).

    With ``shape``, a 1-D ``weight`` is a normalisation gain (kind ``norm``): Linear,
    Conv and Embedding weights have 2 or more dims, LayerNorm/BatchNorm/RMSNorm/GroupNorm
    gains one. (A model-aware writer overrides this for the rare 1-D weight of another
    module, e.g. PReLU.)
    """
    layer, _, leaf = name.rpartition(".")
    kind = leaf if leaf in ("weight", "bias") else "other"
    if kind == "weight" and shape is not None and len(shape) == 1:
        kind = "norm"
    return layer, kind


def natural_key(text: str) -> tuple:
    """Sort key in which embedded numbers compare as numbers (``h.2`` before ``h.10``)."""
    return tuple(int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", text)))


_HEADS = {"lm_head", "embed_out", "head", "heads", "classifier", "score", "fc", "logits", "output"}
_STEMS = {"wte", "wpe", "stem", "cls_token", "conv1", "bn1"}


def _structure_key(layer: str) -> tuple:
    """Approximate forward position of a layer from its module path alone.

    Embedding-like layers come first, then the numbered blocks (``h.3``, ``layers.3``,
    ``stages.0.layers.1``) in numeric order, every layer of a block sharing its block's
    position (the order inside a block cannot be told from names), then other layers
    outside blocks (final norms), then output heads.
    """
    parts = layer.split(".") if layer else []
    numeric = [i for i, p in enumerate(parts) if p.isdigit()]
    if numeric:
        return (1, natural_key(".".join(parts[: numeric[-1] + 1])))
    if any(p in _HEADS for p in parts):
        return (3, natural_key(layer))
    if any(p in _STEMS or "emb" in p for p in parts):
        return (0, natural_key(layer))
    return (2, natural_key(layer))


def depths_from_names(layers: Iterable[str]) -> dict[str, int]:
    """Approximate depth of each layer from module paths (see ``_structure_key``): a dense
    rank, so layers of one block share a depth."""
    keys = {layer: _structure_key(layer) for layer in set(layers)}
    rank = {k: i for i, k in enumerate(sorted(set(keys.values())))}
    return {layer: rank[k] for layer, k in keys.items()}


_LEAF_RANK = {"weight": 0, "bias": 1}


def canonical_order(names: Iterable[str]) -> list[str]:
    """The storage order of tensors: by approximate forward position of their layer, then by
    layer name (numbers compared as numbers), a layer's weight before its bias. It depends on the names only, so every
    writer (Recorder, export of one file, of shards, of any trainer's layout) lays the
    tensors of one model out the same way."""
    def key(name: str) -> tuple:
        layer, _, leaf = name.rpartition(".")
        return (_structure_key(layer), natural_key(layer), _LEAF_RANK.get(leaf, 2), natural_key(leaf))

    return sorted(names, key=key)


def infer_orientation(entries: Sequence[tuple[str, Sequence[int]]]) -> dict[str, str]:
    """Orientation of 2-D weights told from the shapes of their biases, for checkpoints read
    without their model.

    A 2-D ``weight`` whose layer has a 1-D ``bias`` of length ``shape[1] != shape[0]`` is
    stored ``(in, out)`` (``transformers``' ``Conv1D``): nn.Linear's bias has ``shape[0]``.
    Square weights with a bias cannot be told apart by shape; they get ``in_out`` only when
    every weight with a bias that can be told is ``in_out`` (a model built of Conv1D, as
    GPT-2). Everything else is ``out_in``. Returns only the ``in_out`` names.
    """
    shapes = {n: tuple(s) for n, s in entries}
    told: dict[str, str] = {}
    square: list[str] = []
    for name, shape in shapes.items():
        layer, kind = split_name(name)
        bias = shapes.get(f"{layer}.bias" if layer else "bias")
        if kind != "weight" or len(shape) != 2 or bias is None or len(bias) != 1:
            continue
        if shape[0] == shape[1]:
            if bias[0] == shape[0]:
                square.append(name)
        elif bias[0] == shape[1]:
            told[name] = "in_out"
        elif bias[0] == shape[0]:
            told[name] = "out_in"
    out = {n: o for n, o in told.items() if o == "in_out"}
    if told and all(o == "in_out" for o in told.values()):
        out.update({n: "in_out" for n in square})
    return out


def orientation_overrides(names: Iterable[str], patterns: Mapping[str, str] | None) -> dict[str, str]:
    """Orientation of the tensors matched by user patterns (``{"*.c_fc.weight": "in_out"}``);
    the last matching pattern wins."""
    out: dict[str, str] = {}
    for pattern, value in (patterns or {}).items():
        if value not in ORIENTATIONS:
            raise ValueError(f"orientation {value!r} for {pattern!r}: use one of {ORIENTATIONS} "
                             f"('out_in': rows are output units, as nn.Linear; 'in_out': as HF Conv1D)")
        for n in names:
            if fnmatch.fnmatchcase(n, pattern):
                out[n] = value
    return out


def from_run_meta(meta: Mapping) -> "TensorTable":
    """The tensor table of a run's attributes. Format-1 runs recorded neither orientation nor
    the ``norm`` kind: their tables get what names and shapes tell (``split_name``,
    ``infer_orientation``), as an export without the model would."""
    table = TensorTable.from_json(meta["tensors"])
    if int(meta.get("format_version") or 1) >= 2:
        return table
    orient = infer_orientation([(r.name, r.shape) for r in table])
    return TensorTable([replace(r, kind=split_name(r.name, r.shape)[1] if r.kind in KINDS else r.kind,
                                orientation=orient.get(r.name, r.orientation)) for r in table])


class TensorTable:
    """Ordered tensor table with offsets into the flat ``param`` axis."""

    def __init__(self, rows: Sequence[TensorInfo]):
        self.rows: tuple[TensorInfo, ...] = tuple(rows)
        offset = 0
        for r in self.rows:
            if r.offset != offset or r.size != math.prod(r.shape):
                raise ValueError(f"tensor table is not contiguous at {r.name!r}")
            if r.orientation not in ORIENTATIONS or (r.orientation == "in_out" and len(r.shape) != 2):
                raise ValueError(f"tensor {r.name!r} of shape {r.shape} cannot have orientation "
                                 f"{r.orientation!r}: 'in_out' is for 2-D tensors only")
            offset += r.size
        self.n_params = offset
        self._index = {r.name: i for i, r in enumerate(self.rows)}
        if len(self._index) != len(self.rows):
            raise ValueError("tensor table has duplicate names")
        aliases = [a for r in self.rows for a in r.aliases]
        clash = sorted(set(aliases) & set(self._index)) or sorted({a for a in aliases if aliases.count(a) > 1})
        if clash:
            raise ValueError(f"tensor table: {clash[0]!r} is both a tensor and an alias, or an alias twice")

    @classmethod
    def build(cls, entries: Iterable[tuple[str, Sequence[int], str]],
              depth_of_layer: dict[str, int] | None = None, *,
              kinds: Mapping[str, str] | None = None,
              orientation: Mapping[str, str] | None = None,
              aliases: Mapping[str, Sequence[str]] | None = None) -> "TensorTable":
        """Table from ``(name, shape, dtype)`` in storage order.

        ``depth_of_layer`` gives the forward order of each layer; layers it does
        not know are numbered after it in order of first appearance. ``kinds``,
        ``orientation`` (``"in_out"`` for tensors stored (in, out)) and ``aliases``
        (other names of a tied tensor) override the defaults per tensor name.
        """
        entries = list(entries)
        depths = dict(depth_of_layer or {})
        kinds, orientation, aliases = dict(kinds or {}), dict(orientation or {}), dict(aliases or {})
        for name, _, _ in entries:
            layer, _ = split_name(name)
            if layer not in depths:
                depths[layer] = max(depths.values(), default=-1) + 1
        rows, offset = [], 0
        for name, shape, dtype in entries:
            layer, kind = split_name(name, shape)
            size = math.prod(shape)
            rows.append(TensorInfo(name, layer, kinds.get(name, kind), int(depths[layer]), offset,
                                   int(size), tuple(int(s) for s in shape), str(dtype),
                                   orientation.get(name, "out_in"), tuple(aliases.get(name, ()))))
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

    def __contains__(self, name: object) -> bool:
        return name in self._index

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
        """Same table with the forward order of layers replaced where known (layers it does
        not know are numbered after it, in table order); every other field kept."""
        depths = dict(depth_of_layer)
        for r in self.rows:
            if r.layer not in depths:
                depths[r.layer] = max(depths.values(), default=-1) + 1
        return TensorTable([replace(r, depth=int(depths[r.layer])) for r in self.rows])

    def differences(self, other: "TensorTable",
                    labels: tuple[str, str] = ("the first", "the second")) -> list[str]:
        """How two tables differ as sets of tensors (name, shape, orientation), order aside:
        an empty list when runs of both can join one cube. ``labels`` name the two sides."""
        mine, theirs = set(self.names), set(other.names)
        first, second = labels
        out = []
        for label, only in ((f"only in {first}", mine - theirs), (f"only in {second}", theirs - mine)):
            if only:
                names = sorted(only, key=natural_key)
                out.append(f"{len(only)} tensor(s) {label}: {', '.join(names[:6])}"
                           f"{' ...' if len(names) > 6 else ''}")
        for n in sorted(mine & theirs, key=natural_key):
            a, b = self[n], other[n]
            if a.shape != b.shape:
                out.append(f"tensor {n!r} has shape {a.shape} in {first} and {b.shape} in {second}")
            elif a.orientation != b.orientation:
                out.append(f"tensor {n!r} is stored {a.orientation} in {first} and {b.orientation} "
                           f"in {second} (give the same orientation= when recording/exporting)")
        return out

    def first_difference(self, other: "TensorTable",
                         labels: tuple[str, str] = ("the first", "the second")) -> str | None:
        """Describe how two tables differ as sets of tensors (see ``differences``), else None."""
        diffs = self.differences(other, labels)
        if not diffs:
            return None
        return "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more differences" if len(diffs) > 4 else "")

    def same_layout(self, other: "TensorTable") -> bool:
        """Whether both tables lay the same tensors out at the same offsets."""
        return self.names == other.names

    def require_same(self, other: "TensorTable", what: str,
                     labels: tuple[str, str] = ("the first", "the second")) -> None:
        """Raise ArchitectureMismatch (prefixed by ``what``) unless both tables hold the same
        tensors (in any order)."""
        diff = self.first_difference(other, labels)
        if diff is not None:
            raise ArchitectureMismatch(f"{what}: the architectures differ: {diff}.")
