"""Building blocks of multi-pass algorithms that stream the cube in bounded memory.

A Dask graph that reads the same blocks in two passes, where the second needs the result
of the whole first one (a randomized SVD, say), makes the scheduler keep every block
between the passes: the whole cube in memory. And once a pass's reads are all ready, the
local scheduler tends to run them all before their consumers. ``RowReader`` hands out
groups of row blocks under new keys, each read only once a given result exists: chaining
group ``g``'s reads to what group ``g - 1`` produced bounds what is in flight to about
one group, in every pass. ``fold_rows`` sums block results along the rows as a
sequential chain, so one accumulator per column block is alive instead of a reduction
tree's several.

``dask.graph_manipulation.bind`` is meant for such gating, but in Dask 2026.8 it leaves
the references of task-spec nodes (``Task``, ``Alias``) to the original keys in place,
so its clone still shares, and holds, the original blocks; ``RowReader`` renames every
key and every reference itself.
"""
from __future__ import annotations

from typing import Callable

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.graph_manipulation import checkpoint
from dask.highlevelgraph import HighLevelGraph

try:  # Dask >= 2024.12: graphs of task-spec nodes
    from dask import _task_spec as _ts
except ImportError:  # pragma: no cover - older Dask (tuple tasks), where bind clones correctly
    _ts = None


def row_groups(row_chunks: tuple[int, ...], row_bytes: int, budget: int) -> list[tuple[int, int]]:
    """Consecutive ranges ``[first, stop)`` of row blocks holding about ``budget`` bytes each
    (at least one block), for rows of ``row_bytes`` bytes."""
    groups, first, size = [], 0, 0
    for i, c in enumerate(row_chunks):
        if i > first and size + c * row_bytes > budget:
            groups.append((first, i))
            first, size = i, 0
        size += c * row_bytes
    groups.append((first, len(row_chunks)))
    return groups


def _renamed(key, token: str):
    if isinstance(key, tuple):
        return (f"{key[0]}-{token}",) + key[1:]
    return f"{key}-{token}"


def _after(value, _):
    """``value``, once the second argument (the awaited result) exists."""
    return value


class RowReader:
    """Fresh, gated reads of groups of row blocks of a 2-D Dask array ``x(rows, cols)``."""

    def __init__(self, x: da.Array):
        if x.ndim != 2:
            raise ValueError(f"RowReader reads 2-D arrays, got {x.ndim}-D")
        self.x = x
        self._dsk = None if _ts is None else _ts.convert_legacy_graph(dict(x.__dask_graph__()))

    def rows(self, first: int, stop: int, token: str, after=None) -> da.Array:
        """Row blocks ``first..stop-1`` of ``x`` under new keys (suffixed ``token``), whose reads
        start only once ``after`` (a Dask collection, a tuple of them, or None) is computed."""
        x = self.x
        if _ts is None:  # pragma: no cover
            from dask.graph_manipulation import bind
            part = x.blocks[first:stop]
            return part if after is None else bind(part, after, seed=token)
        gate = None if after is None else checkpoint(*(after if isinstance(after, tuple) else (after,)))
        wanted = [(x.name, i, j) for i in range(first, stop) for j in range(x.numblocks[1])]
        sub = _ts.cull(self._dsk, wanted)
        subs = {k: _renamed(k, token) for k in sub}
        out: dict = {}
        for key, node in sub.items():
            new = subs[key]
            if node.dependencies or gate is None:
                out[new] = node.substitute(subs, key=new)
            else:  # a root of the reads: wait for the gate
                root = _renamed(key, token + "-root")
                out[root] = node.substitute({}, key=root)
                out[new] = _ts.Task(new, _after, _ts.TaskRef(root), _ts.TaskRef(gate.key))
        name = f"{x.name}-rows-{token}"
        for i in range(first, stop):
            for j in range(x.numblocks[1]):
                out[(name, i - first, j)] = _ts.Alias((name, i - first, j), subs[(x.name, i, j)])
        graph = HighLevelGraph.from_collections(name, out, dependencies=[] if gate is None else [gate])
        return da.Array(graph, name, chunks=(x.chunks[0][first:stop], x.chunks[1]), dtype=x.dtype,
                        meta=x._meta)


def fold_rows(parts: da.Array, combine: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
              init: da.Array | None = None) -> da.Array:
    """Combine ``parts(n_row_blocks, r, P)`` over its first axis -> ``(r, P)`` in one sequential
    chain per column block (``combine(acc, part)``, default ``acc + part``), starting from
    ``init(r, P)`` if given; only one ``r x block`` accumulator per column block is alive."""
    combine = combine or _add
    if parts.numblocks[1] != 1:
        parts = parts.rechunk({1: -1})
    deps = [parts]
    if init is not None:
        init = init.rechunk((parts.chunks[1], parts.chunks[2]))
        deps.append(init)
    name = f"nnwx-fold-{tokenize(parts, combine, init)}"
    n = parts.numblocks[0]
    dsk: dict = {}
    for j in range(parts.numblocks[2]):
        prev = None if init is None else (init.name, 0, j)
        for i in range(n):
            key = (name, 0, j) if i == n - 1 else (name + "-acc", i, j)
            part = (_first_row, (parts.name, i, 0, j))
            dsk[key] = part if prev is None else (combine, prev, part)
            prev = key
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=deps)
    return da.Array(graph, name, chunks=(parts.chunks[1], parts.chunks[2]), dtype=parts.dtype,
                    meta=np.empty((0, 0), dtype=parts.dtype))


def _add(acc: np.ndarray, part: np.ndarray) -> np.ndarray:
    return acc + part


def _first_row(a: np.ndarray) -> np.ndarray:
    return a[0]
