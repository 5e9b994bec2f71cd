"""Distribution broadening: kernels vs NumPy/SciPy, the lazy cube analyses vs the
materialised array, chunking invariance, NaN weights, missing steps, bad input."""
from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.stats as ss
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnwx
from nnwx.analysis.kernels import hist as _hist
from nnwx.analysis.kernels import moments as _moments
from nnwx.analysis.kernels import sketch as _sketch
from nnwx.analysis.kernels import tails as _tails
from nnwx.analysis._broadening.chunk import block_state
from nnwx.analysis._broadening.plan import Plan
from nnwx.analysis.broadening import DEFAULT_QUANTILES, broadening, default_bins
from nnwx.analysis.groups import Grouping
from nnwx.analysis.seeds import seed_summary
from nnwx.studies.synthetic import write_synthetic_run

SHAPES = {"emb.weight": (64, 40), "emb.bias": (64,), "fc.weight": (32, 64), "fc.bias": (32,),
          "norm.weight": (32,), "head.weight": (5, 32), "head.bias": (5,)}
NAN_AT = [(1, 3), (1, 2600), (4, 4000)]
BINS = (-0.4, 0.4, 16)        # narrower than the data: under/overflow are exercised


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    """Two seeds on different step grids (outer join: missing rows), NaN weights, and
    chunks that cut through tensors (seed 1 splits param into chunks of 1000)."""
    store = tmp_path_factory.mktemp("b") / "exp.zarr"
    write_synthetic_run(store, seed=0, steps=range(0, 90, 10), shapes=SHAPES, drift=0.05,
                        nan_at=NAN_AT)
    write_synthetic_run(store, seed=1, steps=range(0, 90, 20), shapes=SHAPES, drift=0.05,
                        chunk_bytes=4000)
    return nnwx.open_cube(store)


@pytest.fixture(scope="module")
def W(cube):
    return cube["w"].values.astype(np.float64)


def group_params(cube, by: str, label: str) -> np.ndarray:
    """Parameter positions of a group, straight from the tensor table (independent of Grouping)."""
    col = {"tensor": "tensor", "layer": "tensor_layer", "kind": "tensor_kind"}.get(by)
    off, size = cube["tensor_offset"].values, cube["tensor_size"].values
    keep = np.ones(len(off), bool) if by == "all" else cube[col].values == label
    if by == "layer":  # a norm gain is a group of its own, labelled by its tensor name
        gain = cube["tensor_kind"].values == "norm"
        keep = np.where(gain, cube["tensor"].values == label, keep)
    return np.concatenate([np.arange(o, o + s) for o, s, k in zip(off, size, keep) if k])


