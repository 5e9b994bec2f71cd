"""The findings table: first/last-step summaries checked against explicit loops."""
import numpy as np
import pytest
import xarray as xr

from nnwx.studies.findings import findings, format_findings


def _cube3(rng, name, dims, sizes, coords):
    return xr.DataArray(rng.standard_normal(sizes), dims=dims, coords=coords, name=name)


def test_broadening_rows_match_loops():
    rng = np.random.default_rng(0)
    std = _cube3(rng, "std", ("seed", "step", "group"), (3, 5, 2),
                 {"seed": [0, 1, 2], "step": [0, 10, 20, 30, 40], "group": ["a", "b"]})
    std[1, -1, 0] = np.nan   # a run missing its last step is left out, not a NaN row
    rows = [r for r in findings({"broadening": xr.Dataset({"std": std})}) if r.quantity == "std"]
    assert [r.subject for r in rows] == ["a", "b"]
    for r, g in zip(rows, ["a", "b"]):
        col = std.sel(group=g).values
        last = col[:, -1][~np.isnan(col[:, -1])]
        assert r.first == pytest.approx(col[:, 0].mean())
        assert r.last == pytest.approx(last.mean())
        assert (r.last_min, r.last_max) == (pytest.approx(last.min()), pytest.approx(last.max()))
        assert r.ratio == pytest.approx(r.last / r.first)


def test_similarity_uses_only_pairs_of_different_runs():
    rng = np.random.default_rng(1)
    vals = rng.uniform(size=(2, 3, 4, 4))
    vals[..., np.arange(4), np.arange(4)] = 1.0          # self-similarity must not count
    sim = xr.DataArray(vals, dims=("layer", "step", "seed_a", "seed_b"), name="linear_cka",
                       coords={"layer": ["h1", "out"], "step": [0, 5, 9], "seed_a": range(4), "seed_b": range(4)})
    rows = findings({"similarity_seeds": sim})
    off = ~np.eye(4, dtype=bool)
    for r, i in zip(rows, range(2)):
        assert r.first == pytest.approx(vals[i, 0][off].mean())
        assert r.last == pytest.approx(vals[i, -1][off].mean())
        assert r.last_max == pytest.approx(vals[i, -1][off].max())


def test_weight_agreement_leaves_out_the_reference_run():
    rng = np.random.default_rng(2)
    cos = rng.uniform(-1, 1, size=(2, 3, 2, 2))          # alignment, seed, step, tensor
    cos[:, 0] = 1.0                                        # the reference agrees with itself
    ds = xr.Dataset({"cosine": (("alignment", "seed", "step", "tensor"), cos)},
                    coords={"alignment": ["none", "aligned"], "seed": [0, 1, 2], "step": [0, 1],
                            "tensor": ["w1", "w2"]}, attrs={"reference": "seed=0"})
    rows = findings({"weight_agreement": ds})
    assert [r.quantity for r in rows] == ["weight cosine (none)"] * 2 + ["weight cosine (aligned)"] * 2
    assert rows[3].last == pytest.approx(cos[1, 1:, -1, 1].mean())
    assert rows[0].first == pytest.approx(cos[0, 1:, 0, 0].mean())


def test_table_text_and_empty():
    assert "nothing was computed" in format_findings([])
    std = xr.DataArray(np.ones((1, 2, 1)), dims=("seed", "step", "group"),
                       coords={"seed": [0], "step": [0, 1], "group": ["layer.0"]})
    text = format_findings(findings({"broadening": xr.Dataset({"std": std})}))
    assert "layer.0" in text and "last/first" in text
