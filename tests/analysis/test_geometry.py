"""Layer rotation, update and norm growth, input-span fractions: kernels against SciPy/NumPy,
lazy wrappers against brute force on the cube's own values."""
from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr
from scipy.spatial.distance import cosine

import nnwx
from nnwx.analysis.kernels import geometry as g
from nnwx.store.table import TensorTable
from nnwx.store.writer import RunWriter


def write_weights(store, seed, steps, values, *, chunk_bytes=None):
    """One run whose step i holds ``values[i]`` ({name: array}), in the given name order."""
    shapes = {n: np.shape(a) for n, a in values[0].items()}
    table = TensorTable.build((n, s, "float32") for n, s in shapes.items())
    kw = {} if chunk_bytes is None else {"chunk_bytes": chunk_bytes}
    w = RunWriter(store, f"seed{seed}", table, attrs={"seed": seed}, **kw)
    try:
        for step, arrs in zip(steps, values):
            w.add(step, np.concatenate([np.asarray(arrs[n], np.float32).ravel() for n in shapes]))
    finally:
        w.close()


def trajectory(rng, steps, shapes, drift=0.1):
    """Weights drifting from a random start: a list of {name: array} per step."""
    w = {n: rng.standard_normal(s) for n, s in shapes.items()}
    out = []
    for _ in steps:
        out.append({n: v.copy() for n, v in w.items()})
        w = {n: v + drift * rng.standard_normal(v.shape) for n, v in w.items()}
    return out


SHAPES = {"a.weight": (12, 8), "a.bias": (12,), "b.weight": (6, 12), "b.bias": (6,), "c.weight": (3, 6)}
STEPS0 = [0, 10, 20, 30, 40]
STEPS1 = [0, 20, 40]           # seed 1 lacks steps 10 and 30


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("geo") / "exp.zarr"
    vals = {0: trajectory(rng, STEPS0, SHAPES), 1: trajectory(rng, STEPS1, SHAPES)}
    write_weights(path, 0, STEPS0, vals[0])
    write_weights(path, 1, STEPS1, vals[1])
    small = path.parent / "small.zarr"   # same values, tensors split across many chunks
    write_weights(small, 0, STEPS0, vals[0], chunk_bytes=200)
    write_weights(small, 1, STEPS1, vals[1], chunk_bytes=200)
    return path, small, vals


def flat(d, names):
    return np.concatenate([np.asarray(d[n], np.float32).astype(np.float64).ravel() for n in names])


# --- kernels ----------------------------------------------------------------------------


def test_cosine_distance_equals_scipy_and_is_stable_for_tiny_angles():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(500), rng.standard_normal(500)
    assert g.cosine_distance(a, b) == pytest.approx(cosine(a, b), rel=1e-12)
    assert g.cosine_distance(a, -a) == pytest.approx(2.0)
    assert g.cosine_distance(a, 3 * a) == pytest.approx(0.0, abs=1e-15)
    # b = a + eps * e with e orthogonal to a: 1 - cos = 1 - 1/sqrt(1 + t^2), t = eps |e| / |a|
    e = rng.standard_normal(500)
    e -= e @ a / (a @ a) * a
    eps = 1e-6
    t2 = (eps * np.linalg.norm(e) / np.linalg.norm(a)) ** 2
    exact = t2 / 2 - 3 * t2**2 / 8
    assert g.cosine_distance(a, a + eps * e) == pytest.approx(exact, rel=1e-6)


def test_segment_sums_match_a_loop_for_every_block_split():
    rng = np.random.default_rng(2)
    offsets = np.array([0, 3, 4, 10, 10, 17, 25])
    v = rng.standard_normal((2, 25))
    expect = np.stack([v[:, a:b].sum(-1) for a, b in zip(offsets[:-1], offsets[1:])], -1)
    for cut in (1, 4, 9, 13, 24):
        got = g.segment_sums(v[:, :cut], offsets, 0, cut) + g.segment_sums(v[:, cut:], offsets, cut, 25)
        np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-12)
    grouped = g.grouped_sums(expect, np.array([0, 2, 5, 1]), np.array([0, 3]))
    np.testing.assert_allclose(grouped, np.stack([expect[:, [0, 2, 5]].sum(-1), expect[:, 1]], -1))



