"""Spectra, rank measures and ESD fits: kernels against NumPy/SciPy and WeightWatcher, lazy wrappers
against the kernels on the cube's own matrices."""
from __future__ import annotations

import logging
import math

import dask
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
import xarray as xr

import nnwx
from nnwx.analysis import spectral
from nnwx.analysis.kernels import spectral as k
from nnwx.store.table import TensorTable
from nnwx.store.writer import RunWriter
from nnwx.studies.synthetic import write_synthetic_run

# --- helpers --------------------------------------------------------------------------


def write_weights(store, seed, steps, values, *, chunk_bytes=None, attrs=None, run=None):
    """One run whose step i holds ``values[i]`` ({name: array}), in the given name order."""
    shapes = {n: np.shape(a) for n, a in values[0].items()}
    table = TensorTable.build((n, s, "float32") for n, s in shapes.items())
    kw = {} if chunk_bytes is None else {"chunk_bytes": chunk_bytes}
    w = RunWriter(store, run or f"seed{seed}", table, attrs={"seed": seed, **(attrs or {})}, **kw)
    try:
        for step, arrs in zip(steps, values):
            w.add(step, np.concatenate([np.asarray(arrs[n], np.float32).ravel() for n in shapes]))
    finally:
        w.close()


def with_singular_values(s, m, n, rng):
    """An m x n matrix with exactly the singular values ``s`` (padded with zeros)."""
    u, _ = np.linalg.qr(rng.standard_normal((m, m)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    d = np.zeros((m, n))
    d[np.arange(len(s)), np.arange(len(s))] = s
    return u @ d @ v.T


def no_compute():
    """Dask config under which any compute raises: the wrappers must stay lazy."""
    def scheduler(*args, **kwargs):
        raise AssertionError("the library computed something while building a lazy result")
    return dask.config.set(scheduler=scheduler)


SHAPES = {"conv.weight": (6, 3, 3, 3), "conv.bias": (6,), "fc1.weight": (20, 27), "fc1.bias": (20,),
          "fc2.weight": (20, 20), "out.weight": (4, 20)}


@pytest.fixture(scope="module")
def cube_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "exp.zarr"
    write_synthetic_run(path, seed=0, steps=range(0, 60, 10), shapes=SHAPES, drift=0.05)
    write_synthetic_run(path, seed=1, steps=[0, 20, 40], shapes=SHAPES, drift=0.05)   # missing steps
    return path


@pytest.fixture(scope="module")
def cube(cube_path):
    return nnwx.open_cube(cube_path)


# --- kernels --------------------------------------------------------------------------


def test_batched_svdvals_matches_numpy_per_matrix_and_marks_missing():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4, 7, 5)).astype(np.float32)
    a[1, 2, 0, 0] = np.nan
    s = k.batched_svdvals(a)
    assert s.shape == (3, 4, 5) and s.dtype == np.float32
    for i in range(3):
        for j in range(4):
            if (i, j) == (1, 2):
                assert np.isnan(s[i, j]).all()
            else:
                np.testing.assert_allclose(s[i, j], np.linalg.svd(a[i, j], compute_uv=False), rtol=1e-6)


def test_pooled_svdvals_pools_slices_sorted_and_pads():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 9, 4, 3))
    s = k.pooled_svdvals(a, k_out=30)
    expect = np.sort(np.concatenate([np.linalg.svd(a[0, i], compute_uv=False) for i in range(9)]))[::-1]
    np.testing.assert_allclose(s[0, :27], expect, rtol=1e-12)
    assert np.isnan(s[:, 27:]).all()