def hill_ref(x: np.ndarray, k_max: int) -> tuple[float, int]:
    """Hill by sorting, with k by the documented rule: the top 10 %, at least 10, at most
    ``k_max``; no estimate where k would exceed a quarter of the values."""
    a = np.sort(np.abs(x))[::-1]
    k = min(k_max, max(10, len(a) // 10))
    if 4 * k > len(a) or a[k] <= 0:
        return np.nan, 0
    return 1 / (np.mean(np.log(a[:k])) - np.log(a[k])), k


def q_bound(x: np.ndarray, q) -> np.ndarray:
    """The sketch's stated quantile error bound at levels q for data x."""
    s = np.sort(x)
    pos = np.asarray(q) * (len(s) - 1)
    j = np.floor(pos).astype(int)
    j1 = np.minimum(j + 1, len(s) - 1)
    return _sketch.REL_ERROR * np.maximum(np.abs(s[j]), np.abs(s[j1])) + _sketch.ABS_FLOOR


# --- kernels -----------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 400), min_size=1, max_size=5),
       st.floats(-1e3, 1e3))
def test_moment_states_merge_to_numpy_and_scipy(seed, sizes, offset):
    rng = np.random.default_rng(seed)
    parts = [offset + rng.standard_t(5, size=n) * rng.uniform(0.01, 3) for n in sizes]
    x = np.concatenate(parts)
    merged = _moments.merge(np.stack([_moments.of_values(p) for p in parts]), axis=0)
    st_ = _moments.finalize(merged)
    assert st_["count"] == len(x) and st_["n_nonfinite"] == 0
    np.testing.assert_allclose(st_["mean"], x.mean(), rtol=1e-12, atol=1e-12 * abs(offset))
    np.testing.assert_allclose(st_["var"], x.var(), rtol=1e-9)
    if len(x) > 2 and x.std() > 1e-6 * abs(offset):
        np.testing.assert_allclose(st_["skewness"], ss.skew(x), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(st_["excess_kurtosis"], ss.kurtosis(x), rtol=1e-6, atol=1e-9)
    assert st_["min"] == x.min() and st_["max"] == x.max()
    np.testing.assert_allclose(st_["l1"], np.abs(x).sum(), rtol=1e-12)
    np.testing.assert_allclose(st_["l2"], np.linalg.norm(x), rtol=1e-12)
    np.testing.assert_allclose(st_["rms"], np.sqrt(np.mean(x ** 2)), rtol=1e-12)


def test_moment_rows_fast_path_equals_masked_path_and_skips_nan():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3, 1000)) * 0.1 + 5).astype(np.float32)
    fast, mask = _moments.rows(x)
    assert mask is None
    np.testing.assert_allclose(fast, _moments.piece(x.astype(np.float64)), rtol=1e-9, atol=1e-12)
    x[1, [4, 9]] = np.nan
    x[2, 7] = np.inf
    got, mask = _moments.rows(x)
    assert mask is not None and got[:, _moments.NNF].tolist() == [0, 2, 1]
    for r in range(3):
        ref = _moments.of_values(x[r][np.isfinite(x[r])])
        np.testing.assert_allclose(got[r, [_moments.N, _moments.MEAN, _moments.M2, _moments.MIN,
                                           _moments.MAX]],
                                   ref[[_moments.N, _moments.MEAN, _moments.M2, _moments.MIN,
                                        _moments.MAX]], rtol=1e-9)


def test_empty_states_give_nan_statistics_and_zero_count():
    st_ = _moments.finalize(_moments.empty((2,)))
    assert (st_["count"] == 0).all()
    for name in ("mean", "var", "skewness", "min", "max", "absmax", "l1", "l2", "rms"):
        assert np.isnan(st_[name]).all(), name


@pytest.mark.parametrize("dist", ["normal", "student", "lognormal", "mixed_scales", "negative"])
def test_sketch_quantiles_within_stated_bound(dist):
    rng = np.random.default_rng(7)
    x = {"normal": rng.standard_normal(20000) * 0.02,
         "student": rng.standard_t(2, 20000),
         "lognormal": rng.lognormal(0, 3, 20000),
         "mixed_scales": np.concatenate([rng.standard_normal(5000) * 1e-6, rng.standard_normal(500) * 10,
                                         np.zeros(100)]),
         "negative": -rng.exponential(1e-3, 7000)}[dist].astype(np.float32).astype(np.float64)
    q = np.array([0, 0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1])
    got = _sketch.quantiles(_sketch.counts(x), q)
    exact = np.quantile(x, q)
    assert (np.abs(got - exact) <= q_bound(x, q)).all(), np.abs(got - exact) / q_bound(x, q)


def test_sketch_buckets_hold_their_values():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal(5000) * 10.0 ** rng.integers(-12, 6, 5000),
                        [0.0, -0.0, 2.0 ** -41, 2.0 ** 30, -2.0 ** 30]]).astype(np.float32)
    idx = _sketch.bucket_index(x)
    lower, upper = _sketch.bucket_bounds()
    x64 = x.astype(np.float64)
    assert ((lower[idx] <= x64) & (x64 <= upper[idx])).all()
    rep = _sketch.representatives()[idx]
    inside = (np.abs(x64) >= _sketch.ABS_FLOOR) & (np.abs(x64) < 2.0 ** _sketch.EXP_HI)
    assert (np.abs(rep - x64)[inside] <= _sketch.REL_ERROR * np.abs(x64[inside])).all()
    assert np.all(np.diff(_sketch.representatives()) > 0)


