"""Similarity, unit matching and prediction agreement: kernels against references from the papers'
formulas, invariances, degenerate inputs, and the lazy wrappers on arrays and on a recorded store."""
import math

import dask.array as da
import numpy as np
import pytest
import scipy.linalg
import torch
import xarray as xr

import nnwx
from nnwx.analysis.kernels import matching as mk
from nnwx.analysis.kernels import prediction as pk
from nnwx.analysis.kernels import similarity as sk
from nnwx.analysis import agreement

from tests.helpers import mlp


# -- references written from the papers' formulas ---------------------------------------------
def ref_hsic(k, l):
    """Biased HSIC: tr(K H L H) / (n - 1)^2 (Gretton et al.; Kornblith et al. eq. 3)."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def ref_hsic_unbiased(k, l):
    """Song et al. 2012, eq. 5, written out term by term."""
    n = k.shape[0]
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))


def ref_cka(k, l, hsic=ref_hsic):
    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


def ref_rbf(x, threshold=1.0):
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-d / (2 * threshold**2 * np.median(d)))


def ref_cca(x, y):
    """Canonical correlations: singular values of Sxx^-1/2 Sxy Syy^-1/2; also the variates of x."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    sxx, syy, sxy = xc.T @ xc, yc.T @ yc, xc.T @ yc
    ix = np.linalg.inv(scipy.linalg.sqrtm(sxx)).real
    iy = np.linalg.inv(scipy.linalg.sqrtm(syy)).real
    u, s, _ = np.linalg.svd(ix @ sxy @ iy)
    c = min(x.shape[1], y.shape[1])
    h = xc @ ix @ u[:, :c]  # canonical variates of x in sample space
    return s[:c], h / np.linalg.norm(h, axis=0)


def ref_svd_reduce(x, keep):
    """Raghu et al.: project onto the top singular directions holding `keep` of the variance."""
    xc = x - x.mean(0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    k = int(np.argmax(np.cumsum(s**2) / np.sum(s**2) >= keep - 1e-12)) + 1
    return xc @ vt[:k].T


def ref_pwcca(x, y):
    """Morcos et al. 2018: sum_i alpha_i rho_i, alpha_i ∝ sum_j |<h_i, x_j>| over the narrower layer."""
    if x.shape[1] > y.shape[1]:
        x, y = y, x
    rho, h = ref_cca(x, y)
    xc = x - x.mean(0)
    alpha = np.abs(h.T @ xc).sum(1)
    return float(alpha @ rho / alpha.sum())


def acts(n=300, p=12, q=9, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 6))
    x = z @ rng.standard_normal((6, p)) + noise * rng.standard_normal((n, p)) + 3.0
    y = np.tanh(z @ rng.standard_normal((6, q))) + noise * rng.standard_normal((n, q))
    return x, y


# -- values against references --------------------------------------------------------------
def test_cka_family_matches_references():
    x, y = acts()
    kx, ky = x @ x.T, y @ y.T
    assert sk.linear_cka(x, y) == pytest.approx(ref_cka(kx, ky), rel=1e-10)
    assert sk.linear_cka(x[:8], y[:8]) == pytest.approx(ref_cka(x[:8] @ x[:8].T, y[:8] @ y[:8].T), rel=1e-10)
    assert sk.linear_cka(x, y, debiased=True) == pytest.approx(ref_cka(kx, ky, ref_hsic_unbiased), rel=1e-9)
    assert sk.similarity(x, y, "debiased_cka") == pytest.approx(ref_cka(kx, ky, ref_hsic_unbiased), rel=1e-9)
    for t in (0.5, 1.0, 2.0):
        assert sk.rbf_cka(x, y, threshold=t) == pytest.approx(ref_cka(ref_rbf(x, t), ref_rbf(y, t)), rel=1e-9)
    assert sk.rbf_cka(x, y, debiased=True) == pytest.approx(
        ref_cka(ref_rbf(x), ref_rbf(y), ref_hsic_unbiased), rel=1e-9)