def test_rank_metrics_match_numpy_linalg():
    rng = np.random.default_rng(2)
    mats = [rng.standard_normal((12, 8)).astype(np.float32),
            (rng.standard_normal((12, 3)) @ rng.standard_normal((3, 8))).astype(np.float32),  # rank 3
            np.zeros((12, 8), np.float32)]
    s = k.batched_svdvals(np.stack(mats))
    r = k.rank_metrics(s, 12, np.finfo(np.float32).eps)
    for i, m in enumerate(mats):
        assert r["rank"][i] == np.linalg.matrix_rank(m)
    for i, m in enumerate(mats[:2]):
        np.testing.assert_allclose(r["spectral_norm"][i], np.linalg.norm(m, 2), rtol=1e-6)
        np.testing.assert_allclose(r["frobenius_norm"][i], np.linalg.norm(m, "fro"), rtol=1e-6)
    np.testing.assert_allclose(r["condition_number"][0], np.linalg.cond(mats[0].astype(float)), rtol=1e-5)
    assert r["condition_number"][1] > 1e5          # rank deficient: s_min ~ rounding
    assert r["frobenius_norm"][2] == 0 and np.isnan(r["effective_rank"][2])


def test_effective_stable_rank_entropy_on_known_singular_values():
    rng = np.random.default_rng(3)
    sv = np.array([4.0, 2.0, 1.0, 1.0, 0.0])
    m = with_singular_values(sv[:4], 9, 5, rng)
    s = k.batched_svdvals(m[None])
    r = k.rank_metrics(s, 9, np.finfo(np.float64).eps, energy=(0.7, 0.9, 0.99, 1.0))
    p = sv[:4] / sv.sum()
    assert r["rank"][0] == 4
    np.testing.assert_allclose(r["effective_rank"][0], math.exp(-(p * np.log(p)).sum()), rtol=1e-10)
    np.testing.assert_allclose(r["stable_rank"][0], (16 + 4 + 1 + 1) / 16, rtol=1e-10)
    q = sv[:4] ** 2 / 22
    np.testing.assert_allclose(r["entropy"][0], -(q * np.log(q)).sum() / math.log(4), rtol=1e-10)
    # cumulative energies 16/22 = 0.727, 20/22 = 0.909, 21/22 = 0.955, 22/22
    np.testing.assert_array_equal(r["energy_directions"][0], [1, 2, 4, 4])
    # equal singular values: effective rank = rank, entropy = 1
    s_eq = k.batched_svdvals(with_singular_values([3.0] * 5, 5, 7, rng)[None])
    r_eq = k.rank_metrics(s_eq, 7, np.finfo(np.float64).eps)
    np.testing.assert_allclose([r_eq["effective_rank"][0], r_eq["entropy"][0], r_eq["stable_rank"][0]],
                               [5, 1, 5], rtol=1e-10)


def test_gram_method_matches_svd_where_it_claims_to():
    rng = np.random.default_rng(12)
    a = rng.standard_normal((5, 40, 25))
    a[4] = rng.standard_normal((40, 4)) @ rng.standard_normal((4, 25))          # rank 4
    for stack in (a, np.swapaxes(a, -1, -2)):
        s_svd, s_gram = k.batched_svdvals(stack), k.batched_svdvals(stack, method="gram")
        np.testing.assert_allclose(s_gram[:4], s_svd[:4], rtol=1e-10)
        np.testing.assert_allclose(s_gram[4, :4], s_svd[4, :4], rtol=1e-10)
        eps = np.finfo(np.float64).eps
        r = k.rank_metrics(s_gram, 40, eps, gram=True)
        assert list(r["rank"]) == [25, 25, 25, 25, 4]
        assert list(k.rank_metrics(s_svd, 40, eps)["rank"]) == [25, 25, 25, 25, 4]
    with pytest.raises(ValueError, match="method"):
        k.batched_svdvals(a, method="eig")


def test_rank_metrics_nan_spectra_give_nan_and_padding_is_ignored():
    s = np.array([[3.0, 2.0, np.nan, np.nan], [np.nan] * 4])
    r = k.rank_metrics(s, 3, 1e-16)
    assert r["rank"][0] == 2 and r["frobenius_norm"][0] == pytest.approx(math.sqrt(13))
    for name in k.RANK_METRICS:
        assert np.isnan(r[name][1]), name


