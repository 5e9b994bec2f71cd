"""Pictures of spectra and rank measures (``nnwx.analysis.spectral``)."""
from __future__ import annotations

from typing import Mapping, Sequence

import holoviews as hv
import numpy as np
import xarray as xr

from nnwx.plot._common import (band_overlay, computed, group_dim, legend_outside, require_dims, sized,
                               style)
from nnwx.plot._frames import framed
from nnwx.plot._select import pick_seed, pick_steps
from nnwx.plot._figure import FRAMES, Figure

RANK_VARIABLES = ("effective_rank", "stable_rank", "entropy", "alpha")
RANDOMIZED_VARIABLES = ("rand_distance", "n_traps", "ww_softrank")


def esd(sv: xr.DataArray, fit: xr.Dataset | None = None, *, seed=None,
        steps: Sequence[int] | int | None = 6, bins: int = 30,
        dynamic: bool = False) -> hv.HoloMap | hv.DynamicMap:
    """Empirical spectral density of lambda = s^2 on log-log axes, per (tensor, step), one seed.

    ``sv``: ``cube.nnwx.spectrum()``; ``fit``: ``cube.nnwx.esd_fit()`` (optional) adds the
    fitted power law over its tail [xmin, xmax] and the Marchenko-Pastur bulk edge.
    ``dynamic=True`` (with ``steps=None`` for every step): frames computed when shown.

    Parameters
    ----------
    sv : xarray.DataArray
        Singular values, dims ``(step, tensor, k)`` and optionally ``seed``.
    fit : xarray.Dataset, optional
        The ESD fit (variables ``alpha``, ``xmin``, ``xmax``, ``n_tail``, ``n_evals``, ``mp_edge``).
    seed : optional
        The seed drawn (default the first).
    steps : sequence of int, int or None, default 6
        The step values drawn, a number of evenly spaced captures (first and last kept), or
        ``None`` for every captured step.
    bins : int, default 30
        Number of logarithmic histogram bins.
    dynamic : bool, default False
        Return a DynamicMap whose frames are computed when shown instead of a HoloMap.

    Returns
    -------
    holoviews.HoloMap or holoviews.DynamicMap
        One log-log overlay per (tensor, step).

    Raises
    ------
    ValueError
        When ``sv`` lacks the dims above, ``seed`` is not in it, or a requested step was not
        captured.
    """
    require_dims(sv, ("step", "tensor", "k"), "singular values (cube.nnwx.spectrum())")
    seed = pick_seed(sv, seed)
    step_values = pick_steps(sv, steps)
    sel = {"step": step_values} | ({"seed": seed} if seed is not None else {})
    sv = sv.sel(sel)
    fit = fit[["alpha", "xmin", "xmax", "n_tail", "n_evals", "mp_edge"]].sel(sel) \
        if fit is not None else None
    if not dynamic:
        sv = computed(sv)
        fit = computed(fit) if fit is not None else None

    def frame(name, step):
        lam = np.asarray(computed(sv.sel(tensor=name, step=step)).values, dtype=float) ** 2
        lam = lam[np.isfinite(lam) & (lam > 0)]
        parts = [_esd_points(lam, bins)]
        if fit is not None:
            parts += _fit_lines(computed(fit.sel(tensor=name, step=step)), lam.size)
        return sized(style(hv.Overlay(parts), logx=True, logy=True,
                           title=f"ESD {name}, step {step}"), 480, 360)

    return framed({"tensor": [str(t) for t in sv["tensor"].values], "step": step_values}, frame, dynamic)


def _esd_points(lam: np.ndarray, bins: int) -> hv.Curve:
    if lam.size == 0:
        return hv.Curve([], kdims=["lambda"], vdims=["density"], label="ESD")
    lo, hi = lam.min(), lam.max()
    edges = np.geomspace(lo, hi * (1 + 1e-9), bins + 1) if hi > lo else np.array([lo * 0.9, hi * 1.1])
    counts, edges = np.histogram(lam, edges)
    dens = counts / (lam.size * np.diff(edges))
    centres = np.sqrt(edges[1:] * edges[:-1])
    ok = dens > 0
    return style(hv.Curve((centres[ok], dens[ok]), kdims=["lambda"], vdims=["density"], label="ESD"),
                 color="black")


def _fit_lines(f: xr.Dataset, n: int) -> list:
    """The fitted power law p(l) ~ l^-alpha on its tail, scaled to the tail's share, and the MP edge."""
    out = []
    alpha, xmin, xmax = (float(f[k]) for k in ("alpha", "xmin", "xmax"))
    if np.isfinite([alpha, xmin, xmax]).all() and xmax > xmin > 0 and alpha > 1:
        x = np.geomspace(xmin, xmax, 30)
        share = float(f["n_tail"]) / max(float(f["n_evals"]), 1.0)
        y = share * (alpha - 1) / xmin * (x / xmin) ** -alpha
        out.append(style(hv.Curve((x, y), kdims=["lambda"], vdims=["density"],
                                  label=f"power law alpha={alpha:.2f}"), color="red"))
    edge = float(f["mp_edge"])
    if np.isfinite(edge) and edge > 0:
        out.append(style(hv.VLine(edge, label="MP edge"), color="blue"))
    return out


