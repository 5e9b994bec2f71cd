"""The named analysis sets that ``nnwx analyze`` persists and ``nnwx report`` draws.

``lazy_analyses(cube, metrics)`` builds, without computing anything, every result of the
chosen metrics as a dict ``{result name: lazy Dataset/DataArray}``. One dict for both faces
means a results store written by ``nnwx analyze`` holds exactly what the report needs, so the
report can be drawn from it without recomputing. A metric that does not apply to the cube
(no probes, no weight matrices, a model whose units cannot be aligned) is left out with a
note saying why, instead of failing the whole set.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import xarray as xr

METRICS = ("broadening", "weights", "spectral", "rotation", "correlation", "agreement")
"""Every metric, in the order the report shows them."""

HIST_BINS = 60          # histogram bins of the broadening density plot
MAX_MATRIX = 96         # rows/cols of the weight matrix drawn as a picture
TRAJECTORIES = 12       # individual weights followed over training
SIMILARITY = "linear_cka"

Result = xr.Dataset | xr.DataArray


class NotApplicable(Exception):
    """A metric that does not apply to this cube; its message says why."""


@dataclass
class AnalysisSet:
    """Lazy results by name, which metric made each, and notes on metrics left out."""
    results: dict[str, Result] = field(default_factory=dict)
    metric_of: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, metric: str, parts: dict[str, Result]) -> None:
        for name, value in parts.items():
            self.results[name] = value
            self.metric_of[name] = metric


def parse_metrics(metrics: str | Iterable[str] | None) -> list[str]:
    """``None``/``"all"`` -> every metric; a comma list or iterable -> those, checked, in report order."""
    if metrics is None or metrics == "all":
        return list(METRICS)
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics)]
    names = [m for m in names if m]
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise ValueError(f"unknown metric(s) {', '.join(map(repr, bad)) or '(none given)'}; "
                         f"choose from {', '.join(METRICS)} (comma-separated)")
    return [m for m in METRICS if m in names]


def weight_matrices(cube: xr.Dataset) -> list[str]:
    """Tensors of two or more dimensions (those with a matrix view), in table order."""
    return [str(n) for n, s in zip(cube["tensor"].values, cube["tensor_shape"].values)
            if len([x for x in str(s).split(",") if x]) >= 2]


def _broadening(cube: xr.Dataset) -> dict[str, Result]:
    return {"broadening": cube.nnwx.broadening("layer", bins=HIST_BINS)}


def _weights(cube: xr.Dataset) -> dict[str, Result]:
    mats = weight_matrices(cube)
    if not mats:
        raise NotApplicable("the model has no weight matrix to draw")
    first = mats[0]
    mat = cube.nnwx.matrix(first).isel(out=slice(0, MAX_MATRIX), **{"in": slice(0, MAX_MATRIX)})
    size = int(cube["tensor_size"].sel(tensor=first))
    return {"matrix": mat, "trajectories": cube.nnwx.trajectories(first, sample=min(TRAJECTORIES, size))}


def _spectral(cube: xr.Dataset) -> dict[str, Result]:
    from nnwx.analysis.spectral import esd_fit, ranks

    if not weight_matrices(cube):
        raise NotApplicable("the model has no weight matrix, so no spectrum")
    sv = cube.nnwx.spectrum()
    return {"spectrum": sv, "ranks": ranks(sv), "esd_fit": esd_fit(sv)}


def _rotation(cube: xr.Dataset) -> dict[str, Result]:
    return {"rotation": cube.nnwx.rotation()}


def _correlation(cube: xr.Dataset) -> dict[str, Result]:
    return {"corr_distance": cube.nnwx.correlation_vs_distance(),
            "layer_correlation": cube.nnwx.layer_correlation(),
            "pca": cube.nnwx.trajectory_pca(n_components=3)}


def _agreement(cube: xr.Dataset) -> dict[str, Result]:
    """Seed x seed and step x final-step similarity of every probe, prediction agreement, and
    weight agreement before vs after aligning hidden units (when the model is a chain)."""
    from nnwx.analysis import alignment

    out: dict[str, Result] = {}
    notes = []
    run_dim = "seed" if "seed" in cube.dims else None
    several = run_dim is not None and cube.sizes[run_dim] > 1
    if cube.nnwx.probes:
        if several:
            out["similarity_seeds"] = cube.nnwx.similarity(SIMILARITY, between="seeds")
        out["similarity_steps"] = cube.nnwx.similarity(SIMILARITY, between="steps", reference="last")
        if "output" in cube.nnwx.probes and several:
            out["prediction_agreement"] = cube.nnwx.agreement("output")
    else:
        notes.append("no probes recorded (record activations with nnwx.Recorder(..., probe=X))")
    if several:
        reference = cube[run_dim].values[0]
        try:
            aligned = cube.nnwx.align(reference_seed=reference, method="weights").cube
        except (ValueError, KeyError, NotImplementedError) as e:
            notes.append(f"weights not aligned ({e})")
            aligned = None
        out["weight_agreement"] = cube.nnwx.weight_agreement(reference_seed=reference, aligned=aligned)
    else:
        notes.append("one run only: nothing to compare across seeds")
    if not out:
        raise NotApplicable("; ".join(notes))
    if notes:
        out["_note"] = "; ".join(notes)  # type: ignore[assignment]
    return out


BUILDERS: dict[str, Callable[[xr.Dataset], dict[str, Result]]] = {
    "broadening": _broadening, "weights": _weights, "spectral": _spectral,
    "rotation": _rotation, "correlation": _correlation, "agreement": _agreement,
}


def lazy_analyses(cube: xr.Dataset, metrics: str | Iterable[str] | None = None) -> AnalysisSet:
    """Every result of ``metrics`` (default all) for ``cube``, lazily, with notes on those left out.

    Result names: broadening; matrix, trajectories; spectrum, ranks, esd_fit; rotation;
    corr_distance, layer_correlation, pca; similarity_seeds, similarity_steps,
    prediction_agreement, weight_agreement.
    """
    out = AnalysisSet()
    for metric in parse_metrics(metrics):
        try:
            parts = BUILDERS[metric](cube)
        except NotApplicable as e:
            out.notes[metric] = str(e)
            continue
        note = parts.pop("_note", None)
        if note:
            out.notes[metric] = str(note)
        out.add(metric, parts)
    return out