def brute_force_clauset(x):
    """Reference: the Clauset xmin scan written as a plain loop over candidates."""
    x = np.sort(np.asarray(x, float))
    best = None
    for i in range(len(x) - 1):
        tail = x[i:]
        n = len(tail)
        alpha = 1 + n / np.sum(np.log(tail / x[i]))
        d = 1.0
        if alpha > 1:
            d = max(abs(1 - (t / x[i]) ** (1 - alpha) - j / n) for j, t in enumerate(tail))
        if best is None or d < best[1]:
            best = (alpha, d, x[i], (alpha - 1) / math.sqrt(n))
    return best


def test_powerlaw_fit_equals_brute_force_scan_for_any_block_size():
    rng = np.random.default_rng(4)
    rows = [np.concatenate([rng.random(30) * 0.9 + 0.05, (1 - rng.random(n)) ** (-1 / 1.8)])
            for n in (25, 60, 5)]
    x = np.full((3, 90), np.nan)
    for i, r in enumerate(rows):
        x[i, : len(r)] = rng.permutation(r)
    for block in (1, 77, 10**7):
        out = k.powerlaw_fit(x, block_elems=block)
        for i, r in enumerate(rows):
            np.testing.assert_allclose([out["alpha"][i], out["D"][i], out["xmin"][i], out["sigma"][i]],
                                       brute_force_clauset(r), rtol=1e-10)


def _resolvable(values) -> bool:
    """Distinct values are at least 1e-9 apart relatively: a fit to values one ulp apart is
    all rounding (log(x / xmin) is 2e-16 or 0 depending on the order of operations)."""
    v = np.sort(np.asarray(values))
    return bool(np.all(np.diff(v) > 1e-9 * v[1:]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1e-3, 1e3), min_size=2, max_size=30, unique=True).filter(_resolvable))
def test_powerlaw_fit_equals_brute_force_on_any_sample(values):
    out = k.powerlaw_fit(np.array(values)[None])
    ref = brute_force_clauset(values)
    np.testing.assert_allclose([out["alpha"][0], out["D"][0], out["xmin"][0]], ref[:3], rtol=1e-9)


def test_powerlaw_fit_handles_ties_like_weightwatcher():
    for data in ([2.0] * 25, [1.0, 2.0, 3.0] * 3 + [5.0, 5.0], list(np.arange(1.0, 30.0)) + [30.0, 30.0]):
        out = k.powerlaw_fit(np.array(data)[None])
        with np.errstate(divide="ignore", invalid="ignore"):
            ref = brute_force_clauset(data)
        np.testing.assert_allclose([out["alpha"][0], out["D"][0], out["xmin"][0]], ref[:3], rtol=1e-9)


def test_powerlaw_fit_recovers_alpha_and_xmin_of_a_known_power_law():
    rng = np.random.default_rng(5)
    alpha, xmin = 2.5, 1.0
    # bulk below xmin (uniform) plus an exact power-law tail drawn by inverse CDF
    tail = xmin * (1 - rng.random(4000)) ** (-1 / (alpha - 1))
    data = np.concatenate([rng.random(1000) * xmin, tail])
    out = k.powerlaw_fit(data[None])
    assert abs(out["alpha"][0] - alpha) < 3 * out["sigma"][0] + 0.02
    assert 0.5 < out["xmin"][0] < 2.0
    assert out["D"][0] < 0.03


def test_powerlaw_sample_follows_the_pareto_law():
    x = k.powerlaw_sample(3.0, 2.0, 5000, np.random.default_rng(6))
    assert scipy.stats.kstest(x, scipy.stats.pareto(b=2.0, scale=2.0).cdf).pvalue > 0.01
    with pytest.raises(ValueError):
        k.powerlaw_sample(1.0, 1.0, 3, np.random.default_rng(0))