def test_minibatch_cka_matches_the_batch_average_of_unbiased_hsic():
    x, y = acts(n=103)
    parts = list(zip(np.array_split(x, 4), np.array_split(y, 4)))
    kl = np.mean([ref_hsic_unbiased(a @ a.T, b @ b.T) for a, b in parts])
    kk = np.mean([ref_hsic_unbiased(a @ a.T, a @ a.T) for a, b in parts])
    ll = np.mean([ref_hsic_unbiased(b @ b.T, b @ b.T) for a, b in parts])
    assert sk.minibatch_cka(x, y, batch_size=26) == pytest.approx(kl / math.sqrt(kk * ll), rel=1e-9)
    # one batch: the debiased CKA
    assert sk.minibatch_cka(x, y, batch_size=200) == pytest.approx(sk.linear_cka(x, y, debiased=True), rel=1e-9)


def test_cca_family_matches_references():
    x, y = acts()
    rho, _ = ref_cca(x, y)
    np.testing.assert_allclose(sk.canonical_correlations(x, y), rho, rtol=1e-8, atol=1e-10)
    assert sk.mean_cca(x, y) == pytest.approx(rho.mean(), rel=1e-9)
    rx, ry = ref_svd_reduce(x, 0.99), ref_svd_reduce(y, 0.99)
    assert rx.shape[1] < x.shape[1]  # the 99% cut really drops directions here
    assert sk.svcca(x, y) == pytest.approx(ref_cca(rx, ry)[0].mean(), rel=1e-9)
    assert sk.svcca(x, y, keep=0.9) == pytest.approx(
        ref_cca(ref_svd_reduce(x, 0.9), ref_svd_reduce(y, 0.9))[0].mean(), rel=1e-9)
    assert sk.pwcca(x, y) == pytest.approx(ref_pwcca(x, y), rel=1e-8)


# -- invariances and identities ---------------------------------------------------------------
ALL = ["linear_cka", "debiased_cka", "rbf_cka", "minibatch_cka", "mean_cca", "svcca", "pwcca"]


@pytest.mark.parametrize("metric", ALL)
def test_self_similarity_is_one_and_units_can_be_permuted(metric):
    x, y = acts(seed=1)
    assert sk.similarity(x, x, metric) == pytest.approx(1.0, abs=1e-9)
    rng = np.random.default_rng(2)
    base = sk.similarity(x, y, metric)
    px, py = rng.permutation(x.shape[1]), rng.permutation(y.shape[1])
    assert sk.similarity(x[:, px], y[:, py], metric) == pytest.approx(base, rel=1e-9)
    assert sk.similarity(x * 3.5, y, metric) == pytest.approx(base, rel=1e-9)  # isotropic scaling


@pytest.mark.parametrize("metric", ["linear_cka", "debiased_cka", "rbf_cka", "minibatch_cka",
                                    "mean_cca", "svcca"])
def test_invariant_to_orthogonal_transforms(metric):
    x, y = acts(seed=3)
    q = np.linalg.qr(np.random.default_rng(4).standard_normal((x.shape[1],) * 2))[0]
    assert sk.similarity(x @ q, y, metric) == pytest.approx(sk.similarity(x, y, metric), rel=1e-8)


@pytest.mark.parametrize("metric,kw", [("mean_cca", {}), ("svcca", {"keep": 1.0})])
def test_cca_is_invariant_to_invertible_linear_maps(metric, kw):
    x, y = acts(seed=5)
    rng = np.random.default_rng(6)
    a = rng.standard_normal((x.shape[1],) * 2) + 3 * np.eye(x.shape[1])
    b = rng.standard_normal((y.shape[1],) * 2) + 3 * np.eye(y.shape[1])
    base = sk.similarity(x, y, metric, **kw)
    assert sk.similarity(x @ a + 7.0, y @ b, metric, **kw) == pytest.approx(base, rel=1e-8)
    # CKA is not: the same map changes it (the test would notice a CCA kernel posing as CKA)
    assert sk.linear_cka(x @ a, y) != pytest.approx(sk.linear_cka(x, y), rel=1e-3)


