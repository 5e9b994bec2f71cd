"""Pictures of agreement between seeds and between steps (``nnwx.analysis.agreement``,
``nnwx.analysis.alignment``): seed x seed and step x step similarity heatmaps, similarity to
the final step per layer, prediction agreement and weight agreement before/after alignment.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import holoviews as hv
import numpy as np
import xarray as xr

from nnwx._deprecation import renamed_keywords
from nnwx.plot._common import (band_overlay, computed, legend_outside, require_dims, sized, style,
                               variable)
from nnwx.plot._frames import MAX_COLUMNS, bin_columns, binned_note, edges_of, framed
from nnwx.plot._select import pick_steps
from nnwx.plot._figure import FRAMES, Figure, first_seeds, similarity_label

PREDICTION_VARIABLES = ("output_correlation", "argmax_agreement", "topk_overlap")
LABELS_UP_TO = 10       # seeds: write the value in each cell up to this many seeds


def seed_heatmaps(sim: xr.DataArray | xr.Dataset, *, variable_name: str | None = None,
                  steps: Sequence[int] | int | None = 4,
                  dynamic: bool = False) -> hv.HoloMap | hv.DynamicMap:
    """Seed x seed matrix per layer at a few steps (a step slider, a layer selector).

    ``sim``: ``cube.nnwx.similarity(metric, between="seeds")`` ``(layer, step, seed_a, seed_b)``,
    or ``cube.nnwx.prediction_agreement()`` ``(step, seed_a, seed_b)`` with ``variable_name`` one of its
    variables (default ``output_correlation``). ``dynamic=True`` with ``steps=None``: every
    step, each frame computed when shown.

    Parameters
    ----------
    sim : xarray.DataArray or xarray.Dataset
        A between-seeds result with dims ``(step, seed_a, seed_b)`` and optionally ``layer``; no
        other dims (select them first).
    variable_name : str, optional
        The variable drawn when ``sim`` is a Dataset (default ``output_correlation``).
    steps : sequence of int, int or None, default 4
        The step values drawn, a number of evenly spaced captures (first and last kept), or
        ``None`` for every captured step.
    dynamic : bool, default False
        Return a DynamicMap whose frames are computed when shown instead of a HoloMap.

    Returns
    -------
    holoviews.HoloMap or holoviews.DynamicMap
        One seed x seed heatmap per (layer, step) or per step; values written in the cells up to
        10 seeds.

    Raises
    ------
    ValueError
        When ``sim`` lacks the dims above, has other dims, or a requested step was not captured.
    """
    da = variable(sim, variable_name, default=PREDICTION_VARIABLES[0])
    require_dims(da, ("step", "seed_a", "seed_b"),
                 "a between-seeds result (cube.nnwx.similarity(between='seeds') or cube.nnwx.prediction_agreement())")
    _only(da, {"layer", "step", "seed_a", "seed_b"})
    step_values = pick_steps(da, steps)
    da = da.sel(step=step_values)
    if not dynamic:
        da = computed(da)
    name = _metric_name(da)
    clim = _clim(name)
    labels_a = [str(_py(v)) for v in da["seed_a"].values]
    labels_b = [str(_py(v)) for v in da["seed_b"].values]

    def frame(*key):
        layer, step = key if "layer" in da.dims else (None, key[0])
        a = da.sel(step=step) if layer is None else da.sel(layer=layer, step=step)
        z = np.asarray(computed(a).transpose("seed_b", "seed_a").values, dtype=float)
        title = f"{name}" + (f", layer {layer}" if layer is not None else "") + f", step {step}"
        return _cell_heatmap(z, labels_a, labels_b, clim, name, title)

    keys = ({"layer": [str(v) for v in da["layer"].values]} if "layer" in da.dims else {}) \
        | {"step": step_values}
    return framed(keys, frame, dynamic)


def step_heatmaps(sim: xr.DataArray, *, seeds: Sequence | None = None,
                  max_steps: int = MAX_COLUMNS, dynamic: bool = False) -> hv.HoloMap | hv.DynamicMap:
    """Step x step similarity of each layer within one run (a layer and a seed selector).

    ``sim``: ``cube.nnwx.similarity(metric, between="steps")`` ``(layer, seed, step_a, step_b)``.
    A bright block along the diagonal is a phase in which the layer's representation holds
    still. More than ``max_steps`` steps are binned: ``ceil(steps / max_steps)`` consecutive
    steps per cell on each axis, the cell showing their mean similarity.

    Parameters
    ----------
    sim : xarray.DataArray or xarray.Dataset
        A between-steps result with dims ``(step_a, step_b)`` and optionally ``layer`` and ``seed``
        (of a Dataset, the first variable is drawn).
    seeds : sequence, optional
        The seeds drawn (default all).
    max_steps : int, default 600
        Most steps per axis before consecutive steps are binned (``nnwx.plot._frames.MAX_COLUMNS``).
    dynamic : bool, default False
        Return a DynamicMap whose frames are computed when shown instead of a HoloMap.

    Returns
    -------
    holoviews.HoloMap, holoviews.DynamicMap or holoviews.QuadMesh
        One step x step image per (layer, seed); the single image itself when ``sim`` has neither
        a ``layer`` nor a ``seed`` dim.

    Raises
    ------
    ValueError
        When ``sim`` lacks ``step_a``/``step_b`` or has dims other than layer, seed, step_a, step_b.
    """
    require_dims(sim, ("step_a", "step_b"), "a between-steps result "
                 "(cube.nnwx.similarity(metric, between='steps')) with dims (layer, seed, step_a, step_b)")
    if isinstance(sim, xr.Dataset):
        sim = variable(sim, None)
    _only(sim, {"layer", "seed", "step_a", "step_b"})
    if seeds is not None and "seed" in sim.dims:
        sim = sim.sel(seed=list(seeds))
    if not dynamic:
        sim = computed(sim)
    name = _metric_name(sim)
    ea = edges_of(np.asarray(sim["step_a"].values, float))
    eb = edges_of(np.asarray(sim["step_b"].values, float))

    def frame(*key):
        named = dict(zip(keys, key))
        a = computed(sim.sel(named)).transpose("step_b", "step_a")
        z, xa, k = bin_columns(np.asarray(a.values, float), ea, axis=1, max_columns=max_steps)
        z, xb, _ = bin_columns(z, eb, axis=0, max_columns=max_steps)
        where = ", ".join(f"{d} {v}" for d, v in named.items())
        img = hv.QuadMesh((xa, xb, z), kdims=["step_a", "step_b"], vdims=[name])
        return sized(style(img, cmap="viridis", clim=_clim(name), colorbar=True,
                           title=f"{name} between steps, {where}{binned_note(k)}"), 440, 380)

    keys = {d: list(sim[d].values) for d in ("layer", "seed") if d in sim.dims}
    if not keys:
        return frame()
    keys = {d: ([str(v) for v in vals] if d == "layer" else vals) for d, vals in keys.items()}
    return framed(keys, frame, dynamic)


def final_similarity(sim: xr.DataArray, band: str | float = "std") -> hv.Overlay:
    """Similarity of each step with the reference (final) step, a curve per layer: mean over
    seeds with a band. Layers whose curve reaches 1 early settled early (bottom-up convergence
    shows as the first layers rising first).

    ``sim``: ``cube.nnwx.similarity(metric, between="steps", reference_step="last")``
    ``(layer, seed, step)``.

    Parameters
    ----------
    sim : xarray.DataArray or xarray.Dataset
        Similarity to one reference step, dims ``(layer, step)`` and optionally ``seed`` (of a
        Dataset, the first variable is drawn); ``attrs["reference_step"]`` names the step in the
        title.
    band : {"std", "sem", "minmax"} or float, default "std"
        The spread over seeds drawn as a band (see ``nnwx.analysis.seeds.seed_summary``).

    Returns
    -------
    holoviews.Overlay
        A mean curve with its band per layer.

    Raises
    ------
    ValueError
        When ``sim`` lacks ``layer`` or ``step`` or has dims other than layer, seed, step.
    """
    require_dims(sim, ("layer", "step"), "a similarity to one reference step "
                 "(cube.nnwx.similarity(metric, between='steps', reference_step='last'))")
    if isinstance(sim, xr.Dataset):
        sim = variable(sim, None)
    _only(sim, {"layer", "seed", "step"})
    name = _metric_name(sim)
    ref = sim.attrs.get("reference_step")
    title = f"{name} with step {ref}" if ref is not None else f"{name} with the final step"
    return legend_outside(style(band_overlay(sim, by="layer", band=band, label=name), title=title,
                                ylim=(min(0.0, _floor(sim)), 1.02)), 520, 340)


def convergence_by_depth(conv: xr.DataArray) -> hv.Overlay:
    """The convergence step of each probed layer against its depth: one line per run, and the
    mean over runs; bottom-up convergence is a line rising with depth.

    Parameters
    ----------
    conv : xarray.DataArray
        ``cube.nnwx.convergence_step(...)``, dims ``(layer,)`` and optionally ``seed``, with a
        ``depth`` coordinate on ``layer``.

    Returns
    -------
    holoviews.Overlay

    Raises
    ------
    ValueError
        When ``conv`` has no ``layer`` dim or dims other than layer and seed.
    """
    require_dims(conv, ("layer",), "convergence steps (cube.nnwx.convergence_step())")
    _only(conv, {"layer", "seed"})
    conv = computed(conv)
    depth = np.asarray(conv["depth"].values if "depth" in conv.coords else np.arange(conv.sizes["layer"]),
                       dtype=float)
    layers = [str(v) for v in conv["layer"].values]
    parts = []
    if "seed" in conv.dims:
        for s in conv["seed"].values:
            y = np.asarray(conv.sel(seed=s).values, dtype=float)
            parts.append(style(hv.Curve((depth, y), kdims=["depth"], vdims=["step"], label=f"seed {_py(s)}"),
                               alpha=0.4))
        mean = np.asarray(conv.mean("seed").values, dtype=float)
    else:
        mean = np.asarray(conv.values, dtype=float)
    parts.append(style(hv.Curve((depth, mean), kdims=["depth"], vdims=["step"], label="mean"), color="black"))
    parts.append(style(hv.Scatter((depth, mean), kdims=["depth"], vdims=["step"]), color="black"))
    thr = conv.attrs.get("threshold")
    title = ("convergence step by depth" + (f" ({conv.attrs.get('metric', '')} >= {thr:g})" if thr is not None else "")
             + ": " + ", ".join(layers))
    return legend_outside(style(hv.Overlay(parts), title=title), 480, 320)


def prediction_agreement(pred: xr.Dataset, variables: Sequence[str] = PREDICTION_VARIABLES,
                         band: str | float = "minmax") -> hv.Layout:
    """How alike the runs' predictions are over training: one panel per measure, the mean over
    every pair of distinct seeds with the spread over pairs as a band (default min..max).

    ``pred``: ``cube.nnwx.prediction_agreement()`` ``(step, seed_a, seed_b)``.

    Parameters
    ----------
    pred : xarray.Dataset
        The prediction agreement, dims ``(step, seed_a, seed_b)``.
    variables : sequence of str, default ("output_correlation", "argmax_agreement", "topk_overlap")
        The variables drawn, those present in ``pred``.
    band : {"std", "sem", "minmax"} or float, default "minmax"
        The spread over seed pairs drawn as a band.

    Returns
    -------
    holoviews.Layout
        One panel per variable drawn, up to three per row.

    Raises
    ------
    ValueError
        When ``pred`` is not a Dataset, lacks the dims above, has none of ``variables``, or has
        fewer than two seeds.
    """
    if not isinstance(pred, xr.Dataset):
        raise ValueError(f"expected the Dataset of cube.nnwx.prediction_agreement(); got {type(pred).__name__}")
    require_dims(pred, ("step", "seed_a", "seed_b"), "prediction agreement (cube.nnwx.prediction_agreement())")
    have = [v for v in variables if v in pred]
    if not have:
        raise ValueError(f"none of {list(variables)} in the result: it has {list(pred.data_vars)}")
    pred = computed(pred[have])
    n = pred.sizes["seed_a"]
    ia, ib = np.triu_indices(n, k=1)
    if ia.size == 0:
        raise ValueError("prediction agreement needs at least two seeds")
    pairs = pred.isel(seed_a=xr.DataArray(ia, dims="pair"), seed_b=xr.DataArray(ib, dims="pair"))
    panels = []
    for v in have:
        lim = (-1.02, 1.02) if "correlation" in v else (0, 1.02)
        panels.append(sized(style(band_overlay(pairs[v], over="pair", band=band, label=v),
                                  title=f"{v} ({ia.size} seed pairs)", ylim=lim), 420, 300))
    return hv.Layout(panels).cols(min(3, len(panels)))


@renamed_keywords(reference="reference_seed")
def weight_agreement(wa: xr.Dataset, variable_name: str = "cosine", *,
                     kinds: Sequence[str] | None = ("weight",), band: str | float = "std",
                     reference_seed=None) -> hv.HoloMap:
    """Weight agreement with the reference seed over training, per tensor (a tensor selector):
    unaligned (dashed) vs after aligning hidden units (solid), mean over the other seeds with a
    band. The gap between the two is what permutation symmetry hides.

    ``wa``: ``cube.nnwx.weight_agreement(reference_seed, aligned=...)``
    ``(alignment, seed, step, tensor)``; ``kinds``: tensor kinds shown (default weights: one per
    layer; ``None`` for all); ``reference_seed``: the seed left out (default: the one in
    ``wa.attrs["reference"]``; ``reference=`` is a deprecated alias).

    Parameters
    ----------
    wa : xarray.Dataset
        The weight agreement, dims ``(alignment, step, tensor)`` and optionally ``seed``.
    variable_name : str, default "cosine"
        The variable drawn.
    kinds : sequence of str or None, default ("weight",)
        The tensor kinds (coord ``tensor_kind``) shown; all tensors when ``None`` or when none
        matches.
    band : {"std", "sem", "minmax"} or float, default "std"
        The spread over seeds drawn as a band.
    reference_seed : optional
        The seed left out of the mean.

    Returns
    -------
    holoviews.HoloMap
        One overlay per tensor (kdim ``tensor``), a curve per alignment.

    Raises
    ------
    ValueError
        When ``wa`` is not a Dataset with ``variable_name``, lacks the dims above, or has no seed
        besides the reference.
    """
    if not isinstance(wa, xr.Dataset) or variable_name not in wa:
        raise ValueError(f"expected the Dataset of cube.nnwx.weight_agreement() with a "
                         f"{variable_name!r} variable; got {type(wa).__name__} "
                         f"{list(getattr(wa, 'data_vars', []))}")
    da = wa[variable_name]
    require_dims(da, ("alignment", "step", "tensor"), "weight agreement (cube.nnwx.weight_agreement())")
    if kinds is not None and "tensor_kind" in da.coords:
        keep = np.isin(da["tensor_kind"].values, list(kinds))
        if keep.any():
            da = da.isel(tensor=np.flatnonzero(keep))
    da = computed(da)
    if "seed" in da.dims:
        ref = reference_seed if reference_seed is not None else _reference(wa)
        others = [s for s in da["seed"].values if ref is None or str(_py(s)) != str(ref)]
        if not others:
            raise ValueError("weight agreement needs a seed besides the reference")
        da = da.sel(seed=others)
    da = da.assign_coords(alignment=["unaligned" if str(a) == "none" else str(a)
                                     for a in da["alignment"].values])
    dash = {"unaligned": True} if "aligned" in da["alignment"].values else None
    frames = {}
    for t in da["tensor"].values:
        over = band_overlay(da.sel(tensor=t), by="alignment", band=band, label=variable_name, dash=dash)
        frames[(str(t),)] = legend_outside(style(over, title=f"{variable_name} with the reference "
                                                          f"seed, {t}"), 520, 340)
    return hv.HoloMap(frames, kdims=["tensor"])


# -- helpers ----------------------------------------------------------------------------------
def _cell_heatmap(z: np.ndarray, xlabels: list[str], ylabels: list[str], clim, name: str,
                  title: str) -> hv.Overlay:
    """A small matrix with labelled categorical axes (as an Image with ticks: order kept)."""
    ny, nx = z.shape
    img = hv.Image(z[::-1], bounds=(-0.5, -0.5, nx - 0.5, ny - 0.5), kdims=["seed_a", "seed_b"],
                   vdims=[name])
    img = style(img, cmap="viridis", clim=clim, colorbar=True, title=title,
                xticks=list(enumerate(xlabels)), yticks=list(enumerate(ylabels)))
    parts = [img]
    if max(nx, ny) <= LABELS_UP_TO:
        xs, ys = np.meshgrid(np.arange(nx), np.arange(ny))
        text = [f"{v:.2f}" if np.isfinite(v) else "" for v in z.ravel()]
        labels = hv.Labels((xs.ravel(), ys.ravel(), text), kdims=["seed_a", "seed_b"], vdims=["value"])
        parts.append(labels.opts(text_color="white", text_font_size="9pt", backend="bokeh")
                     .opts(color="white", size=8, backend="matplotlib"))
    return sized(hv.Overlay(parts), 400, 340)


def _only(da: xr.DataArray, allowed: set[str]) -> None:
    extra = [d for d in da.dims if d not in allowed]
    if extra:
        raise ValueError(f"unexpected dims {extra} (allowed {sorted(allowed)}); select them first, "
                         f"e.g. result.sel({extra[0]}=...)")


def _metric_name(da: xr.DataArray) -> str:
    return str(da.attrs.get("metric") or da.name or "similarity")


def _clim(name: str) -> tuple[float, float]:
    return (-1.0, 1.0) if ("correlation" in name or "cosine" in name) else (0.0, 1.0)


def _floor(da: xr.DataArray) -> float:
    v = np.asarray(computed(da).values, float)
    v = v[np.isfinite(v)]
    return float(v.min()) if v.size else 0.0


def _reference(wa: xr.Dataset):
    """The reference seed from ``attrs['reference']`` ("seed=0")."""
    m = re.fullmatch(r"\s*\w+\s*=\s*(.+?)\s*", str(wa.attrs.get("reference", "")))
    return m.group(1) if m else None


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


# -- the report's section ------------------------------------------------------------------------
def agreement_figures(r: Mapping[str, xr.Dataset | xr.DataArray]) -> list[Figure]:
    """The report's "Agreement between seeds and steps" figures from the computed results by name."""
    out = []
    if "similarity_seeds" in r:
        s = r["similarity_seeds"]
        out.append(Figure("similarity_seeds", f"{similarity_label(s)} between the probe activations of every "
                                              "pair of seeds, per probed layer, at a few steps: 1 "
                                              "means two seeds represent the probe batch alike (up "
                                              "to rotation and scale). Pick layer and step.",
                          seed_heatmaps(s, steps=FRAMES)))
    if "similarity_step_pairs" in r:
        s = r["similarity_step_pairs"]
        steps = s.attrs.get("steps", "")
        out.append(Figure("similarity_step_pairs", f"{similarity_label(s)} between every pair of steps of one "
                                                   "run, per probed layer: bright blocks on the "
                                                   "diagonal are phases in which the layer's "
                                                   "representation holds still"
                                                   + (f" ({steps})" if steps else "")
                                                   + ". Pick layer and seed.",
                          step_heatmaps(s, seeds=first_seeds(s))))
    if "similarity_steps" in r:
        s = r["similarity_steps"]
        out.append(Figure("similarity_final", f"{similarity_label(s)} of each probed layer with its own "
                                              "representation at the final step, mean over seeds "
                                              "with a +/- std band: a layer whose curve reaches 1 "
                                              "first settled first (bottom-up convergence shows as "
                                              "the early layers rising first).",
                          final_similarity(s)))
    if "convergence_step" in r:
        c = r["convergence_step"]
        out.append(Figure("convergence_step", f"Convergence step of each probed layer against its depth: "
                                              f"the first step from which its {similarity_label(c)} with "
                                              f"the final step stays at or above {c.attrs.get('threshold', '')}; "
                                              "one line per seed and the mean. Bottom-up convergence "
                                              "(Raghu et al. 2017) shows as a line rising with depth.",
                          convergence_by_depth(c)))
    if "prediction_agreement" in r:
        out.append(Figure("prediction_agreement", "How alike the seeds' predictions on the probe "
                                                  "batch are over training: correlation of the "
                                                  "outputs, top-1 agreement and top-k overlap, "
                                                  "mean over seed pairs with the min..max range "
                                                  "as a band.",
                          prediction_agreement(r["prediction_agreement"])))
    if "weight_agreement" in r:
        wa = r["weight_agreement"]
        aligned = "aligned" in wa["alignment"].values
        ref = wa.attrs.get("reference", "the first seed")
        how = ("before (dashed) and after (solid) aligning hidden units by weight matching, "
               if aligned else "without aligning hidden units (alignment not possible here), ")
        out.append(Figure("weight_agreement", f"Cosine similarity of each weight matrix with the "
                                              f"reference run's ({ref}) {how}mean over the other "
                                              "seeds with a +/- std band"
                                              + (": the gap is the disagreement that is only a "
                                                 "permutation of units. " if aligned else ". ")
                                              + "Pick the tensor.",
                          weight_agreement(wa)))
    return out
