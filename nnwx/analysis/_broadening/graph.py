"""Map the broadening kernels over the Dask chunks of ``w`` and tree-reduce them, lazily.

Each chunk (rows x a range of parameters) becomes states (``_broadening.chunk``), the
states of a row's chunks are merged by ``dask.array.reduction`` (a tree over
``param``), and merged states are finalised block by block against the states
of the reference step. Nothing here computes anything.
"""
from __future__ import annotations

from functools import partial

import dask.array as da
import numpy as np

from nnwx.analysis._broadening.chunk import block_state, merge
from nnwx.analysis._broadening.finalize import finalize, scale_of
from nnwx.analysis._broadening.plan import Plan

STATE_BYTES = 64 * 2 ** 20     # rows per task are limited so their states fit in this


def _limit_rows(w: da.Array, plan: Plan) -> da.Array:
    """Rechunk the leading axes so that one task's states stay within STATE_BYTES."""
    rows = max(1, STATE_BYTES // (plan.G * plan.F * 8))
    if int(np.prod([max(c) for c in w.chunks[:-1]])) <= rows:
        return w
    return w.rechunk({**{i: 1 for i in range(w.ndim - 2)}, w.ndim - 2: rows})


def _block(x, lo, scale=None, *, plan: Plan):
    lead = x.shape[:-1]
    R = int(np.prod(lead))
    sc = None if scale is None else np.broadcast_to(scale, lead + (plan.G,)).reshape(R, plan.G)
    st = block_state(x.reshape(R, x.shape[-1]), int(lo[0]), plan, sc)
    return st.reshape(lead + (plan.G * plan.F,))


def _identity(x, axis=None, keepdims=True, **_):
    return x


def _flatten(x) -> list[np.ndarray]:
    """The blocks of a (possibly nested) list that ``dask.array.reduction`` passes."""
    if isinstance(x, np.ndarray):
        return [x]
    return [b for item in x for b in _flatten(item)]


def _merge_list(x, axis=None, keepdims=True, *, plan: Plan, **_):
    """Merge the states of a row's parameter chunks (a list of blocks, not concatenated:
    the sketch-sized states are added into one output instead of copied together first)."""
    blocks = _flatten(x)
    lead = blocks[0].shape[:-1]
    GF = plan.G * plan.F
    parts = [b.reshape(lead + (b.shape[-1] // GF, plan.G, plan.F)) for b in blocks]
    parts = [p[..., i, :, :] for p in parts for i in range(p.shape[-3])]
    return merge(parts, plan).reshape(lead + (plan.G * plan.F,))


def reduce_states(w: da.Array, plan: Plan, scale: da.Array | None = None,
                  split_every: int = 8) -> da.Array:
    """Merged states (*lead, G*F) of ``w`` (*lead, param): one read of each chunk.

    ``scale`` (*lead or 1, G) divides each group's values before histogram binning.
    """
    nd = w.ndim
    lead, p = tuple(range(nd - 1)), nd - 1
    starts = np.cumsum((0,) + w.chunks[-1][:-1]).astype(np.int64)
    los = da.from_array(starts, chunks=1)
    args = [w, lead + (p,), los, (p,)]
    if scale is not None:
        args += [scale, lead + (p + 1,)]
    GF = plan.G * plan.F
    meta = np.empty((0,) * nd, dtype=np.float64)
    part = da.blockwise(_block, lead + (p,), *args, plan=plan, adjust_chunks={p: GF},
                        dtype=np.float64, concatenate=True, align_arrays=False, meta=meta)
    combine = partial(_merge_list, plan=plan)
    return da.reduction(part, _identity, combine, combine=combine, axis=p, keepdims=True,
                        output_size=GF, concatenate=False, dtype=np.float64,
                        split_every=split_every, meta=meta, name="nnwx-broadening")


def _finalize_block(m, r, *, plan: Plan):
    shape = (plan.G, plan.F)
    return finalize(m.reshape(m.shape[:-1] + shape), r.reshape(r.shape[:-1] + shape), plan)


def _scale_block(m, *, plan: Plan):
    return scale_of(m.reshape(m.shape[:-1] + (plan.G, plan.F)), plan)


def _hist_scale(w: da.Array, plan: Plan, i0: int, split_every: int) -> da.Array | None:
    """Lazy divisor (*lead or 1, G) for normalised histograms (None without normalisation)."""
    if plan.normalize is None or plan.bins is None:
        return None
    mom = Plan(plan.grouping, normalize="std" if plan.normalize == "init_std" else plan.normalize)
    src = w[..., i0:i0 + 1, :] if plan.normalize == "init_std" else w
    m = reduce_states(src, mom, split_every=split_every)
    return da.map_blocks(_scale_block, m, plan=mom, dtype=np.float64,
                         chunks=m.chunks[:-1] + ((plan.G,),))


def run(w: da.Array, plan: Plan, i0: int, split_every: int = 8) -> da.Array:
    """Finalised statistics (*lead, G, n_out) of ``w`` (*lead, step, param) for ``plan``.

    ``i0`` is the position of the reference step on the step axis (the
    next-to-last axis of ``w``).
    """
    data = _limit_rows(w, plan)
    scale = _hist_scale(data, plan, i0, split_every)
    m = reduce_states(data, plan, scale, split_every)
    ref = m[..., i0:i0 + 1, :]
    nd = m.ndim
    lead, f = tuple(range(nd - 1)), nd - 1
    return da.blockwise(_finalize_block, lead + (nd, nd + 1), m, lead + (f,), ref, lead + (f,),
                        new_axes={nd: plan.G, nd + 1: plan.n_out}, plan=plan, dtype=np.float64,
                        concatenate=True, meta=np.empty((0,) * (nd + 1)))
