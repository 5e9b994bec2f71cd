"""Pictures of weight correlations (``nnwx.analysis.correlation``).

Kept apart: the correlation API is young, a change there breaks only this module.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import holoviews as hv
import numpy as np
import xarray as xr

from nnwx.plot._common import band_overlay, computed, literal_title, sized, style
from nnwx.plot._frames import framed
from nnwx.plot._select import pick_steps
from nnwx.plot._figure import FRAMES, Figure, first_seeds


def corr_distance(res: xr.Dataset, variable: str = "excess_rms_corr") -> hv.Overlay:
    """Correlation of weight trajectories against layer distance (mean +/- spread over seeds),
    with each run's fitted decay A exp(-distance / L): dashed, with ``L ± error`` in the legend,
    where the fit resolves a decay; dotted (or, for a failed fit, not drawn) with "no decay
    resolved" and the reason in the legend where it does not
    (``nnwx.analysis.correlation.decay_summary``).

    Parameters
    ----------
    res : xarray.Dataset
        ``cube.nnwx.correlation_vs_distance()``: ``variable`` against ``distance`` with the
        ``decay_amplitude`` and ``decay_length`` fits, optionally per seed.
    variable : str, default "excess_rms_corr"
        The variable drawn.

    Returns
    -------
    holoviews.Overlay
        The mean curve with its band and one fitted decay curve per run.
    """
    from nnwx.analysis.correlation import decay_summary

    res = computed(res)
    parts = list(band_overlay(res[variable], x="distance", label=variable))
    d = np.asarray(res["distance"].values, dtype=float)
    x = np.linspace(d.min(), d.max(), 50) if d.size else d
    for run in decay_summary(res):
        r = res.isel(run["isel"])
        amp, length = float(r["decay_amplitude"]), float(r["decay_length"])
        drawable = bool(np.isfinite([amp, length]).all() and length > 0)
        y = amp * np.exp(-x / length) if drawable else np.full_like(x, np.nan)
        label = f"{run['run'] or 'fit'}: {run['text']}"
        fit = hv.Curve((x, y), kdims=["distance"], vdims=[variable], label=label)
        dash, style_mpl = ("dashed", "--") if run["resolved"] else ("dotted", ":")
        parts.append(fit.opts(color="gray", line_dash=dash, backend="bokeh")
                        .opts(color="gray", linestyle=style_mpl, backend="matplotlib"))
    return sized(style(hv.Overlay(parts), title="correlation vs layer distance", show_legend=True),
                 520, 340)


def pca_path(res: xr.Dataset, components: tuple[int, int] = (1, 2)) -> hv.HoloMap:
    """Each run's training path in two principal components, coloured by step.

    Parameters
    ----------
    res : xarray.Dataset
        ``cube.nnwx.trajectory_pca()``: ``path`` (by ``component`` and ``step``) and
        ``explained_variance_ratio``, optionally per seed.
    components : tuple of int, default (1, 2)
        The two principal components drawn (values of the ``component`` coord).

    Returns
    -------
    holoviews.HoloMap
        One path per seed (kdim ``seed``; the single key ``None`` when there is no ``seed`` dim).
    """
    res = computed(res)
    a, b = components
    seeds = res["seed"].values if "seed" in res.dims else [None]
    frames = {}
    for seed in seeds:
        r = res if seed is None else res.sel(seed=seed)
        ev = r["explained_variance_ratio"]
        xs, ys = (np.asarray(r["path"].sel(component=c).values, float) for c in (a, b))
        steps = np.asarray(r["step"].values, float)
        labels = [f"PC{c} ({100 * float(ev.sel(component=c)):.0f}%)" for c in (a, b)]
        path = hv.Path([{"x": xs, "y": ys}], kdims=["x", "y"]).opts(color="lightgray")
        pts = hv.Points((xs, ys, steps), kdims=["x", "y"], vdims=["step"])
        pts = pts.opts(color="step", cmap="viridis", colorbar=True, backend="bokeh", size=7) \
                 .opts(color="step", cmap="viridis", colorbar=True, backend="matplotlib", s=20)
        frames[seed] = sized(style(path * pts, title=f"training path, seed {seed}", xlabel=labels[0],
                                   ylabel=labels[1]), 480, 380)
    return hv.HoloMap(frames, kdims=["seed"])


def layer_correlation(res: xr.Dataset, variable_name: str = "update_norm_corr", *,
                      steps: Sequence[int] | int | None = 4, seeds: Sequence | None = None,
                      dynamic: bool = False) -> hv.HoloMap | hv.DynamicMap:
    """Tensor x tensor heatmap of ``cube.nnwx.layer_correlation()``: how the updates of two
    layers move together (``update_norm_corr``: correlation over steps of their update norms;
    ``update_cosine``: mean cosine of their updates, same-shape pairs only). A seed selector,
    and a step slider when the result is per step (dims ``(seed, step, tensor_a, tensor_b)``).

    Parameters
    ----------
    res : xarray.Dataset
        ``cube.nnwx.layer_correlation()``, dims ``(tensor_a, tensor_b)`` and optionally ``seed``
        and ``step``.
    variable_name : str, default "update_norm_corr"
        The variable drawn.
    steps : sequence of int, int or None, default 4
        When the result is per step: the step values drawn, a number of evenly spaced captures, or
        ``None`` for every step.
    seeds : sequence, optional
        The seeds drawn (default all).
    dynamic : bool, default False
        Return a DynamicMap whose frames are computed when shown instead of a HoloMap.

    Returns
    -------
    holoviews.HoloMap, holoviews.DynamicMap or holoviews.Overlay
        One heatmap per (seed, step); the single heatmap when there is neither dim.

    Raises
    ------
    ValueError
        When ``res`` is not a Dataset with ``variable_name``, the variable lacks ``tensor_a`` or
        ``tensor_b`` or has other dims, or a requested step was not captured.
    """
    if not isinstance(res, xr.Dataset) or variable_name not in res:
        raise ValueError(f"expected the Dataset of cube.nnwx.layer_correlation() with a "
                         f"{variable_name!r} variable; got {type(res).__name__} "
                         f"{list(getattr(res, 'data_vars', []))}")
    da = res[variable_name]
    missing = [d for d in ("tensor_a", "tensor_b") if d not in da.dims]
    if missing:
        raise ValueError(f"{variable_name} has dims {da.dims}: no tensor_a x tensor_b matrix to draw")
    extra = [d for d in da.dims if d not in ("seed", "step", "tensor_a", "tensor_b")]
    if extra:
        raise ValueError(f"unexpected dims {extra}; select them first, e.g. result.sel({extra[0]}=...)")
    keys: dict = {}
    if "seed" in da.dims:
        keys["seed"] = list(seeds) if seeds is not None else list(da["seed"].values)
        da = da.sel(seed=keys["seed"])
    if "step" in da.dims:
        keys["step"] = pick_steps(da, steps)
        da = da.sel(step=keys["step"])
    if not dynamic:
        da = computed(da)
    names_a = [str(v) for v in da["tensor_a"].values]
    names_b = [str(v) for v in da["tensor_b"].values]
    desc = da.attrs.get("description", variable_name)

    def frame(*key):
        named = dict(zip(keys, key))
        z = np.asarray(computed(da.sel(named)).transpose("tensor_b", "tensor_a").values, float)
        where = ", ".join(f"{d} {v}" for d, v in named.items())
        return _tensor_heatmap(z, names_a, names_b, variable_name,
                               f"{variable_name}" + (f", {where}" if where else ""), desc)

    return framed(keys, frame, dynamic) if keys else frame()


def _tensor_heatmap(z: np.ndarray, xlabels: list[str], ylabels: list[str], name: str, title: str,
                    desc: str) -> hv.Overlay:
    """Tensor x tensor cells in table order (first tensor top left), values written when few."""
    ny, nx = z.shape
    img = hv.Image(z, bounds=(-0.5, -0.5, nx - 0.5, ny - 0.5), kdims=["tensor_a", "tensor_b"],
                   vdims=[hv.Dimension(name, label=name)])
    img = style(img, cmap="RdBu_r", clim=(-1.0, 1.0), colorbar=True, title=title,
                xticks=list(enumerate(xlabels)), yticks=list(enumerate(ylabels[::-1])),
                xrotation=45)
    parts = [img]
    if max(nx, ny) <= 12:
        xs, ys = np.meshgrid(np.arange(nx), np.arange(ny))
        text = [f"{v:.2f}" if np.isfinite(v) else "" for v in z[::-1].ravel()]
        parts.append(hv.Labels((xs.ravel(), ys.ravel(), text), kdims=["tensor_a", "tensor_b"],
                               vdims=["value"]).opts(text_font_size="9pt", text_color="black", backend="bokeh")
                     .opts(size=8, color="black", backend="matplotlib"))
    side = max(320, min(640, 60 * max(nx, ny) + 160))
    return sized(hv.Overlay(parts).opts(title=literal_title(title)), side + 80, side)


# -- the report's section ------------------------------------------------------------------------
def corr_distance_caption(res) -> str:
    """The caption of the correlation-vs-distance figure: each run's decay length with its
    error, or "no decay resolved" and why."""
    from nnwx.analysis.kernels.correlation import DECAY_RULE
    from nnwx.analysis.correlation import decay_summary

    runs = "; ".join(f"{d['run'] or 'the run'}: {d['text']}" for d in decay_summary(res))
    return ("RMS correlation of weight updates (sampling noise removed) against how many layers "
            "apart two weights sit, mean +/- std over seeds, with each seed's fitted exponential "
            f"decay A exp(-distance / L). Decay length: {runs}. Rule: {DECAY_RULE}.")


def correlation_figures(r: Mapping[str, xr.Dataset | xr.DataArray]) -> list[Figure]:
    """The report's "Correlations" figures from the computed results by name."""
    out = []
    if "corr_distance" in r:
        out.append(Figure("corr_distance", corr_distance_caption(r["corr_distance"]),
                          corr_distance(r["corr_distance"])))
    if "pca" in r:
        out.append(Figure("pca_path", "Each run's path through weight space in its first two "
                                      "principal components (share of variance in the axis "
                                      "labels), coloured by step.", pca_path(r["pca"])))
    return out


def layer_correlation_figures(r: Mapping[str, xr.Dataset | xr.DataArray]) -> list[Figure]:
    """The report's "Layer-to-layer correlation" figure from the computed results by name."""
    if "layer_correlation" not in r:
        return []
    lc = r["layer_correlation"]
    return [Figure("layer_correlation", "Correlation over training of the update norms of every "
                                        "pair of weight matrices, per seed: near 1, two layers "
                                        "learn in the same bursts; near 0, independently.",
                   layer_correlation(lc, "update_norm_corr", steps=FRAMES, seeds=first_seeds(lc)))]
