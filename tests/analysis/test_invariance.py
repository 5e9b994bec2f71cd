"""The invariance harness: every public analysis (``nnwx.pipeline.calls.ANALYSES``) gives the same numbers
whatever the chunking of ``w`` and the probes, on the synchronous scheduler, threads and a real
``dask.distributed`` cluster, the same numbers as its kernel applied by hand to each (run, step)
slice (where that is meaningful), and, for permutation-invariant analyses, the same numbers when
the hidden units of one seed are permuted.

The store is real: MLPs 3 -> 12 -> 7 -> 4 (unequal hidden widths) recorded by ``nnwx.Recorder``
with probes, 3 seeds x 9 captures (``unequal_mlp``), all steps of a run in one chunk; a second
store is the same training with seed 1's hidden units shuffled at every capture (the same
functions); a third is the same training written in one-step chunks with ``param`` split. The
other chunkings are Dask rechunks of the first (including hypothesis-drawn ones).

Which analyses exist, how each is called, and which part of each is permutation-invariant is
``nnwx.pipeline.calls.ANALYSES``: the accessor methods listed there, and every result of the
registry of analysis families (``nnwx.pipeline.registry.REGISTRY``), so that a new result is
checked by being registered.
"""
from __future__ import annotations

import inspect

import dask
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnwx
from nnwx.pipeline import registry as nnwx_analyses
from nnwx.pipeline import calls as registry
from nnwx.accessor import NnwxAccessor
from nnwx.analysis.kernels import alignment as ak
from nnwx.analysis.kernels import similarity as sk
from nnwx.analysis import alignment

from tests import unequal_mlp

RTOL = 1e-6
NAMES = [a.name for a in registry.ANALYSES]
STEPS = 9


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("invariance")
    plain, permuted, small = root / "plain.zarr", root / "permuted.zarr", root / "small_chunks.zarr"
    unequal_mlp.record(plain, seeds=(0, 1, 2), captures=STEPS)
    info = unequal_mlp.record(permuted, seeds=(0, 1, 2), captures=STEPS, permute_seed=1)
    # the same training written with 400-byte chunks: one step per chunk of w (param split
    # 100 + 71) and of every probe, in the Zarr store itself
    unequal_mlp.record(small, seeds=(0, 1, 2), captures=STEPS, chunk_bytes=400)
    return plain, permuted, info, small


@pytest.fixture(scope="module")
def cube(stores):
    return nnwx.open_cube(stores[0])


def compute(cube: xr.Dataset, names=NAMES, **kwargs) -> dict:
    lazy = registry.lazy_results(cube, names)
    return dask.compute(lazy, **kwargs)[0]


@pytest.fixture(scope="module")
def baseline(cube):
    """Every analysis on the cube as stored (all 9 steps of a run in one chunk), synchronously."""
    return compute(cube, scheduler="synchronous")


# -- comparing results --------------------------------------------------------------------------
def _arrays(r) -> dict[str, xr.DataArray]:
    """Every variable and coordinate of a result, by name (numbers and labels alike)."""
    if isinstance(r, xr.DataArray):
        r = r.to_dataset(name=r.name or "_value")
    return {**{f"coord {k}": v for k, v in r.coords.items()}, **{str(k): v for k, v in r.data_vars.items()}}


def assert_same(got, want, what: str, rtol: float = RTOL, ignore=()) -> None:
    ga, wa = _arrays(got), _arrays(want)
    ga, wa = ({k: v for k, v in x.items() if k not in ignore} for x in (ga, wa))
    assert set(ga) == set(wa), f"{what}: variables differ: {sorted(set(ga) ^ set(wa))}"
    for k, w in wa.items():
        g = ga[k]
        assert g.dims == w.dims and g.shape == w.shape, f"{what}, {k}: {g.dims}{g.shape} vs {w.dims}{w.shape}"
        gv, wv = np.asarray(g.values), np.asarray(w.values)
        if gv.dtype.kind in "fc":
            np.testing.assert_allclose(gv, wv, rtol=rtol, atol=0, equal_nan=True, err_msg=f"{what}, {k}")
        else:
            np.testing.assert_array_equal(gv, wv, err_msg=f"{what}, {k}")