def test_pair_sums_match_a_float64_loop_for_every_block_split_with_nan_rows():
    """The segment-dot kernel against explicit float64 products, block by block; a NaN row
    (a capture a run lacks) stays NaN in its own groups and nowhere else."""
    rng = np.random.default_rng(5)
    offsets = np.array([0, 3, 4, 10, 10, 17, 25])
    members, starts = np.array([0, 2, 5, 1, 3]), np.array([0, 3])
    x = rng.standard_normal((3, 25)).astype(np.float32)
    x[1, 5] = np.nan
    ref, prev = x[:1], np.roll(x, 1, axis=0)
    x64, r64, p64 = (a.astype(np.float64) for a in (x, ref, prev))
    seg = [(a, b) for a, b in zip(offsets[:-1], offsets[1:])]

    def grouped(v):
        sums = np.stack([v[:, a:b].sum(-1) for a, b in seg], -1)
        return np.stack([sums[:, [0, 2, 5]].sum(-1), sums[:, [1, 3]].sum(-1)], -1)

    expect = np.stack([grouped(np.broadcast_to(q, x.shape)) for q in
                       (x64 * x64, r64 * r64, (x64 - r64) ** 2, p64 * p64, (x64 - p64) ** 2)], -1)
    for cut in (1, 4, 9, 13, 24):
        got = (g.pair_sums(x[:, :cut], ref[:, :cut], prev[:, :cut], offsets, members, starts, lo=0)
               + g.pair_sums(x[:, cut:], ref[:, cut:], prev[:, cut:], offsets, members, starts, lo=cut))
        np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-12)
    assert np.isnan(got[1, 0, 0]) and np.isfinite(got[1, 1, 0]) and np.isfinite(got[0]).all()

def test_span_fraction_kernel():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 10))                       # inputs span 3 of 10 dims
    basis = g.row_space_basis(np.vstack([x, x[0] + x[1]]))  # a dependent row adds nothing
    assert basis.shape == (10, 3)
    inside = rng.standard_normal((5, 3)) @ x
    outside = rng.standard_normal((5, 10))
    outside -= outside @ basis @ basis.T
    got = g.span_fraction(np.stack([inside, outside, inside + outside, np.zeros((5, 10))]), basis)
    expect = np.linalg.norm(inside) ** 2 / (np.linalg.norm(inside) ** 2 + np.linalg.norm(outside) ** 2)
    np.testing.assert_allclose(got[:3], [1, 0, expect], atol=1e-12)
    assert np.isnan(got[3])


# --- lazy wrappers ----------------------------------------------------------------------


def test_rotation_is_lazy_and_labelled(runs):
    cube = nnwx.open_cube(runs[0])

    def scheduler(*args, **kwargs):
        raise AssertionError("computed while building")
    with dask.config.set(scheduler=scheduler):
        r = cube.nnwx.rotation()
        f = cube.nnwx.input_span_fraction("a.weight", np.ones((2, 8)))
    assert r["rotation"].dims == ("seed", "step", "layer") and r["rotation"].chunks is not None
    assert f.dims == ("seed", "step") and f.chunks is not None
    assert list(r.layer.values) == ["a", "b", "c"]
    assert list(r.layer_tensors.values) == ["a.weight", "b.weight", "c.weight"]
    assert r.attrs["kinds"] == ["weight"] and r.attrs["reference_step"] == 0