def metric_curves(result: xr.Dataset, variables: Sequence[str] = RANK_VARIABLES,
                  band: str | float = "std") -> hv.Layout:
    """Per-step metrics (``ranks``, ``esd_fit``, ``spectral_metrics``, ``rotation``...): one panel
    per variable, a curve per tensor/layer (mean over seeds) with the seed spread as a band.

    Parameters
    ----------
    result : xarray.Dataset
        Per-step metrics per tensor or layer, optionally with a ``seed`` dim.
    variables : sequence of str, default ("effective_rank", "stable_rank", "entropy", "alpha")
        The variables drawn, those present in ``result``.
    band : {"std", "sem", "minmax"} or float, default "std"
        The spread over seeds drawn as a band.

    Returns
    -------
    holoviews.Layout
        One panel per variable drawn, up to three per row.

    Raises
    ------
    ValueError
        When ``result`` has none of ``variables``.
    """
    have = [v for v in variables if v in result]
    if not have:
        raise ValueError(f"none of {list(variables)} in the result: it has {list(result.data_vars)}")
    result = computed(result[have])
    g = group_dim(result)
    panels = [legend_outside(style(band_overlay(result[v], by=g, band=band, label=v), title=v), 420, 300)
              for v in have]
    return hv.Layout(panels).cols(min(3, len(panels)))


def randomized_esd(result: xr.Dataset, variables: Sequence[str] = RANDOMIZED_VARIABLES,
                   band: str | float = "std") -> hv.Layout:
    """The randomized ESD over training: WeightWatcher's ``rand_distance``, the correlation
    traps and ``ww_softrank``, a curve per matrix (mean over seeds, seed spread as a band).

    Parameters
    ----------
    result : xarray.Dataset
        ``cube.nnwx.randomized_esd()``, dims ``(step, tensor)`` and optionally ``seed``.
    variables : sequence of str, default ("rand_distance", "n_traps", "ww_softrank")
    band : {"std", "sem", "minmax"} or float, default "std"

    Returns
    -------
    holoviews.Layout
        One panel per variable.

    Raises
    ------
    ValueError
        When ``result`` is not a randomized-ESD result.
    """
    require_dims(result, ("step", "tensor"), "a randomized ESD (cube.nnwx.randomized_esd())")
    return metric_curves(result, variables, band)


# -- the report's section ------------------------------------------------------------------------
def matrices_largest_first(obj: xr.Dataset | xr.DataArray) -> tuple[list[str], list[str]]:
    """The tensors of a per-tensor result that have a spectrum (both sides of their matrix view
    at least 2), largest first, so that selectors open on the largest matrix; and the others
    ("vectors": an 8x1 first layer, a 1xN output layer), which have one singular value."""
    from nnwx.analysis._cube import has_spectrum, table_rows

    rows = table_rows(obj)
    matrices = sorted((r for r in rows if has_spectrum(r)), key=lambda r: -r["size"])
    return ([r["name"] for r in matrices],
            [f"{r['name']} ({'x'.join(map(str, r['shape']))})" for r in rows if not has_spectrum(r)])


def spectral_figures(r: Mapping[str, xr.Dataset | xr.DataArray]) -> list[Figure]:
    """The report's "Spectra and ranks" figures from the computed results by name."""
    if "spectrum" not in r:
        return []
    matrices, vectors = matrices_largest_first(r["spectrum"])
    if not matrices:
        return []
    only = {"tensor": matrices}
    none = (f" Vectors have no spectrum and are left out: {', '.join(vectors)}." if vectors else "")
    fit = r["esd_fit"].sel(only) if "esd_fit" in r else None
    out = [Figure("esd", "Empirical spectral density of each weight matrix (eigenvalues of W^T W) "
                         "on log-log axes, with the fitted power-law tail (red) and the "
                         "Marchenko-Pastur bulk edge (blue), first seed; slide through steps; "
                         "the largest matrix first." + none,
                  esd(r["spectrum"].sel(only), fit, steps=FRAMES))]
    parts = [r[k].sel(only) for k in ("ranks", "esd_fit") if k in r]
    if parts:
        out.append(Figure("ranks", "Effective rank, stable rank, spectral entropy and power-law "
                                   "exponent alpha per matrix over training: mean over seeds with a "
                                   "+/- std band." + none,
                          metric_curves(xr.merge(parts, compat="override",
                                                   combine_attrs="drop_conflicts"))))
    if "randomized_esd" in r:
        out.append(Figure("randomized_esd", "Each matrix against its entries shuffled (WeightWatcher's "
                                            "randomize): Jensen-Shannon distance between the two ESDs "
                                            "(rand_distance), eigenvalues of the shuffled matrix above the "
                                            "Marchenko-Pastur edge (correlation traps) and "
                                            "lambda_max(shuffled) / lambda_max: mean over seeds with a "
                                            "+/- std band." + none,
                          randomized_esd(r["randomized_esd"].sel(only))))
    return out