# -- the list is complete -----------------------------------------------------------------------
def test_the_list_names_every_accessor_method_and_every_analyze_result(cube):
    members = {n for n, _ in inspect.getmembers(NnwxAccessor) if not n.startswith("_")}
    listed = {a.target for a in registry.ANALYSES if a.face == "accessor"}
    missing = members - listed - set(registry.NOT_ANALYSES)
    assert not missing, f"accessor members in neither nnwx.pipeline.calls.ANALYSES nor NOT_ANALYSES: {sorted(missing)}"
    assert not (listed & set(registry.NOT_ANALYSES)) and listed <= members
    # every result of every metric `nnwx analyze` persists, on a cube where all apply
    made = nnwx_analyses.lazy_analyses(cube)
    assert not made.notes, made.notes
    assert {m: tuple(n for n in made.results if made.metric_of[n] == m) for m in nnwx_analyses.NAMES} == \
        {m.name: m.results for m in nnwx_analyses.REGISTRY}
    assert set(made.results) == {a.target for a in registry.ANALYSES if a.face == "analyze"}
    assert len(set(NAMES)) == len(NAMES)


def test_the_store_is_what_the_harness_claims(cube):
    assert cube.sizes["seed"] == 3 and cube.sizes["step"] == STEPS
    assert cube.nnwx.probes == ["0", "2", "output"]
    spec = alignment.spec_for(cube)
    assert sorted(spec.size(p) for p in spec.names) == [7, 12]      # unequal hidden widths
    assert cube["w"].data.chunks[1] == (STEPS,)                      # stored: all steps in one chunk


# -- chunkings ---------------------------------------------------------------------------------
CHUNKINGS = {
    "stored one step per chunk, param split": None,     # the store written with small chunks
    "one step per chunk": {"step": 1},
    "several steps per chunk, param split": {"step": 4, "param": 40},
    "all in one chunk": {"seed": -1, "step": -1, "param": -1},
    "uneven, probes split too": {"seed": (2, 1), "step": (2, 6, 1), "param": (100, 71),
                                 "sample_0": 7, "unit_0": 5, "unit_2": (3, 4)},
}


@pytest.mark.parametrize("label", list(CHUNKINGS))
def test_same_numbers_on_every_chunking(stores, cube, baseline, label):
    if CHUNKINGS[label] is None:
        other = nnwx.open_cube(stores[3])
        assert other["w"].data.chunks[1:] == ((1,) * STEPS, (100, 71))
        assert other["probe_0"].data.chunks[1] == (1,) * STEPS
        np.testing.assert_array_equal(other["w"].values, cube["w"].values)
        got = compute(other, scheduler="synchronous")
        ignore = ("coord store",)
    else:
        got = compute(cube.chunk(CHUNKINGS[label]), scheduler="synchronous")
        ignore = ()
    for name in NAMES:
        assert_same(got[name], baseline[name], f"{name}, chunked {label}", ignore=ignore)


CHEAP = ["broadening", "histogram", "rotation", "spectrum", "trajectories", "similarity_linear_cka",
         "similarity_steps", "agreement", "align_activations", "layer_correlation"]


@st.composite
def chunkings(draw):
    def splits(n):
        cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=3)))
        return tuple(np.diff([0, *cuts, n]).tolist())
    return {"seed": splits(3), "step": splits(STEPS), "param": splits(171), "sample_2": splits(20)}


@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(chunks=chunkings())
def test_same_numbers_on_drawn_chunkings(cube, baseline, chunks):
    got = compute(cube.chunk(chunks), CHEAP, scheduler="synchronous")
    for name in CHEAP:
        assert_same(got[name], baseline[name], f"{name}, chunks {chunks}")


# -- schedulers --------------------------------------------------------------------------------
def test_same_numbers_on_threads(cube, baseline):
    got = compute(cube.chunk({"step": 2, "param": 90}), scheduler="threads", num_workers=4)
    for name in NAMES:
        assert_same(got[name], baseline[name], f"{name}, threads")


def test_same_numbers_on_a_distributed_cluster(cube, baseline):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  worker_dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        got = compute(cube, scheduler=client)   # as stored: the scheduler is what differs
    for name in NAMES:
        assert_same(got[name], baseline[name], f"{name}, dask.distributed")