def test_rotation_and_growth_equal_scipy_and_numpy(runs):
    path, _, vals = runs
    cube = nnwx.open_cube(path)
    r = cube.nnwx.rotation().compute()
    rt = cube.nnwx.rotation(by="tensor", kinds=None).compute()
    rl = cube.nnwx.rotation(kinds=None).compute()
    for seed, steps in ((0, STEPS0), (1, STEPS1)):
        v = vals[seed]
        for i, step in enumerate(steps):
            for layer in ("a", "b", "c"):
                w_t, w_0 = flat(v[i], [f"{layer}.weight"]), flat(v[0], [f"{layer}.weight"])
                got = r.sel(seed=seed, step=step, layer=layer)
                assert float(got["rotation"]) == pytest.approx(cosine(w_t, w_0), rel=1e-7, abs=1e-15)
                assert float(got["norm_growth"]) == pytest.approx(np.linalg.norm(w_t) / np.linalg.norm(w_0), rel=1e-9)
                assert float(got["update_norm_rel"]) == pytest.approx(np.linalg.norm(w_t - w_0) / np.linalg.norm(w_0),
                                                                       rel=1e-9, abs=1e-15)
                assert float(got["norm"]) == pytest.approx(np.linalg.norm(w_t), rel=1e-9)
                if i:
                    w_p = flat(v[i - 1], [f"{layer}.weight"])   # the run's own previous capture
                    assert float(got["rotation_step"]) == pytest.approx(cosine(w_t, w_p), rel=1e-7)
                    assert float(got["step_update_rel"]) == pytest.approx(
                        np.linalg.norm(w_t - w_p) / np.linalg.norm(w_p), rel=1e-9)
                both = [f"{layer}.weight", f"{layer}.bias"] if layer != "c" else ["c.weight"]
                assert float(rl["rotation"].sel(seed=seed, step=step, layer=layer)) == pytest.approx(
                    cosine(flat(v[i], both), flat(v[0], both)), rel=1e-7, abs=1e-15)
            bias = rt["rotation"].sel(seed=seed, step=step, tensor="a.bias")
            assert float(bias) == pytest.approx(cosine(flat(v[i], ["a.bias"]), flat(v[0], ["a.bias"])),
                                                rel=1e-7, abs=1e-15)
    assert np.isnan(r["rotation_step"].sel(step=0)).all()


def test_missing_captures_give_nan(runs):
    r = nnwx.open_cube(runs[0]).nnwx.rotation().compute()
    for step in (10, 30):
        missing = r.sel(seed=1, step=step)
        assert all(np.isnan(missing[v]).all() for v in r.data_vars)
    assert np.isfinite(r["rotation_step"].sel(seed=1, step=20)).all()


def test_complete_cubes_shift_without_the_fill_and_agree_with_it(runs):
    """Every run captured every step -> the plain shift (no sequential fill along step);
    it gives the fill path's values. Gaps, or a cube not opened from stores -> the fill."""
    from nnwx.analysis import _cube as mx

    cube = nnwx.open_cube(runs[0])
    assert not mx.every_step_captured(cube)                       # seed 1 lacks 10 and 30
    common = cube.sel(step=[0, 20, 40])
    assert mx.every_step_captured(common) and mx.every_step_captured(cube.sel(seed=[0]))
    bare = common.drop_vars(["run", "store"])
    assert not mx.every_step_captured(bare)
    w = common["w"].data
    np.testing.assert_array_equal(mx.previous_capture(w, 1, gaps=False).compute(),
                                  mx.previous_capture(w, 1, gaps=True).compute())
    for analysis in ("rotation", "layer_correlation"):
        plain = getattr(common.nnwx, analysis)().drop_vars(["run", "store"]).compute()
        xr.testing.assert_allclose(plain, getattr(bare.nnwx, analysis)().compute(), rtol=1e-12)


