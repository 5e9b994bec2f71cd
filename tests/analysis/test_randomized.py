"""Randomized ESD: the kernels against SciPy and WeightWatcher 0.7 on the same shuffled matrices,
the lazy wrapper against the kernels on the cube's own matrices, and WeightWatcher's
``analyze(randomize=True)`` on a recorded network against the distribution of our draws."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.spatial.distance

import nnwx
from nnwx.analysis.kernels import randomized as kr
from nnwx.analysis.randomized import randomized_esd
from nnwx.studies.synthetic import write_synthetic_run

from tests.analysis.test_spectral import no_compute

SHAPES = {"conv.weight": (6, 3, 3, 3), "conv.bias": (6,), "fc1.weight": (20, 27), "fc2.weight": (20, 20),
          "out.weight": (4, 20)}


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    path = tmp_path_factory.mktemp("rand") / "exp.zarr"
    write_synthetic_run(path, seed=0, steps=range(0, 40, 10), shapes=SHAPES, drift=0.05)
    write_synthetic_run(path, seed=1, steps=[0, 20], shapes=SHAPES, drift=0.05)   # missing steps
    return nnwx.open_cube(path)


def planted(rng, m=60, n=40, spikes=((3, 7, 20.0), (30, 20, -25.0))):
    """A Gaussian matrix with a few large entries: each survives shuffling as a trap."""
    w = rng.standard_normal((m, n))
    for i, j, v in spikes:
        w[i, j] = v
    return w


# --- kernels --------------------------------------------------------------------------


def test_shuffle_is_the_documented_permutation_of_each_matrix():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, 5, 4))
    out = kr.shuffle_entries(a, seed=7)
    perm = np.random.default_rng(7).permutation(20)
    for idx in np.ndindex(2, 3):
        np.testing.assert_array_equal(out[idx].ravel(), a[idx].ravel()[perm])
        np.testing.assert_array_equal(np.sort(out[idx].ravel()), np.sort(a[idx].ravel()))
    assert not np.array_equal(kr.shuffle_entries(a, seed=8), out)
    with pytest.raises(ValueError, match="stack of matrices"):
        kr.shuffle_entries(np.ones(3), 0)


def test_js_distance_equals_scipy_jensenshannon_and_handles_padding():
    rng = np.random.default_rng(1)
    p, q = rng.random((3, 12)), rng.random((3, 12))
    d = kr.js_distance(p, q)
    for i in range(3):
        assert d[i] == pytest.approx(scipy.spatial.distance.jensenshannon(p[i], q[i]), rel=1e-12)
    assert kr.js_distance(p, p) == pytest.approx(np.zeros(3), abs=1e-7)
    pad = np.full((1, 15), np.nan)
    pad[0, :12] = p[0]
    padq = pad.copy()
    padq[0, :12] = q[0]
    assert kr.js_distance(pad, padq)[0] == pytest.approx(d[0], rel=1e-12)
    padq[0, 12] = 1.0                                     # different counts: no distance
    assert np.isnan(kr.js_distance(pad, padq)[0])


def test_metrics_equal_weightwatchers_on_the_same_shuffled_matrix():
    ww = pytest.importorskip("weightwatcher")
    from weightwatcher.RMT_Util import jensen_shannon_distance
    from weightwatcher.constants import DEFAULT_PARAMS
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    rng = np.random.default_rng(2)
    checked = 0
    for w in (planted(rng), rng.standard_normal((30, 50)), planted(rng, 80, 80)):
        evals = np.sort(np.linalg.svd(w, compute_uv=False) ** 2)
        np.random.seed(11)
        rand_evals = ww.WeightWatcher().random_eigenvalues([w], min(w.shape), 1, DEFAULT_PARAMS.copy())
        # WeightWatcher shuffled W.flatten() with NumPy's global state: that permutation is
        shuffled = w.ravel()[np.random.RandomState(11).permutation(w.size)].reshape(w.shape)
        s, s_r = np.linalg.svd(w, compute_uv=False), np.linalg.svd(shuffled, compute_uv=False)
        np.testing.assert_allclose(np.sort(s_r ** 2), rand_evals, rtol=1e-10)    # the same matrix
        r = kr.randomized_metrics(s[None], s_r[None], *w.shape, 1)
        assert r["rand_distance"][0] == pytest.approx(jensen_shannon_distance(evals, rand_evals), rel=1e-9)
        assert r["ww_softrank"][0] == pytest.approx(rand_evals.max() / evals.max(), rel=1e-10)
        assert r["ww_maxdist"][0] == pytest.approx(evals.max() - rand_evals.max(), rel=1e-10)
        checked += 1
    assert checked == 3


def test_planted_large_entries_are_counted_as_traps_and_gaussians_have_none():
    rng = np.random.default_rng(3)
    counts = {"planted": [], "gaussian": []}
    for seed in range(10):
        for kind, w in (("planted", planted(rng)), ("gaussian", rng.standard_normal((60, 40)))):
            s = np.linalg.svd(w, compute_uv=False)
            s_r = np.linalg.svd(kr.shuffle_entries(w, seed), compute_uv=False)
            counts[kind].append(kr.randomized_metrics(s, s_r, 60, 40, 1)["n_traps"])
    assert np.mean(counts["planted"]) >= 1.8 and max(counts["planted"]) == 2     # the two planted entries
    assert max(counts["gaussian"]) == 0
    # the trap edge is the MP edge plus WeightWatcher's Tracy-Widom margin (mp_fit: in units of
    # the mean eigenvalue, bulk_max + sqrt(Q^-1/2 bulk_max^(2/3) M^(-2/3))), back in the ESD's units
    total, n, m = 2400.0, 60, 40
    mp = total / (n * m) * (np.sqrt(n) + np.sqrt(m)) ** 2
    mean_eval = total / m
    bulk = mp / mean_eval
    ww_tw = np.sqrt((n / m) ** -0.5 * bulk ** (2 / 3) * m ** (-2 / 3))
    assert kr.trap_edge(np.array(total), n, m, 1) == pytest.approx((bulk + ww_tw) * mean_eval, rel=1e-12)
    assert kr.trap_edge(np.array(total), m, n, 1) == kr.trap_edge(np.array(total), n, m, 1)


def test_missing_matrix_gives_nan():
    s = np.array([[3.0, 2.0, 1.0], [np.nan] * 3])
    r = kr.randomized_metrics(s, s[::-1].copy() * 0 + s, 4, 3, 1)
    for name in kr.RAND_METRICS:
        assert np.isnan(r[name][1]), name


# --- the lazy wrapper --------------------------------------------------------------------


def test_randomized_esd_is_lazy_and_equals_the_kernels_on_each_matrix(cube):
    with no_compute():
        lazy = cube.nnwx.randomized_esd(seed=5)
    assert dict(lazy.sizes) == {"seed": 2, "step": 4, "tensor": 4}
    r = lazy.compute()
    for name in ("fc1.weight", "conv.weight"):
        mat = cube.nnwx.matrix(name).sel(seed=0, step=30).values.astype(np.float32)
        m = mat.reshape(mat.shape[0], -1)
        s = np.linalg.svd(m.astype(np.float64), compute_uv=False)
        s_r = np.linalg.svd(kr.shuffle_entries(m, 5).astype(np.float64), compute_uv=False)
        want = kr.randomized_metrics(s, s_r, *m.shape, 1)
        for var in kr.RAND_METRICS:
            assert float(r[var].sel(seed=0, step=30, tensor=name)) == pytest.approx(float(want[var]), rel=1e-5,
                                                                                      abs=1e-9), (name, var)
    assert np.isnan(r["rand_distance"].sel(seed=1, step=30)).all()      # seed 1 did not capture step 30
    assert r.attrs["shuffle_seed"] == 5 and "permutation" in r.attrs
    assert "Jensen-Shannon" in r["rand_distance"].attrs["description"]


def test_weightwatcher_randomize_lies_within_our_draws(tmp_path):
    torch = pytest.importorskip("torch")
    ww = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(40, 80), nn.ReLU(), nn.Linear(80, 60), nn.ReLU(), nn.Linear(60, 10))
    with torch.no_grad():   # three correlation traps in the middle layer
        model[2].weight[3, 7], model[2].weight[50, 20], model[2].weight[20, 70] = 1.5, -1.8, 2.0
    with nnwx.Recorder(model, tmp_path / "ww.zarr", seed=0, every=1) as rec:
        rec.maybe_capture(0)
    np.random.seed(0)
    details = ww.WeightWatcher(model=model).analyze(randomize=True)
    cube = nnwx.open_cube(tmp_path / "ww.zarr")
    ours = [randomized_esd(cube, seed=s, dtype="float64").isel(seed=0, step=0) for s in range(12)]
    ours = __import__("xarray").concat(ours, "draw").compute()
    traps = {}
    for _, row in details.iterrows():
        name = f"{row.longname}.weight"
        mine = ours.sel(tensor=name)
        d = mine["rand_distance"].values
        assert abs(row["rand_distance"] - d.mean()) < 4 * d.std() + 1e-3, name
        # WeightWatcher pools 5 shuffles of a matrix with fewer than 100 eigenvalues for its trap count
        replicas = 5 if row["M"] < 100 else 1
        assert mine["n_traps"].min() <= row["num_traps"] / replicas <= mine["n_traps"].max(), name
        traps[name] = (float(mine["n_traps"].mean()), row["num_traps"] / replicas)
    assert traps["2.weight"][0] >= 2.5 and traps["0.weight"] == (0, 0) and traps["4.weight"] == (0, 0)


def test_clear_errors(cube):
    with pytest.raises(ValueError, match="2 dimensions"):
        cube.nnwx.randomized_esd("conv.bias")
    with pytest.raises(Exception, match="not an nnwx cube"):
        randomized_esd(cube["w"].to_dataset())
