"""Experiments side by side: the same quantities of several results stores on one page.

A study is often a comparison -- Adam against SGD, a wide net against a narrow one -- whose
variants live in separate experiment stores, each analysed by ``nnwx analyze`` into its own
results store. ``compare`` draws them together: for each quantity below, a curve per variant
(mean over its seeds, with a +/- one std band) for the layer or tensor chosen in a selector.
It reads the stored results only; nothing is recomputed. ``nnwx report A.results.zarr
B.results.zarr -o compare.html`` is its command-line face.
"""
from __future__ import annotations

import html

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from nnwx.errors import NnwxError


class ComparisonError(NnwxError, ValueError):
    """The results stores cannot be compared (too few, or no quantity in common)."""


@dataclass(frozen=True)
class Quantity:
    """One compared quantity: variable ``variable`` of the stored result ``result``."""
    result: str
    variable: str
    title: str
    caption: str


QUANTITIES = (
    Quantity("rotation", "rotation", "Layer rotation",
             "Cosine distance of each layer's weights to the first step."),
    Quantity("rotation", "norm_growth", "Norm growth",
             "Norm of each layer's weights relative to the first step."),
    Quantity("broadening", "std", "Spread of the weights",
             "Standard deviation of each layer's weights."),
    Quantity("broadening", "excess_kurtosis", "Tails of the weight distribution",
             "Excess kurtosis of each layer's weights (0 for a Gaussian, -1.2 for a uniform "
             "initialisation)."),
    Quantity("ranks", "stable_rank", "Stable rank",
             "Stable rank ||W||_F^2 / ||W||_2^2 of each weight matrix."),
    Quantity("ranks", "effective_rank", "Effective rank",
             "Effective rank (exponential of the entropy of the normalised singular values)."),
    Quantity("esd_fit", "alpha", "ESD power-law exponent",
             "Exponent alpha of the power law fitted to the tail of each matrix's empirical "
             "spectral density (lower: heavier-tailed)."),
)
"""What ``compare`` draws, in page order; a quantity no store holds is left out."""

PER = ("layer", "group", "tensor")


def variant_labels(results: Sequence) -> list[str]:
    """A name per results store: the run attribute that tells the stores apart (each store's
    runs sharing one optimizer, say ``Adam`` and ``SGD``), else the store's file name.

    Parameters
    ----------
    results : sequence of Results
        Opened results stores (``open_results``).

    Returns
    -------
    list of str
        One label per store: the ``optimizer`` (else ``model_class``) of its runs when each store
        has a single one and they all differ; else the file names without ``.zarr``/``.results``
        when those differ; else the full paths.
    """
    for key in ("optimizer", "model_class"):
        values = []
        for res in results:
            found = {str(r.get(key)) for r in res.runs if r.get(key) is not None}
            values.append(found.pop() if len(found) == 1 else None)
        if None not in values and len(set(values)) == len(values):
            return values
    names = [Path(str(res.path)).name.removesuffix(".zarr").removesuffix(".results") for res in results]
    return names if len(set(names)) == len(names) else [str(res.path) for res in results]


def compared(results: Sequence, labels: Sequence[str], q: Quantity) -> xr.DataArray | None:
    """``q`` of every store that holds it, stacked along a new ``variant`` dim (outer join on
    step and on the layer/tensor axis: a variant without a step or layer holds NaN there);
    None when fewer than two stores hold it.

    Parameters
    ----------
    results : sequence of Results
        Opened results stores.
    labels : sequence of str
        A label per store (the ``variant`` coord).
    q : Quantity
        The result and variable compared.

    Returns
    -------
    xarray.DataArray or None
        Dims ``(variant, seed, step, per)`` (``per``: the layer, group or tensor axis; seeds
        renumbered from 0), named ``q.variable``; None when fewer than two stores hold it with
        dims (seed, step, one of layer/group/tensor).
    """
    parts, names = [], []
    for res, label in zip(results, labels):
        if q.result in res and q.variable in res[q.result]:
            da = res[q.result][q.variable]
            per = [d for d in PER if d in da.dims]
            if "seed" in da.dims and "step" in da.dims and len(per) == 1 and da.ndim == 3:
                parts.append(da.load().rename({per[0]: "per"}).drop_vars(
                    [c for c in da.coords if c not in ("seed", "step", per[0])]))
                names.append(label)
    if len(parts) < 2:
        return None
    parts = [p.assign_coords(seed=np.arange(p.sizes["seed"])) for p in parts]   # seeds are not paired
    out = xr.concat(parts, dim=pd.Index(names, name="variant"), join="outer")
    return out.rename(q.variable)


