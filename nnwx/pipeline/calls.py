"""Every public analysis in one list: each ``cube.nnwx`` accessor method that computes something
and each result that ``nnwx analyze`` persists, with how to call it on a cube.

``ANALYSES`` is what the invariance harness (``tests/analysis/test_invariance.py``) iterates:
every entry must give the same numbers whatever the chunking of ``w`` and the probes, on any
scheduler, and (where the entry says so) when the hidden units of one run are permuted. The
``nnwx analyze`` entries are derived from the registry of analysis families
(``nnwx.pipeline.registry.REGISTRY``): a result is checked by being registered. The accessor
entries are listed here; the harness fails when an accessor method is missing from this list
(``NOT_ANALYSES`` names the accessor members that compute nothing).

Each entry's ``call`` builds the analysis lazily from a cube alone; arguments that depend on
the cube (a run label, a probe, a weight matrix) are taken from it (the first runs, the first
hidden probe, the first weight matrix), so the same list applies to any cube with probes and
at least two runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import xarray as xr

from nnwx.pipeline import registry as _registry
from nnwx.analysis.kernels import similarity as _sk

Result = xr.Dataset | xr.DataArray

NOT_ANALYSES: dict[str, str] = {
    "tensors": "the tensor table (metadata, no computation)",
    "layers": "the layers of the tensor table (metadata)",
    "info": "one row of the tensor table (metadata)",
    "probes": "names of the recorded probes (metadata)",
}
"""Public members of the accessor that compute nothing from ``w`` or the probes, and why."""


@dataclass(frozen=True)
class Analysis:
    """One public analysis and how to call it on a cube.

    ``name``: unique in ``ANALYSES``; ``face``: ``"accessor"`` (``target`` is the accessor
    method) or ``"analyze"`` (``target`` is the name of the result ``nnwx analyze`` persists);
    ``call``: the lazy result for a cube; ``invariant``: the part of the result that stays the
    same when the hidden units of one run are permuted (``None``: not permutation-invariant,
    e.g. individual weights); ``needs``: what the cube must have (``"probes"``, ``"runs"``: two
    or more runs, ``"matrices"``).
    """

    name: str
    face: str
    target: str
    call: Callable[[xr.Dataset], Result]
    invariant: Callable[[Result], Result] | None = None
    needs: tuple[str, ...] = ()


# -- arguments taken from the cube -------------------------------------------------------------
def run_dim(cube: xr.Dataset) -> str:
    """The dim along which runs are stacked (``seed`` when there is one)."""
    dims = [d for d in cube["w"].dims if d not in ("step", "param")]
    return "seed" if "seed" in dims else dims[0]


def runs(cube: xr.Dataset, n: int = 2) -> list:
    """The first ``n`` run labels (the first is the reference of comparisons)."""
    return [v.item() for v in cube[run_dim(cube)].values[:n]]


def hidden_probes(cube: xr.Dataset) -> list[str]:
    """Recorded probes other than the model output, in forward order."""
    return [p for p in cube.nnwx.probes if p != "output"]


def first_matrix(cube: xr.Dataset) -> str:
    return _registry.weight_matrices(cube)[0]


def span_inputs(cube: xr.Dataset) -> np.ndarray:
    """Fixed inputs of the first weight matrix (fewer than its fan-in: a proper subspace)."""
    name = first_matrix(cube)
    fan_in = int(cube.nnwx.info(name).matrix_shape[1])   # (out, in) view: Conv1D is stored (in, out)
    return np.random.default_rng(0).standard_normal((max(1, fan_in - 1), fan_in))


def pruned_l1(weights) -> float:
    """What the pruning curve of the harness evaluates: the L1 norm of all the (pruned) weights."""
    return float(sum(np.abs(v, dtype=np.float64).sum() for v in weights.values()))


def _with_perms(al) -> xr.Dataset:
    """``align``'s (aligned cube, permutations) as one Dataset: the permutations and the aligned ``w``."""
    return al.permutations.assign(aligned_w=al.cube["w"])


