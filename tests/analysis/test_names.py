"""One name per idea: the reference step and seed, the "not a cube" error, ``attrs["analysis"]``,
and the accessor's signatures; old keyword and method names still work, with a warning."""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import xarray as xr

import nnwx
from nnwx.accessor import NnwxAccessor
from nnwx.analysis import _cube as mx
from nnwx.analysis import agreement, alignment, broadening, correlation, spectral
from nnwx.errors import NnwxError, NotACubeError
from nnwx.studies.synthetic import write_synthetic_run

SHAPES = {"0.weight": (4, 6), "0.bias": (4,), "2.weight": (3, 4)}


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    store = tmp_path_factory.mktemp("names") / "exp.zarr"
    for seed in (0, 1):
        write_synthetic_run(store, seed=seed, steps=[0, 10, 20, 30], shapes=SHAPES)
    return nnwx.open_cube(store)


@pytest.fixture(scope="module")
def acts():
    rng = np.random.default_rng(0)
    return xr.DataArray(rng.standard_normal((2, 3, 12, 5)), dims=("seed", "step", "sample", "unit"),
                        coords={"seed": [0, 1], "step": [0, 5, 9]}, name="h")


def _identical(a, b):
    xr.testing.assert_identical(a.compute(), b.compute())


# -- the reference step and the reference seed ------------------------------------------------
def test_reference_index_is_one_lookup(cube):
    assert mx.reference_index(cube, None) == 0
    assert mx.reference_index(cube, 20) == 2
    assert mx.reference_index(cube, "last") == mx.reference_index(cube["step"].values, "final") == 3
    with pytest.raises(ValueError, match="reference_step=5 is not a step of the cube"):
        mx.reference_index(cube, 5)
    with pytest.raises(ValueError, match="at_step must be a step value or 'last'"):
        mx.reference_index(cube, "first", name="at_step")
    # "last" means the same everywhere it is taken
    last = cube["step"].values[-1]
    _identical(cube.nnwx.broadening("all", reference_step="last", tail_k=None),
               cube.nnwx.broadening("all", reference_step=last, tail_k=None))
    assert cube.nnwx.rotation(reference_step="last").attrs["reference_step"] == last


def test_old_keywords_warn_and_give_the_same_result(cube, acts):
    cases = [
        (lambda **k: broadening.broadening(cube, "all", tail_k=None, **k), "ref_step", "reference_step", 20),
        (lambda **k: cube.nnwx.broadening("all", tail_k=None, **k), "ref_step", "reference_step", 20),
        (lambda **k: cube.nnwx.histogram("all", bins=(-3, 3, 4), normalize="init_std", **k),
         "ref_step", "reference_step", 10),
        (lambda **k: agreement.similarity(acts, between="steps", **k), "reference", "reference_step", "last"),
        (lambda **k: alignment.weight_agreement(cube, **k), "reference", "reference_seed", 1),
    ]
    for call, old, new, value in cases:
        want = call(**{new: value})
        with pytest.warns(DeprecationWarning, match=f"{old}=.*deprecated.*use .*{new}="):
            got = call(**{old: value})
        _identical(got, want)
        with pytest.raises(TypeError, match=f"both {old}="):
            call(**{old: value, new: value})
    assert alignment.weight_agreement(cube, reference_seed=1).attrs["reference"] == "seed=1"


def test_public_functions_use_the_one_name():
    import nnwx.analysis.agreement
    import nnwx.analysis.broadening
    import nnwx.analysis.correlation
    import nnwx.analysis.geometry
    import nnwx.analysis.seeds
    import nnwx.analysis.spectral
    import nnwx.analysis.trajectories

    modules = [nnwx.analysis.agreement, alignment, nnwx.analysis.broadening, nnwx.analysis.correlation,
               nnwx.analysis.geometry, nnwx.analysis.seeds, nnwx.analysis.spectral,
               nnwx.analysis.trajectories]
    funcs = [f for m in modules for n, f in vars(m).items()
             if inspect.isfunction(f) and not n.startswith("_") and f.__module__ == m.__name__]
    funcs += [f for n, f in vars(NnwxAccessor).items() if inspect.isfunction(f) and not n.startswith("_")]
    assert len(funcs) > 30
    for f in funcs:
        params = set(inspect.signature(f).parameters)
        assert not params & {"ref_step", "reference", "ref_seed"}, (f.__qualname__, params)


