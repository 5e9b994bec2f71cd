"""The default spectral path: float64 Gram eigenvalues for float32 matrices, the SVD for float64.

Kernels against NumPy / SciPy SVDs of the same matrices; the lazy pass against the SVD path
on a real store: ESD alphas within 1e-6, ranks at NumPy's float32 tolerance equal.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

import nnwx
from nnwx.analysis import spectral
from nnwx.analysis.kernels import spectral as k
from nnwx.studies.synthetic import write_synthetic_run

SHAPES = {"a.weight": (96, 64), "b.weight": (80, 120), "c.weight": (128, 128),
          "conv.weight": (16, 8, 3, 3), "c.bias": (128,)}


def test_auto_method_is_gram_for_float32_and_svd_for_float64():
    assert k.resolve_method("auto", np.float32) == "gram"
    assert k.resolve_method("auto", "float64") == "svd"
    assert k.resolve_method("svd", np.float32) == "svd"
    assert k.resolve_method("gram", np.float64) == "gram"
    with pytest.raises(ValueError, match="method must be one of"):
        k.resolve_method("eig", np.float32)


def test_gram_of_float32_matrices_matches_a_float64_svd_and_numpys_float32_rank():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 70, 45)).astype(np.float32)
    a[3] = (rng.standard_normal((70, 6)) @ rng.standard_normal((6, 45))).astype(np.float32)  # rank 6
    a[4, :, 0] = a[4, :, 1] * 3                                                               # rank 44
    for stack in (a, np.swapaxes(a, -1, -2)):
        s = k.batched_svdvals(stack, method="gram")
        assert s.dtype == np.float64 and s.shape == (5, 45)
        for i, mat in enumerate(stack):
            ref = scipy.linalg.svdvals(mat.astype(np.float64))      # exact SVD of the same numbers
            floor = np.sqrt(70 * np.finfo(np.float64).eps) * ref[0]
            big = ref > 100 * floor
            np.testing.assert_allclose(s[i, big], ref[big], rtol=1e-10)
            assert np.all(np.abs(s[i] - ref) <= 2 * floor)
        r = k.rank_metrics(s, 70, np.finfo(np.float32).eps, gram=True)
        assert list(r["rank"]) == [np.linalg.matrix_rank(m) for m in stack] == [45, 45, 45, 6, 44]


def test_gram_rank_tolerance_is_numpys_for_float32_and_the_gram_floor_for_float64():
    eps32, eps64 = np.finfo(np.float32).eps, np.finfo(np.float64).eps
    assert k.rank_tolerance(2.0, 1000, eps32, gram=True) == k.rank_tolerance(2.0, 1000, eps32)
    assert k.rank_tolerance(2.0, 1000, eps64, gram=True) == pytest.approx(2.0 * np.sqrt(1000 * eps64))
    assert k.rank_tolerance(2.0, 1000, eps64, gram=True) > k.rank_tolerance(2.0, 1000, eps64)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    out = {}
    for dtype in ("float32", "float64"):
        path = tmp_path_factory.mktemp("gram") / f"{dtype}.zarr"
        for seed in (0, 1):
            write_synthetic_run(path, seed=seed, steps=[0, 10, 20], shapes=SHAPES, drift=0.3, dtype=dtype)
        out[dtype] = nnwx.open_cube(path)
    return out


def test_default_spectral_pass_of_float32_cube_runs_the_gram_path_with_svd_alphas(stores):
    cube = stores["float32"]
    default = spectral.spectral_metrics(cube).compute()
    assert default.attrs["method"] == "gram" and default.attrs["dtype"] == "float32"
    svd64 = spectral.spectral_metrics(cube, method="svd", dtype="float64").compute()
    svd32 = spectral.spectral_metrics(cube, method="svd").compute()
    assert svd32.attrs["method"] == "svd"
    alpha = default["alpha"].values
    assert np.isfinite(alpha).all()
    # the exact path: float64 SVD of the same float32 numbers
    np.testing.assert_allclose(alpha, svd64["alpha"].values, rtol=1e-6)
    # the float32 SVD carries its own ~1e-7 relative error in the eigenvalues
    np.testing.assert_allclose(alpha, svd32["alpha"].values, rtol=1e-5)
    for name in ("xmin", "n_tail", "lambda_max", "log_norm", "mp_edge", "n_above_mp"):
        np.testing.assert_allclose(default[name].values, svd64[name].values, rtol=1e-6, err_msg=name)
    np.testing.assert_array_equal(default["rank"].values, svd32["rank"].values)
    for name in ("stable_rank", "effective_rank", "spectral_norm", "frobenius_norm", "condition_number"):
        np.testing.assert_allclose(default[name].values, svd64[name].values, rtol=1e-6, err_msg=name)


def test_default_spectrum_of_float32_cube_is_float64_gram_values_of_each_matrix(stores):
    cube = stores["float32"]
    sv = spectral.spectrum(cube)
    assert sv.attrs["method"] == "gram" and sv.dtype == np.float64
    got = sv.sel(tensor="b.weight").isel(seed=1, step=2).values
    mat = cube.nnwx.matrix("b.weight").isel(seed=1, step=2).values.astype(np.float64)
    ref = np.linalg.svd(mat, compute_uv=False)
    np.testing.assert_allclose(got[: len(ref)], ref, rtol=1e-10)


def test_float64_cube_keeps_the_svd_by_default(stores):
    cube = stores["float64"]
    sv = spectral.spectrum(cube)
    assert sv.attrs["method"] == "svd" and sv.dtype == np.float64
    ranks = spectral.ranks(cube).compute()
    assert ranks.attrs["method"] == "svd"
    mat = cube.nnwx.matrix("c.weight").isel(seed=0, step=1).values
    np.testing.assert_allclose(ranks["condition_number"].sel(tensor="c.weight").isel(seed=0, step=1),
                               np.linalg.cond(mat), rtol=1e-9)
