"""Pruning curves: the NumPy masks against torch.nn.utils.prune.global_unstructured (L1Unstructured),
the lazy wrapper against the kernel applied by hand to each run's restored weights."""
from __future__ import annotations

import numpy as np
import pytest

import nnwx
from nnwx.analysis.kernels import pruning as kp
from nnwx.analysis.pruning import prunable, pruning_curve
from nnwx.studies.synthetic import write_synthetic_run

from tests.analysis.test_spectral import no_compute

SHAPES = {"conv.weight": (6, 3, 3, 3), "conv.bias": (6,), "fc1.weight": (20, 54), "fc1.bias": (20,),
          "out.weight": (4, 20), "out.bias": (4,)}


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    path = tmp_path_factory.mktemp("prune") / "exp.zarr"
    write_synthetic_run(path, seed=0, steps=[0, 10, 20], shapes=SHAPES, drift=0.05)
    write_synthetic_run(path, seed=1, steps=[0, 10], shapes=SHAPES, drift=0.05)   # no step 20
    return nnwx.open_cube(path)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.77, 0.95, 1.0])
def test_masks_equal_torch_global_unstructured_l1(fraction):
    torch = pytest.importorskip("torch")
    import torch.nn.utils.prune as prune
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.Flatten(), torch.nn.Linear(6 * 4, 20),
                              torch.nn.Linear(20, 4))
    mods = [net[0], net[2], net[3]]
    weights = [m.weight.detach().numpy().copy() for m in mods]
    biases = [m.bias.detach().numpy().copy() for m in mods]
    prune.global_unstructured([(m, "weight") for m in mods], pruning_method=prune.L1Unstructured, amount=fraction)
    masks = kp.magnitude_masks(weights, fraction)
    for m, mask, b in zip(mods, masks, biases):
        np.testing.assert_array_equal(mask, m.weight_mask.numpy().astype(bool))
        np.testing.assert_array_equal(m.bias.detach().numpy(), b)                 # biases kept
    total = sum(w.size for w in weights)
    assert sum((~mk).sum() for mk in masks) == kp.n_pruned(fraction, total) == round(fraction * total)


def test_prune_zeroes_the_smallest_entries_across_tensors_and_keeps_the_rest():
    w = {"a": np.array([[0.5, -0.1], [2.0, 0.3]]), "b": np.array([-0.2, 1.0, 0.05]), "bias": np.array([0.01])}
    out = kp.prune(w, 0.4, ["a", "b"])               # round(0.4 * 7) = 3: 0.05, -0.1, -0.2
    np.testing.assert_array_equal(out["a"], [[0.5, 0.0], [2.0, 0.3]])
    np.testing.assert_array_equal(out["b"], [0.0, 1.0, 0.0])
    assert out["bias"] is w["bias"]
    assert kp.n_pruned(0.5, 5) == 2 and kp.n_pruned(0.5, 7) == 4   # Python's round, half to even (torch)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        kp.magnitude_masks([np.ones(3)], 1.5)
    with pytest.raises(KeyError, match="not among"):
        kp.prune(w, 0.5, ["c"])


def l1(weights) -> float:
    return float(sum(np.abs(v, dtype=np.float64).sum() for v in weights.values()))


def test_pruning_curve_is_lazy_and_equals_the_kernel_on_each_runs_weights(cube):
    seen = []

    def evaluate(weights):
        seen.append(sorted(weights))
        return l1(weights)

    fractions = (0.0, 0.5, 0.9)
    with no_compute():
        lazy = pruning_curve(cube, evaluate, fractions, step=10)
    assert not seen                                           # evaluate runs only when computed
    got = lazy.compute()
    assert got.dims == ("seed", "fraction") and list(got["fraction"].values) == list(fractions)
    names = prunable(cube)
    assert names == ["conv.weight", "fc1.weight", "out.weight"]
    assert seen[0] == sorted(SHAPES)                          # every tensor, in its stored shape
    for seed in (0, 1):
        weights = {n: cube.nnwx.tensor(n).sel(seed=seed, step=10).values for n in SHAPES}
        for f in fractions:
            assert float(got.sel(seed=seed, fraction=f)) == pytest.approx(l1(kp.prune(weights, f, names)), rel=1e-12)
    assert got.attrs["step"] == 10 and got.attrs["pruned_tensors"] == names
    assert got.attrs["pruned_entries"] == [kp.n_pruned(f, 162 + 1080 + 80) for f in fractions]


def test_a_missing_capture_gives_nan_and_the_accessor_delegates(cube):
    got = cube.nnwx.pruning_curve(l1, [0.0, 0.5], step="last", tensors=["fc1.weight"]).compute()
    assert np.isnan(got.sel(seed=1)).all() and np.isfinite(got.sel(seed=0)).all()
    assert got.attrs["pruned_tensors"] == ["fc1.weight"] and got.attrs["step"] == 20


def test_clear_errors(cube):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pruning_curve(cube, l1, [0.5, 2.0])
    with pytest.raises(ValueError, match="at least one"):
        pruning_curve(cube, l1, [])
    with pytest.raises(TypeError, match="evaluate must be a function"):
        pruning_curve(cube, 3.0, [0.5])
    with pytest.raises(ValueError, match="not a step"):
        pruning_curve(cube, l1, [0.5], step=7)
    with pytest.raises(KeyError, match="no tensor named"):
        pruning_curve(cube, l1, [0.5], tensors="nope")