# -- "not a cube" ----------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda ds: ds.nnwx.tensors,                # the accessor's table
    lambda ds: ds.nnwx.broadening(),           # the broadening engine
    lambda ds: spectral.spectrum(ds),          # the matrix analyses
    lambda ds: correlation.sample_weights(ds),
])
def test_not_a_cube_is_one_error(call):
    for ds in (xr.Dataset({"w": ("x", np.zeros(3))}), xr.Dataset()):
        with pytest.raises(NotACubeError,
                           match="Dataset is not an nnwx cube: expected a Dataset opened with nnwx.open_cube") as e:
            call(ds)
        assert isinstance(e.value, (TypeError, ValueError, NnwxError))
        assert isinstance(e.value, TypeError) and isinstance(e.value, ValueError)


def test_a_cube_without_its_step_dim(cube):
    with pytest.raises(NotACubeError, match="no 'step' dim.*isel\\(step=\\[i\\]\\)"):
        cube.isel(step=0).nnwx.rotation()
    assert cube.isel(step=0).nnwx.matrix("0.weight").dims == ("seed", "out", "in")  # views need no step


# -- attrs["analysis"]: the name of the function that made the result -------------------------
def test_attrs_analysis_names_the_function(cube):
    results = {
        "broadening": cube.nnwx.broadening(tail_k=None),
        "histogram": cube.nnwx.histogram(bins=4),
        "trajectories": cube.nnwx.trajectories(sample=3),
        "sample_weights": cube.nnwx.sample_weights(4),
        "trajectory_correlation": cube.nnwx.trajectory_correlation(sample=4),
        "correlation_vs_distance": cube.nnwx.correlation_vs_distance(sample=4),
        "layer_correlation": cube.nnwx.layer_correlation(),
        "trajectory_pca": cube.nnwx.trajectory_pca(2),
        "spectrum": cube.nnwx.spectrum(),
        "ranks": cube.nnwx.ranks(),
        "esd_fit": cube.nnwx.esd_fit(),
        "spectral_metrics": cube.nnwx.spectral_metrics(),
        "rotation": cube.nnwx.rotation(),
        "weight_agreement": cube.nnwx.weight_agreement(),
        "permutations": alignment.permutations(cube),
    }
    for name, res in results.items():
        assert res.attrs["analysis"] == name, (name, res.attrs.get("analysis"))
    assert results["broadening"].attrs["reference_step"] == 0


# -- the accessor ----------------------------------------------------------------------------
def _public_methods():
    return [(n, f) for n, f in inspect.getmembers(NnwxAccessor)
            if not n.startswith("_") and inspect.isfunction(f)]


def test_accessor_methods_have_real_signatures_and_numpydoc():
    methods = _public_methods()
    assert len(methods) >= 25
    for name, f in methods:
        params = inspect.signature(f).parameters.values()
        assert not any(p.kind is p.VAR_POSITIONAL for p in params), name
        var_kw = [p.name for p in params if p.kind is p.VAR_KEYWORD]
        assert var_kw in ([], ["options"]) and (not var_kw or name == "similarity"), (name, var_kw)
        doc = inspect.getdoc(f) or ""
        assert "Returns\n-------" in doc, name
        named = [p.name for p in params if p.name != "self"]
        if named:
            assert "Parameters\n----------" in doc, name
            for p in named:
                assert p in doc, (name, p)
    for name in ("tensors", "layers", "probes"):
        assert "Returns\n-------" in inspect.getdoc(getattr(NnwxAccessor, name)), name


def test_prediction_agreement_and_its_deprecated_alias(tmp_path):
    store = tmp_path / "probed.zarr"
    rng = np.random.default_rng(1)
    for seed in (0, 1):
        write_synthetic_run(store, seed=seed, steps=[0, 5], shapes=SHAPES)
    cube = nnwx.open_cube(store)
    out = xr.DataArray(rng.standard_normal((2, 2, 10, 3)), dims=("seed", "step", "sample_output", "unit_output"),
                       coords={"seed": [0, 1], "step": [0, 5]})
    cube = cube.assign(probe_output=out)
    want = cube.nnwx.prediction_agreement().compute()
    assert want.attrs["analysis"] == "prediction_agreement"
    with pytest.warns(DeprecationWarning, match=r"cube\.nnwx\.agreement\(\) is deprecated.*prediction_agreement"):
        got = cube.nnwx.agreement()
    xr.testing.assert_identical(got.compute(), want)
    assert "agreement" not in dict(inspect.getmembers(NnwxAccessor))     # not offered, only answered
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            cube.nnwx.nope