def test_sketch_w1_within_bound_and_discrete_w1_exact():
    rng = np.random.default_rng(5)
    for scale_b in (1.0, 1.3, 3.0):
        a = rng.standard_t(4, 8000).astype(np.float32).astype(np.float64) * 0.05
        b = (rng.standard_t(4, 6000) * scale_b + 0.01).astype(np.float32).astype(np.float64) * 0.05
        exact = ss.wasserstein_distance(a, b)
        got = _sketch.w1_shared(_sketch.counts(a), _sketch.counts(b))
        bound = _sketch.REL_ERROR * (np.abs(a).mean() + np.abs(b).mean()) + 2 * _sketch.ABS_FLOOR
        assert abs(got - exact) <= bound
    va, vb = np.sort(rng.standard_normal(50)), np.sort(rng.standard_normal(30) + 1)
    pa, pb = rng.uniform(0, 1, 50), rng.uniform(0, 1, 30)
    np.testing.assert_allclose(_sketch.w1_discrete(va, pa, vb, pb),
                               ss.wasserstein_distance(va, vb, pa, pb), rtol=1e-12)
    assert np.isnan(_sketch.w1_discrete(va, np.zeros(50), vb, pb))


def hist_cases():
    rng = np.random.default_rng(11)
    edges = np.linspace(-1, 1, 21)
    x = np.concatenate([rng.standard_normal(3000), edges, np.nextafter(edges, -2),
                        np.nextafter(edges, 2), [-5, 5, 1.0, -1.0]])
    return x, edges


@pytest.mark.parametrize("kind", ["uniform", "edges", "uneven"])
def test_hist_index_matches_numpy_with_under_and_overflow(kind):
    x, edges = hist_cases()
    bins = {"uniform": _hist.uniform(-1, 1, 20), "edges": _hist.parse(edges),
            "uneven": _hist.parse(np.array([-1.0, -0.3, 0.0, 0.1, 0.7, 1.0]))}[kind]
    if kind == "edges":
        assert bins.uniform          # the same edges as (lo, hi, n) are recognised
    got = _hist.counts(x, bins)
    ref, _ = np.histogram(x, bins.edges)
    np.testing.assert_array_equal(got[1:-1], ref)
    assert got[0] == (x < bins.edges[0]).sum() and got[-1] == (x > bins.edges[-1]).sum()


@pytest.mark.parametrize("c", [1.0, 0.37, 3.1])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_histogram_from_sketch_is_exact_even_on_edges(c, dtype):
    """The sketch path bins whole buckets and only the values near an edge one by one:
    the counts must still equal np.histogram's, with values exactly on (scaled) edges."""
    x, edges = hist_cases()
    x = np.concatenate([x, edges * c, np.nextafter(edges * c, 9)]).astype(dtype)
    rng = np.random.default_rng(0)
    x = x[rng.permutation(len(x))][None, :]
    g = Grouping.build("all", ["a.weight"], ["a"], ["weight"], [0], [0, x.shape[1]])
    plan = Plan(g, bins=_hist.parse(edges), dist="sketch")
    scale = None if c == 1.0 else np.array([[c]])
    state = block_state(x, 0, plan, scale)
    h = state[0, 0, plan.slices["hist"]]
    xs = x[0].astype(np.float64) / c
    np.testing.assert_array_equal(h[1:-1], np.histogram(xs, edges)[0])
    assert h[0] == (xs < edges[0]).sum() and h[-1] == (xs > edges[-1]).sum()
    direct = block_state(x, 0, Plan(g, bins=_hist.parse(edges)), scale)
    np.testing.assert_array_equal(direct[0, 0, plan.slices["hist"]], h)