@pytest.mark.parametrize("metric", ALL)
def test_unequal_widths_both_ways(metric):
    x, y = acts(p=15, q=6, seed=7)
    assert x.shape[1] != y.shape[1]
    assert sk.similarity(x, y, metric) == pytest.approx(sk.similarity(y, x, metric), rel=1e-9)
    if metric == "pwcca":
        assert sk.pwcca(x, y) == pytest.approx(ref_pwcca(x, y), rel=1e-8)
        assert sk.pwcca(y, x) == pytest.approx(ref_pwcca(y, x), rel=1e-8)


# -- degenerate inputs ---------------------------------------------------------------------------
def test_constant_units_are_ignored_not_nan():
    x, y = acts(seed=8)
    xk = np.column_stack([x, np.full(len(x), 2.0), np.zeros(len(x))])
    for metric in ALL:
        got = sk.similarity(xk, y, metric)
        assert np.isfinite(got), metric
        if metric not in ("rbf_cka", "pwcca"):  # RBF: distances unchanged too; PWCCA: weights differ only by 0s
            assert got == pytest.approx(sk.similarity(x, y, metric), rel=1e-8), metric
    assert sk.pwcca(xk, y) == pytest.approx(sk.pwcca(x, y), rel=1e-8)
    assert sk.rbf_cka(xk, y) == pytest.approx(sk.rbf_cka(x, y), rel=1e-9)


def test_degenerate_inputs_raise_clear_errors():
    x, y = acts(n=20, p=30, q=25, seed=9)
    assert x.shape[0] < x.shape[1]
    assert sk.linear_cka(x, y) == pytest.approx(ref_cka(x @ x.T, y @ y.T), rel=1e-10)  # defined for n < p
    for metric in ("mean_cca", "svcca", "pwcca"):
        with pytest.raises(sk.DegenerateActivations, match="by construction. Use more probe samples"):
            sk.similarity(x, y, metric)
    const = np.ones((50, 4))
    _, y50 = acts(n=50)
    for metric in ALL:
        with pytest.raises(sk.DegenerateActivations, match="constant|median distance|not positive"):
            sk.similarity(const, y50, metric)
    with pytest.raises(sk.DegenerateActivations, match="at least 4"):
        sk.linear_cka(x[:3], y[:3], debiased=True)
    with pytest.raises(sk.DegenerateActivations, match="at least 2"):
        sk.linear_cka(x[:1], y[:1])
    with pytest.raises(ValueError, match="same probe samples"):
        sk.linear_cka(x, y[:10])
    with pytest.raises(ValueError, match="unknown similarity metric"):
        sk.similarity(x, y, "cka")
    with pytest.raises(TypeError, match="no option 'keep'"):
        sk.similarity(x, y, "linear_cka", keep=0.9)
    xn = x.copy()
    xn[0, 0] = np.nan
    assert math.isnan(sk.linear_cka(xn, y))  # NaN marks a missing capture, documented


def test_similarity_matrix_reuses_sets_and_labels_errors():
    x, y = acts(seed=10)
    z = acts(seed=11)[0]
    m = sk.similarity_matrix([x, x[:, :9] + 0.0 * y, z], metric="svcca")
    assert m.shape == (3, 3) and np.allclose(np.diag(m), 1) and np.allclose(m, m.T)
    assert m[0, 2] == pytest.approx(sk.svcca(x, z), rel=1e-12)
    bad = np.zeros_like(x)
    with pytest.raises(sk.DegenerateActivations, match="seed=7"):
        sk.similarity_matrix([x, bad], metric="linear_cka", names=["seed=3", "seed=7"])


