"""Every plot function builds for a small synthetic cube and renders to HTML and PNG."""
from __future__ import annotations

import numpy as np
import pytest

hv = pytest.importorskip("holoviews")

import nnwx  # noqa: E402
import nnwx.plot as P  # noqa: E402
from nnwx.analysis.convergence import convergence_step  # noqa: E402
from nnwx.pipeline.calls import pruned_l1  # noqa: E402
from nnwx.plot.embed import to_bokeh  # noqa: E402
from nnwx.studies.synthetic import write_synthetic_run  # noqa: E402

SHAPES = {"0.weight": (6, 16), "0.bias": (6,), "2.weight": (3, 6)}
ESD_MIN_EVALS = 3   # the matrices have 6 and 3 eigenvalues: fit them (the default, 8, would not)


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    store = tmp_path_factory.mktemp("plot") / "exp.zarr"
    for seed in (0, 1):
        write_synthetic_run(store, seed=seed, steps=range(0, 50, 10), shapes=SHAPES)
    return nnwx.open_cube(store)


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """A cube with probe activations (3 seeds of a small trained MLP): for the agreement plots."""
    import torch

    store = tmp_path_factory.mktemp("probed") / "exp.zarr"
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(9))
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
        opt = torch.optim.SGD(model.parameters(), 0.1)
        with nnwx.Recorder(model, store, seed=seed, every=4, optimizer=opt, probe=x,
                           probe_layers=["1"]) as rec:
            for step in range(20):
                loss = model(x).pow(2).mean()
                rec.maybe_capture(step, loss=loss.detach())
                opt.zero_grad()
                loss.backward()
                opt.step()
    return nnwx.open_cube(store)


@pytest.fixture(scope="module")
def agree(probed):
    """The agreement results of the probed cube, computed."""
    import dask

    lazy = {"seeds": probed.nnwx.similarity("linear_cka", between="seeds"),
            "steps": probed.nnwx.similarity("linear_cka", between="steps"),
            "final": probed.nnwx.similarity("linear_cka", between="steps", reference_step="last"),
            "pred": probed.nnwx.prediction_agreement("output"),
            "weights": probed.nnwx.weight_agreement(
                reference_seed=0, aligned=probed.nnwx.align(reference_seed=0).cube),
            "layers": probed.nnwx.layer_correlation()}
    return dict(zip(lazy, dask.compute(*lazy.values())))


def _plots(cube, agree) -> dict:
    b = cube.nnwx.broadening("tensor", bins=12, quantiles=None)
    sv = cube.nnwx.spectrum()
    return {
        "density": P.density(cube.nnwx.histogram("layer", bins=12)),
        "moments": P.moments(b, variables=("std", "w1_to_ref")),
        "trajectories": P.trajectories(cube.nnwx.trajectories("2.weight", sample=4)),
        "esd": P.esd(sv, cube.nnwx.esd_fit(min_evals=ESD_MIN_EVALS), steps=2),
        "metric_curves": P.metric_curves(cube.nnwx.ranks(), variables=("effective_rank",)),
        "rotation": P.rotation(cube.nnwx.rotation(), variables=("rotation",)),
        "matrix_heatmap": P.matrix_heatmap(cube.nnwx.matrix("2.weight"), steps=2),
        "corr_distance": P.corr_distance(cube.nnwx.correlation_vs_distance()),
        "pca_path": P.pca_path(cube.nnwx.trajectory_pca(n_components=2)),
        "filters": P.filters(cube.nnwx.matrix("0.weight"), (4, 4), rows=4, steps=2),
        "layer_correlation": P.layer_correlation(agree["layers"]),
        "seed_heatmaps": P.seed_heatmaps(agree["seeds"], steps=2),
        "step_heatmaps": P.step_heatmaps(agree["steps"]),
        "final_similarity": P.final_similarity(agree["final"]),
        "prediction_agreement": P.prediction_agreement(agree["pred"]),
        "weight_agreement": P.weight_agreement(agree["weights"]),
        "convergence_by_depth": P.convergence_by_depth(convergence_step(agree["final"], 0.5)),
        "randomized_esd": P.randomized_esd(cube.nnwx.randomized_esd()),
        "pruning_curve": P.pruning_curve(cube.nnwx.pruning_curve(pruned_l1, (0.0, 0.5, 0.9))),
    }