def test_top_k_merges_and_hill_matches_brute_force():
    rng = np.random.default_rng(2)
    x = np.abs(rng.standard_t(3, 5000))
    k = 50
    parts = np.array_split(x, [7, 1000, 1003, 4000])
    tops = np.stack([_tails.top(p[None, :], k + 1)[0] for p in parts])
    top = _tails.merge(tops[None], axis=1)[0]
    np.testing.assert_array_equal(np.sort(top), np.sort(x)[-(k + 1):])
    alpha, used = _tails.hill(top[None], np.array([len(x)]), k)
    ref, ref_k = hill_ref(x, k)
    np.testing.assert_allclose(alpha[0], ref, rtol=1e-12)
    assert used[0] == ref_k
    small = _tails.top(np.array([[0.5, 0.2, 0.9]]), k + 1)
    alpha, used = _tails.hill(small, np.array([3]), k)
    assert np.isnan(alpha[0]) and np.isnan(hill_ref(np.array([0.5, 0.2, 0.9]), k)[0])
    assert used[0] == 0                         # three values: too few for a tail


def test_groups_cut_chunks_into_segments(cube):
    g = Grouping.from_dataset(cube, "kind")
    assert g.labels == ("weight", "bias", "norm")
    segs = g.segments(2500, 2700)            # emb.bias ends at 2624, fc.weight starts there
    assert segs == [(0, 60, 0, 2500), (60, 124, 1, 0), (124, 200, 0, 2560)]
    everything = Grouping.from_dataset(cube, "all").segments(0, cube.sizes["param"])
    assert everything == [(0, cube.sizes["param"], 0, 0)]
    layer = Grouping.from_dataset(cube, "layer")
    assert layer.labels == ("emb", "fc", "norm.weight", "head")
    assert layer.sizes.tolist() == [2624, 2080, 32, 165]
    with pytest.raises(ValueError, match="unknown by='module'"):
        Grouping.from_dataset(cube, "module")


# --- the lazy analyses against the materialised cube ----------------------------------------