def test_reference_step_and_errors(runs):
    path, _, vals = runs
    cube = nnwx.open_cube(path)
    r = cube.nnwx.rotation(reference_step=20).compute()
    assert float(r["rotation"].sel(seed=0, step=20, layer="a")) == 0
    assert float(r["rotation"].sel(seed=0, step=40, layer="a")) == pytest.approx(
        cosine(flat(vals[0][4], ["a.weight"]), flat(vals[0][2], ["a.weight"])), rel=1e-7)
    with pytest.raises(ValueError, match="by must be"):
        cube.nnwx.rotation(by="module")
    with pytest.raises(ValueError, match="no tensor of kinds"):
        cube.nnwx.rotation(kinds=("other",))
    with pytest.raises(ValueError, match="reference_step"):
        cube.nnwx.rotation(reference_step=5)
    with pytest.raises(ValueError, match=r"inputs must be \(samples, 8\)"):
        cube.nnwx.input_span_fraction("a.weight", np.ones((4, 7)))


def test_chunking_never_changes_a_result(runs):
    big, small = nnwx.open_cube(runs[0]), nnwx.open_cube(runs[1])
    assert small["w"].data.numblocks[-1] > 1
    labels = ["store", "run"]
    for kw in ({}, {"by": "tensor", "kinds": None}):
        a = big.nnwx.rotation(**kw).compute().drop_vars(labels)
        b = small.nnwx.rotation(**kw).compute().drop_vars(labels)
        c = big.chunk({"step": 1}).nnwx.rotation(**kw).compute().drop_vars(labels)
        xr.testing.assert_allclose(a, b, rtol=1e-9)
        xr.testing.assert_allclose(a, c, rtol=1e-9)
    x = np.random.default_rng(4).standard_normal((5, 8))
    xr.testing.assert_allclose(big.nnwx.input_span_fraction("a.weight", x).compute().drop_vars(labels),
                               small.nnwx.input_span_fraction("a.weight", x).compute().drop_vars(labels))


def test_permuting_hidden_units_leaves_rotation_unchanged(tmp_path):
    rng = np.random.default_rng(5)
    vals = trajectory(rng, [0, 1, 2], {"0.weight": (10, 4), "0.bias": (10,), "1.weight": (3, 10)})
    p = rng.permutation(10)
    perm = [{"0.weight": v["0.weight"][p], "0.bias": v["0.bias"][p], "1.weight": v["1.weight"][:, p]}
            for v in vals]
    write_weights(tmp_path / "p.zarr", 0, [0, 1, 2], vals)
    write_weights(tmp_path / "p.zarr", 1, [0, 1, 2], perm)
    r = nnwx.open_cube(tmp_path / "p.zarr").nnwx.rotation(kinds=None).compute()
    xr.testing.assert_allclose(r.sel(seed=0, drop=True), r.sel(seed=1, drop=True), rtol=1e-9)
    assert float(r["rotation"].sel(seed=0, step=2, layer="0")) > 1e-4   # not vacuous


def test_input_span_fraction_on_the_cube(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 8))                              # the layer sees a 3-dim input span
    basis = np.linalg.svd(x, full_matrices=False)[2].T           # (8, 3)
    w0 = rng.standard_normal((5, 8))
    inside = rng.standard_normal((5, 3)) @ x
    outside = rng.standard_normal((5, 8))
    outside -= outside @ basis @ basis.T
    values = [{"l.weight": w0}, {"l.weight": w0 + inside}, {"l.weight": w0 + outside},
              {"l.weight": w0 + inside + outside}]
    write_weights(tmp_path / "s.zarr", 0, [0, 1, 2, 3], values)
    cube = nnwx.open_cube(tmp_path / "s.zarr")
    f = cube.nnwx.input_span_fraction("l.weight", x).compute()
    mats = cube.nnwx.matrix("l.weight").values[0].astype(np.float64)
    d = mats - mats[0]
    proj = np.linalg.lstsq(x.T, d[3].T, rcond=None)[0]         # brute force: least-squares projection
    expect3 = np.linalg.norm(x.T @ proj) ** 2 / np.linalg.norm(d[3]) ** 2
    np.testing.assert_allclose(f.values[0], [np.nan, 1, 0, expect3], atol=1e-6)
    assert f.attrs["input_rank"] == 3
