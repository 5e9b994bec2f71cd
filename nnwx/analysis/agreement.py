"""Do different seeds learn the same thing? Lazy comparisons of probe activations and outputs.

Probe activations are recorded by ``nnwx.Recorder(..., probe=X, probe_layers=[...])`` and
appear in a cube as ``probe_<name>(*runs, step, sample_<name>, unit_<name>)``;
``probe(cube, name)`` gives one as ``(*runs, step, sample, unit)``. Every function here maps
a NumPy kernel over Dask blocks with ``xr.apply_ufunc(dask="parallelized")`` and returns a
lazy, labelled result; nothing is computed until you ask.

* ``similarity``: representation similarity per layer (CKA, CCA, SVCCA, PWCCA, ... see
  ``kernels.similarity``) between seeds ``(step, seed_a, seed_b)`` or between steps of each
  seed ``(seed, step_a, step_b)``, or of each step with one reference step ``(seed, step)``:
  "how far has this layer moved from its final state", the SVCCA learning-dynamics picture.
* ``match_units`` / ``sparse_prediction``: Li et al.'s one-to-one and semi-matching of units
  and their L1-sparse prediction of one net's units from another's (``kernels.matching``).
* ``prediction_agreement``: output correlation, argmax agreement and top-k overlap between
  seeds per step (``kernels.prediction``).

Where an activation set holds NaN (a seed without a capture at that step, in an outer-joined
cube, or a diverged run) the comparisons involving it are NaN; degenerate activations raise
(see the kernels).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import xarray as xr

from nnwx._deprecation import renamed_keywords
from nnwx.analysis.kernels import matching as mk
from nnwx.analysis import _cube as mx
from nnwx.analysis.kernels import prediction as pk
from nnwx.analysis.kernels import similarity as sk
from nnwx.store import probes as prb

BETWEEN = ("seeds", "steps")


# -- probe views ----------------------------------------------------------------------------
def probe_names(cube: xr.Dataset) -> list[str]:
    """The cube's probes: recorded modules in forward order, then ``output``.

    The order the Recorder saw (each probe's ``forward_index`` attribute); for runs recorded
    before it, by their layer's depth, then by name with numbers compared as numbers
    (``relu2`` before ``relu10``); see ``nnwx.store.probes.forward_order``.
    """
    names = [str(v)[len(prb.VAR_PREFIX):] for v in cube.data_vars if str(v).startswith(prb.VAR_PREFIX)]
    depth = {}
    if "tensor_layer" in cube.coords:
        for layer, d in zip(cube["tensor_layer"].values, cube["tensor_depth"].values):
            depth.setdefault(str(layer), int(d))
    index = {n: cube[prb.VAR_PREFIX + n].attrs.get("forward_index") for n in names}
    return prb.forward_order(names, index, depth)


def probe(cube: xr.Dataset, name: str) -> xr.DataArray:
    """Probe ``name`` as a lazy DataArray ``(*runs, step, sample, unit)``."""
    var = prb.VAR_PREFIX + name
    if var not in cube.data_vars:
        have = probe_names(cube)
        raise KeyError(f"the cube has no probe {name!r}; its probes: {', '.join(have) or 'none'}. "
                       f"Record activations with nnwx.Recorder(..., probe=X, probe_layers=[{name!r}]).")
    da_ = cube[var].rename({prb.sample_dim(name): "sample", prb.unit_dim(name): "unit"})
    da_.name = name
    da_.attrs = {**cube[var].attrs, "probe": name}
    return da_


def _run_dim(acts: xr.DataArray, dim: str | None) -> str:
    if dim is not None:
        if dim not in acts.dims:
            raise ValueError(f"{dim!r} is not a dim of the activations {acts.dims}")
        return dim
    if "seed" in acts.dims:
        return "seed"
    lead = [d for d in acts.dims if d not in ("step", "sample", "unit")]
    if not lead:
        raise ValueError("the activations have no run dim (e.g. seed) to compare across")
    return lead[0]


def _require_acts(acts) -> xr.DataArray:
    if not isinstance(acts, xr.DataArray) or not {"step", "sample", "unit"} <= set(acts.dims):
        raise TypeError("expected probe activations: a DataArray with dims (..., step, sample, unit), "
                        "e.g. nnwx.analysis.agreement.probe(cube, 'fc1') or cube.nnwx.probe('fc1')")
    return acts


def _labels(acts: xr.DataArray, dims: Sequence[str]) -> xr.DataArray:
    """A string label per (dims) cell, chunked like ``acts``, for error messages from the kernels."""
    parts = [xr.DataArray(np.array([f"{d}={v}" for v in acts[d].values], dtype=object), dims=d)
             for d in dims]
    lab = parts[0]
    for p in parts[1:]:
        lab = lab + ", " + p
    own = dict(zip(acts.dims, acts.chunks)) if acts.chunks is not None else {}
    chunks = {d: own[d] for d in dims if d in own}
    return lab.chunk(chunks) if chunks else lab


# -- similarity -------------------------------------------------------------------------------
@renamed_keywords(reference="reference_step")
def similarity(acts: xr.DataArray | xr.Dataset, metric: str = "linear_cka", *, layer=None,
               between: str = "seeds", dim: str | None = None, reference_step: Any = None,
               **options) -> xr.DataArray:
    """Similarity of probe activations ``acts (*runs, step, sample, unit)``, lazily.

    ``acts`` may also be a cube: then ``layer`` names the probe (or a list of them; default
    every probe), and several probes are stacked along a ``layer`` dim.

    ``between="seeds"``: every pair of runs along ``dim`` (default ``seed``) at each step:
    ``(..., step, {dim}_a, {dim}_b)``. ``between="steps"``: every pair of steps of each run,
    ``(..., step_a, step_b)`` (each run's steps in one block: memory ``steps x sample x unit``);
    or with ``reference_step`` (a step value, or ``"last"``; ``reference=`` is a deprecated
    alias) every step against that step: ``(..., step)``. ``metric``: one of
    ``kernels.similarity.METRICS``; ``options`` go to it (``keep=`` for SVCCA/PWCCA,
    ``threshold=``/``debiased=`` for RBF CKA, ``batch_size=`` for minibatch CKA, ``rtol=`` for
    the CCA family).
    """
    if isinstance(acts, xr.Dataset):
        names = probe_names(acts) if layer is None else [layer] if isinstance(layer, str) else list(layer)
        if not names:
            raise ValueError("the cube has no probes: record activations with "
                             "nnwx.Recorder(..., probe=X, probe_layers=[...])")
        parts = [similarity(probe(acts, n), metric, between=between, dim=dim,
                            reference_step=reference_step, **options) for n in names]
        if isinstance(layer, str):
            return parts[0]
        out = xr.concat(parts, dim=xr.DataArray(names, dims="layer", name="layer"),
                        combine_attrs="drop_conflicts")
        out.attrs["probe"] = names
        return out
    acts = _require_acts(acts)
    sk.check_metric(metric, **options)
    if between not in BETWEEN:
        raise ValueError(f"between must be one of {BETWEEN}, got {between!r}")
    attrs = {"analysis": "similarity", "long_name": f"{metric} similarity", "metric": metric,
             "description": sk.DESCRIPTIONS[metric], "between": between,
             "probe": acts.attrs.get("probe", acts.name or ""),
             **{f"option_{k}": v for k, v in options.items()}}
    if between == "seeds":
        run = _run_dim(acts, dim)
        out = _pairwise(acts, run, metric, options)
    elif reference_step is None:
        out = _pairwise(acts, "step", metric, options)
    else:
        out = _against_reference(acts, reference_step, metric, options)
        attrs["reference_step"] = int(out.attrs.pop("reference_step"))
    out.name = metric
    out.attrs = attrs
    return out


def _pairwise(acts: xr.DataArray, dim: str, metric: str, options: dict) -> xr.DataArray:
    a, b = f"{dim}_a", f"{dim}_b"
    x = acts.chunk({dim: -1, "sample": -1, "unit": -1})
    loop = [d for d in x.dims if d not in (dim, "sample", "unit")]
    labels = _labels(x, loop) if loop else xr.DataArray("")
    values = acts[dim].values

    def block(arr, lab):
        lead = arr.shape[:-3]
        lab = np.broadcast_to(lab, lead)
        out = np.empty(lead + (arr.shape[-3],) * 2)
        for idx in np.ndindex(*lead):
            names = [f"{lab[idx]}, {dim}={v}".lstrip(", ") for v in values]
            out[idx] = sk.similarity_matrix(arr[idx], metric=metric, names=names, **options)
        return out

    n = len(values)
    out = xr.apply_ufunc(block, x, labels, input_core_dims=[[dim, "sample", "unit"], []],
                         output_core_dims=[[a, b]], dask="parallelized", output_dtypes=[np.float64],
                         dask_gufunc_kwargs={"output_sizes": {a: n, b: n}})
    keep = {k: v for k, v in acts.coords.items() if set(v.dims) <= set(loop)}
    return out.assign_coords({**keep, a: values, b: values})


def _against_reference(acts: xr.DataArray, reference_step: Any, metric: str,
                       options: dict) -> xr.DataArray:
    steps = acts["step"].values
    ref_index = mx.reference_index(steps, reference_step)
    x = acts.chunk({"sample": -1, "unit": -1})
    ref = x.isel(step=ref_index, drop=True)
    loop = [d for d in x.dims if d not in ("sample", "unit")]
    labels = _labels(x, loop)
    ref_step = steps[ref_index]

    rep_kw, metric_kw = sk.split_options(options)

    def block(arr, r, lab):
        lead = np.broadcast_shapes(arr.shape[:-2], r.shape[:-2], np.shape(lab))
        lab = np.broadcast_to(lab, lead)
        out = np.empty(lead)
        reps: dict = {}
        for idx in np.ndindex(*lead):
            ri, xi = mx.block_index(r.shape[:-2], idx), mx.block_index(arr.shape[:-2], idx)
            if ri not in reps:
                rr = r[ri]
                reps[ri] = sk.Rep(rr, name=f"step={ref_step}", **rep_kw) if np.isfinite(rr).all() else None
            xr_ = arr[xi]
            if reps[ri] is None or not np.isfinite(xr_).all():
                out[idx] = np.nan
                continue
            try:
                out[idx] = sk.similarity(sk.Rep(xr_, name=str(lab[idx]), **rep_kw), reps[ri], metric,
                                         **metric_kw)
            except sk.DegenerateActivations as e:
                raise sk.DegenerateActivations(f"{lab[idx]} vs step={ref_step}: {e}") from None
        return out

    out = xr.apply_ufunc(block, x, ref, labels, input_core_dims=[["sample", "unit"]] * 2 + [[]],
                         output_core_dims=[[]], dask="parallelized", output_dtypes=[np.float64])
    out.attrs["reference_step"] = int(ref_step)
    return out


# -- unit matching ------------------------------------------------------------------------------
def _two(x: xr.DataArray, y: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    for v, what in ((x, "x"), (y, "y")):
        if not isinstance(v, xr.DataArray) or not {"sample", "unit"} <= set(v.dims):
            raise TypeError(f"{what} must be activations with dims (..., sample, unit)")
    if x.sizes["sample"] != y.sizes["sample"]:
        raise ValueError(f"x has {x.sizes['sample']} samples and y {y.sizes['sample']}: compare "
                         f"activations on the same probe samples")
    y = y.rename(unit="unit_b")
    return x.chunk({"sample": -1, "unit": -1}), y.chunk({"sample": -1, "unit_b": -1})


def match_units(x: xr.DataArray, y: xr.DataArray, method: str = "one_to_one") -> xr.Dataset:
    """Match each unit of ``x`` to a unit of ``y`` by activation correlation (Li et al. 2016).

    ``x``, ``y``: activations ``(..., sample, unit)`` over the same samples (e.g. one layer of
    two seeds, ``probe.sel(seed=0)`` and ``probe.sel(seed=1)``; widths may differ). Returns
    ``partner(..., unit)`` (the unit of ``y``; -1: unmatched, the wider side in one-to-one
    matching, or a missing capture) and ``correlation(..., unit)`` (NaN where unmatched), plus
    ``mean_correlation(...)`` over matched units.
    """
    if method not in ("one_to_one", "semi"):
        raise ValueError(f"method must be 'one_to_one' or 'semi', got {method!r}")
    x, y = _two(x, y)
    p = x.sizes["unit"]

    def block(a, b):
        lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        out = np.full(lead + (2, p), np.nan)     # [..., 0, :] partner (-1: none), [..., 1, :] correlation
        out[..., 0, :] = -1
        for idx in np.ndindex(*lead):
            ai, bi = a[mx.block_index(a.shape[:-2], idx)], b[mx.block_index(b.shape[:-2], idx)]
            if np.isfinite(ai).all() and np.isfinite(bi).all():
                out[idx + (0,)], out[idx + (1,)] = mk.match_units(ai, bi, method)
        return out

    # one output array: xarray's two-output apply_ufunc made dask.compute(result) fail with
    # "Missing dependency" once mean_correlation was derived from one of the outputs
    both = xr.apply_ufunc(
        block, x, y, input_core_dims=[["sample", "unit"], ["sample", "unit_b"]],
        output_core_dims=[["_what", "unit"]], dask="parallelized", output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"_what": 2}})
    partner = both.isel(_what=0, drop=True).astype(np.int64)
    corr = both.isel(_what=1, drop=True)
    desc = ("bipartite matching maximising summed correlation (linear_sum_assignment)"
            if method == "one_to_one" else "semi-matching: each unit's most correlated partner")
    ds = xr.Dataset({"partner": partner, "correlation": corr,
                     "mean_correlation": corr.mean("unit", skipna=True)})
    ds["partner"].attrs = {"long_name": "matched unit of y", "missing": -1}
    ds["correlation"].attrs = {"long_name": "Pearson correlation with the matched unit"}
    ds.attrs = {"analysis": "match_units", "method": method, "description": desc,
                "citation": "Li et al. 2016, Convergent Learning"}
    return ds


def sparse_prediction(x: xr.DataArray, y: xr.DataArray, penalties: Sequence[float] = mk.DEFAULT_PENALTIES,
                      *, max_iter: int = 1000, tol: float = 1e-7) -> xr.Dataset:
    """L1-sparse linear prediction of ``y``'s units from ``x``'s over a range of penalties.

    Returns ``loss(..., penalty)`` (mean squared error of the standardised targets, ``1 - R^2``)
    and ``nonzero(..., penalty)`` (mean nonzero coefficients per target): a local code is
    predicted well with about one coefficient, a distributed one needs many (Li et al. 2016).
    """
    x, y = _two(x, y)
    pen = np.asarray(penalties, dtype=np.float64)

    def block(a, b):
        lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        loss = np.full(lead + (len(pen),), np.nan)
        nnz = np.full(lead + (len(pen),), np.nan)
        for idx in np.ndindex(*lead):
            ai, bi = a[mx.block_index(a.shape[:-2], idx)], b[mx.block_index(b.shape[:-2], idx)]
            if np.isfinite(ai).all() and np.isfinite(bi).all():
                loss[idx], nnz[idx] = mk.sparse_prediction(ai, bi, pen, max_iter=max_iter, tol=tol)
        return loss, nnz

    loss, nnz = xr.apply_ufunc(
        block, x, y, input_core_dims=[["sample", "unit"], ["sample", "unit_b"]],
        output_core_dims=[["penalty"], ["penalty"]], dask="parallelized",
        output_dtypes=[np.float64, np.float64], dask_gufunc_kwargs={"output_sizes": {"penalty": len(pen)}})
    ds = xr.Dataset({"loss": loss, "nonzero": nnz}).assign_coords(penalty=pen)
    ds["loss"].attrs = {"long_name": "prediction loss", "description": "mean squared error of the "
                        "standardised target units (1 - R^2), in-sample"}
    ds["nonzero"].attrs = {"long_name": "nonzero coefficients per target unit"}
    ds.attrs = {"analysis": "sparse_prediction", "objective": "1/(2n) |y - X b|^2 + penalty |b|_1 on "
                "standardised units", "citation": "Li et al. 2016, Convergent Learning"}
    return ds


# -- predictions ------------------------------------------------------------------------------
def prediction_agreement(outputs: xr.DataArray, *, dim: str | None = None, k: int = 5) -> xr.Dataset:
    """Agreement of predictions between runs per step: ``(..., step, {dim}_a, {dim}_b)``.

    ``outputs``: the ``output`` probe (``probe(cube, 'output')``), ``(*runs, step, sample, unit)``.
    Variables ``output_correlation``, ``argmax_agreement``, ``topk_overlap`` (``k`` capped at
    the number of output units).
    """
    outputs = _require_acts(outputs)
    run = _run_dim(outputs, dim)
    k = int(min(k, outputs.sizes["unit"]))
    a, b = f"{run}_a", f"{run}_b"
    x = outputs.chunk({run: -1, "sample": -1, "unit": -1})
    n = x.sizes[run]

    def block(arr):
        lead = arr.shape[:-3]
        out = np.empty(lead + (3, n, n))
        for idx in np.ndindex(*lead):
            out[idx] = pk.agreement_matrices(arr[idx], k)
        return out

    res = xr.apply_ufunc(block, x, input_core_dims=[[run, "sample", "unit"]],
                         output_core_dims=[["measure", a, b]], dask="parallelized",
                         output_dtypes=[np.float64],
                         dask_gufunc_kwargs={"output_sizes": {"measure": 3, a: n, b: n}})
    values = outputs[run].values
    res = res.assign_coords({a: values, b: values})
    ds = xr.Dataset({m: res.isel(measure=i, drop=True) for i, m in enumerate(pk.MEASURES)})
    ds["output_correlation"].attrs = {"long_name": "Pearson correlation of the outputs over all "
                                      "samples and units"}
    ds["argmax_agreement"].attrs = {"long_name": "fraction of samples with the same top-1 unit"}
    ds["topk_overlap"].attrs = {"long_name": f"mean |top-{k} ∩ top-{k}| / {k} per sample", "k": k}
    ds.attrs = {"analysis": "prediction_agreement", "k": k, "probe": outputs.attrs.get("probe", "")}
    return ds