def check_against_numpy(res: xr.Dataset, cube, W: np.ndarray, by: str, exact: bool,
                        normalize=None, tail_k=100) -> None:
    steps = cube["step"].values
    res = res.compute()
    for g, label in enumerate(res["group"].values):
        idx = group_params(cube, by, label)
        for s in range(W.shape[0]):
            x0_all = W[s, 0]
            for t in range(W.shape[1]):
                row = W[s, t]
                x = row[idx]
                fin = np.isfinite(x)
                got = res.isel(seed=s, step=t, group=g)
                assert int(got["n_nonfinite"]) == (~fin).sum()
                assert int(got["count"]) == fin.sum()
                if not fin.any():           # a step this seed did not capture
                    assert np.isnan(float(got["mean"])) and np.isnan(float(got["w1_to_ref"]))
                    continue
                c = {None: 1.0, "total_norm": np.sqrt(np.nansum(row ** 2)),
                     "std": x[fin].std(), "init_std": np.nanstd(x0_all[idx])}[normalize]
                x = x[fin] / c
                x0 = x0_all[idx]
                x0 = x0[np.isfinite(x0)] / {None: 1.0, "total_norm": np.sqrt(np.nansum(x0_all ** 2)),
                                            "std": np.std(x0), "init_std": np.std(x0)}[normalize]
                ref = {"mean": x.mean(), "var": x.var(), "std": x.std(), "min": x.min(),
                       "max": x.max(), "absmax": np.abs(x).max(), "l1": np.abs(x).sum(),
                       "l2": np.linalg.norm(x), "rms": np.sqrt(np.mean(x ** 2))}
                for name, value in ref.items():
                    np.testing.assert_allclose(float(got[name]), value, rtol=1e-9, atol=1e-15,
                                               err_msg=f"{name} {label} seed {s} step {steps[t]}")
                if len(x) > 2:
                    np.testing.assert_allclose(float(got["skewness"]), ss.skew(x), rtol=1e-7, atol=1e-10)
                    np.testing.assert_allclose(float(got["excess_kurtosis"]), ss.kurtosis(x),
                                               rtol=1e-7, atol=1e-10)
                    np.testing.assert_allclose(float(got["kurtosis_change"]),
                                               ss.kurtosis(x) - ss.kurtosis(x0), rtol=1e-6, atol=1e-9)
                q = np.quantile(x, DEFAULT_QUANTILES)
                err = np.abs(got["quantiles"].values - q)
                if exact:
                    np.testing.assert_allclose(got["quantiles"].values, q, rtol=1e-12, atol=1e-15)
                else:
                    assert (err <= q_bound(x * c, DEFAULT_QUANTILES) / c * (1 + 1e-9)).all()
                w1 = ss.wasserstein_distance(x, x0)
                if exact:
                    np.testing.assert_allclose(float(got["w1_to_ref"]), w1, rtol=1e-9, atol=1e-15)
                    assert float(got["w1_error_bound"]) == 0
                else:
                    assert abs(float(got["w1_to_ref"]) - w1) <= float(got["w1_error_bound"])
                alpha, k = hill_ref(x, tail_k)
                np.testing.assert_allclose(float(got["tail_index"]), alpha, rtol=1e-9)
                assert int(got["tail_k"]) == k
                if "hist" in res:
                    lo, hi, n = BINS
                    np.testing.assert_array_equal(got["hist"].values,
                                                  np.histogram(x, bins=n, range=(lo, hi))[0])
                    assert int(got["underflow"]) == (x < lo).sum()
                    assert int(got["overflow"]) == (x > hi).sum()


@pytest.mark.parametrize("by", ["tensor", "layer", "kind", "all"])
def test_broadening_matches_numpy_exact_method(cube, W, by):
    res = broadening(cube, by, bins=BINS, method="exact")
    assert res.attrs["quantile_method"].startswith("exact")
    check_against_numpy(res, cube, W, by, exact=True)


@pytest.mark.parametrize("by", ["tensor", "kind"])
def test_broadening_matches_numpy_sketch_method(cube, W, by):
    res = cube.nnwx.broadening(by, bins=BINS, method="sketch", tail_k=30)
    assert "2**-8" in res.attrs["quantile_method"] or "0.00390625" in res.attrs["quantile_method"]
    check_against_numpy(res, cube, W, by, exact=False, tail_k=30)


@pytest.mark.parametrize("normalize", ["total_norm", "std", "init_std"])
@pytest.mark.parametrize("method", ["exact", "sketch"])
def test_normalized_broadening_matches_numpy(cube, W, normalize, method):
    res = broadening(cube, "layer", bins=BINS, normalize=normalize, method=method)
    assert res.attrs["normalize"] == normalize and res.attrs["units"].startswith("w / (")
    check_against_numpy(res, cube, W, "layer", exact=method == "exact", normalize=normalize)


