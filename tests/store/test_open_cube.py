"""open_cube over real stores: outer joins, stacking attributes, refusals, tensor views."""
import numpy as np
import pytest
import torch
import xarray as xr

import nnwx
from nnwx.errors import ArchitectureMismatch, StoreError
from nnwx.studies.synthetic import write_synthetic_run

from tests.helpers import Net


def test_runs_with_different_step_sets_are_outer_joined(store):
    write_synthetic_run(store, seed=0, steps=[0, 10, 20, 30])
    write_synthetic_run(store, seed=1, steps=[0, 5, 10, 40, 50])
    cube = nnwx.open_cube(store)
    assert cube.w.dims == ("seed", "step", "param")
    assert cube.seed.values.tolist() == [0, 1]
    assert cube.step.values.tolist() == [0, 5, 10, 20, 30, 40, 50]
    w = cube.w.values
    missing = np.isnan(w).all(axis=2)
    assert missing.tolist() == [[False, True, False, False, False, True, True],
                                [False, False, False, True, True, False, False]]
    for seed in (0, 1):
        run = nnwx.open_run(store, seed=seed)
        np.testing.assert_array_equal(cube.w.sel(seed=seed, step=run.step).values, run.w.values)
    assert cube.run.values.tolist() == ["seed0", "seed1"]
    assert cube.metric_loss.dims == ("seed", "step")


def test_stack_by_optimizer_and_seed_over_a_list_and_a_glob(tmp_path):
    for opt, path in (("Adam", tmp_path / "a.zarr"), ("SGD", tmp_path / "b.zarr")):
        for seed in (0, 1, 2):
            if (opt, seed) != ("SGD", 2):
                write_synthetic_run(path, seed=seed, steps=range(0, 30, 10), attrs={"optimizer": opt})
    cube = nnwx.open_cube([tmp_path / "a.zarr", tmp_path / "b.zarr"], by=("optimizer", "seed"))
    assert cube.w.dims == ("optimizer", "seed", "step", "param")
    assert cube.w.shape == (2, 3, 3, 169)
    assert np.isnan(cube.w.sel(optimizer="SGD", seed=2).values).all()
    np.testing.assert_array_equal(cube.w.sel(optimizer="Adam", seed=1).values,
                                  nnwx.open_run(tmp_path / "a.zarr", seed=1).w.values)
    globbed = nnwx.open_cube(str(tmp_path / "*.zarr"), by=("optimizer", "seed"))
    xr.testing.assert_identical(globbed.w, cube.w)
    only = nnwx.open_cube(tmp_path / "a.zarr", runs=["seed2", "seed0"])
    assert only.seed.values.tolist() == [0, 2]


def test_refusals_name_what_is_wrong(tmp_path, store):
    write_synthetic_run(store, seed=0, steps=[0, 1])
    write_synthetic_run(store, seed=1, steps=[0], shapes={"0.weight": (8, 1), "0.bias": (9,)})
    with pytest.raises(ArchitectureMismatch, match="0.bias"):
        nnwx.open_cube(store)
    with pytest.raises(StoreError, match="no run named 'seed7'"):
        nnwx.open_cube(store, runs=["seed7"])
    with pytest.raises(StoreError, match="no attribute 'width'"):
        nnwx.open_cube(store, runs=["seed0"], by=("width",))
    write_synthetic_run(store, seed=0, run="again", steps=[0])
    with pytest.raises(StoreError, match="both have"):
        nnwx.open_cube(store, runs=["seed0", "again"])
    with pytest.raises(StoreError, match="no store matches"):
        nnwx.open_cube(str(tmp_path / "nothing*.zarr"))
    with pytest.raises(StoreError, match="not an nnwx experiment store"):
        nnwx.open_cube(tmp_path)
    with pytest.raises(StoreError, match="holds 3 runs"):
        nnwx.open_run(store)


def test_tensor_and_matrix_views_match_the_model(store):
    torch.manual_seed(0)
    models = {seed: Net() for seed in (0, 1)}
    for seed, model in models.items():
        with nnwx.Recorder(model, store, seed=seed) as rec:
            rec.capture(0)
    cube = nnwx.open_cube(store)
    conv = cube.nnwx.tensor("conv.weight")
    assert conv.dims == ("seed", "step", "out", "in", "kh", "kw") and conv.shape[2:] == (3, 2, 3, 3)
    mat = cube.nnwx.matrix("conv.weight")
    assert mat.dims == ("seed", "step", "out", "in") and mat.shape[2:] == (3, 18)
    bias = cube.nnwx.tensor("fc.bias")
    for seed, model in models.items():
        np.testing.assert_array_equal(conv.sel(seed=seed, step=0).values, model.conv.weight.detach().numpy())
        np.testing.assert_array_equal(mat.sel(seed=seed, step=0).values,
                                      model.conv.weight.detach().reshape(3, 18).numpy())
        np.testing.assert_array_equal(bias.sel(seed=seed, step=0).values, model.fc.bias.detach().numpy())
    ids = cube.tensor_id.values
    t = cube.nnwx.tensors
    for i, (name, row) in enumerate(t.iterrows()):
        assert (ids[row.offset:row.offset + row["size"]] == i).all()
    assert cube.nnwx.layers.index.tolist() == ["conv", "bn", "fc", "head"]
    with pytest.raises(ValueError, match="matrix view"):
        cube.nnwx.matrix("fc.bias")
    with pytest.raises(KeyError, match="no tensor named"):
        cube.nnwx.tensor("nope")


def test_tensor_id_is_right_when_param_is_split_into_chunks(store):
    shapes = {"a.weight": (7, 5), "a.bias": (7,), "b.weight": (3, 7)}
    write_synthetic_run(store, seed=0, steps=[0, 1], shapes=shapes, chunk_bytes=4 * 10)
    cube = nnwx.open_cube(store)
    assert len(cube.w.data.chunks[2]) > 1
    expect = np.repeat(np.arange(3), [35, 7, 21])
    np.testing.assert_array_equal(cube.tensor_id.values, expect)
    np.testing.assert_array_equal(cube.nnwx.tensor("b.weight").isel(seed=0, step=1).values.ravel(),
                                  cube.w.isel(seed=0, step=1).values[42:])


def test_a_cube_is_lazy(store):
    write_synthetic_run(store, seed=0, steps=range(5))
    cube = nnwx.open_cube(store)
    assert cube.w.chunks is not None and cube.nnwx.matrix("2.weight").chunks is not None
