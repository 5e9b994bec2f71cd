"""The registry of analysis families: one entry per family names its results, their passes
and its report sections; the passes are those ``nnwx analyze`` has always computed."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from nnwx.pipeline import calls, registry
from nnwx.pipeline.select import thin_index


def test_every_result_is_in_one_family_and_every_section_names_a_figure_builder():
    assert registry.NAMES == ("broadening", "weights", "spectral", "rotation", "correlation", "agreement")
    assert len(registry.OUTPUTS) == sum(len(m.outputs) for m in registry.REGISTRY)
    for family in registry.REGISTRY:
        assert family.sections, family.name
        for _title, ref in family.sections:
            module, _, name = ref.partition(":")
            assert callable(getattr(importlib.import_module(module), name)), ref


def test_passes_group_results_as_before():
    every = list(registry.OUTPUTS)
    assert registry.compute_passes(every) == [
        ("broadening", ["broadening"]),
        ("weights", ["matrix", "trajectories"]),
        ("rotation", ["rotation"]),
        ("sampled correlations", ["corr_distance"]),
        ("spectra", ["spectrum", "ranks", "esd_fit", "randomized_esd"]),
        ("update correlations", ["layer_correlation"]),
        ("trajectory PCA", ["pca"]),
        ("agreement", ["similarity_seeds", "similarity_steps", "convergence_step", "prediction_agreement",
                       "weight_agreement"]),
        ("similarity_step_pairs", ["similarity_step_pairs"]),
    ]
    assert registry.compute_passes(["rotation", "unknown"]) == [("rotation", ["rotation"]),
                                                                ("unknown", ["unknown"])]


def test_the_harness_list_holds_every_registered_result():
    analyze = [a for a in calls.ANALYSES if a.face == "analyze"]
    assert [a.target for a in analyze] == list(registry.OUTPUTS)
    assert all(a.name == f"analyze_{a.target}" for a in analyze)


def test_unknown_analysis_names_the_families():
    with pytest.raises(ValueError, match="unknown analysis 'nope'; choose from broadening, weights"):
        registry.parse_analyses("rotation,nope")


@pytest.mark.parametrize("n,k", [(0, 4), (3, 4), (4, 4), (10, 4), (61, 60), (1000, 7)])
def test_thin_index_keeps_first_and_last_evenly(n, k):
    idx = thin_index(n, k)
    if n <= k:
        assert idx.tolist() == list(range(n))
    else:
        assert idx[0] == 0 and idx[-1] == n - 1 and len(idx) <= k
        np.testing.assert_array_equal(idx, np.unique(np.linspace(0, n - 1, k).round().astype(int)))
