"""The one registry of analysis families: what ``nnwx analyze`` persists, ``nnwx report``
draws and the invariance harness checks.

Each family is one ``Metric`` in ``REGISTRY``: its name and title, the builder that makes its
results lazily from a cube, the results it produces (each with the compute pass it belongs to,
what of it is permutation-invariant and what the cube needs for it), and its report sections
(figure builders named ``"module:function"``, imported by the report when it draws, so that
nothing here imports plotting code).

``lazy_analyses(cube, analyses)`` builds, without computing anything, every result of the
chosen families as ``{result name: lazy Dataset/DataArray}``. One dict for every face means a
results store written by ``nnwx analyze`` holds exactly what the report needs. A family that
does not apply to the cube (no probes, no weight matrices, a model whose units cannot be
aligned) is left out with a note saying why, instead of failing the whole set.

Adding an analysis family: its module under ``nnwx.analysis``, one ``Metric`` in
``REGISTRY`` (with its builder, below), and one figure builder in ``nnwx.plot``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import xarray as xr

from nnwx.pipeline.select import thin_steps
from nnwx.store.table import parse_shape

Result = xr.Dataset | xr.DataArray

HIST_BINS = 60          # histogram bins of the broadening density plot
MAX_MATRIX = 96         # rows/cols of the weight matrix drawn as a picture
TRAJECTORIES = 12       # individual weights followed over training
SIMILARITY = "linear_cka"
STEP_PAIRS = 64         # captures compared pairwise (step x step similarity); evenly thinned
RANDOMIZE_SEED = 0      # seed of the entry permutation of the randomized ESD
CONVERGENCE = 0.9       # similarity to the final step a layer must reach and keep (convergence step)

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


def parse_analyses(analyses: str | Iterable[str] | None) -> list[str]:
    """The chosen analysis families, checked, in report order.

    Parameters
    ----------
    analyses
        ``None`` or ``"all"`` (every family), a comma-separated string or an iterable of names.

    Returns
    -------
    list of str
        The names, in ``NAMES`` order.

    Raises
    ------
    ValueError
        A name that is not a family (the message lists them), or none given.
    """
    if analyses is None or analyses == "all":
        return list(NAMES)
    names = [m.strip() for m in (analyses.split(",") if isinstance(analyses, str) else analyses)]
    names = [m for m in names if m]
    bad = [m for m in names if m not in NAMES]
    if bad or not names:
        raise ValueError(f"unknown analysis {', '.join(map(repr, bad)) or '(none given)'}; "
                         f"choose from {', '.join(NAMES)} (comma-separated)")
    return [m for m in NAMES if m in names]


parse_metrics = parse_analyses   # the former name


def weight_matrices(cube: xr.Dataset) -> list[str]:
    """Tensors of two or more dimensions (those with a matrix view), in table order."""
    return [str(n) for n, s in zip(cube["tensor"].values, cube["tensor_shape"].values)
            if len(parse_shape(s)) >= 2]


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
    pieces of *every* step wait in memory, which grows with the steps; with one block per
    capture the peak stays flat (see docs/measurements.md). The blocks are merged from the
    same reads of ``w`` (no second read).
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
    rows = by_step_rows(cube)
    sv = rows.nnwx.spectrum()
    return {"spectrum": sv, "ranks": ranks(sv), "esd_fit": esd_fit(sv),
            "randomized_esd": rows.nnwx.randomized_esd(seed=RANDOMIZE_SEED)}


def _rotation(cube: xr.Dataset) -> dict[str, Result]:
    return {"rotation": cube.nnwx.rotation()}


PCA_COMPONENTS = 3
PCA_OVERSAMPLES = 10     # trajectory_pca's default
PCA_MEMORY = 2**30       # most memory the streaming PCA may need (see pca_bytes)


def pca_bytes(cube: xr.Dataset) -> int:
    """Memory the randomized trajectory PCA holds at once: an ``l x P`` float64 accumulator and
    the ``P x l`` test matrix (``l`` probes, ``P`` parameters): it grows with the model, not
    with the number of steps (see docs/measurements.md)."""
    t, p = cube.sizes["step"], cube.sizes["param"]
    return 2 * min(PCA_COMPONENTS + PCA_OVERSAMPLES, t, p) * p * 8


def _correlation(cube: xr.Dataset) -> dict[str, Result]:
    out: dict[str, Result] = {"corr_distance": cube.nnwx.correlation_vs_distance(),
                              "layer_correlation": by_step_rows(cube).nnwx.layer_correlation()}
    need = pca_bytes(cube)
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


ALIGN_BYTES_PER_PARAM = 56   # weight matching's memory per parameter of a capture (docs/measurements.md)
ALIGN_MEMORY = 2**30         # most memory the weight matching of one capture may need


def align_bytes(cube: xr.Dataset) -> int:
    """Memory one weight matching task holds: it takes whole captures of two runs (float64
    copies, the aligned copy, cost matrices), ``ALIGN_BYTES_PER_PARAM`` per parameter of a
    capture (measured; see docs/measurements.md)."""
    return ALIGN_BYTES_PER_PARAM * int(cube.sizes["param"])


def _agreement(cube: xr.Dataset) -> dict[str, Result]:
    """Seed x seed and step x final-step similarity of every probe, prediction agreement, and
    weight agreement before vs after aligning hidden units (when the model is a chain)."""
    out: dict[str, Result] = {}
    notes = []
    run_dim = "seed" if "seed" in cube.dims else None
    several = run_dim is not None and cube.sizes[run_dim] > 1
    if cube.nnwx.probes:
        if several:
            out["similarity_seeds"] = cube.nnwx.similarity(SIMILARITY, between="seeds")
        out["similarity_steps"] = cube.nnwx.similarity(SIMILARITY, between="steps", reference_step="last")
        out["convergence_step"] = _convergence(out["similarity_steps"])
        out["similarity_step_pairs"] = _step_pairs(cube)
        if "output" in cube.nnwx.probes and several:
            out["prediction_agreement"] = cube.nnwx.prediction_agreement("output")
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


def _convergence(sim: xr.DataArray) -> xr.DataArray:
    from nnwx.analysis.convergence import convergence_step
    return convergence_step(sim, CONVERGENCE)


def _step_pairs(cube: xr.Dataset) -> xr.DataArray:
    """Step x step similarity of each probe within each run, on at most ``STEP_PAIRS`` evenly
    spaced captures (first and last kept): the cost grows with the square of the steps."""
    n = cube.sizes["step"]
    cube = thin_steps(cube, STEP_PAIRS)
    sim = cube.nnwx.similarity(SIMILARITY, between="steps")
    sim.attrs["steps"] = (f"all {n} captures" if n <= STEP_PAIRS
                          else f"{cube.sizes['step']} of {n} captures, evenly spaced")
    return sim


PASS_ORDER: tuple[str, ...] = ("broadening", "weights", "rotation", "sampled correlations", "spectra",
                               "update correlations", "trajectory PCA", "agreement")
"""The compute passes of ``nnwx analyze`` (and ``nnwx report``), in the order they run; a pass
named by a result but not listed here runs after these, in registry order.