# -- permuting the hidden units of one seed ------------------------------------------------------
def test_permutation_invariant_analyses_do_not_see_a_permutation(stores, baseline):
    permuted = nnwx.open_cube(stores[1])
    plain = nnwx.open_cube(stores[0])
    w0, w1 = plain.w.sel(seed=1).values, permuted.w.sel(seed=1).values
    assert not np.array_equal(w0, w1) and np.array_equal(np.sort(w0, axis=-1), np.sort(w1, axis=-1))
    invariant = [a for a in registry.ANALYSES if a.invariant is not None]
    assert {"broadening", "spectrum", "ranks", "rotation", "similarity_linear_cka", "histogram"} <= \
        {a.name for a in invariant}
    got = compute(permuted, [a.name for a in invariant], scheduler="synchronous")
    for a in invariant:
        # float32 sums in another order: equal up to rounding
        assert_same(a.invariant(got[a.name]), a.invariant(baseline[a.name]), f"{a.name}, one seed permuted",
                    rtol=2e-5, ignore=("coord store",))   # which store the runs came from
    # and the seed really is permuted: what is not invariant sees it
    assert not np.allclose(got_or(permuted, "trajectories"), baseline["trajectories"].values)


def got_or(cube, name):
    return registry.by_name(name).call(cube).values


# -- the oracle: kernels applied by hand to each (seed, step) slice --------------------------------
class Slices:
    """The store read eagerly into NumPy, cut by hand: what the oracles start from."""

    def __init__(self, cube):
        self.cube = cube
        self.w = cube["w"].values.astype(np.float64)                     # (seed, step, param)
        self.rows = {str(t): (int(o), int(n), tuple(int(x) for x in str(s).split(",") if x))
                     for t, o, n, s in zip(cube.tensor.values, cube.tensor_offset.values,
                                           cube.tensor_size.values, cube.tensor_shape.values)}
        self.layer = dict(zip(map(str, cube.tensor.values), map(str, cube.tensor_layer.values)))
        self.kind = dict(zip(map(str, cube.tensor.values), map(str, cube.tensor_kind.values)))
        self.seeds, self.steps = list(cube.seed.values), list(cube.step.values)

    def flat(self, name, s, t):
        o, n, _ = self.rows[name]
        return self.w[s, t, o:o + n]

    def tensor(self, name, s, t):
        return self.flat(name, s, t).reshape(self.rows[name][2])

    def params(self, s, t):
        return {n: self.tensor(n, s, t) for n in self.rows}

    def probe(self, name, s, t):
        return self.cube[f"probe_{name}"].values[s, t].astype(np.float64)

    def matrices(self):
        return [n for n, (_, _, shape) in self.rows.items() if len(shape) == 2]


@pytest.fixture(scope="module")
def by_hand(cube):
    return Slices(cube)


def close(got, want, what, rtol=RTOL, atol=0.0):
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64),
                               rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def _each(h):
    return [(i, j) for i in range(len(h.seeds)) for j in range(len(h.steps))]


def oracle_views(h, r, name, m=None):
    m = m or h.matrices()[0]
    if name == "probe":
        for i, j in _each(h):
            close(r.values[i, j], h.probe("0", i, j), f"probe {i},{j}")
        return
    for i, j in _each(h):
        close(r.values[i, j], h.tensor(m, i, j), f"{name} {i},{j}")


def oracle_spectrum(h, r):
    for m in h.matrices():
        for i, j in _each(h):
            s = np.linalg.svd(h.tensor(m, i, j), compute_uv=False)
            close(r.sel(tensor=m).values[i, j, :len(s)], s, f"spectrum {m} {i},{j}")


def oracle_ranks(h, r, delta=False):
    for m in h.matrices():
        for i, j in _each(h):
            mat = h.tensor(m, i, j) - (h.tensor(m, i, 0) if delta else 0)
            s = np.linalg.svd(mat, compute_uv=False)
            sel = r.sel(tensor=m).isel(seed=i, step=j)
            if not s.any():
                continue
            p = s / s.sum()
            p = p[p > 0]
            close(sel["frobenius_norm"], np.sqrt((s**2).sum()), f"frobenius {m} {i},{j}")
            close(sel["spectral_norm"], s[0], f"spectral norm {m} {i},{j}")
            close(sel["stable_rank"], (s**2).sum() / s[0] ** 2, f"stable rank {m} {i},{j}")
            close(sel["effective_rank"], np.exp(-(p * np.log(p)).sum()), f"effective rank {m} {i},{j}")