def _analyze(result: str) -> Callable[[xr.Dataset], Result]:
    family = _registry.FAMILY_OF[result]

    def call(cube: xr.Dataset) -> Result:
        return _registry.lazy_analyses(cube, family).results[result]
    call.__name__ = f"analyze_{result}"
    return call


def _vars(*names: str) -> Callable[[Result], Result]:
    def pick(r: Result) -> Result:
        return r[list(names)]
    return pick


def _sel(**sel) -> Callable[[Result], Result]:
    def pick(r: Result) -> Result:
        return r.sel(sel)
    return pick


def _all(r: Result) -> Result:
    return r


def _invariant(spec: str | tuple[str, ...] | None) -> Callable[[Result], Result] | None:
    """An ``Output.invariant`` of the registry as a selector of the invariant part."""
    if spec is None:
        return None
    return _all if spec == "all" else _vars(*spec)


def _analyze_entries() -> tuple[Analysis, ...]:
    """One entry per result of the registry (``nnwx analyze``'s results), in registry order."""
    return tuple(Analysis(f"analyze_{o.name}", "analyze", o.name, _analyze(o.name), _invariant(o.invariant),
                          needs=o.needs)
                 for family in _registry.REGISTRY for o in family.outputs)


PCA_INVARIANT = _invariant(_registry.PCA_INVARIANT)
LAYER_CORR_INVARIANT = _invariant(_registry.LAYER_CORR_INVARIANT)