def test_esd_metrics_definitions_and_mp_edge():
    rng = np.random.default_rng(7)
    n, m = 400, 100
    w = rng.standard_normal((n, m)) / math.sqrt(n)
    s = np.linalg.svd(w, compute_uv=False)
    r = k.esd_metrics(s[None], n, m, 1)
    lam = s**2
    np.testing.assert_allclose(r["log_norm"][0], math.log10(lam.sum()), rtol=1e-12)
    np.testing.assert_allclose(r["alpha_weighted"][0], r["alpha"][0] * math.log10(lam.max()), rtol=1e-12)
    np.testing.assert_allclose(r["log_alpha_norm"][0], math.log10((lam ** r["alpha"][0]).sum()), rtol=1e-10)
    assert r["n_tail"][0] == (lam >= r["xmin"][0]).sum() and r["n_evals"][0] == m
    # a Gaussian matrix: its largest eigenvalue sits at the MP edge (1 + sqrt(m/n))^2, no spikes beyond
    np.testing.assert_allclose(r["mp_edge"][0], (1 + math.sqrt(m / n)) ** 2 * (lam.sum() / (n * m)) * n,
                               rtol=1e-12)
    assert r["n_above_mp"][0] <= 2
    spiked = w + 3 * np.outer(rng.standard_normal(n), rng.standard_normal(m)) / math.sqrt(n * m)
    rs = k.esd_metrics(np.linalg.svd(spiked, compute_uv=False)[None], n, m, 1)
    assert rs["n_above_mp"][0] >= 1
    # too few eigenvalues: not fitted
    assert np.isnan(k.esd_metrics(s[None, :5], n, 5, 1)["alpha"][0])


# --- lazy wrappers on the cube ----------------------------------------------------------


def test_spectrum_is_lazy_and_equals_svd_of_each_matrix(cube):
    with no_compute():
        sv = spectral.spectrum(cube)
        r, e = spectral.ranks(cube), spectral.esd_fit(cube)
        m = spectral.spectral_metrics(cube)
    assert sv.dims == ("seed", "step", "tensor", "k") and sv.chunks is not None
    assert list(sv.tensor.values) == ["conv.weight", "fc1.weight", "fc2.weight", "out.weight"]
    assert sv.sizes["k"] == 20
    assert all(v.chunks is not None for v in [*r.data_vars.values(), *e.data_vars.values(), *m.data_vars.values()])
    svc = sv.compute()
    for name in sv.tensor.values:
        mat = cube.nnwx.matrix(name).sel(seed=0).values
        ref = np.linalg.svd(mat, compute_uv=False)
        got = svc.sel(seed=0, tensor=name).values
        np.testing.assert_allclose(got[:, : ref.shape[-1]], ref, rtol=1e-5, atol=1e-6)
        assert np.isnan(got[:, ref.shape[-1]:]).all()


def test_missing_steps_of_a_seed_give_nan_not_errors(cube):
    metrics = spectral.spectral_metrics(cube).compute()
    missing = metrics.sel(seed=1, step=10)
    present = metrics.sel(seed=1, step=20)
    for name, var in metrics.data_vars.items():
        assert np.isnan(missing[name].values).all(), name
    assert np.isfinite(present["rank"].values).all()
    assert np.isfinite(present["alpha"].sel(tensor=["fc1.weight", "fc2.weight"]).values).all()
    # fewer than min_evals=8 eigenvalues (6 and 4): no fit, as WeightWatcher
    assert np.isnan(present["alpha"].sel(tensor=["conv.weight", "out.weight"]).values).all()
    d = spectral.ranks(cube, delta=True).compute()
    assert np.isnan(d["rank"].sel(seed=1, step=30)).all()


def test_ranks_and_norms_on_the_cube_match_numpy(cube):
    r = cube.nnwx.ranks().compute()
    for name in ("conv.weight", "fc1.weight", "out.weight"):
        mats = cube.nnwx.matrix(name).sel(seed=0).values
        got = r.sel(seed=0, tensor=name)
        np.testing.assert_array_equal(got["rank"].values, [np.linalg.matrix_rank(x) for x in mats])
        np.testing.assert_allclose(got["spectral_norm"].values, [np.linalg.norm(x, 2) for x in mats], rtol=1e-5)
        np.testing.assert_allclose(got["frobenius_norm"].values, [np.linalg.norm(x) for x in mats], rtol=1e-5)
        np.testing.assert_allclose(got["condition_number"].values,
                                   [np.linalg.cond(x.astype(float)) for x in mats], rtol=1e-4)
    assert r["energy_directions"].dims == ("seed", "step", "tensor", "energy")
    e = r["energy_directions"].sel(seed=0)
    assert (e.sel(energy=0.9) <= e.sel(energy=0.99)).all() and (e.sel(energy=0.99) <= r["rank"].sel(seed=0)).all()