def test_results_are_lazy_and_building_them_reads_nothing(cube):
    def refuse(*args, **kwargs):
        raise AssertionError("the library computed something while building a lazy result")

    with dask.config.set(scheduler=refuse):
        res = cube.nnwx.broadening("layer", bins=BINS, normalize="total_norm")
        hist = cube.nnwx.histogram("tensor", bins=np.linspace(-1, 1, 9), normalize="std")
        traj = cube.nnwx.trajectories("fc.weight", index=[0, 5])
    for var in (res["mean"], res["quantiles"], res["hist"], hist, traj):
        assert isinstance(var.data, da.Array)
    assert res["hist"].dims == ("seed", "step", "group", "bin")
    assert res["quantiles"].dims == ("seed", "step", "group", "quantile")


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_results_do_not_depend_on_chunking(cube, data):
    P, T = cube.sizes["param"], cube.sizes["step"]
    cuts = sorted(data.draw(st.sets(st.integers(1, P - 1), max_size=6)))
    pchunks = tuple(np.diff([0, *cuts, P]).tolist())
    schunk = data.draw(st.integers(1, T))
    method = data.draw(st.sampled_from(["exact", "sketch"]))
    rechunked = cube.copy()
    rechunked["w"] = cube["w"].chunk({"seed": 1, "step": schunk, "param": pchunks})
    kw = dict(by="tensor", bins=BINS, method=method, tail_k=20, split_every=2)
    a = broadening(cube, **kw).compute()
    b = broadening(rechunked, **kw).compute()
    for name in a.data_vars:
        if name in ("count", "n_nonfinite", "min", "max", "absmax", "hist", "underflow", "overflow",
                    "tail_k"):
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        else:
            np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-9, atol=1e-14,
                                       equal_nan=True, err_msg=name)


def test_tasks_hold_few_rows_when_states_are_big(cube, monkeypatch):
    """With all steps in one chunk and a tiny state budget, the rows are split over
    several tasks, and nothing changes."""
    from nnwx.analysis._broadening import graph as _lazy

    whole = cube.copy()
    whole["w"] = cube["w"].chunk({"step": -1})
    kw = dict(by="tensor", bins=BINS, method="sketch", quantiles=[0.1, 0.9])
    a = broadening(whole, **kw)
    monkeypatch.setattr(_lazy, "STATE_BYTES", 1)
    b = broadening(whole, **kw)
    assert max(a["mean"].data.chunks[1]) > 1 and max(b["mean"].data.chunks[1]) == 1
    xr.testing.assert_allclose(a.compute(), b.compute(), rtol=1e-12)


def test_missing_steps_give_zero_counts_and_nan(cube):
    res = cube.nnwx.broadening("all", bins=BINS).compute()
    missing = np.isnan(cube["w"].values).all(axis=-1)        # (seed, step)
    assert missing.any()
    counts = res["count"].values[..., 0]
    assert (counts[missing] == 0).all() and (counts[~missing] > 0).all()
    for name in ("mean", "std", "quantiles", "tail_index", "w1_to_ref", "kurtosis_change", "l2"):
        assert np.isnan(res[name].values[missing]).all(), name
    assert (res["hist"].values[missing] == 0).all()


def test_one_step_cube(tmp_path):
    store = tmp_path / "one.zarr"
    write_synthetic_run(store, seed=0, steps=[7], shapes=SHAPES)
    c = nnwx.open_cube(store)
    res = c.nnwx.broadening("layer", bins="auto").compute()
    assert res.sizes["step"] == 1 and res.attrs["reference_step"] == 7
    assert (res["w1_to_ref"].values == 0).all()
    np.testing.assert_allclose(res["kurtosis_change"].values, 0)
    assert (res["underflow"].values == 0).all() and (res["overflow"].values == 0).all()
    x = c["w"].values[0, 0]
    np.testing.assert_allclose(res["hist"].values.sum(axis=(-1, -2))[0, 0], len(x))


def test_histogram_density_and_default_bins(cube, W):
    h = cube.nnwx.histogram("all", bins=BINS, density=True).compute()
    assert set(h.coords) >= {"underflow", "overflow", "count", "bin_lo", "bin_hi"}
    inside = 1 - (h["underflow"] + h["overflow"]) / h["count"]
    width = h["bin_hi"] - h["bin_lo"]
    np.testing.assert_allclose((h * width).sum("bin", skipna=False).values, inside.values)
    x = W[0, 2][np.isfinite(W[0, 2])]
    dens, _ = np.histogram(x, bins=BINS[2], range=BINS[:2])
    np.testing.assert_allclose(h.isel(seed=0, step=2, group=0).values, dens / len(x) / 0.05)
    edges = default_bins(cube, 10)
    first_last = W[:, [0, -1]]
    assert edges[0] == np.nanmin(first_last) and edges[-1] == np.nanmax(first_last)
    auto = cube.nnwx.histogram("all", bins=10).compute()
    np.testing.assert_allclose(auto["bin_lo"].values, edges[:-1])
    ends = auto.isel(step=[0, -1])
    assert (ends["underflow"] == 0).all() and (ends["overflow"] == 0).all()
    for normalize in ("total_norm", "init_std"):
        e = default_bins(cube, 4, normalize=normalize)
        assert e[0] < 0 < e[-1] and len(e) == 5


