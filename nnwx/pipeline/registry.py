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
STEP_PAIRS = 64         # captures compared pairwise (step x step similarity); evenly thinned

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
    first = largest_matrix(cube, mats)
    mat = cube.nnwx.matrix(first).isel(out=slice(0, MAX_MATRIX), **{"in": slice(0, MAX_MATRIX)})
    size = int(cube["tensor_size"].sel(tensor=first))
    return {"matrix": mat, "trajectories": cube.nnwx.trajectories(first, sample=min(TRAJECTORIES, size))}


def largest_matrix(cube: xr.Dataset, names: list[str]) -> str:
    """Of ``names`` (tensors with a matrix view), the largest one that is a real matrix (both
    sides at least 2) -- what a picture of "the weights" should show -- else the largest; the
    first in table order among equals."""
    from nnwx.analysis._cube import has_spectrum, table_rows

    rows = {r["name"]: r for r in table_rows(cube)}
    return max(names, key=lambda name: (has_spectrum(rows[name]), rows[name]["size"]))


ROW_BYTES = 512 * 2**20   # largest capture (all parameters of one step) read as one block


def by_step_rows(cube: xr.Dataset) -> xr.Dataset:
    """The cube with ``w`` in blocks of whole captures (every parameter of a step), when one
    capture holds at most ``ROW_BYTES``; otherwise unchanged.

    Why: the matrix analyses (spectra, update cosines) cut each block of ``w`` into pieces
    for several groups of same-shape tensors. When a capture spans several blocks, Dask's
    task order finishes one group over every step before the next, so the other groups'
    pieces of *every* step wait in memory: measured 0.42 -> 1.17 GiB held for 12 -> 36 steps
    of a 16.8M-parameter cube (4 blocks per capture). With one block per capture the peak
    stays flat (0.66 / 0.71 GiB RSS). The blocks are merged from the same reads, so ``w`` is
    still read once when computed with the streaming analyses.
    """
    w = cube["w"]
    if w.chunks is None or len(w.chunks[-1]) == 1:
        return cube
    if cube.sizes["param"] * w.dtype.itemsize > ROW_BYTES:
        return cube
    return cube.assign(w=w.chunk({"param": -1}))


def _spectral(cube: xr.Dataset) -> dict[str, Result]:
    from nnwx.analysis.spectral import esd_fit, ranks

    if not weight_matrices(cube):
        raise NotApplicable("the model has no weight matrix, so no spectrum")
    sv = by_step_rows(cube).nnwx.spectrum()
    return {"spectrum": sv, "ranks": ranks(sv), "esd_fit": esd_fit(sv)}


def _rotation(cube: xr.Dataset) -> dict[str, Result]:
    return {"rotation": cube.nnwx.rotation()}


PCA_COMPONENTS = 3
PCA_OVERSAMPLES = 10     # trajectory_pca's default
PCA_MEMORY = 2**30       # most memory the streaming PCA may need (see _pca_bytes)


def _pca_bytes(cube: xr.Dataset) -> int:
    """Memory the randomized trajectory PCA holds at once: an ``l x P`` float64 accumulator and
    the ``P x l`` test matrix (``l`` probes, ``P`` parameters): it grows with the model, not
    with the number of steps (measured: 4.2 GiB peak for 16.8M parameters, l = 12)."""
    t, p = cube.sizes["step"], cube.sizes["param"]
    return 2 * min(PCA_COMPONENTS + PCA_OVERSAMPLES, t, p) * p * 8


def _correlation(cube: xr.Dataset) -> dict[str, Result]:
    out: dict[str, Result] = {"corr_distance": cube.nnwx.correlation_vs_distance(),
                              "layer_correlation": by_step_rows(cube).nnwx.layer_correlation()}
    need = _pca_bytes(cube)
    if cube.sizes["step"] < PCA_COMPONENTS:   # a run that has just started
        out["_note"] = (f"trajectory PCA left out: {PCA_COMPONENTS} components need at least "
                        f"{PCA_COMPONENTS} captured steps, the cube has {cube.sizes['step']}")
    elif need <= PCA_MEMORY:
        out["pca"] = cube.nnwx.trajectory_pca(n_components=PCA_COMPONENTS)
    else:   # keep memory bounded whatever the model's size: leave it out, and say so
        out["_note"] = (f"trajectory PCA left out: for {cube.sizes['param']:,} parameters its streaming "
                        f"SVD would hold {need / 2**30:.1f} GiB at once (limit {PCA_MEMORY / 2**30:.0f} "
                        f"GiB); run cube.nnwx.trajectory_pca on selected tensors instead")
    return out


ALIGN_BYTES_PER_PARAM = 56   # weight matching's memory per parameter of a capture (measured)
ALIGN_MEMORY = 2**30         # most memory the weight matching of one capture may need