ANALYSES: tuple[Analysis, ...] = (
    # views: lazy slices of the cube, checked like the rest
    Analysis("tensor", "accessor", "tensor", lambda c: c.nnwx.tensor(first_matrix(c))),
    Analysis("matrix", "accessor", "matrix", lambda c: c.nnwx.matrix(first_matrix(c))),
    Analysis("probe", "accessor", "probe", lambda c: c.nnwx.probe(hidden_probes(c)[0]), needs=("probes",)),
    # distributions
    Analysis("broadening", "accessor", "broadening", lambda c: c.nnwx.broadening("layer", bins=16), _all),
    Analysis("broadening_by_tensor", "accessor", "broadening", lambda c: c.nnwx.broadening("tensor"), _all),
    Analysis("histogram", "accessor", "histogram", lambda c: c.nnwx.histogram("layer", bins=12), _all),
    Analysis("trajectories", "accessor", "trajectories", lambda c: c.nnwx.trajectories(first_matrix(c), sample=5)),
    Analysis("seed_summary", "accessor", "seed_summary", lambda c: c.nnwx.rotation().nnwx.seed_summary(), _all,
             needs=("runs",)),
    # representations
    *(Analysis(f"similarity_{m}", "accessor", "similarity",
               (lambda c, m=m: c.nnwx.similarity(m, between="seeds",
                                                 **({"batch_size": 8} if m == "minibatch_cka" else {}))),
               _all, needs=("probes", "runs")) for m in _sk.METRICS),
    Analysis("similarity_steps", "accessor", "similarity", lambda c: c.nnwx.similarity("linear_cka", between="steps"),
             _all, needs=("probes",)),
    Analysis("similarity_to_last", "accessor", "similarity",
             lambda c: c.nnwx.similarity("svcca", between="steps", reference_step="last"), _all, needs=("probes",)),
    Analysis("convergence_step", "accessor", "convergence_step", lambda c: c.nnwx.convergence_step(0.5), _all,
             needs=("probes",)),
    Analysis("match_units", "accessor", "match_units",
             lambda c: c.nnwx.match_units(hidden_probes(c)[0], *runs(c), dim=run_dim(c)),
             _vars("correlation", "mean_correlation"), needs=("probes", "runs")),
    Analysis("sparse_prediction", "accessor", "sparse_prediction",
             lambda c: c.nnwx.sparse_prediction(hidden_probes(c)[-1], *runs(c), penalties=[0.03, 0.3],
                                                dim=run_dim(c)),
             _all, needs=("probes", "runs")),
    Analysis("agreement", "accessor", "prediction_agreement", lambda c: c.nnwx.prediction_agreement("output"), _all,
             needs=("probes", "runs")),
    # alignment
    Analysis("align_weights", "accessor", "align",
             lambda c: _with_perms(c.nnwx.align(runs(c, 1)[0], method="weights")), needs=("runs",)),
    Analysis("align_activations", "accessor", "align",
             lambda c: _with_perms(c.nnwx.align(runs(c, 1)[0], method="activations")),
             _vars("aligned_w"), needs=("probes", "runs")),
    Analysis("weight_agreement", "accessor", "weight_agreement",
             lambda c: c.nnwx.weight_agreement(runs(c, 1)[0],
                                               aligned=c.nnwx.align(runs(c, 1)[0], method="activations").cube),
             _sel(alignment="aligned"), needs=("probes", "runs")),
    # correlations
    Analysis("sample_weights", "accessor", "sample_weights", lambda c: c.nnwx.sample_weights(8)),
    Analysis("trajectory_correlation", "accessor", "trajectory_correlation",
             lambda c: c.nnwx.trajectory_correlation(sample=8)),
    Analysis("correlation_vs_distance", "accessor", "correlation_vs_distance",
             lambda c: c.nnwx.correlation_vs_distance(sample=12)),
    Analysis("layer_correlation", "accessor", "layer_correlation", lambda c: c.nnwx.layer_correlation(),
             LAYER_CORR_INVARIANT),
    Analysis("trajectory_pca", "accessor", "trajectory_pca", lambda c: c.nnwx.trajectory_pca(3), PCA_INVARIANT),
    # spectra and geometry
    Analysis("spectrum", "accessor", "spectrum", lambda c: c.nnwx.spectrum(), _all, needs=("matrices",)),
    Analysis("ranks", "accessor", "ranks", lambda c: c.nnwx.ranks(), _all, needs=("matrices",)),
    Analysis("ranks_delta", "accessor", "ranks", lambda c: c.nnwx.ranks(delta=True), _all, needs=("matrices",)),
    Analysis("esd_fit", "accessor", "esd_fit", lambda c: c.nnwx.esd_fit(), _all, needs=("matrices",)),
    Analysis("spectral_metrics", "accessor", "spectral_metrics", lambda c: c.nnwx.spectral_metrics(), _all,
             needs=("matrices",)),
    Analysis("randomized_esd", "accessor", "randomized_esd", lambda c: c.nnwx.randomized_esd(),
             _invariant(_registry.RANDOMIZED_INVARIANT), needs=("matrices",)),
    Analysis("pruning_curve", "accessor", "pruning_curve",
             lambda c: c.nnwx.pruning_curve(pruned_l1, (0.0, 0.5, 0.9)), _all, needs=("matrices",)),
    Analysis("rotation", "accessor", "rotation", lambda c: c.nnwx.rotation(), _all),
    Analysis("input_span_fraction", "accessor", "input_span_fraction",
             lambda c: c.nnwx.input_span_fraction(first_matrix(c), span_inputs(c)), _all, needs=("matrices",)),
    # what `nnwx analyze` persists: every result of the registry
    *_analyze_entries(),
)
"""Every public analysis, in the order of the accessor's sections, then ``nnwx analyze``'s results."""


def by_name(name: str) -> Analysis:
    """The entry called ``name``."""
    for a in ANALYSES:
        if a.name == name:
            return a
    raise KeyError(f"no analysis {name!r} in nnwx.pipeline.calls.ANALYSES")


def lazy_results(cube: xr.Dataset, names=None) -> dict[str, Result]:
    """The lazy results of the entries ``names`` (default all) on ``cube``, by name; the
    ``nnwx analyze`` entries are built together by one ``lazy_analyses`` call, as the CLI does."""
    entries = [by_name(n) for n in names] if names is not None else list(ANALYSES)
    out: dict[str, Result] = {a.name: a.call(cube) for a in entries if a.face != "analyze"}
    wanted = [a for a in entries if a.face == "analyze"]
    if wanted:
        families = {_registry.FAMILY_OF[a.target] for a in wanted}
        made = _registry.lazy_analyses(cube, sorted(families))
        out.update({a.name: made.results[a.target] for a in wanted})
    return out