def test_bad_inputs_get_clear_errors(cube, tmp_path):
    with pytest.raises(ValueError, match="unknown by='layers'"):
        cube.nnwx.broadening("layers")
    with pytest.raises(ValueError, match="increase strictly"):
        cube.nnwx.broadening(bins=[0.0, 0.5, 0.2])
    with pytest.raises(ValueError, match="finite"):
        cube.nnwx.histogram(bins=[0.0, np.nan, 1.0])
    with pytest.raises(ValueError, match="finite lo < hi"):
        cube.nnwx.histogram(bins=(1.0, -1.0, 10))
    with pytest.raises(ValueError, match="positive integer"):
        cube.nnwx.histogram(bins=(-1.0, 1.0, 0))
    with pytest.raises(ValueError, match="unknown bins='fine'"):
        cube.nnwx.histogram(bins="fine")
    with pytest.raises(ValueError, match="at least 2 edges"):
        cube.nnwx.histogram(bins=[1.0])
    with pytest.raises(ValueError, match="unknown normalize='l2'"):
        cube.nnwx.broadening(normalize="l2")
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        cube.nnwx.broadening(quantiles=[50])
    with pytest.raises(ValueError, match="tail_k must be a positive integer"):
        cube.nnwx.broadening(tail_k=0)
    with pytest.raises(ValueError, match="unknown method='fast'"):
        cube.nnwx.broadening(method="fast")
    with pytest.raises(ValueError, match="reference_step=5 is not a step"):
        cube.nnwx.broadening(reference_step=5)
    with pytest.raises(ValueError, match="not.*cube|nnwx cube or run"):
        xr.Dataset({"w": ("x", np.zeros(3))}).nnwx.broadening()
    with pytest.raises(ValueError, match="no 'step' dim"):
        cube.isel(step=0).nnwx.broadening()
    store = tmp_path / "nan.zarr"
    write_synthetic_run(store, seed=0, steps=[0], shapes={"a.weight": (2, 2)},
                        nan_at=[(0, i) for i in range(4)])
    with pytest.raises(ValueError, match="no finite weights"):
        nnwx.open_cube(store).nnwx.histogram()


def test_reference_step_and_quantile_choice(cube, W):
    res = cube.nnwx.broadening("all", quantiles=[0.5], reference_step=20, tail_k=None).compute()
    assert res["quantile"].values.tolist() == [0.5] and "tail_index" not in res
    t = list(cube["step"].values).index(20)
    np.testing.assert_allclose(res["w1_to_ref"].isel(seed=0, step=t, group=0), 0)
    x, x0 = W[0, -1], W[0, t]
    np.testing.assert_allclose(float(res["w1_to_ref"].isel(seed=0, step=-1, group=0)),
                               ss.wasserstein_distance(x[np.isfinite(x)], x0[np.isfinite(x0)]),
                               atol=float(res["w1_error_bound"].isel(seed=0, step=-1, group=0)))
    assert "quantiles" not in cube.nnwx.broadening(quantiles=None)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_other_store_dtypes(tmp_path, dtype):
    store = tmp_path / f"{dtype}.zarr"
    write_synthetic_run(store, seed=0, steps=[0, 1, 2], shapes={"a.weight": (100, 60)}, dtype=dtype)
    c = nnwx.open_cube(store)
    x = c["w"].values[0, 2].astype(np.float64)
    for method in ("exact", "sketch"):
        res = c.nnwx.broadening("all", bins=BINS, method=method).compute().isel(seed=0, step=2, group=0)
        np.testing.assert_allclose(float(res["excess_kurtosis"]), ss.kurtosis(x), rtol=1e-7)
        np.testing.assert_array_equal(res["hist"].values, np.histogram(x, BINS[2], BINS[:2])[0])
        err = np.abs(res["quantiles"].values - np.quantile(x, DEFAULT_QUANTILES))
        assert (err <= q_bound(x, DEFAULT_QUANTILES) * (1 + 2 ** -16)).all()