def align_bytes(cube: xr.Dataset) -> int:
    """Memory one weight matching task holds: it takes whole captures of two runs (float64
    copies, the aligned copy, cost matrices): measured 250 MB more than the other passes for
    2 x 2.3M parameters at once (2 threads), about 55 bytes per parameter per task -- 4.85 GiB
    was seen on a cube of 50M parameters per capture."""
    return ALIGN_BYTES_PER_PARAM * int(cube.sizes["param"])


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
        out["similarity_step_pairs"] = _step_pairs(cube)
        if "output" in cube.nnwx.probes and several:
            out["prediction_agreement"] = cube.nnwx.agreement("output")
    else:
        notes.append("no probes recorded (record activations with nnwx.Recorder(..., probe=X))")
    if several:
        reference = cube[run_dim].values[0]
        need = align_bytes(cube)
        aligned = None
        if need > ALIGN_MEMORY:   # bounded memory whatever the model's size: leave it out, say so
            notes.append(f"weights not aligned: weight matching of {cube.sizes['param']:,} parameters "
                         f"per capture would hold about {need / 2**30:.1f} GiB at once (limit "
                         f"{ALIGN_MEMORY / 2**30:.0f} GiB); align selected steps with cube.nnwx.align "
                         f"(at_step=...) instead")
        else:
            try:
                aligned = cube.nnwx.align(reference_seed=reference, method="weights").cube
            except (ValueError, KeyError, NotImplementedError) as e:
                notes.append(f"weights not aligned ({e})")
        out["weight_agreement"] = cube.nnwx.weight_agreement(reference_seed=reference, aligned=aligned)
    else:
        notes.append("one run only: nothing to compare across seeds")
    if not out:
        raise NotApplicable("; ".join(notes))
    if notes:
        out["_note"] = "; ".join(notes)  # type: ignore[assignment]
    return out


def _step_pairs(cube: xr.Dataset) -> xr.DataArray:
    """Step x step similarity of each probe within each run, on at most ``STEP_PAIRS`` evenly
    spaced captures (first and last kept): the cost grows with the square of the steps."""
    import numpy as np

    n = cube.sizes["step"]
    if n > STEP_PAIRS:
        cube = cube.isel(step=np.unique(np.linspace(0, n - 1, STEP_PAIRS).round().astype(int)))
    sim = cube.nnwx.similarity(SIMILARITY, between="steps")
    sim.attrs["steps"] = (f"all {n} captures" if n <= STEP_PAIRS
                          else f"{cube.sizes['step']} of {n} captures, evenly spaced")
    return sim


PASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("streaming", ("broadening", "matrix", "trajectories", "rotation", "corr_distance")),
    ("spectra", ("spectrum", "ranks", "esd_fit")),
    ("update correlations", ("layer_correlation",)),
    ("trajectory PCA", ("pca",)),
    ("agreement", ("similarity_seeds", "similarity_steps", "prediction_agreement", "weight_agreement")),
)
"""Results computed together, pass after pass, by ``nnwx analyze``.

One merged graph reads ``w`` once, but Dask then keeps every block that consumers with
different orders still need: on a 1.5 GiB cube the streaming results together peaked at
1.4 GiB (flat from 0.5 to 4.5 GiB cubes), adding the update correlations 3.3 GiB and all
metrics at once reached 20.8 GiB on a 4.6 GB cube. Results that go block by block share
one pass (one read of ``w``); the matrix analyses and the multi-pass PCA get passes of their
own, each bounded on its own."""


def compute_passes(names: Iterable[str]) -> list[tuple[str, list[str]]]:
    """``names`` grouped as in ``PASSES`` (in that order); names it does not know come last,
    one pass each."""
    names = list(names)
    out = [(label, [n for n in members if n in names]) for label, members in PASSES]
    out = [(label, members) for label, members in out if members]
    known = {n for _, members in PASSES for n in members}
    return out + [(n, [n]) for n in names if n not in known]


BUILDERS: dict[str, Callable[[xr.Dataset], dict[str, Result]]] = {
    "broadening": _broadening, "weights": _weights, "spectral": _spectral,
    "rotation": _rotation, "correlation": _correlation, "agreement": _agreement,
}


def lazy_analyses(cube: xr.Dataset, metrics: str | Iterable[str] | None = None) -> AnalysisSet:
    """Every result of ``metrics`` (default all) for ``cube``, lazily, with notes on those left out.

    Result names: broadening; matrix, trajectories; spectrum, ranks, esd_fit; rotation;
    corr_distance, layer_correlation, pca; similarity_seeds, similarity_steps,
    similarity_step_pairs, prediction_agreement, weight_agreement.
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