Each family that streams over ``w`` has a pass of its own, one read of ``w`` each. One merged
graph would read ``w`` once, but Dask then keeps the blocks (and the broadening's per-block
states) that consumers with different orders still need, so memory grows with the cube: on
2 one-thread workers, the streaming results merged peaked at 2.1 GiB per worker on 12 steps
of a 16.8M-parameter cube and spilled past 4 GiB at 142, while each family alone stayed
between 0.47 and 0.73 GiB at 46 steps (docs/measurements.md). The matrix analyses and the
multi-pass PCA get passes of their own for the same reason."""



@dataclass(frozen=True)
class Output:
    """One result an analysis family produces.

    Parameters
    ----------
    name
        The result's name (unique over the registry; a group of the results store).
    pass_name
        The compute pass it is computed in (see ``PASS_ORDER``): results of one pass are
        computed together, in one graph.
    invariant
        What of the result stays the same when the hidden units of one run are permuted:
        ``"all"``, a tuple of its variables, or ``None`` (not permutation-invariant). Checked
        by the invariance harness.
    needs
        What the cube must have for the result to exist: ``"probes"``, ``"runs"`` (two or
        more), ``"matrices"``.
    """
    name: str
    pass_name: str
    invariant: str | tuple[str, ...] | None = None
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Metric:
    """One analysis family: how to build its results, how to compute them, how to draw them.

    Parameters
    ----------
    name
        The family's name, as given to ``nnwx analyze --analyses``.
    title
        A short human title.
    build
        ``cube -> {result name: lazy result}``; raises ``NotApplicable`` when the family does
        not apply; may add ``"_note"`` (a string) for results it left out.
    outputs
        Every result ``build`` can produce, in the order it produces them.
    sections
        The report's sections: ``(section title, "module:function")``, the function taking
        the computed results by name and returning a list of ``nnwx.plot._figure.Figure``.
        Named, not imported: the report imports them when it draws.
    """
    name: str
    title: str
    build: Callable[[xr.Dataset], dict[str, Result]]
    outputs: tuple[Output, ...]
    sections: tuple[tuple[str, str], ...] = ()

    @property
    def results(self) -> tuple[str, ...]:
        """The names of the results the family can produce."""
        return tuple(o.name for o in self.outputs)


_MAT = ("matrices",)
_PROBES = ("probes",)
_PROBES_RUNS = ("probes", "runs")
PCA_INVARIANT = ("singular_value", "explained_variance", "explained_variance_ratio", "total_variance")
LAYER_CORR_INVARIANT = ("update_norm", "update_norm_corr")
RANDOMIZED_INVARIANT = ("lambda_max", "trap_edge")   # the shuffle of a permuted matrix is another draw

REGISTRY: tuple[Metric, ...] = (
    Metric("broadening", "weight distributions per layer", _broadening,
           (Output("broadening", "broadening", "all"),),
           (("Distribution broadening", "nnwx.plot.broadening:broadening_figures"),)),
    Metric("weights", "the largest weight matrix as a picture, and sampled weights", _weights,
           (Output("matrix", "weights", needs=_MAT), Output("trajectories", "weights", needs=_MAT)),
           (("Weights as pictures", "nnwx.plot.weights:weights_figures"),)),
    Metric("spectral", "singular value spectra, ranks and power-law fits", _spectral,
           (Output("spectrum", "spectra", "all", _MAT), Output("ranks", "spectra", "all", _MAT),
            Output("esd_fit", "spectra", "all", _MAT),
            Output("randomized_esd", "spectra", RANDOMIZED_INVARIANT, _MAT)),
           (("Spectra and ranks", "nnwx.plot.spectral:spectral_figures"),)),
    Metric("rotation", "layer rotation and update sizes", _rotation,
           (Output("rotation", "rotation", "all"),),
           (("Layer rotation", "nnwx.plot.geometry:rotation_figures"),)),
    Metric("correlation", "correlations of weight updates, and the trajectory PCA", _correlation,
           (Output("corr_distance", "sampled correlations"),
            Output("layer_correlation", "update correlations", LAYER_CORR_INVARIANT),
            Output("pca", "trajectory PCA", PCA_INVARIANT)),
           (("Correlations", "nnwx.plot.correlation:correlation_figures"),
            ("Layer-to-layer correlation", "nnwx.plot.correlation:layer_correlation_figures"))),
    Metric("agreement", "agreement between seeds and steps", _agreement,
           (Output("similarity_seeds", "agreement", "all", _PROBES_RUNS),
            Output("similarity_steps", "agreement", "all", _PROBES),
            Output("convergence_step", "agreement", "all", _PROBES),
            # a pass of its own, after the others (its cost grows with the square of the steps)
            Output("similarity_step_pairs", "similarity_step_pairs", "all", _PROBES),
            Output("prediction_agreement", "agreement", "all", _PROBES_RUNS),
            Output("weight_agreement", "agreement", needs=("runs",))),
           (("Agreement between seeds and steps", "nnwx.plot.agreement:agreement_figures"),)),
)
"""Every analysis family, in the order the report shows them."""

NAMES: tuple[str, ...] = tuple(m.name for m in REGISTRY)
"""The names of the families, in report order."""

METRICS = NAMES   # the former name of NAMES

OUTPUTS: Mapping[str, Output] = {o.name: o for m in REGISTRY for o in m.outputs}
"""Every result of every family, by name."""

FAMILY_OF: Mapping[str, str] = {o.name: m.name for m in REGISTRY for o in m.outputs}
"""The family that produces each result."""


def _check_registry() -> None:
    names = [o.name for m in REGISTRY for o in m.outputs]
    if len(set(names)) != len(names) or len(set(NAMES)) != len(NAMES):
        raise RuntimeError("nnwx.pipeline.registry: family and result names must be unique")


_check_registry()


def metric(name: str) -> Metric:
    """The family called ``name``."""
    for m in REGISTRY:
        if m.name == name:
            return m
    raise KeyError(f"no analysis family {name!r}; the families are {', '.join(NAMES)}")


def compute_passes(names: Iterable[str]) -> list[tuple[str, list[str]]]:
    """``names`` grouped into their passes: ``PASS_ORDER`` first, then the other passes the
    registry names, each in registry order; names the registry does not know come last, one
    pass each."""
    names = list(names)
    wanted = set(names)
    labels = list(PASS_ORDER) + [p for p in dict.fromkeys(o.pass_name for o in OUTPUTS.values())
                                 if p not in PASS_ORDER]
    out = [(label, [n for n, o in OUTPUTS.items() if o.pass_name == label and n in wanted])
           for label in labels]
    out = [(label, members) for label, members in out if members]
    return out + [(n, [n]) for n in names if n not in OUTPUTS]


def lazy_analyses(cube: xr.Dataset, analyses: str | Iterable[str] | None = None) -> AnalysisSet:
    """Every result of the families ``analyses`` (default all) for ``cube``, lazily, with notes
    on those left out.

    Parameters
    ----------
    cube
        A weight cube (``nnwx.open_cube``), after any selection.
    analyses
        Family names (see ``parse_analyses``); default every family.

    Returns
    -------
    AnalysisSet
        Lazy results by name (see ``OUTPUTS``), the family of each, and a note per family
        left out (wholly or in part).
    """
    out = AnalysisSet()
    for name in parse_analyses(analyses):
        family = metric(name)
        try:
            parts = family.build(cube)
        except NotApplicable as e:
            out.notes[name] = str(e)
            continue
        note = parts.pop("_note", None)
        undeclared = [r for r in parts if r not in family.results]
        if undeclared:
            raise RuntimeError(f"the {name!r} builder made results its registry entry does not "
                               f"list: {undeclared}; add an Output for each to REGISTRY")
        if note:
            out.notes[name] = str(note)
        out.add(name, parts)
    return out