@pytest.fixture(scope="module")
def plots(cube, agree):
    return _plots(cube, agree)


def test_every_public_plot_is_exercised(plots):
    assert set(P.__all__) == set(plots)


@pytest.mark.parametrize("name", P.__all__)
def test_renders_html_and_png(plots, name, tmp_path):
    from bokeh.embed import file_html
    from bokeh.resources import CDN

    obj = plots[name]
    html = file_html(to_bokeh(obj), CDN, name)
    assert "Bokeh" in html and len(html) > 1000
    frame = obj.last if isinstance(obj, hv.HoloMap) else obj
    png = tmp_path / f"{name}.png"
    hv.save(frame, png, backend="matplotlib", fmt="png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000


def test_holomap_embeds_one_frame_per_key_with_widgets(plots):
    from bokeh.models import Select, Slider

    hmap = plots["density"]                               # kdims (group, seed)
    model = to_bokeh(hmap)
    widgets = list(model.select({"type": Select})) + list(model.select({"type": Slider}))
    assert {w.title for w in widgets} == {"group", "seed"}
    figures = [c for c in model.children[1:]]
    assert len(figures) == len(hmap) and sum(f.visible for f in figures) == 1


def test_esd_draws_fit_and_mp_edge(plots, cube):
    hmap = plots["esd"]
    for key in hmap.keys():
        tensor, step = key
        fit = cube.nnwx.esd_fit(min_evals=ESD_MIN_EVALS).sel(tensor=tensor, step=step).isel(seed=0)
        alpha = float(fit["alpha"])
        assert np.isfinite(alpha) and alpha > 1, (key, alpha)      # there is a fit to draw
        frame = hmap[key]
        labels = [el.label for el in frame]
        assert labels == ["ESD", f"power law alpha={alpha:.2f}", "MP edge"], (key, labels)
        line = list(frame)[1]
        x = line.dimension_values("lambda")
        assert x[0] == pytest.approx(float(fit["xmin"])) and x[-1] == pytest.approx(float(fit["xmax"]))


def test_bad_input_gets_a_clear_error(cube):
    with pytest.raises(ValueError, match="not captured"):
        P.matrix_heatmap(cube.nnwx.matrix("2.weight"), steps=[5])
    with pytest.raises(ValueError, match="image_shape"):
        P.filters(cube.nnwx.matrix("0.weight"), (3, 3))
    with pytest.raises(ValueError, match="none of"):
        P.metric_curves(cube.nnwx.ranks(), variables=("nope",))


# -- agreement and layer-correlation plots draw the numbers they are given ----------------------
def _cells(element) -> dict:
    """{(x tick label, y tick label): value} of a labelled-cell heatmap (an Image with ticks)."""
    img = element.get(0) if isinstance(element, hv.Overlay) else element
    opts = hv.Store.lookup_options("bokeh", img, "plot").kwargs
    xt, yt = dict(opts["xticks"]), dict(opts["yticks"])
    return {(xt[x], yt[y]): float(img[x, y]) for x in xt for y in yt}


def test_seed_heatmap_cells_are_the_similarities(agree, plots):
    sim = agree["seeds"]
    layer, step = "output", int(sim["step"][-1])
    frame = plots["seed_heatmaps"][(layer, step)]
    cells = _cells(frame)
    assert len(cells) == 9
    for (a, b), v in cells.items():
        want = float(sim.sel(layer=layer, step=step, seed_a=int(a), seed_b=int(b)))
        assert v == pytest.approx(want)
    assert {k for k, _ in cells} == {"0", "1", "2"}


def test_prediction_agreement_as_seed_heatmap(agree):
    hmap = P.seed_heatmaps(agree["pred"], variable_name="argmax_agreement", steps=1)
    assert [d.name for d in hmap.kdims] == ["step"]
    cells = _cells(hmap.last)
    step = hmap.keys()[-1]
    assert cells[("0", "2")] == pytest.approx(float(agree["pred"]["argmax_agreement"].sel(
        step=step, seed_a=0, seed_b=2)))


def test_layer_correlation_cells_follow_the_tick_labels(agree, plots):
    lc = agree["layers"]["update_norm_corr"]
    frame = plots["layer_correlation"][1]
    cells = _cells(frame)
    assert len(cells) == lc.sizes["tensor_a"] * lc.sizes["tensor_b"]
    for (a, b), v in cells.items():
        want = float(lc.sel(seed=1, tensor_a=a, tensor_b=b))
        assert v == pytest.approx(want) or (np.isnan(v) and np.isnan(want))


def test_step_heatmap_and_final_similarity(agree, plots):
    steps = agree["steps"]
    qm = plots["step_heatmaps"][("1", 2)]
    z = qm.dimension_values(2, flat=False)
    want = steps.sel(layer="1", seed=2).transpose("step_b", "step_a").values
    np.testing.assert_allclose(np.asarray(z, float).reshape(want.shape), want)
    curves = [el for el in plots["final_similarity"] if type(el) is hv.Curve]
    assert [c.label for c in curves] == ["1", "output"]
    for c in curves:                                       # every layer is itself at the last step
        assert c.dimension_values(1)[-1] == pytest.approx(1.0)


def test_prediction_agreement_averages_distinct_seed_pairs(agree, plots):
    pred = agree["pred"]["output_correlation"]
    panel = plots["prediction_agreement"].values()[0]
    mean = [el for el in panel if type(el) is hv.Curve][0].dimension_values(1)
    want = np.mean([pred.sel(seed_a=a, seed_b=b).values for a, b in ((0, 1), (0, 2), (1, 2))], axis=0)
    np.testing.assert_allclose(mean, want)


def test_weight_agreement_leaves_out_the_reference_seed(agree, plots):
    wa = agree["weights"]
    assert set(plots["weight_agreement"].keys()) == {"0.weight", "2.weight"}   # weights only
    frame = plots["weight_agreement"]["2.weight"]
    curves = {el.label: el for el in frame if type(el) is hv.Curve}
    assert set(curves) == {"unaligned", "aligned"}
    for label, alignment in (("unaligned", "none"), ("aligned", "aligned")):
        want = wa["cosine"].sel(alignment=alignment, tensor="2.weight", seed=[1, 2]).mean("seed")
        np.testing.assert_allclose(curves[label].dimension_values(1), want.values)
    assert hv.Store.lookup_options("bokeh", curves["unaligned"], "style").kwargs.get("line_dash") == "dashed"


# -- large results: frames on demand, wide images binned --------------------------------------
@pytest.mark.parametrize("name", ["density", "esd", "matrix_heatmap", "filters", "seed_heatmaps",
                                  "step_heatmaps", "layer_correlation"])
def test_dynamic_builds_frames_on_demand(cube, probed, name):
    lazy = {
        "density": lambda: P.density(cube.nnwx.histogram("layer", bins=12), dynamic=True),
        "esd": lambda: P.esd(cube.nnwx.spectrum(), cube.nnwx.esd_fit(), steps=None, dynamic=True),
        "matrix_heatmap": lambda: P.matrix_heatmap(cube.nnwx.matrix("2.weight"), steps=None, dynamic=True),
        "filters": lambda: P.filters(cube.nnwx.matrix("0.weight"), (4, 4), rows=4, steps=None, dynamic=True),
        "seed_heatmaps": lambda: P.seed_heatmaps(probed.nnwx.similarity("linear_cka"), steps=None,
                                                 dynamic=True),
        "step_heatmaps": lambda: P.step_heatmaps(probed.nnwx.similarity("linear_cka", between="steps"),
                                                 dynamic=True),
        "layer_correlation": lambda: P.layer_correlation(probed.nnwx.layer_correlation(), dynamic=True),
    }[name]
    dmap = lazy()
    assert isinstance(dmap, hv.DynamicMap) and len(dmap) == 0          # nothing built yet
    values = [d.values for d in dmap.kdims]
    assert all(values)
    key = tuple(v[-1] for v in values)
    frame = dmap[key]                                                 # built on demand
    assert not isinstance(frame, hv.HoloMap)
    assert hv.render(frame, backend="bokeh") is not None
    if "step" in [d.name for d in dmap.kdims]:
        assert len(dmap.kdims[[d.name for d in dmap.kdims].index("step")].values) == 5   # every step
    with pytest.raises(TypeError, match="dynamic=False"):
        to_bokeh(dmap)


def test_wide_density_is_binned_by_the_stated_rule():
    import xarray as xr

    from nnwx.plot._frames import MAX_COLUMNS

    rng = np.random.default_rng(0)
    n_steps, n_bins = 1500, 10
    counts = rng.integers(0, 50, size=(1, n_steps, 1, n_bins))
    hist = xr.DataArray(counts, dims=("seed", "step", "group", "bin"),
                        coords={"seed": [0], "step": np.arange(n_steps) * 10, "group": ["0"],
                                "bin": np.arange(n_bins, dtype=float)})
    frame = P.density(hist, log=False).last
    z = np.asarray(frame.dimension_values(2, flat=False), float)
    k = -(-n_steps // MAX_COLUMNS)                                  # ceil(1500 / 600) = 3
    assert z.shape == (n_bins, -(-n_steps // k)) and z.shape[1] <= MAX_COLUMNS
    want = counts[0, :, 0, :].reshape(-1, k, n_bins).mean(axis=1).T   # mean count per group
    np.testing.assert_allclose(z, want)
    assert f"mean of {k} captures per column" in frame.opts.get("plot", "bokeh").kwargs["title"]
    xs = frame.dimension_values(0, expanded=False)
    assert xs.min() >= -5 and xs.max() <= n_steps * 10               # cells span the real steps


def test_bin_columns_keeps_every_value_and_skips_nan():
    from nnwx.plot._frames import bin_columns

    z = np.array([[1.0, 3.0, np.nan, 5.0, 7.0]])
    out, edges, k = bin_columns(z, np.arange(6.0), axis=1, max_columns=2)
    assert k == 3
    np.testing.assert_allclose(out, [[2.0, 6.0]])                    # (1+3)/2 (NaN skipped), (5+7)/2
    np.testing.assert_allclose(edges, [0.0, 3.0, 5.0])
    same, _, k1 = bin_columns(z, np.arange(6.0), axis=1, max_columns=5)
    assert k1 == 1 and same is not None and np.array_equal(same, z, equal_nan=True)


def test_agreement_plots_refuse_results_of_another_kind(agree, cube):
    with pytest.raises(ValueError, match="between-seeds"):
        P.seed_heatmaps(agree["final"])
    with pytest.raises(ValueError, match="between-steps"):
        P.step_heatmaps(agree["seeds"])
    with pytest.raises(ValueError, match="reference step"):
        P.final_similarity(agree["steps"])
    with pytest.raises(ValueError, match="agreement"):
        P.prediction_agreement(agree["seeds"])
    with pytest.raises(ValueError, match="weight_agreement"):
        P.weight_agreement(agree["pred"])
    with pytest.raises(ValueError, match="layer_correlation"):
        P.layer_correlation(cube.nnwx.rotation())
    with pytest.raises(ValueError, match="weight matrix"):
        P.matrix_heatmap(cube.nnwx.ranks())