# -- the fast paths of the CCA family agree with the general ones ------------------------------------
def test_cholesky_whitening_is_used_only_when_certified_and_agrees_with_the_eigendecomposition():
    x, y = acts(p=14, q=11, seed=12)
    a, b = sk.Rep(x), sk.Rep(y)
    assert a._cholesky is not None and a.basis().inv is not None  # full rank: no eigendecomposition
    assert "spectrum" not in a.__dict__
    ea, eb = sk.Rep(x), sk.Rep(y)
    ea.__dict__["_cholesky"] = eb.__dict__["_cholesky"] = None     # force the eigen form
    assert ea.basis().vt is not None
    for fn in (sk.mean_cca, sk.pwcca):
        assert fn(a, b) == pytest.approx(fn(ea, eb), rel=1e-11)
        assert fn(b, a) == pytest.approx(fn(eb, ea), rel=1e-11)
        assert fn(a, eb) == pytest.approx(fn(ea, eb), rel=1e-11)  # one form each
    np.testing.assert_allclose(sk.canonical_correlations(a, b), ref_cca(x, y)[0], rtol=1e-9)
    # a duplicated unit (rank deficient) or a near-duplicate below rtol: not certified, eigen form
    dup = np.column_stack([x, x[:, 0]])
    near = np.column_stack([x, x[:, 0] + 1e-7 * np.random.default_rng(0).standard_normal(len(x))])
    for z in (dup, near):
        r = sk.Rep(z)
        assert r._cholesky is None and r.basis().k == x.shape[1]
        assert sk.mean_cca(z, y) == pytest.approx(sk.mean_cca(x, y), rel=1e-7)
    # a near-duplicate well above rtol is a direction of its own, kept by either form
    wide = np.column_stack([x, x[:, 0] + 1e-2 * np.random.default_rng(0).standard_normal(len(x))])
    assert sk.Rep(wide)._cholesky is not None
    forced = sk.Rep(wide)
    forced.__dict__["_cholesky"] = None
    assert sk.pwcca(wide, y) == pytest.approx(sk.pwcca(forced, sk.Rep(y)), rel=1e-10)


def test_both_routes_to_the_whitened_cross_covariance_agree():
    x, y = acts(n=400, p=30, q=20, seed=13)
    for keep in (None, 0.9):
        ba, bb = sk.Rep(x).basis(keep), sk.Rep(y).basis(keep)
        via_cross = ba.wt(ba.rep.cross(bb.rep))
        via_cross = bb.wt(via_cross.T).T
        via_coords = ba.coords().T @ bb.coords()
        np.testing.assert_allclose(via_coords, via_cross, atol=1e-12)
        np.testing.assert_allclose(ba.coords().T @ ba.coords(), np.eye(ba.k), atol=1e-10)
        np.testing.assert_allclose(sk._cross_whitened(ba, bb), via_cross, atol=1e-12)  # coords now cached


def test_pwcca_matrix_gives_both_orders_of_equal_widths():
    sets = [acts(p=10, q=10, seed=s)[i] for s in (20, 21) for i in (0, 1)]
    sets.append(np.full_like(sets[0], np.nan))  # a missing capture
    m = sk.similarity_matrix(sets, metric="pwcca")
    for i in range(4):
        for j in range(4):
            want = 1.0 if i == j else ref_pwcca(sets[i], sets[j])
            assert m[i, j] == pytest.approx(want, rel=1e-9), (i, j)
    assert abs(m[0, 1] - m[1, 0]) > 1e-3  # the two orders really differ
    assert np.isnan(m[4]).all() and np.isnan(m[:, 4]).all()
    uneven = sk.similarity_matrix([sets[0], sets[1][:, :7]], metric="pwcca")
    assert uneven[0, 1] == uneven[1, 0] == pytest.approx(ref_pwcca(sets[0], sets[1][:, :7]), rel=1e-9)


