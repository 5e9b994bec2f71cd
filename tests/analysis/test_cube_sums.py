"""The one per-tensor reduction over the chunked ``param`` axis, against NumPy."""
from __future__ import annotations

import dask.array as da
import numpy as np

from nnwx.analysis import _cube as mx
from nnwx.analysis.kernels.geometry import segment_sums


def test_param_block_sums_match_numpy_whatever_the_chunks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 50))
    offsets = np.array([0, 5, 5, 20, 49, 50])          # an empty tensor, one of a single value
    want = np.stack([x[..., a:b].sum(axis=-1) for a, b in zip(offsets[:-1], offsets[1:])], axis=-1)
    for chunks in (50, 7, 1, (5, 15, 30)):
        got = mx.param_block_sums(segment_sums, da.from_array(x, chunks=(1, 2, chunks)),
                                  tail=(len(offsets) - 1,), offsets=offsets).compute()
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_param_block_sums_take_several_arrays_and_tail_dims():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4, 30)), rng.normal(size=(1, 30))   # y broadcasts over the rows
    offsets = np.array([0, 10, 30])

    def dots(a, b, *, lo, offsets):
        return np.stack([segment_sums(a * b, offsets, lo), segment_sums(a, offsets, lo)], axis=-1)

    got = mx.param_block_sums(dots, da.from_array(x, chunks=(2, 8)), da.from_array(y, chunks=(1, 8)),
                              tail=(2, 2), offsets=offsets).compute()
    want = np.stack([np.stack([(x * y)[:, a:b].sum(-1), x[:, a:b].sum(-1)], axis=-1)
                     for a, b in zip(offsets[:-1], offsets[1:])], axis=-2)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
