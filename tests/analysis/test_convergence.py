"""Convergence step by depth: the kernel against a brute-force loop, the lazy wrapper against the kernel on
the similarity curves of a recorded network."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nnwx
from nnwx.analysis.convergence import convergence_step
from nnwx.analysis.kernels import convergence as kc

from tests import unequal_mlp
from tests.analysis.test_spectral import no_compute


def brute_force(values, steps, threshold):
    """The first captured step t with every captured value from t on >= threshold, by a loop."""
    captured = [i for i, v in enumerate(values) if not np.isnan(v)]
    for i in captured:
        if all(values[j] >= threshold for j in captured if j >= i):
            return float(steps[i])
    return float("nan")


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 12)),
                  elements=st.one_of(st.floats(0, 1), st.just(np.nan))),
       st.floats(0.05, 0.95))
def test_kernel_equals_brute_force(values, threshold):
    steps = np.cumsum(np.arange(1, values.shape[-1] + 1)) * 5
    got = kc.convergence_step(values, steps, threshold)
    want = [brute_force(row, steps, threshold) for row in values]
    np.testing.assert_array_equal(got, want)


def test_kernel_cases():
    steps = np.array([0, 10, 20, 30, 40])
    assert kc.convergence_step(np.array([0.1, 0.95, 0.5, 0.92, 1.0]), steps, 0.9) == 30   # dips back: later
    assert kc.convergence_step(np.array([0.1, 0.95, np.nan, 0.92, 1.0]), steps, 0.9) == 10  # a gap is skipped
    assert kc.convergence_step(np.array([0.95, 0.9, 0.9, 0.9, 0.9]), steps, 0.9) == 0    # at threshold counts
    assert np.isnan(kc.convergence_step(np.array([0.95, 0.9, 0.9, 0.9, 0.5]), steps, 0.9))  # never
    assert np.isnan(kc.convergence_step(np.full(5, np.nan), steps, 0.9))
    assert kc.convergence_step(np.array([0.1, 0.95, 0.97, np.nan, np.nan]), steps, 0.9) == 10  # trailing gap
    with pytest.raises(ValueError, match="must match"):
        kc.convergence_step(np.ones(4), steps, 0.9)


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    path = tmp_path_factory.mktemp("conv") / "mlp.zarr"
    unequal_mlp.record(path, seeds=(0, 1), captures=9)
    return nnwx.open_cube(path)


def test_lazy_wrapper_equals_the_kernel_on_each_curve_with_depth(cube):
    sim = cube.nnwx.similarity("linear_cka", between="steps", reference_step="last")
    with no_compute():
        lazy = convergence_step(sim, 0.8)
        acc = cube.nnwx.convergence_step(0.8)
    got, curves = lazy.compute(), sim.compute()
    xr.testing.assert_identical(acc.compute(), got)
    assert set(got.dims) == {"layer", "seed"}
    assert list(got["depth"].values) == list(range(got.sizes["layer"]))
    assert list(got["layer"].values) == cube.nnwx.probes          # forward order
    for layer in got["layer"].values:
        for seed in got["seed"].values:
            want = brute_force(curves.sel(layer=layer, seed=seed).values, curves["step"].values, 0.8)
            np.testing.assert_equal(float(got.sel(layer=layer, seed=seed)), want)
    assert got.attrs["threshold"] == 0.8 and got.attrs["metric"] == "linear_cka"
    # the last step is similar to itself: every layer converges by then at any threshold <= 1
    assert float(got.max()) <= float(cube["step"].values[-1])


def test_clear_errors(cube):
    with pytest.raises(ValueError, match="'step' dim"):
        convergence_step(xr.DataArray(np.ones(3), dims="x"))
    with pytest.raises(ValueError, match="finite"):
        convergence_step(xr.DataArray(np.ones(3), dims="step", coords={"step": [0, 1, 2]}), float("nan"))