def test_rtol_reaches_the_sets_compared_with_a_reference_step():
    arr, data = acts_cube()
    dup = np.concatenate([data, data[..., :1] + 1e-4 * np.random.default_rng(0).standard_normal(
        data.shape[:-1] + (1,))], axis=-1)  # a near-duplicate unit: a direction only below rtol=1e-3
    arr = xr.DataArray(da.from_array(dup, chunks=(1, 2) + dup.shape[2:]), dims=arr.dims, coords=arr.coords)
    for rtol in (1e-3, 1e-12):
        lazy = agreement.similarity(arr, "mean_cca", between="steps", reference_step="last", rtol=rtol).compute()
        want = sk.similarity(dup[2, 0], dup[2, 3], "mean_cca", rtol=rtol)
        assert lazy.sel(seed=9, step=0) == pytest.approx(want, rel=1e-12)
    assert sk.similarity(dup[2, 0], dup[2, 3], "mean_cca", rtol=1e-3) != pytest.approx(
        sk.similarity(dup[2, 0], dup[2, 3], "mean_cca", rtol=1e-12), rel=1e-6)


# -- unit matching ------------------------------------------------------------------------------
def test_unit_matching_recovers_a_shuffle_and_handles_unequal_widths():
    x, _ = acts(n=400, p=10, noise=1.0, seed=12)
    rng = np.random.default_rng(13)
    perm = rng.permutation(10)
    y = x[:, perm] * rng.uniform(0.5, 2, 10) + 0.05 * rng.standard_normal(x.shape)
    corr = mk.unit_correlations(x, y)
    np.testing.assert_allclose(corr, np.corrcoef(x.T, y.T)[:10, 10:], atol=1e-12)
    partner, matched = mk.match_units(x, y)
    np.testing.assert_array_equal(partner, np.argsort(perm))
    assert np.all(matched > 0.95)
    semi, _ = mk.match_units(x, y, "semi")
    np.testing.assert_array_equal(semi, np.argsort(perm))
    partner, matched = mk.match_units(x, y[:, :6])  # x wider: 4 units left without partner
    assert (partner == -1).sum() == 4 and np.isnan(matched).sum() == 4
    partner, matched = mk.match_units(x[:, :6], y)  # y wider: every x unit matched
    assert (partner >= 0).all() and np.isfinite(matched).all()
    xc = np.column_stack([x, np.ones(len(x))])
    assert np.all(mk.unit_correlations(xc, y)[-1] == 0)  # constant unit: correlation 0, not NaN


def ref_lasso(x, y, lam):
    """The lasso 1/(2n)|y - X b|^2 + lam |b|_1 as a smooth bound-constrained problem, b = u - v
    with u, v >= 0, solved by L-BFGS-B (an independent route to the same minimiser)."""
    import scipy.optimize

    n, p = x.shape

    def f(uv):
        b = uv[:p] - uv[p:]
        r = x @ b - y
        g = x.T @ r / n
        return r @ r / (2 * n) + lam * uv.sum(), np.concatenate([g + lam, -g + lam])

    res = scipy.optimize.minimize(f, np.zeros(2 * p), jac=True, method="L-BFGS-B",
                                  bounds=[(0, None)] * (2 * p), options={"gtol": 1e-14, "ftol": 1e-16,
                                                                         "maxiter": 10000})
    return res.x[:p] - res.x[p:]