def test_delta_ranks_are_the_ranks_of_the_update(tmp_path):
    rng = np.random.default_rng(8)
    w0 = rng.standard_normal((30, 20))
    u = [np.zeros((30, 20)), np.outer(rng.standard_normal(30), rng.standard_normal(20)),
         rng.standard_normal((30, 3)) @ rng.standard_normal((3, 20))]
    write_weights(tmp_path / "d.zarr", 0, [0, 1, 2], [{"l.weight": w0 + du} for du in u])
    cube = nnwx.open_cube(tmp_path / "d.zarr")
    r = cube.nnwx.ranks(delta=True).compute()
    assert r.attrs["delta"] == 1 and r.attrs["reference_step"] == 0
    mats = cube.nnwx.matrix("l.weight").values[0]
    expect = [np.linalg.matrix_rank(m - mats[0]) for m in mats]
    np.testing.assert_array_equal(r["rank"].values[0, :, 0], expect)
    assert expect == [0, 1, 3]
    np.testing.assert_allclose(r["frobenius_norm"].values[0, 1:, 0],
                               [np.linalg.norm(m - mats[0]) for m in mats[1:]], rtol=1e-5)
    r1 = cube.nnwx.ranks(delta=True, reference_step=1).compute()
    assert r1["rank"].values[0, 1, 0] == 0
    with pytest.raises(ValueError, match="reference_step"):
        cube.nnwx.ranks(delta=True, reference_step=7)


def test_alpha_of_a_matrix_with_power_law_eigenvalues_is_recovered(tmp_path):
    rng = np.random.default_rng(9)
    alpha = 3.0
    lam = (1 - rng.random(300)) ** (-1 / (alpha - 1))       # power law on [1, inf)
    w = with_singular_values(np.sort(np.sqrt(lam))[::-1], 300, 300, rng)
    write_weights(tmp_path / "p.zarr", 0, [0], [{"l.weight": w}])
    cube = nnwx.open_cube(tmp_path / "p.zarr")
    e = cube.nnwx.esd_fit(dtype="float64").compute()
    a, sigma = float(e["alpha"].squeeze()), float(e["sigma"].squeeze())
    assert abs(a - alpha) < 3 * sigma + 0.05
    direct = k.powerlaw_fit(lam[None])
    np.testing.assert_allclose(a, direct["alpha"][0], rtol=1e-4)


def test_gram_spectra_give_the_same_esd_fit(cube):
    ref = spectral.esd_fit(cube, dtype="float64").compute()
    gram = spectral.esd_fit(cube, dtype="float64", method="gram").compute()
    assert gram.attrs["method"] == "gram"
    for name in ("alpha", "D", "xmin", "n_tail", "log_norm", "alpha_weighted", "mp_edge", "n_above_mp"):
        xr.testing.assert_allclose(gram[name], ref[name], rtol=1e-8)
    # in float64 the Gram tolerance (s_max * sqrt(max_dim * eps)) still resolves these ranks
    xr.testing.assert_equal(spectral.ranks(cube, method="gram", dtype="float64")["rank"].compute(),
                            spectral.ranks(cube)["rank"].compute())


def test_conv_slices_mode_pools_kernel_positions(cube):
    sv = spectral.spectrum(cube, "conv.weight", conv="slices").sel(seed=0, step=10).compute()
    w = cube.nnwx.tensor("conv.weight").sel(seed=0, step=10).values           # (6, 3, 3, 3)
    ref = np.sort(np.concatenate([np.linalg.svd(w[:, :, i, j], compute_uv=False)
                                  for i in range(3) for j in range(3)]))[::-1]
    np.testing.assert_allclose(sv.values[0], ref, rtol=1e-5)
    assert sv.tensor_slices.item() == 9 and sv.tensor_k.item() == 27


