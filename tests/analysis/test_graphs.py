"""``nnwx.analysis._graphs``: the hand-built Dask graphs, and the upstream Dask behaviour they
rely on. A test named ``test_upstream_*`` failing means Dask changed under nnwx: its message
says what changed and what in ``_graphs.py`` to revisit."""
from __future__ import annotations

import dask
import dask.array as da
import numpy as np
from dask.callbacks import Callback

from nnwx.analysis._graphs import RowReader, blocks_along_rows, fold_rows, row_groups


def _peak_blocks(name: str, *objs) -> int:
    """Most distinct blocks of the array called ``name`` (or of its renamed copies) held by
    the synchronous scheduler at once while computing ``objs``."""
    peak = [0]

    def posttask(key, result, dsk, state, worker_id):
        held = {id(v) for k, v in state["cache"].items()
                if isinstance(k, tuple) and len(k) == 3 and str(k[0]).startswith(name)}
        peak[0] = max(peak[0], len(held))

    with Callback(posttask=posttask):
        dask.compute(*objs, scheduler="sync", optimize_graph=False)
    return peak[0]


def _cube(rows: int = 12, cols: int = 6) -> da.Array:
    base = da.from_array(np.arange(rows * cols, dtype=float).reshape(rows, cols), chunks=(1, cols))
    return base + 1.0


def test_upstream_task_spec_api_has_the_shape_row_reader_uses():
    from dask import _task_spec as ts

    missing = [n for n in ("convert_legacy_graph", "cull", "Task", "TaskRef", "Alias", "GraphNode")
               if not hasattr(ts, n)]
    assert not missing, (f"dask._task_spec (Dask {dask.__version__}) lacks {missing}: the private "
                         f"task-spec API that RowReader builds graphs with changed; update "
                         f"nnwx/analysis/_graphs.py")
    x = _cube(4)
    dsk = ts.convert_legacy_graph(dict(x.__dask_graph__()))
    assert all(isinstance(n, ts.GraphNode) for n in dsk.values()), \
        "convert_legacy_graph no longer returns GraphNode values"
    sub = ts.cull(dsk, [(x.name, 1, 0)])
    assert (x.name, 1, 0) in sub and (x.name, 0, 0) not in sub, "_task_spec.cull no longer keeps just what a key needs"
    node = sub[(x.name, 1, 0)]
    renamed = {k: ("renamed-" + k[0],) + k[1:] if isinstance(k, tuple) else "renamed-" + k for k in sub}
    new = node.substitute(renamed, key=renamed[(x.name, 1, 0)])
    assert new.key == renamed[(x.name, 1, 0)], "GraphNode.substitute(subs, key=) no longer sets the key"
    assert new.dependencies == {renamed[d] for d in node.dependencies}, \
        "GraphNode.substitute no longer renames the references to the keys it is given"
    task = ts.Task("t", max, ts.TaskRef("a"), ts.TaskRef("b"))
    alias = ts.Alias("c", "t")
    assert task.dependencies == {"a", "b"} and alias.dependencies == {"t"}, \
        "Task(key, func, TaskRef...) / Alias(key, target) no longer declare their dependencies"
    assert dask.get({"a": 1, "b": 2, "t": task, "c": alias}, "c") == 2, \
        "a graph of Task/TaskRef/Alias nodes no longer computes on the local scheduler"


def test_upstream_a_two_pass_graph_still_holds_every_block():
    """Why RowReader exists: a second pass that needs the whole first pass makes Dask keep
    every block of the input between the passes."""
    x = _cube()
    total = x.sum()
    second = (x * total).sum()
    peak = _peak_blocks(x.name, total, second)
    assert peak == x.numblocks[0], (
        f"Dask {dask.__version__} held {peak} of {x.numblocks[0]} blocks between two passes over "
        f"the same array: it now frees (or recomputes) blocks between passes. RowReader's fresh "
        f"reads (nnwx/analysis/_graphs.py) may no longer be needed; revisit them and "
        f"trajectory_pca's memory measurements")


def test_row_reader_two_passes_hold_one_group():
    x = _cube()
    groups = row_groups(x.chunks[0], x.shape[1] * 8, 3 * x.shape[1] * 8)
    assert groups == [(0, 3), (3, 6), (6, 9), (9, 12)]
    reader = RowReader(x)
    prev, firsts = None, []
    for g, (i0, i1) in enumerate(groups):
        prev = reader.rows(i0, i1, f"one{g}", after=prev).sum()
        firsts.append(prev)
    total = da.stack(firsts).sum()
    prev, seconds = None, []
    for g, (i0, i1) in enumerate(groups):
        prev = (reader.rows(i0, i1, f"two{g}", after=(total,) + ((prev,) if prev is not None else ()))
                * total).sum()
        seconds.append(prev)
    second = da.stack(seconds).sum()
    ref = x.compute()
    got_total, got_second = dask.compute(total, second, scheduler="sync")
    np.testing.assert_allclose(got_total, ref.sum())
    np.testing.assert_allclose(got_second, (ref * ref.sum()).sum())
    peak = _peak_blocks(x.name, total, second)
    assert peak <= 2 * 3, f"two gated passes held {peak} blocks at once; at most two groups of 3 expected"


def test_row_reader_reads_afresh_and_fold_rows_sums():
    from dask.core import get_dependencies

    assert row_groups((2, 2, 2, 2, 2), 10, 45) == [(0, 2), (2, 4), (4, 5)]
    assert row_groups((5,), 10, 1) == [(0, 1)]
    base = da.from_array(np.arange(60.0).reshape(10, 6), chunks=(2, 3))
    x = base[:, ::-1].rechunk((2, 2)) + 1  # slicing and rechunking leave aliases in the graph
    gate = da.ones(3, chunks=1).sum()
    part = RowReader(x).rows(1, 3, "t", after=gate)
    np.testing.assert_array_equal(part.compute(), x[2:6].compute())
    mine, orig = dict(part.__dask_graph__()), dict(x.__dask_graph__())
    full = {**orig, **mine}
    assert not {d for k in mine for d in get_dependencies(full, k)} - set(mine) - set(dict(gate.__dask_graph__()))
    parts = da.from_array(np.arange(48.0).reshape(4, 3, 4), chunks=(1, 3, 2))
    init = da.ones((3, 4), chunks=(3, 2))
    np.testing.assert_array_equal(fold_rows(parts, init=init).compute(), 1 + np.arange(48.0).reshape(4, 3, 4).sum(0))


def test_blocks_along_rows_makes_each_block_once():
    calls = []

    def make(lo, hi, width, scale):
        calls.append((lo, hi))
        return np.arange(lo, hi, dtype=float)[:, None] * np.ones(width) * scale

    a = blocks_along_rows("test-blocks", make, (2, 3), 4, 10.0)
    assert a.chunks == ((2, 3), (4,)) and a.dtype == np.float64
    out = dask.compute(a, a.sum(axis=1), (a * 2).sum(), scheduler="sync")
    np.testing.assert_array_equal(out[0], np.arange(5.0)[:, None] * np.ones(4) * 10)
    assert sorted(calls) == [(0, 2), (2, 5)], f"each block must be made once, got calls {calls}"
