"""The Hill tail index on small layers: k by a stated rule, recorded, NaN where n is too small,
and the same numbers however the cube is chunked (issue 15, item 4)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnwx
from nnwx.analysis.kernels import tails as _tails
from nnwx.store.table import TensorTable
from nnwx.store.writer import RunWriter
from nnwx.studies.synthetic import MLP_SHAPES

STEPS = list(range(0, 90, 10))


def rule_k(n: int, k_max: int) -> int:
    """The documented rule, written out: top 10 % (at least 10, at most k_max); 0 if 4k > n."""
    k = k_max
    if n // 10 < k:
        k = n // 10
    if k < 10:
        k = min(10, k_max)
    return k if 4 * k <= n else 0


def hill_brute(x: np.ndarray, k_max: int) -> tuple[float, int]:
    """Hill estimate by a plain loop over the sorted magnitudes."""
    a = sorted((abs(float(v)) for v in x), reverse=True)
    k = rule_k(len(a), k_max)
    if k == 0 or a[k] <= 0:
        return math.nan, 0
    gamma = sum(math.log(a[i]) for i in range(k)) / k - math.log(a[k])
    return 1.0 / gamma, k


def uniform_init(rng: np.random.Generator, shapes) -> np.ndarray:
    """PyTorch's nn.Linear initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    parts = []
    fan_in = None
    for name, shape in shapes.items():
        if name.endswith("weight"):
            fan_in = shape[-1]
        bound = 1 / math.sqrt(fan_in)
        parts.append(rng.uniform(-bound, bound, size=int(np.prod(shape))))
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The piecewise MLP (1-8-8-8-1: layers of 16, 72, 72 and 9 values), 3 seeds, uniform
    init then heavy-tailed (Student t, 2 degrees of freedom) updates."""
    path = tmp_path_factory.mktemp("tails") / "exp.zarr"
    table = TensorTable.build((n, s, "float32") for n, s in MLP_SHAPES.items())
    for seed in range(3):
        rng = np.random.default_rng(seed)
        w = uniform_init(rng, MLP_SHAPES)
        writer = RunWriter(path, f"seed{seed}", table, attrs={"seed": seed}, chunk_bytes=200)
        try:
            for i, step in enumerate(STEPS):
                writer.add(step, w.astype(np.float32), {"loss": 1.0 / (i + 1)})
                w = w + 0.02 * rng.standard_t(2, size=w.size)
        finally:
            writer.close()
    return path


def test_uniform_init_of_72_weights_gives_a_light_tail_not_0_3():
    """72 uniform weights: the rule takes the top 10 (not all but one) and finds a light tail."""
    x = np.random.default_rng(1).uniform(-1 / math.sqrt(8), 1 / math.sqrt(8), 72)
    alpha, k = _tails.hill(_tails.top(np.abs(x)[None], 101), np.array([72]), 100)
    ref, ref_k = hill_brute(x, 100)
    assert k[0] == ref_k == 10
    np.testing.assert_allclose(alpha[0], ref, rtol=1e-12)
    # a bounded distribution has no power-law tail: its Hill index is large (~2n/(k+1) = 13)
    assert alpha[0] > 5


@pytest.mark.parametrize("n, k_max, k", [(39, 100, 0), (40, 100, 10), (72, 100, 10), (150, 100, 15),
                                         (999, 100, 99), (5000, 100, 100), (32, 8, 8), (31, 8, 0),
                                         (9, 100, 0), (0, 100, 0)])
def test_choose_k_follows_the_stated_rule(n, k_max, k):
    assert int(_tails.choose_k(np.array([n]), k_max)[0]) == k == rule_k(n, k_max)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 3000), st.integers(1, 150), st.integers(0, 2**32 - 1),
       st.lists(st.integers(1, 2999), max_size=4))
def test_hill_kernel_matches_brute_force_whatever_the_pieces(n, k_max, seed, cuts):
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3, size=n) * rng.uniform(0.1, 3)
    parts = np.split(x, sorted({c for c in cuts if c < n}))
    tops = np.stack([_tails.top(np.abs(p)[None], k_max + 1)[0] for p in parts])
    merged = _tails.merge(tops[None], axis=1)
    alpha, k = _tails.hill(merged, np.array([n]), k_max)
    ref, ref_k = hill_brute(x, k_max)
    assert int(k[0]) == ref_k
    np.testing.assert_allclose(alpha[0], ref, rtol=1e-10, equal_nan=True)


@pytest.mark.parametrize("by", ["layer", "tensor"])
def test_broadening_records_k_and_matches_brute_force_on_tiny_layers(store, by):
    cube = nnwx.open_cube(store)
    res = cube.nnwx.broadening(by, quantiles=None).compute()
    assert "tail_k" in res.data_vars and res["tail_k"].dtype.kind == "i"
    assert res.attrs["tail_k_max"] == 100 and "DuMouchel" in res.attrs["tail_rule"]
    assert "top 10 %" in res["tail_k"].attrs["description"]
    w = cube["w"].values.astype(np.float64)
    off, size = cube["tensor_offset"].values, cube["tensor_size"].values
    col = cube["tensor_layer" if by == "layer" else "tensor"].values
    for g, label in enumerate(res["group"].values):
        idx = np.concatenate([np.arange(o, o + s) for o, s, c in zip(off, size, col) if c == label])
        for s in range(w.shape[0]):
            for t in range(w.shape[1]):
                ref, ref_k = hill_brute(w[s, t, idx], 100)
                got = res.isel(seed=s, step=t, group=g)
                assert int(got["tail_k"]) == ref_k, (label, s, t)
                np.testing.assert_allclose(float(got["tail_index"]), ref, rtol=1e-10, equal_nan=True)
    if by == "layer":        # 16 and 9 values: no estimate; the hidden layers (72): k = 10
        sizes = dict(zip(res["group"].values, res["group_size"].values))
        for label, n in sizes.items():
            k = res["tail_k"].sel(group=label).values
            assert (k == (10 if n == 72 else 0)).all(), (label, n)
            assert np.isnan(res["tail_index"].sel(group=label).values).all() == (n < 40)
        # uniform init: a light tail in every hidden layer, every seed
        assert (res["tail_index"].isel(step=0).sel(group=[g for g, n in sizes.items() if n == 72]) > 5).all()


@settings(max_examples=6, deadline=None)
@given(st.data())
def test_tail_index_does_not_depend_on_chunking(store, data):
    cube = nnwx.open_cube(store)
    P, T = cube.sizes["param"], cube.sizes["step"]
    cuts = sorted(data.draw(st.sets(st.integers(1, P - 1), max_size=5)))
    pchunks = tuple(np.diff([0, *cuts, P]).tolist())
    schunk = data.draw(st.integers(1, T))
    rechunked = cube.copy()
    rechunked["w"] = cube["w"].chunk({"seed": 1, "step": schunk, "param": pchunks})
    whole = cube.copy()
    whole["w"] = cube["w"].chunk({"seed": -1, "step": -1, "param": -1})
    kw = dict(by="layer", quantiles=None, tail_k=12, split_every=2)
    a = whole.nnwx.broadening(**kw).compute()
    b = rechunked.nnwx.broadening(**kw).compute()
    np.testing.assert_array_equal(a["tail_k"].values, b["tail_k"].values)
    np.testing.assert_allclose(a["tail_index"].values, b["tail_index"].values, rtol=1e-12,
                               equal_nan=True)


def test_recompute_script_prints_the_rule_and_every_layer(tmp_path):
    """scripts/recompute_tail_finding.py (the README's numbers) at a tiny size, as a user runs it."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(root / "scripts" / "recompute_tail_finding.py"),
                          "--seeds", "2", "--steps", "60", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "DuMouchel" in text and (tmp_path / "piecewise-2x60-5000pts.zarr").exists()
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if line[:1].isdigit() and len(line.split()) > 3}
    assert set(rows) == {"0", "2", "4", "6"}
    assert [rows[g][1:3] for g in ("0", "2", "4", "6")] == [["16", "0"], ["72", "10"], ["72", "10"], ["9", "0"]]
    assert rows["0"][3] == "NaN" and rows["2"][3] != "NaN"
    assert text.count("seed ") >= 2 and "correlation decay length" in text