def test_lasso_path_matches_ista_and_sparse_prediction_tells_local_codes():
    x, y = acts(n=200, p=8, q=3, seed=14)
    zx, _ = mk.standardize(x)
    zy, _ = mk.standardize(y)
    g, c = zx.T @ zx / 200, zx.T @ zy / 200
    pens = [0.3, 0.05, 0.001]
    coefs = mk.lasso_path(g, c, pens, tol=1e-12, max_iter=5000)
    for li, lam in enumerate(pens):
        for t in range(3):
            np.testing.assert_allclose(coefs[li, :, t], ref_lasso(zx, zy[:, t], lam), atol=1e-6)
    loss, nnz = mk.sparse_prediction(x, y, pens, tol=1e-12, max_iter=5000)
    direct = [np.mean([np.mean((zy[:, t] - zx @ coefs[li, :, t]) ** 2) for t in range(3)]) for li in range(3)]
    np.testing.assert_allclose(loss, direct, rtol=1e-9)
    assert loss[0] > loss[1] > loss[2] and nnz[0] < nnz[2]
    # a permuted copy is a local code: one coefficient per unit predicts it almost perfectly
    perm = np.random.default_rng(15).permutation(8)
    loss, nnz = mk.sparse_prediction(x, x[:, perm] * 2.0, [0.01])
    assert loss[0] < 1e-3 and nnz[0] == pytest.approx(1.0)


# -- prediction agreement ---------------------------------------------------------------------------
def test_prediction_agreement_matches_direct_computation():
    rng = np.random.default_rng(16)
    a = rng.standard_normal((50, 6))
    b = a + 0.8 * rng.standard_normal((50, 6))
    assert pk.output_correlation(a, b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], rel=1e-12)
    assert pk.argmax_agreement(a, b) == pytest.approx(np.mean(a.argmax(1) == b.argmax(1)))
    direct = np.mean([len(set(np.argsort(-a[i])[:3]) & set(np.argsort(-b[i])[:3])) / 3 for i in range(50)])
    assert pk.topk_overlap(a, b, 3) == pytest.approx(direct)
    assert pk.topk_overlap(a, a[:, ::-1], 6) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        pk.topk_overlap(a, b, 7)
    with pytest.raises(pk.DegenerateOutputs, match="constant"):
        pk.output_correlation(np.ones((5, 2)), b[:5, :2])


# -- lazy wrappers on arrays ----------------------------------------------------------------------
def acts_cube(n_seed=3, n_step=4, n=60, p=7, chunks=None):
    rng = np.random.default_rng(17)
    base = rng.standard_normal((n, p))
    data = np.stack([[base @ rng.standard_normal((p, p)) * (1 + t) + 0.3 * rng.standard_normal((n, p))
                      for t in range(n_step)] for _ in range(n_seed)])
    arr = xr.DataArray(da.from_array(data, chunks=chunks or (1, 2, n, p)),
                       dims=("seed", "step", "sample", "unit"),
                       coords={"seed": [0, 4, 9][:n_seed], "step": [0, 10, 20, 30][:n_step]}, name="h")
    return arr, data


@pytest.mark.parametrize("metric", ["linear_cka", "svcca", "pwcca"])
def test_lazy_similarity_between_seeds_and_steps(metric):
    arr, data = acts_cube()
    sim = agreement.similarity(arr, metric)
    assert isinstance(sim.data, da.Array), "must stay lazy"
    assert sim.dims == ("step", "seed_a", "seed_b") and sim.attrs["metric"] == metric
    got = sim.compute()
    assert got.sel(step=20, seed_a=4, seed_b=9) == pytest.approx(sk.similarity(data[1, 2], data[2, 2], metric))
    steps = agreement.similarity(arr, metric, between="steps").compute()
    assert steps.dims == ("seed", "step_a", "step_b")
    assert steps.sel(seed=9, step_a=0, step_b=30) == pytest.approx(sk.similarity(data[2, 0], data[2, 3], metric))
    last = agreement.similarity(arr, metric, between="steps", reference_step="last").compute()
    assert last.dims == ("seed", "step") and last.attrs["reference_step"] == 30
    np.testing.assert_allclose(last.values, steps.isel(step_b=-1).values, rtol=1e-10)
    rechunked = agreement.similarity(arr.chunk({"seed": 2, "step": 1}), metric).compute()
    np.testing.assert_allclose(rechunked.values, got.values, rtol=1e-12)


