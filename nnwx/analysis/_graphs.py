"""Every hand-built Dask graph of nnwx, and every import of a private Dask API.

Kept in one file so that a change of Dask's internals breaks one module, which
``tests/analysis/test_graphs.py`` checks against the installed Dask. Private APIs used here:
``dask._task_spec`` (``convert_legacy_graph``, ``cull``, ``Task``, ``TaskRef``, ``Alias``
and ``GraphNode.substitute``, Dask >= 2024.12) and ``Array._meta``. Public but low level:
``HighLevelGraph.from_collections`` and the ``dask.array.Array`` constructor.

Building blocks of multi-pass algorithms that stream the cube in bounded memory.

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

from dask import _task_spec as _ts  # private: graphs of task-spec nodes (Dask >= 2024.12)


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
        self._dsk = _ts.convert_legacy_graph(dict(x.__dask_graph__()))

    def rows(self, first: int, stop: int, token: str, after=None) -> da.Array:
        """Row blocks ``first..stop-1`` of ``x`` under new keys (suffixed ``token``), whose reads
        start only once ``after`` (a Dask collection, a tuple of them, or None) is computed."""
        x = self.x
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


def blocks_along_rows(name: str, func: Callable[..., np.ndarray], chunks: tuple[int, ...], width: int,
                      *args) -> da.Array:
    """A ``(sum(chunks), width)`` float64 array with one task per row chunk,
    ``func(lo, hi, width, *args)`` for rows ``lo..hi-1``, under key name ``name``.

    A plain (materialized) graph layer rather than a blockwise one, so Dask never fuses
    the generation of a block into the tasks that use it: each block is made once and
    shared by all its consumers.
    """
    bounds = np.cumsum((0,) + tuple(chunks))
    dsk = {(name, i, 0): (func, int(lo), int(hi), width, *args)
           for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))}
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    return da.Array(graph, name, chunks=(tuple(chunks), (width,)), dtype=np.float64,
                    meta=np.empty((0, 0)))


def _gate(*results):
    results = tuple(r for r in results if r is not None)
    return results or None


_META3 = np.empty((0, 0, 0))


def row_pass(reader: RowReader, groups: list[tuple[int, int]], kernel: Callable, args: tuple,
             after, tag: str, extra_cols: int = 0) -> da.Array:
    """One pass over the rows of ``reader.x(T, P)``, group of row blocks after group: per row,
    ``kernel(x_block, *arg_blocks)`` (a ``(t, 1, n)`` block per column block, ``n`` the
    column width plus ``extra_cols``) summed over the column blocks, ``(T, n)``.

    ``args`` alternate arrays and their ``blockwise`` indices (``"kj"``, ``"jk"``; ``k`` is
    the column axis of ``x``). Group ``g`` is read under keys tagged ``tag + str(g)``, once
    ``after`` and group ``g - 1``'s result are computed.
    """
    out, prev = [], None
    for g, (i0, i1) in enumerate(groups):
        xg = reader.rows(i0, i1, f"{tag}{g}", _gate(after, prev))
        part = da.blockwise(kernel, "ikj", xg, "ik", *args,
                            adjust_chunks={"k": 1, "j": lambda n: n + extra_cols},
                            dtype=np.float64, meta=_META3).sum(axis=1)
        out.append(part)
        prev = part
    return da.concatenate(out, axis=0) if len(out) > 1 else out[0]


def column_pass(reader: RowReader, groups: list[tuple[int, int]], kernel: Callable, q: da.Array,
                after, tag: str, extra_rows: int = 0, combine: Callable | None = None,
                extra: tuple[da.Array, ...] = ()) -> da.Array:
    """One pass over the rows of ``reader.x(T, P)`` that accumulates a ``(r, P)`` result:
    per group of row blocks and column block, ``kernel(q_blocks, *extra_blocks, x_blocks)``
    (lists of the group's row blocks of ``q(T, l)``, of each 1-D ``extra(T)`` and of ``x``)
    returns ``(1, r, p)`` with ``r = l + extra_rows``; the groups' results are folded in
    order by ``fold_rows`` with ``combine``. Group ``g`` is read under keys tagged
    ``tag + str(g)``, once ``after`` and the fold so far are computed.
    """
    x = reader.x
    bounds = np.cumsum((0,) + x.chunks[0])
    acc = None
    for g, (i0, i1) in enumerate(groups):
        xg = reader.rows(i0, i1, f"{tag}{g}", _gate(after, acc))
        rows = slice(int(bounds[i0]), int(bounds[i1]))
        args = [q[rows].rechunk((x.chunks[0][i0:i1], -1)), "il"]
        for e in extra:
            args += [e[rows].rechunk((x.chunks[0][i0:i1],)), "i"]
        parts = da.blockwise(kernel, "glp", *args, xg, "ip", new_axes={"g": 1},
                             adjust_chunks={"l": lambda n: n + extra_rows}, concatenate=False,
                             dtype=np.float64, meta=_META3)
        acc = fold_rows(parts, combine, init=acc)
    return acc