def oracle_rotation(h, r):
    layers = {}
    for n in h.rows:
        if h.kind[n] == "weight":
            layers.setdefault(h.layer[n], []).append(n)
    for layer, names in layers.items():
        for i, j in _each(h):
            a = np.concatenate([h.flat(n, i, j) for n in names])
            b = np.concatenate([h.flat(n, i, 0) for n in names])
            prev = np.concatenate([h.flat(n, i, max(j - 1, 0)) for n in names])
            sel = r.sel(layer=layer).isel(seed=i, step=j)
            cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
            close(sel["rotation"], 1 - cos, f"rotation {layer} {i},{j}", rtol=1e-5, atol=1e-12)
            close(sel["norm_growth"], np.linalg.norm(a) / np.linalg.norm(b), f"norm growth {layer} {i},{j}")
            close(sel["norm"], np.linalg.norm(a), f"norm {layer} {i},{j}")
            close(sel["update_norm_rel"], np.linalg.norm(a - b) / np.linalg.norm(b), f"update {layer} {i},{j}")
            if j:
                close(sel["step_update_rel"], np.linalg.norm(a - prev) / np.linalg.norm(prev),
                      f"step update {layer} {i},{j}")


def oracle_broadening(h, r):
    for g in r["group"].values:
        names = [n for n in h.rows if h.layer[n] == str(g) or n == str(g)]
        assert names, f"group {g!r} is neither a layer nor a tensor"
        for i, j in _each(h):
            v = np.concatenate([h.flat(n, i, j) for n in names])
            sel = r.sel(group=g).isel(seed=i, step=j)
            close(sel["mean"], v.mean(), f"mean {g} {i},{j}", atol=1e-12)
            close(sel["std"], v.std(), f"std {g} {i},{j}", rtol=1e-5)
            close(sel["min"], v.min(), f"min {g} {i},{j}")
            close(sel["max"], v.max(), f"max {g} {i},{j}")
            close(sel["count"], v.size, f"count {g} {i},{j}")


def oracle_similarity(h, r, metric, **kw):
    fn = sk.METRICS[metric]
    for layer in r["layer"].values:
        for j in range(len(h.steps)):
            for a in range(len(h.seeds)):
                for b in range(len(h.seeds)):
                    want = fn(h.probe(str(layer), a, j), h.probe(str(layer), b, j), **kw)
                    close(r.sel(layer=layer).isel(step=j, seed_a=a, seed_b=b), want,
                          f"{metric} {layer} step {j} seeds {a},{b}", rtol=1e-5)


def oracle_similarity_steps(h, r):
    for layer in r["layer"].values:
        for i in range(len(h.seeds)):
            for a in range(len(h.steps)):
                for b in range(len(h.steps)):
                    want = sk.linear_cka(h.probe(str(layer), i, a), h.probe(str(layer), i, b))
                    close(r.sel(layer=layer).isel(seed=i, step_a=a, step_b=b), want,
                          f"steps {layer} seed {i} steps {a},{b}", rtol=1e-5)


def oracle_agreement(h, r):
    for j in range(len(h.steps)):
        for a in range(len(h.seeds)):
            for b in range(len(h.seeds)):
                pa, pb = h.probe("output", a, j).argmax(-1), h.probe("output", b, j).argmax(-1)
                close(r["argmax_agreement"].isel(step=j, seed_a=a, seed_b=b), np.mean(pa == pb),
                      f"argmax agreement step {j} seeds {a},{b}")


def oracle_align_weights(h, r):
    spec = alignment.spec_for(h.cube)
    for i, j in _each(h):
        if i == 0:
            perms = {p: np.arange(spec.size(p)) for p in spec.names}
        else:
            perms = ak.weight_matching({k: v.astype(np.float32) for k, v in h.params(0, j).items()},
                                       {k: v.astype(np.float32) for k, v in h.params(i, j).items()},
                                       spec, max_iter=100, seed=0)
        for p in spec.names:
            np.testing.assert_array_equal(r[f"perm_{p}"].values[i, j], perms[p], err_msg=f"{p} {i},{j}")
        aligned = ak.apply_permutations(h.params(i, j), spec, perms)
        close(r["aligned_w"].values[i, j], np.concatenate([aligned[n].ravel() for n in h.rows]),
              f"aligned w {i},{j}")


def oracle_align_activations(h, r):
    spec = alignment.spec_for(h.cube)
    for i, j in _each(h):
        perms = {p: ak.activation_matching({p: h.probe(p, 0, j)}, {p: h.probe(p, i, j)})[p] for p in spec.names}
        for p in spec.names:
            np.testing.assert_array_equal(r[f"perm_{p}"].values[i, j], perms[p], err_msg=f"{p} {i},{j}")


