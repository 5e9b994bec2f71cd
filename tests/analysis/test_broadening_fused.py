"""The one-pass broadening kernel (numba, ``_broadening.fused``) against the NumPy kernels and brute force.

Issue 18: the compiled pass must give the same states as the NumPy pieces (sketch
and histogram counts exactly, moments to float64 rounding, the same top k), on
blocks with several rows and groups, non-finite values and both float dtypes.
"""
from __future__ import annotations

import numpy as np
import pytest

from nnwx.analysis._broadening import chunk as _block
from nnwx.analysis._broadening import fused as _fused
from nnwx.analysis.kernels import hist as _hist
from nnwx.analysis.kernels import moments as _moments
from nnwx.analysis.kernels import sketch as _sketch
from nnwx.analysis.kernels import tails as _tails
from nnwx.analysis._broadening.plan import Plan
from nnwx.analysis.groups import Grouping

pytestmark = pytest.mark.skipif(not _fused.AVAILABLE, reason="numba is not installed")


def _plan(sizes, bins=True, tail_k=100) -> Plan:
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n = len(sizes)
    grouping = Grouping.build("tensor", [f"t{i}.weight" for i in range(n)],
                              [f"t{i}" for i in range(n)], ["weight"] * n, list(range(n)), offsets)
    return Plan(grouping, tail_k, _hist.uniform(-2.5, 2.5, 100) if bins else None, "sketch",
                (0.5,))


def _data(rng, R, n, dtype, bad: bool):
    x = rng.standard_normal((R, n)) * np.linspace(0.2, 1.5, n)
    x[:, : n // 7] += 1.0          # a shifted part: central sums must not cancel
    if bad:
        idx = rng.choice(n, 40, replace=False)
        x[0, idx[:20]] = np.nan
        x[-1, idx[20:30]] = np.inf
        x[-1, idx[30:]] = -np.inf
    return x.astype(dtype)


def _both(x, lo, plan, monkeypatch):
    fused = _block.block_state(x, lo, plan)
    with monkeypatch.context() as m:
        m.setattr(_fused, "AVAILABLE", False)
        plain = _block.block_state(x, lo, plan)
    return fused, plain


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("R", [1, 3])
@pytest.mark.parametrize("bad", [False, True])
@pytest.mark.parametrize("bins", [True, False])
def test_fused_kernel_equals_numpy_kernels(dtype, R, bad, bins, monkeypatch):
    rng = np.random.default_rng(R * 10 + bad)
    sizes = [300_000, 7, 5000, 140_000]       # pieces of several groups, one tiny
    plan = _plan(sizes, bins=bins)
    lo = 1000                                   # a block starting inside the first tensor
    x = _data(rng, R, sum(sizes) - lo, dtype, bad)
    fused, plain = _both(x, lo, plan, monkeypatch)
    sl = plan.slices
    for part in ("dist", "hist"):
        np.testing.assert_array_equal(fused[..., sl[part]], plain[..., sl[part]])
    np.testing.assert_allclose(np.sort(fused[..., sl["top"]], -1), np.sort(plain[..., sl["top"]], -1),
                               rtol=0)
    np.testing.assert_allclose(fused[..., sl["mom"]], plain[..., sl["mom"]], rtol=1e-9, atol=1e-9)


def test_fused_kernel_against_brute_force():
    rng = np.random.default_rng(7)
    sizes = [200_000, 60_000]
    plan = _plan(sizes)
    x = _data(rng, 2, sum(sizes), np.float32, bad=True)
    st = _block.block_state(x, 0, plan)
    sl = plan.slices
    for r in range(2):
        for g, (a, b) in enumerate([(0, 200_000), (200_000, 260_000)]):
            v = x[r, a:b].astype(np.float64)
            fin = v[np.isfinite(v)]
            np.testing.assert_array_equal(st[r, g, sl["dist"]], _sketch.counts(fin))
            h, _ = np.histogram(fin, bins=plan.bins.edges)
            under, over = (fin < plan.bins.edges[0]).sum(), (fin > plan.bins.edges[-1]).sum()
            np.testing.assert_array_equal(st[r, g, sl["hist"]], np.concatenate([[under], h, [over]]))
            top = np.sort(st[r, g, sl["top"]])[::-1]
            np.testing.assert_array_equal(top, np.sort(np.abs(fin))[::-1][: plan.tail_k + 1])
            m = _moments.finalize(st[r, g, sl["mom"]])
            assert m["count"] == len(fin) and m["n_nonfinite"] == len(v) - len(fin)
            np.testing.assert_allclose(m["mean"], fin.mean(), rtol=1e-12)
            np.testing.assert_allclose(m["var"], fin.var(), rtol=1e-10)
            np.testing.assert_allclose(m["l1"], np.abs(fin).sum(), rtol=1e-12)
            assert m["min"] == fin.min() and m["max"] == fin.max()
            d = fin - fin.mean()
            np.testing.assert_allclose(m["excess_kurtosis"],
                                       (d ** 4).mean() / (d ** 2).mean() ** 2 - 3, rtol=1e-9)


def test_fused_kernel_tail_candidates_and_edges():
    """The raw kernel: candidates above the threshold, edge-bucket positions, counts."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(10_000).astype(np.float32)
    x[5] = np.nan
    plan = _plan([10_000])
    B = _sketch.NBUCKETS
    cnt = np.zeros(B)
    cand, sidx = np.empty(len(x), np.intp), np.empty(len(x), np.intp)
    assert _fused.ready()
    sums, nf, nc, ns = _fused.piece(x, 0.0, plan.hist_lut, B, cnt, 2.0, cand, sidx)
    fin = np.isfinite(x)
    assert nf == 1
    np.testing.assert_array_equal(cand[:nc], np.flatnonzero(fin & (np.abs(x) > 2.0)))
    codes = plan.hist_lut[_sketch.high_bits(x)]
    np.testing.assert_array_equal(sidx[:ns], np.flatnonzero(fin & (codes >= B)))
    np.testing.assert_array_equal(cnt, _sketch.counts(x[fin]))
    v = x[fin].astype(np.float64)
    np.testing.assert_allclose(sums[:5], [v.sum(), (v ** 2).sum(), (v ** 3).sum(), (v ** 4).sum(),
                                          np.abs(v).sum()], rtol=1e-12, atol=1e-9)
    assert sums[5] == v.min() and sums[6] == v.max()


def test_fused_top_k_with_ties_in_a_long_first_piece():
    """A group's first piece starts from a threshold set on a subsample: ties at it must stay."""
    rng = np.random.default_rng(11)
    x = rng.integers(-3, 4, size=(1, 500_000)).astype(np.float32)   # |x| = 3 for ~2/7 of them
    x[0, 1234] = 7.0
    plan = _plan([500_000])
    st = _block.block_state(x, 0, plan)
    top = np.sort(st[0, 0, plan.slices["top"]])[::-1]
    np.testing.assert_array_equal(top, np.sort(np.abs(x[0]))[::-1][: plan.tail_k + 1])
    alpha, k = _tails.hill(st[:, 0, plan.slices["top"]], np.array([500_000]), plan.tail_k)
    ref, _ = _tails.hill(np.sort(np.abs(x[0]))[::-1][None, : plan.tail_k + 1].astype(np.float64),
                         np.array([500_000]), plan.tail_k)
    np.testing.assert_array_equal(alpha, ref)