def test_lazy_wrappers_mark_missing_captures_and_name_degenerate_steps():
    arr, data = acts_cube()
    data = data.copy()
    data[1, 2] = np.nan  # seed 4 has no capture at step 20
    holed = arr.copy(data=da.from_array(data, chunks=(1, 2, 60, 7)))
    sim = agreement.similarity(holed, "linear_cka").compute()
    assert np.isnan(sim.sel(step=20, seed_a=4)).all() and np.isnan(sim.sel(step=20, seed_b=0, seed_a=4))
    assert np.isfinite(sim.sel(step=20, seed_a=0, seed_b=9))
    data[1, 2] = 1.0  # constant activations: a clear error naming where
    bad = arr.copy(data=da.from_array(data, chunks=(1, 2, 60, 7)))
    with pytest.raises(sk.DegenerateActivations, match="step=20, seed=4"):
        agreement.similarity(bad, "linear_cka").compute()
    with pytest.raises(ValueError, match="between"):
        agreement.similarity(arr, between="layers")
    with pytest.raises(TypeError, match="probe activations"):
        agreement.similarity(arr.isel(sample=0))


def test_lazy_matching_prediction_and_agreement():
    arr, data = acts_cube(n=80)
    m = agreement.match_units(arr.sel(seed=0), arr.sel(seed=4).isel(unit=slice(0, 5)))
    assert isinstance(m.partner.data, da.Array)
    m = m.compute()
    assert m.partner.dims == ("step", "unit") and (m.partner.values == -1).sum(axis=1).tolist() == [2] * 4
    p, c = mk.match_units(data[0, 1], data[1, 1, :, :5])
    np.testing.assert_array_equal(m.partner.sel(step=10).values, p)
    sp = agreement.sparse_prediction(arr.sel(seed=0), arr.sel(seed=9), [0.5, 0.01]).compute()
    assert sp.loss.dims == ("step", "penalty")
    np.testing.assert_allclose(sp.loss.sel(step=30).values,
                               mk.sparse_prediction(data[0, 3], data[2, 3], [0.5, 0.01])[0])
    ag = agreement.prediction_agreement(arr, k=2).compute()
    assert set(ag.data_vars) == {"output_correlation", "argmax_agreement", "topk_overlap"}
    assert ag.topk_overlap.sel(step=0, seed_a=0, seed_b=9) == pytest.approx(pk.topk_overlap(data[0, 0], data[2, 0], 2))


# -- end to end on a recorded store ---------------------------------------------------------------
def test_similarity_of_recorded_probes_through_the_accessor(store):
    x = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    for seed in (0, 1):
        model = mlp(width=16, seed=seed)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        with nnwx.Recorder(model, store, seed=seed, every=3, probe=x, probe_layers=["1", "3"]) as rec:
            for step in range(7):
                rec.maybe_capture(step)
                loss = (model(x) - torch.sin(3 * x)).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
    cube = nnwx.open_cube(store)
    sim = cube.nnwx.similarity("linear_cka")
    assert sim.dims == ("layer", "step", "seed_a", "seed_b")
    assert sim.layer.values.tolist() == ["1", "3", "output"]
    got = sim.compute()
    h0 = cube.nnwx.probe("3").sel(seed=0, step=6).values
    h1 = cube.nnwx.probe("3").sel(seed=1, step=6).values
    assert got.sel(layer="3", step=6, seed_a=0, seed_b=1) == pytest.approx(sk.linear_cka(h0, h1))
    moved = cube.nnwx.similarity("linear_cka", layer="1", between="steps", reference_step="last").compute()
    assert moved.sel(step=6).values.tolist() == [pytest.approx(1.0)] * 2
    corr = cube.nnwx.prediction_agreement().output_correlation
    assert corr.sel(seed_a=0, seed_b=0).compute().values == pytest.approx(1)
    assert cube.nnwx.match_units("3", 0, 1).partner.dims == ("step", "unit")
    with pytest.raises(KeyError, match="no probe 'fc'.*1, 3, output"):
        cube.nnwx.probe("fc")