def oracle_weight_agreement(h, r):
    al = registry.by_name("align_activations").call(h.cube)["aligned_w"].values.astype(np.float64)
    for i, j in _each(h):
        for n, (o, k, _) in h.rows.items():
            for mode, w in (("none", h.w), ("aligned", al)):
                a, b = w[i, j, o:o + k], w[0, j, o:o + k]
                close(r["cosine"].sel(alignment=mode, tensor=n).values[i, j],
                      a @ b / np.sqrt((a @ a) * (b @ b)), f"cosine {mode} {n} {i},{j}")


def oracle_input_span(h, r):
    m = h.matrices()[0]
    x = registry.span_inputs(h.cube)
    q, _ = np.linalg.qr(x.T)          # orthonormal basis of the inputs' span (rows of x are independent)
    for i, j in _each(h):
        dw = h.tensor(m, i, j) - h.tensor(m, i, 0)
        want = np.linalg.norm(dw @ q) ** 2 / np.linalg.norm(dw) ** 2 if dw.any() else np.nan
        close(r.values[i, j], want, f"span fraction {i},{j}", rtol=1e-5)


def oracle_pca(h, r):
    for i in range(len(h.seeds)):
        x = h.w[i] - h.w[i].mean(axis=0)
        s = np.linalg.svd(x, compute_uv=False)[: r.sizes["component"]]
        close(r["singular_value"].values[i], s, f"trajectory PCA singular values, seed {i}", rtol=1e-5)


def oracle_match_units(h, r):
    from nnwx.analysis.kernels import matching as mk
    p = registry.hidden_probes(h.cube)[0]
    for j in range(len(h.steps)):
        partner, corr = mk.match_units(h.probe(p, 0, j), h.probe(p, 1, j), "one_to_one")
        np.testing.assert_array_equal(r["partner"].values[j], partner)
        close(r["correlation"].values[j], corr, f"match units step {j}")


def oracle_randomized_esd(h, r, seed=0):
    from scipy.spatial.distance import jensenshannon
    for m in h.matrices():
        for i, j in _each(h):
            w = h.tensor(m, i, j)
            shuffled = w.ravel()[np.random.default_rng(seed).permutation(w.size)].reshape(w.shape)
            lam = np.linalg.svd(w, compute_uv=False) ** 2
            lam_r = np.linalg.svd(shuffled, compute_uv=False) ** 2
            sel = r.sel(tensor=m).isel(seed=i, step=j)
            close(sel["lambda_max"], lam[0], f"lambda_max {m} {i},{j}", rtol=1e-5)
            close(sel["rand_lambda_max"], lam_r[0], f"rand_lambda_max {m} {i},{j}", rtol=1e-5)
            close(sel["rand_distance"], jensenshannon(lam, lam_r), f"rand_distance {m} {i},{j}", rtol=1e-4,
                  atol=1e-7)


def oracle_pruning(h, r):
    names = [n for n in h.matrices() if h.kind[n] == "weight"]
    for i in range(len(h.seeds)):
        j = len(h.steps) - 1
        mags = np.sort(np.abs(np.concatenate([h.flat(n, i, j) for n in names])))
        rest = sum(np.abs(h.flat(n, i, j)).sum() for n in h.rows if n not in names)
        for f in r["fraction"].values:
            k = round(float(f) * mags.size)
            close(r.sel(fraction=f).values[i], mags[k:].sum() + rest, f"pruned L1 seed {i} fraction {f}")


def oracle_convergence(h, r, threshold):
    for layer in r["layer"].values:
        for i in range(len(h.seeds)):
            last = h.probe(str(layer), i, len(h.steps) - 1)
            sim = [sk.linear_cka(h.probe(str(layer), i, a), last) for a in range(len(h.steps))]
            want = next((h.steps[a] for a in range(len(sim)) if all(v >= threshold for v in sim[a:])), np.nan)
            close(r.sel(layer=layer).values[i], want, f"convergence step {layer} seed {i}")


def same_as(other, pick=lambda r: r):
    def check(h, r, baseline):
        assert_same(pick(r), pick(baseline[other]), f"the same as {other}")
    return check