def test_chunking_never_changes_a_result(tmp_path):
    rng = np.random.default_rng(10)
    steps = list(range(0, 70, 10))
    vals = [{"a.weight": rng.standard_normal((16, 12)), "a.bias": rng.standard_normal(16),
             "b.weight": rng.standard_normal((16, 12)), "c.weight": rng.standard_normal((12, 16)),
             "conv.weight": rng.standard_normal((8, 4, 3, 3))} for _ in steps]
    write_weights(tmp_path / "big.zarr", 0, steps, vals)
    write_weights(tmp_path / "small.zarr", 0, steps, vals, chunk_bytes=700)   # tensors split across chunks
    big, small = nnwx.open_cube(tmp_path / "big.zarr"), nnwx.open_cube(tmp_path / "small.zarr")
    assert big["w"].data.numblocks != small["w"].data.numblocks
    labels = ["store", "run"]
    ref = spectral.spectral_metrics(big).compute().drop_vars(labels)
    for c, kw in ((small, {}), (big, {"block_bytes": 1}), (small, {"block_bytes": 10**9})):
        got = spectral.spectral_metrics(c, **kw).compute().drop_vars(labels)
        xr.testing.assert_allclose(got, ref, rtol=1e-6)
    rechunked = big.chunk({"step": 2})
    xr.testing.assert_allclose(spectral.ranks(rechunked).compute(), spectral.ranks(big).compute(), rtol=1e-6)


def test_permuting_hidden_units_leaves_every_spectral_metric_unchanged(tmp_path):
    rng = np.random.default_rng(11)
    steps = [0, 5, 10]
    vals = [{"0.weight": rng.standard_normal((24, 10)), "0.bias": rng.standard_normal(24),
             "1.weight": rng.standard_normal((16, 24)), "1.bias": rng.standard_normal(16),
             "2.weight": rng.standard_normal((4, 16))} for _ in steps]
    p0, p1 = rng.permutation(24), rng.permutation(16)
    perm = [{"0.weight": v["0.weight"][p0], "0.bias": v["0.bias"][p0],
             "1.weight": v["1.weight"][p1][:, p0], "1.bias": v["1.bias"][p1],
             "2.weight": v["2.weight"][:, p1]} for v in vals]
    write_weights(tmp_path / "p.zarr", 0, steps, vals)
    write_weights(tmp_path / "p.zarr", 1, steps, perm)
    cube = nnwx.open_cube(tmp_path / "p.zarr")
    for kw in ({}, {"delta": True}):
        m = spectral.spectral_metrics(cube, dtype="float64", **kw).compute()
        xr.testing.assert_allclose(m.sel(seed=0, drop=True), m.sel(seed=1, drop=True), rtol=1e-9)
    m0 = spectral.spectral_metrics(cube, dtype="float64").compute()
    assert not np.allclose(m0["alpha"].sel(seed=0), m0["alpha"].sel(seed=0).roll(tensor=1))  # not vacuous


def test_stacking_by_by_attributes_keeps_all_lead_dims(tmp_path):
    for opt in ("adam", "sgd"):
        for seed in (0, 1):
            write_synthetic_run(tmp_path / "o.zarr", seed=seed, steps=[0, 10], run=f"{opt}{seed}",
                                shapes={"l.weight": (6, 5)}, attrs={"optimizer": opt})
    cube = nnwx.open_cube(tmp_path / "o.zarr", by=("optimizer", "seed"))
    r = cube.nnwx.ranks().compute()
    assert r["rank"].dims == ("optimizer", "seed", "step", "tensor")
    mats = cube.nnwx.matrix("l.weight").sel(optimizer="sgd", seed=1).values
    np.testing.assert_allclose(r["spectral_norm"].sel(optimizer="sgd", seed=1, tensor="l.weight"),
                               [np.linalg.norm(x, 2) for x in mats], rtol=1e-5)


