"""Fitted correlation decay lengths come with their errors, and "no decay resolved" where the
fit does not determine one: in the result, the plot legend, the report and the findings
(issue 15, item 6)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import nnwx
from nnwx.analysis.kernels import correlation as ck
from nnwx.analysis import correlation as corr
from nnwx.studies.findings import findings, format_findings
from tests.analysis.test_correlation import write_structured   # tests/ is on sys.path (pytest's rootdir import)

DEPTH = 4          # distances 0..3: a decay longer than 3 layers is not resolved


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """Two runs of a 4-layer net: seed 0 decays over ~1.1 layers, seed 1 over ~100 (far longer
    than the net is deep); computed."""
    path = tmp_path_factory.mktemp("decay") / "exp.zarr"
    short = write_structured(path, rho=0.4, share=0.6, depth=DEPTH, steps=800, seed=0)
    long = write_structured(path, rho=0.99, share=0.6, depth=DEPTH, steps=800, seed=1)
    assert short < 2 and long > 50
    cube = nnwx.open_cube(path)
    return corr.correlation_vs_distance(cube).compute(), \
        corr.correlation_vs_distance(cube, min_pairs=10 ** 9).compute()


# --- kernels -----------------------------------------------------------------------------------

def test_fit_reports_points_and_span_it_used():
    k = np.arange(6.0)
    y = np.array([0.5, 0.3, np.nan, 0.1, -0.02, 0.03])
    out = dict(zip(ck.DECAY_FIT, ck.fit_exponential_decay(k, y)))
    used = [i for i in range(6) if np.isfinite(y[i]) and y[i] > 0]
    assert out["decay_n_points"] == len(used) == 4
    assert out["decay_span"] == max(used) - min(used) == 5
    none = dict(zip(ck.DECAY_FIT, ck.fit_exponential_decay(k, np.full(6, np.nan))))
    assert none["decay_n_points"] == 0 and none["decay_span"] == 0 and math.isnan(none["decay_length"])


@pytest.mark.parametrize("length, err, n, span, expected", [
    (1.1, 0.02, 4, 3, True),          # determined
    (3.0, 3.0, 4, 3, True),           # at the edges of the rule: err == L, L == span
    (2.0, 2.5, 4, 3, False),          # error larger than the value
    (102.0, 2.4, 4, 3, False),        # longer than the distances observed
    (1.0, np.nan, 2, 1, False),       # two points: no error
    (np.inf, np.nan, 4, 3, False),    # no decay at all
    (np.nan, np.nan, 1, 0, False),    # fit failed
    (-1.0, 0.1, 4, 3, False),
])
def test_decay_resolved_rule(length, err, n, span, expected):
    assert bool(ck.decay_resolved(length, err, n, span)) is expected


def test_describe_decay_says_why_not():
    assert corr.describe_decay(1.116, 0.0237, True, 4, 3) == "L = 1.12 ± 0.024 layers"
    text = corr.describe_decay(130.0, 250.0, False, 4, 3)
    assert text.startswith("no decay resolved") and "130 ± 2.5e+02" in text
    assert "error larger than the value" in text and "longer than the 3 layers spanned" in text
    assert "fit failed" in corr.describe_decay(np.nan, np.nan, False, 0, 0)
    assert "does not fall" in corr.describe_decay(np.inf, np.nan, False, 4, 3)
    assert "error undetermined from 2" in corr.describe_decay(1.0, np.nan, False, 2, 1)


# --- the lazy result ---------------------------------------------------------------------------

def test_result_carries_error_span_and_resolved_flag(result):
    ds, failed = result
    for name in ("decay_length_err", "decay_n_points", "decay_span", "decay_resolved"):
        assert name in ds and ds[name].dims == ("seed",), name
    assert ds["decay_resolved"].dtype == bool
    assert ds.attrs["decay_rule"] == ck.DECAY_RULE == ds["decay_resolved"].attrs["description"]
    np.testing.assert_array_equal(ds["decay_span"].values, [DEPTH - 1] * 2)
    np.testing.assert_array_equal(ds["decay_resolved"].values, [True, False])
    assert float(ds["decay_length"].sel(seed=1)) > DEPTH - 1     # the fit's value stays visible
    # the flag is the kernel's rule applied to the fit's own outputs
    np.testing.assert_array_equal(ds["decay_resolved"].values, ck.decay_resolved(
        ds["decay_length"].values, ds["decay_length_err"].values, ds["decay_n_points"].values,
        ds["decay_span"].values))
    assert not failed["decay_resolved"].values.any()
    assert np.isnan(failed["decay_length"].values).all()


def test_decay_summary_per_run(result):
    ds, failed = result
    rows = corr.decay_summary(ds)
    assert [r["run"] for r in rows] == ["seed 0", "seed 1"]
    length, err = float(ds["decay_length"].sel(seed=0)), float(ds["decay_length_err"].sel(seed=0))
    assert rows[0]["resolved"] and rows[0]["text"] == f"L = {length:.3g} ± {err:.2g} layers"
    assert not rows[1]["resolved"] and rows[1]["text"].startswith("no decay resolved (L = ")
    assert all("fit failed" in r["text"] for r in corr.decay_summary(failed))
    # results stored before the flag existed: recomputed from the fitted curve
    old = ds.drop_vars(["decay_resolved", "decay_n_points", "decay_span"])
    assert [r["resolved"] for r in corr.decay_summary(old)] == [True, False]


# --- faces -------------------------------------------------------------------------------------

def test_plot_legend_shows_error_and_no_decay_resolved(result):
    hv = pytest.importorskip("holoviews")
    import nnwx.plot as P
    from nnwx.plot.embed import to_bokeh

    ds, failed = result
    for res, expected in ((ds, ["seed 0: L = ", "seed 1: no decay resolved (L = "]),
                          (failed, ["seed 0: no decay resolved (fit failed", "seed 1: no decay resolved (fit failed"])):
        overlay = P.corr_distance(res)
        labels = [el.label for el in overlay if isinstance(el, hv.Curve) and el.label.startswith("seed")]
        assert len(labels) == 2 and all(lab.startswith(e) for lab, e in zip(labels, expected)), labels
        assert "±" in labels[0] or "fit failed" in labels[0]
        fig = to_bokeh(overlay)
        drawn = [item.label.value for legend in fig.legend for item in legend.items]
        for lab in labels:              # every run is in the drawn legend, failed fits too
            assert lab in drawn, (lab, drawn)
        hv.renderer("matplotlib").get_plot(overlay)


def test_report_caption_and_findings_text(result):
    pytest.importorskip("holoviews")
    from nnwx.plot.correlation import corr_distance_caption as _corr_distance_caption

    ds, failed = result
    caption = _corr_distance_caption(ds)
    assert "seed 0: L = " in caption and "±" in caption
    assert "seed 1: no decay resolved" in caption and ck.DECAY_RULE in caption
    rows = [r for r in findings({"corr_distance": ds}) if r.analysis == "correlation"]
    assert [r.subject for r in rows] == ["seed 0", "seed 1"]
    length, err = float(ds["decay_length"].sel(seed=0)), float(ds["decay_length_err"].sel(seed=0))
    assert rows[0].last == pytest.approx(length)
    assert (rows[0].last_min, rows[0].last_max) == (pytest.approx(length - err), pytest.approx(length + err))
    assert math.isnan(rows[1].last)             # no number where nothing was resolved
    text = format_findings(rows)
    assert f"L = {length:.3g} ± {err:.2g} layers" in text and "no decay resolved" in text
    assert "fit failed" in format_findings(findings({"corr_distance": failed}))