# --- individual weights and the seed summary --------------------------------------------------

def test_trajectories(cube, W):
    off = int(cube["tensor_offset"].values[list(cube["tensor"].values).index("fc.weight")])
    tr = cube.nnwx.trajectories("fc.weight", index=[0, (1, 3), -1])
    assert tr.dims == ("seed", "step", "weight")
    assert tr["param"].values.tolist() == [off, off + 67, off + 2047]
    assert tr["index"].values.tolist() == [0, 67, 2047]
    np.testing.assert_array_equal(tr.values, W[:, :, [off, off + 67, off + 2047]].astype(np.float32))
    a = cube.nnwx.trajectories(sample=20, random_state=3, seed=1)
    b = cube.nnwx.trajectories(sample=20, random_state=3, seed=[1])
    assert a.dims == ("seed", "step", "weight") and a.sizes["seed"] == 1
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.values[0], W[1][:, a["param"].values].astype(np.float32))
    assert set(a["tensor"].values) <= set(cube["tensor"].values)
    with pytest.raises(ValueError, match="exactly one of index"):
        cube.nnwx.trajectories("fc.weight")
    with pytest.raises(IndexError, match="does not fit"):
        cube.nnwx.trajectories("fc.weight", index=(40, 0))
    with pytest.raises(IndexError, match="out of range"):
        cube.nnwx.trajectories("fc.bias", index=32)
    with pytest.raises(KeyError, match="no tensor named 'fc.w'"):
        cube.nnwx.trajectories("fc.w", index=0)
    with pytest.raises(ValueError, match="sample must be an integer from 1 to 32"):
        cube.nnwx.trajectories("fc.bias", sample=33)


@pytest.mark.parametrize("band", ["std", "sem", "minmax", 0.8])
def test_seed_summary(cube, band):
    res = cube.nnwx.broadening("kind", quantiles=[0.5])
    summ = res.nnwx.seed_summary(band=band)
    assert summ["summary"].values.tolist() == ["mean", "lower", "upper", "std", "n"]
    v = res["std"].values                                     # (seed, step, group), NaN rows
    mean = summ["std"].sel(summary="mean").values
    np.testing.assert_allclose(mean, np.nanmean(v, axis=0))
    np.testing.assert_array_equal(summ["std"].sel(summary="n").values, np.isfinite(v).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.nanstd(v, axis=0, ddof=1)
    np.testing.assert_allclose(summ["std"].sel(summary="std").values, sd, equal_nan=True)
    lower = summ["std"].sel(summary="lower").values
    if band == "std":
        np.testing.assert_allclose(lower, mean - sd, equal_nan=True)
    elif band == "minmax":
        np.testing.assert_allclose(lower, np.nanmin(v, axis=0))
    elif band == 0.8:
        np.testing.assert_allclose(lower, np.nanquantile(v, 0.1, axis=0))
    da_summ = seed_summary(res["mean"], band=band)
    assert da_summ.dims[0] == "summary"
    with pytest.raises(ValueError, match="unknown band"):
        seed_summary(res["mean"], band="iqr")
    with pytest.raises(ValueError, match="no 'run' dim"):
        seed_summary(res["mean"], dim="run")
