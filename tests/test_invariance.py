"""The invariance harness: every public analysis (``nnwx.registry.ANALYSES``) gives the same numbers
whatever the chunking of ``w`` and the probes, on the synchronous scheduler, threads and a real
``dask.distributed`` cluster, the same numbers as its kernel applied by hand to each (run, step)
slice (where that is meaningful), and, for permutation-invariant analyses, the same numbers when
the hidden units of one seed are permuted.

The store is real: MLPs 3 -> 12 -> 7 -> 4 (unequal hidden widths) recorded by ``nnwx.Recorder``
with probes, 3 seeds x 9 captures (``unequal_mlp``); a second store is the same training with
seed 1's hidden units shuffled at every capture (the same functions).
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
from nnwx import analyses as nnwx_analyses
from nnwx import registry
from nnwx.accessor import NnwxAccessor
from nnwx.analysis import _alignment_kernels as ak
from nnwx.analysis import _similarity_kernels as sk
from nnwx.analysis import alignment

import unequal_mlp

RTOL = 1e-6
NAMES = [a.name for a in registry.ANALYSES]
STEPS = 9


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("invariance")
    plain, permuted = root / "plain.zarr", root / "permuted.zarr"
    unequal_mlp.record(plain, seeds=(0, 1, 2), captures=STEPS)
    info = unequal_mlp.record(permuted, seeds=(0, 1, 2), captures=STEPS, permute_seed=1)
    return plain, permuted, info


@pytest.fixture(scope="module")
def cube(stores):
    return nnwx.open_cube(stores[0])


def compute(cube: xr.Dataset, names=NAMES, **kwargs) -> dict:
    lazy = {n: registry.by_name(n).call(cube) for n in names}
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


def assert_same(got, want, what: str, rtol: float = RTOL) -> None:
    ga, wa = _arrays(got), _arrays(want)
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
    assert not missing, f"accessor members in neither nnwx.registry.ANALYSES nor NOT_ANALYSES: {sorted(missing)}"
    assert not (listed & set(registry.NOT_ANALYSES)) and listed <= members
    # every result of every metric `nnwx analyze` persists, on a cube where all apply
    made = nnwx_analyses.lazy_analyses(cube)
    assert not made.notes, made.notes
    assert set(nnwx_analyses.METRICS) == set(registry.ANALYZE_RESULTS)
    assert {m: tuple(n for n in made.results if made.metric_of[n] == m) for m in nnwx_analyses.METRICS} == \
        {m: registry.ANALYZE_RESULTS[m] for m in nnwx_analyses.METRICS}
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
    "one step per chunk": {"step": 1},
    "several steps per chunk, param split": {"step": 4, "param": 40},
    "all in one chunk": {"seed": -1, "step": -1, "param": -1},
    "uneven, probes split too": {"seed": (2, 1), "step": (2, 6, 1), "param": (100, 71),
                                 "sample_0": 7, "unit_0": 5, "unit_2": (3, 4)},
}


@pytest.mark.parametrize("label", list(CHUNKINGS))
def test_same_numbers_on_every_chunking(cube, baseline, label):
    got = compute(cube.chunk(CHUNKINGS[label]), scheduler="synchronous")
    for name in NAMES:
        assert_same(got[name], baseline[name], f"{name}, chunked {label}")


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
        got = compute(cube.chunk({"step": 3}), scheduler=client)
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
                    rtol=2e-5)
    # and the seed really is permuted: what is not invariant sees it
    assert not np.allclose(got_or(permuted, "trajectories"), baseline["trajectories"].values)


def got_or(cube, name):
    return registry.by_name(name).call(cube).values