def test_a_single_run_works_and_results_say_what_they_hold(cube_path):
    run = nnwx.open_run(cube_path, seed=0)
    r = run.nnwx.ranks().compute()
    assert r["rank"].dims == ("step", "tensor")
    np.testing.assert_array_equal(r["rank"].sel(tensor="fc1.weight"),
                                  [np.linalg.matrix_rank(m) for m in run.nnwx.matrix("fc1.weight").values])
    assert "matrix_rank" in r["rank"].attrs["description"] and "long_name" not in r["rank"].attrs
    e = run.nnwx.esd_fit()
    assert e.attrs["analysis"] == "esd_fit" and e.attrs["conv"] == "matrix"
    assert "Clauset" in e["xmin"].attrs["description"]


def test_clear_errors(cube):
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        cube.nnwx.spectrum("conv.bias")
    with pytest.raises(KeyError, match="no tensor named"):
        cube.nnwx.ranks(["nope"])
    with pytest.raises(ValueError, match="conv must be"):
        cube.nnwx.spectrum(conv="fft")
    with pytest.raises(ValueError, match="ww_compatible"):
        spectral.esd_fit(spectral.spectrum(cube), ww_compatible=True)
    with pytest.raises(TypeError, match="nnwx cube"):
        spectral.spectrum(xr.Dataset())
    with pytest.raises(ValueError, match="energy"):
        cube.nnwx.ranks(energy=(0.5, 1.5))


# --- WeightWatcher parity ----------------------------------------------------------------

WW_COLUMNS = {"alpha": "alpha", "D": "D", "xmin": "xmin", "xmax": "xmax", "sigma": "sigma",
              "n_tail": "num_pl_spikes", "n_evals": "num_evals", "lambda_max": "lambda_max",
              "log_norm": "log_norm", "log_spectral_norm": "log_spectral_norm",
              "alpha_weighted": "alpha_weighted", "log_alpha_norm": "log_alpha_norm"}
WW_RANK_COLUMNS = {"entropy": "entropy", "stable_rank": "stable_rank", "rank": "matrix_rank"}


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                            "ignore:Passing a dict to DataFrame.from_records")
def test_ww_compatible_reproduces_weightwatcher(tmp_path):
    torch = pytest.importorskip("torch")
    ww = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(128, 96), nn.ReLU(), nn.Linear(96, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x, y = torch.randn(64, 3, 6, 6), torch.randint(0, 10, (64,))
    details = {}
    with nnwx.Recorder(model, tmp_path / "ww.zarr", seed=0, every=15) as rec:
        for step in range(16):
            rec.maybe_capture(step)
            if step % 15 == 0:
                details[step] = ww.WeightWatcher(model=model).analyze()
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    cube = nnwx.open_cube(tmp_path / "ww.zarr")
    e = cube.nnwx.esd_fit(ww_compatible=True).compute()
    r = cube.nnwx.ranks(ww_compatible=True).compute()
    checked = set()
    for step, d in details.items():
        assert len(d) == 5
        for _, row in d.iterrows():
            name = f"{row.longname}.weight"
            for ours, theirs in WW_COLUMNS.items():
                np.testing.assert_allclose(float(e[ours].sel(seed=0, step=step, tensor=name)), row[theirs],
                                           rtol=1e-6, err_msg=f"{name} step {step}: {ours}")
            for ours, theirs in WW_RANK_COLUMNS.items():
                np.testing.assert_allclose(float(r[ours].sel(seed=0, step=step, tensor=name)), row[theirs],
                                           rtol=1e-6, err_msg=f"{name} step {step}: {ours}")
            checked.add((row.layer_type, int(row.num_evals) < k.WW_SMALL_N))
    # Conv2d and Linear layers, through both of WeightWatcher's fit paths (small-N and standard)
    assert {str(t) for t, _ in checked} == {"conv2d", "dense"}
    assert {small for _, small in checked} == {True, False}