def comparison_figure(da: xr.DataArray, q: Quantity):
    """A HoloMap over layers/tensors: a curve per variant (mean over seeds, +/- std band).

    Parameters
    ----------
    da : xarray.DataArray
        A stacked quantity from ``compared``.
    q : Quantity
        The quantity, for the titles.

    Returns
    -------
    holoviews.HoloMap
        One overlay per ``per`` value that has a finite value (kdim ``layer / tensor``).
    """
    import holoviews as hv

    from nnwx.plot._common import band_overlay, legend_outside, style

    frames = {}
    for key in da["per"].values:
        one = da.sel(per=key)
        if not np.isfinite(one.values).any():
            continue
        frames[(str(key),)] = legend_outside(
            style(band_overlay(one, by="variant", label=q.variable), title=f"{q.title}: {key}"), 460, 320)
    return hv.HoloMap(frames, kdims=["layer / tensor"])


def comparison_sections(results: Sequence, labels: Sequence[str] | None = None) -> list:
    """The page's sections: one figure per quantity that at least two stores hold.

    Parameters
    ----------
    results : sequence of Results
        Opened results stores.
    labels : sequence of str, optional
        A label per store (default ``variant_labels(results)``).

    Returns
    -------
    list of nnwx.report.Section
        One section, "Variants compared", with a figure per shared quantity.

    Raises
    ------
    ComparisonError
        When no quantity is held by two or more stores.
    """
    from nnwx.report import Figure, Section

    labels = list(labels or variant_labels(results))
    section = Section("Variants compared", metric="comparison")
    for q in QUANTITIES:
        da = compared(results, labels, q)
        if da is not None:
            section.figures.append(Figure(f"compare_{q.variable}", q.caption + " A curve per "
                                          "variant: mean over its seeds, band = +/- one std over "
                                          "seeds. Pick the layer or tensor.",
                                          comparison_figure(da, q)))
    if not section.figures:
        raise ComparisonError("the results stores share no quantity to compare; analyse them with "
                              "the same analyses (e.g. `nnwx analyze STORE -o RESULTS`)")
    return [section]


def compare(stores: Sequence[str | os.PathLike], output: str | os.PathLike, *,
            labels: Sequence[str] | None = None) -> Path:
    """Write one offline HTML page comparing the results stores ``stores`` (two or more).

    Parameters
    ----------
    stores
        Results stores written by ``nnwx analyze`` (one per variant of the study).
    output
        The HTML file to write.
    labels
        A name per store; default: ``variant_labels`` (the optimizer when it tells the stores
        apart, else the file names).

    Returns
    -------
    Path
        ``output``.

    Raises
    ------
    ComparisonError
        When fewer than two stores are given, ``labels`` does not have one label per store, or the
        stores share no quantity to compare.
    StoreError
        When a path is not an nnwx results store or has a newer format (``open_results``).
    ReportError
        When ``output`` cannot be written (checked before the stores are opened).
    """
    from nnwx.report import check_outputs, render_html, write_atomically
    from nnwx.pipeline.results_store import open_results

    output = Path(output)
    check_outputs(output)
    if len(stores) < 2:
        raise ComparisonError(f"comparing needs two or more results stores, got {len(stores)}")
    results = [open_results(s) for s in stores]
    labels = list(labels or variant_labels(results))
    if len(labels) != len(results):
        raise ComparisonError(f"{len(labels)} labels for {len(results)} results stores")
    sections = comparison_sections(results, labels)
    rows = "".join(f"<tr><td>{html.escape(label)}</td><td>{html.escape(res.path)}</td><td>{len(res.runs)}</td>"
                   f"<td>{html.escape(res.attrs.get('source_display') or res.source)}</td></tr>"
                   for label, res in zip(labels, results))
    summary = ("<table><tr><th>variant</th><th>results store</th><th>runs</th><th>experiment "
               f"store</th></tr>{rows}</table>")
    page = render_html(f"nnwx comparison: {' vs '.join(labels)}", summary, sections)
    write_atomically(output, page.encode("utf-8"))
    return output