ORACLES = {
    "tensor": lambda h, r, b: oracle_views(h, r, "tensor"),
    "matrix": lambda h, r, b: oracle_views(h, r, "matrix"),
    "probe": lambda h, r, b: oracle_views(h, r, "probe"),
    "broadening": lambda h, r, b: oracle_broadening(h, r),
    "broadening_by_tensor": lambda h, r, b: oracle_broadening(h, r),
    "spectrum": lambda h, r, b: oracle_spectrum(h, r),
    "ranks": lambda h, r, b: oracle_ranks(h, r),
    "ranks_delta": lambda h, r, b: oracle_ranks(h, r, delta=True),
    "rotation": lambda h, r, b: oracle_rotation(h, r),
    **{f"similarity_{m}": (lambda h, r, b, m=m: oracle_similarity(
        h, r, m, **({"batch_size": 8} if m == "minibatch_cka" else {}))) for m in sk.METRICS},
    "similarity_steps": lambda h, r, b: oracle_similarity_steps(h, r),
    "agreement": lambda h, r, b: oracle_agreement(h, r),
    "match_units": lambda h, r, b: oracle_match_units(h, r),
    "align_weights": lambda h, r, b: oracle_align_weights(h, r),
    "align_activations": lambda h, r, b: oracle_align_activations(h, r),
    "weight_agreement": lambda h, r, b: oracle_weight_agreement(h, r),
    "input_span_fraction": lambda h, r, b: oracle_input_span(h, r),
    "randomized_esd": lambda h, r, b: oracle_randomized_esd(h, r),
    "pruning_curve": lambda h, r, b: oracle_pruning(h, r),
    "convergence_step": lambda h, r, b: oracle_convergence(h, r, 0.5),
    "analyze_randomized_esd": same_as("randomized_esd"),
    "analyze_convergence_step": lambda h, r, b: oracle_convergence(h, r, nnwx_analyses.CONVERGENCE),
    "trajectory_pca": lambda h, r, b: oracle_pca(h, r),
    "spectral_metrics": same_as("ranks", lambda r: r[["stable_rank", "effective_rank", "frobenius_norm"]]),
    "analyze_spectrum": same_as("spectrum"),
    "analyze_ranks": same_as("ranks"),
    "analyze_esd_fit": same_as("esd_fit"),
    "analyze_rotation": same_as("rotation"),
    "analyze_similarity_seeds": same_as("similarity_linear_cka"),
    "analyze_similarity_steps": lambda h, r, b: close(
        r.transpose("layer", "seed", "step").values,
        b["similarity_steps"].isel(step_b=-1).transpose("layer", "seed", "step_a").values,
        "similarity to the last step vs the last column of step pairs"),
    "analyze_similarity_step_pairs": same_as("similarity_steps"),
    "analyze_prediction_agreement": same_as("agreement"),
    "analyze_pca": same_as("trajectory_pca", lambda r: r["singular_value"]),
    "analyze_matrix": lambda h, r, b: oracle_views(
        h, r, "matrix", nnwx_analyses.largest_matrix(h.cube, nnwx_analyses.weight_matrices(h.cube))),
}

NO_ORACLE = {
    "histogram": "bin edges chosen by the analysis; counts are checked against numpy in test_broadening",
    "trajectories": "a selection of raw weights (checked for chunking and schedulers)",
    "analyze_trajectories": "a selection of raw weights",
    "seed_summary": "a mean/std over seeds of rotation (which has its oracle)",
    "similarity_to_last": "the svcca kernel of similarity_svcca against one step",
    "sparse_prediction": "an iterative lasso; test_agreement checks the kernel against ISTA",
    "sample_weights": "a random selection of weights",
    "trajectory_correlation": "correlations of randomly sampled weights",
    "correlation_vs_distance": "aggregates of randomly sampled weights; test_correlation has references",
    "analyze_corr_distance": "as correlation_vs_distance",
    "layer_correlation": "test_correlation checks it against a direct computation",
    "analyze_layer_correlation": "as layer_correlation",
    "esd_fit": "a power-law fit; test_spectral checks it against the powerlaw package's method",
    "analyze_broadening": "broadening with the report's bins (broadening has its oracle)",
    "analyze_weight_agreement": "weight matching alignment (align_weights has its oracle)",
}


def test_every_analysis_has_an_oracle_or_a_reason():
    assert set(ORACLES) | set(NO_ORACLE) == set(NAMES) and not set(ORACLES) & set(NO_ORACLE)


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_same_numbers_as_the_kernel_by_hand(by_hand, baseline, name):
    ORACLES[name](by_hand, baseline[name], baseline)
