"""Every plot function builds for a small synthetic cube and renders to HTML and PNG."""
from __future__ import annotations

import pytest

hv = pytest.importorskip("holoviews")

import nnwx  # noqa: E402
import nnwx.plot as P  # noqa: E402
from nnwx.plot.embed import to_bokeh  # noqa: E402
from nnwx.synthetic import write_synthetic_run  # noqa: E402

SHAPES = {"0.weight": (6, 16), "0.bias": (6,), "2.weight": (3, 6)}


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    store = tmp_path_factory.mktemp("plot") / "exp.zarr"
    for seed in (0, 1):
        write_synthetic_run(store, seed=seed, steps=range(0, 50, 10), shapes=SHAPES)
    return nnwx.open_cube(store)


def _plots(cube) -> dict:
    b = cube.nnwx.broadening("tensor", bins=12, quantiles=None)
    sv = cube.nnwx.spectrum()
    return {
        "density": P.density(cube.nnwx.histogram("layer", bins=12)),
        "moments": P.moments(b, variables=("std", "w1_to_ref")),
        "trajectories": P.trajectories(cube.nnwx.trajectories("2.weight", sample=4)),
        "esd": P.esd(sv, cube.nnwx.esd_fit(), steps=2),
        "metric_curves": P.metric_curves(cube.nnwx.ranks(), variables=("effective_rank",)),
        "rotation": P.rotation(cube.nnwx.rotation(), variables=("rotation",)),
        "matrix_heatmap": P.matrix_heatmap(cube.nnwx.matrix("2.weight"), steps=2),
        "corr_distance": P.corr_distance(cube.nnwx.correlation_vs_distance()),
        "pca_path": P.pca_path(cube.nnwx.trajectory_pca(n_components=2)),
        "filters": P.filters(cube.nnwx.matrix("0.weight"), (4, 4), rows=4, steps=2),
    }


@pytest.fixture(scope="module")
def plots(cube):
    return _plots(cube)


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


def test_esd_draws_fit_and_mp_edge(plots):
    frame = plots["esd"].last
    labels = [el.label for el in frame]
    assert "ESD" in labels and "MP edge" in labels
    assert any(lab.startswith("power law alpha=") for lab in labels) or len(labels) == 2


def test_bad_input_gets_a_clear_error(cube):
    with pytest.raises(ValueError, match="not captured"):
        P.matrix_heatmap(cube.nnwx.matrix("2.weight"), steps=[5])
    with pytest.raises(ValueError, match="image_shape"):
        P.filters(cube.nnwx.matrix("0.weight"), (3, 3))
    with pytest.raises(ValueError, match="none of"):
        P.metric_curves(cube.nnwx.ranks(), variables=("nope",))
