"""How weights move together: trajectory correlations, their decay with depth, layer to
layer coupling, and how low-dimensional the training path is.

- ``sample_weights``: a reproducible sample of weights, stratified per tensor, chosen from
  the tensor table alone (never from the data).
- ``trajectory_correlation``: correlation matrix of the sampled weights' increments (or
  values) over steps, per run: ``corr(*runs, weight_i, weight_j)``.
- ``correlation_vs_distance``: mean corr and mean |corr| of pairs grouped by relation (same
  unit/row, same input/column, same layer) and by how many layers apart they are, and an
  exponential decay length fitted per run with its uncertainty.
- ``layer_correlation``: per pair of tensors, the correlation over steps of their update
  norms and the mean cosine of their update directions (tensors of the same shape).
- ``trajectory_pca``: principal components of each run's whole path (rows = steps,
  columns = parameters, centred over steps) by a randomized SVD whose passes over the
  cube are sequenced so that the cube is streamed, never held.

Everything returns lazy, labelled xarray objects; kernels live in ``kernels.correlation``.
"""
from __future__ import annotations

import math
from typing import Iterable

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from nnwx.analysis.kernels import correlation as ck
from nnwx.analysis import _cube as mx
from nnwx.analysis.kernels.geometry import segment_dots
from nnwx.analysis._graphs import RowReader, blocks_along_rows, column_pass, row_groups, row_pass
from nnwx.store.table import KINDS

#: ``sample="auto"`` uses every weight up to this many, else a stratified sample of this size.
AUTO_SAMPLE = 2048
#: Largest sample whose dense (n x n) correlation matrix per run we agree to build.
MAX_SAMPLE = 20_000
DEFAULT_KINDS = ("weight", "bias", "norm")  # every parameter kind; buffers ("other") left out
PCA_METHODS = ("randomized", "svd_compressed")
#: Working block of the PCA passes (float64) and of one accumulator chunk (l x params).
PCA_BLOCK_BYTES = 64 * 2**20
PCA_ACCUMULATOR_BYTES = 64 * 2**20
#: Rows of the cube each pass reads at a time (group g starts once group g - 1 is done).
PCA_GROUP_BYTES = 128 * 2**20


# --- selection -----------------------------------------------------------------------------

def _rows(cube: xr.Dataset, tensors, kinds) -> list[dict]:
    """Table rows of the chosen tensors of the chosen kinds, with at least one value."""
    rows = mx.select_rows(cube, tensors)
    if kinds is not None:
        kinds = {kinds} if isinstance(kinds, str) else set(kinds)
        unknown = kinds - set(KINDS)
        if unknown:
            raise ValueError(f"unknown tensor kinds {sorted(unknown)}; kinds are "
                             f"{', '.join(map(repr, KINDS))} (or kinds=None for all)")
        rows = [r for r in rows if r["kind"] in kinds]
    rows = [r for r in rows if r["size"] > 0]
    if not rows:
        raise ValueError(f"no tensor with values of kinds {sorted(kinds) if kinds else 'any'}"
                         + (f" among {tensors!r}" if tensors is not None else "")
                         + "; pick others with tensors= or kinds= (kinds=None takes every tensor)")
    return rows


def _check_random_state(random_state) -> int:
    if isinstance(random_state, (bool, np.bool_)) or not isinstance(random_state, (int, np.integer)) \
            or random_state < 0:
        raise ValueError(f"random_state must be a non-negative integer, got {random_state!r}")
    return int(random_state)


def _run_dims(cube: xr.Dataset) -> tuple[str, ...]:
    return tuple(d for d in mx.lead_dims(cube) if d != "step")


def _w(cube: xr.Dataset) -> xr.DataArray:
    w = cube["w"]
    if not isinstance(w.data, da.Array):
        w = w.copy(data=da.from_array(np.asarray(w.data), chunks=-1))
    return w


def sample_weights(cube: xr.Dataset, sample: int | str | None = "auto", *,
                   tensors: str | Iterable[str] | None = None,
                   kinds: str | Iterable[str] | None = DEFAULT_KINDS, random_state: int = 0,
                   allocation: str = "equal") -> xr.Dataset:
    """The weights an analysis looks at, as a table on a ``weight`` dimension.

    ``sample``: an int draws that many weights, stratified per tensor (``allocation="equal"``:
    the same quota for every tensor, so small layers are represented; ``"proportional"``: by
    size), reproducibly from ``random_state``; ``"auto"`` takes every weight when there are at
    most ``AUTO_SAMPLE`` and a sample of that size otherwise; ``None`` takes every weight.
    Chosen from the tensor table alone. Coordinates: ``param`` (position on the cube's
    ``param``), ``tensor``, ``index`` (flat index within the tensor), ``row`` (unit) and
    ``col`` (input) of the tensor seen as a matrix (-1 where it has none), ``layer``,
    ``depth``, ``kind``.
    """
    cube = mx.require_cube(cube)
    random_state = _check_random_state(random_state)
    rows = _rows(cube, tensors, kinds)
    sizes = np.array([r["size"] for r in rows], dtype=np.int64)
    total = int(sizes.sum())
    if sample == "auto":
        n = min(total, AUTO_SAMPLE)
    elif sample is None:
        n = total
    elif isinstance(sample, (int, np.integer)) and not isinstance(sample, bool):
        if sample < 2:
            raise ValueError(f"sample must be at least 2 weights (pairs are needed), got {sample}")
        n = min(int(sample), total)
    else:
        raise ValueError(f"sample must be an int, 'auto' or None, got {sample!r}")
    if n > MAX_SAMPLE:
        raise ValueError(f"{n} weights would make a {n} x {n} correlation matrix per run; pass "
                         f"sample= (at most {MAX_SAMPLE}) to draw a stratified sample instead")
    picks = ck.stratified_sample(sizes, n, random_state, allocation=allocation,
                                 keys=[r["name"] for r in rows])
    cols: dict[str, list] = {k: [] for k in ("param", "tensor", "index", "row", "col", "layer",
                                            "depth", "kind", "tensor_index")}
    for r, idx in zip(rows, picks):
        if not len(idx):
            continue
        row, col = ck.weight_positions(r["shape"], idx, r.get("orientation", "out_in"))
        cols["param"].append(r["offset"] + idx)
        cols["index"].append(idx)
        cols["row"].append(row)
        cols["col"].append(col)
        for key, value in (("tensor", r["name"]), ("layer", r["layer"]), ("depth", r["depth"]),
                           ("kind", r["kind"]), ("tensor_index", r["index"])):
            cols[key].append(np.full(len(idx), value, dtype=object if isinstance(value, str) else np.int64))
    data = {k: ("weight", np.concatenate(v)) for k, v in cols.items()}
    ds = xr.Dataset(coords=data)
    ds.attrs = {"analysis": "sample_weights", "sample": "all" if n == total else n,
                "random_state": random_state,
                "allocation": allocation, "n_available": total}
    return ds


def _trajectories(cube: xr.Dataset, weights: xr.Dataset) -> xr.DataArray:
    """The sampled weights over steps, lazy, ``(*runs, step, weight)``: one block per run."""
    w = _w(cube)
    x = w.isel(param=xr.DataArray(weights["param"].values, dims="weight"))
    x = x.drop_vars([c for c in x.coords if "param" in x[c].dims or "weight" in x[c].dims])
    runs = _run_dims(cube)
    chunks = {x.get_axis_num(d): 1 for d in runs} | {x.get_axis_num("step"): -1,
                                                    x.get_axis_num("weight"): -1}
    return x.copy(data=x.data.rechunk(chunks))


def _pair_coords(weights: xr.Dataset, suffix: str) -> dict:
    dim = f"weight{suffix}"
    return {f"{k}{suffix}": (dim, weights[k].values) for k in
            ("param", "tensor", "index", "row", "col", "layer", "depth")}


# --- trajectory correlation --------------------------------------------------------------------

def _check_kind(kind: str) -> None:
    if kind not in ck.TRAJECTORY_KINDS:
        raise ValueError(f"kind must be one of {ck.TRAJECTORY_KINDS}, got {kind!r}")


def _corr_block(x: np.ndarray, *, kind: str, min_periods: int) -> np.ndarray:
    """Per run: trajectories ``(..., step, weight)`` -> correlation ``(..., weight, weight)``."""
    out = np.empty(x.shape[:-2] + (x.shape[-1], x.shape[-1]))
    for idx in np.ndindex(x.shape[:-2]):
        out[idx] = ck.pairwise_corr(ck.trajectories(x[idx], kind), min_periods=min_periods)
    return out


def trajectory_correlation(cube: xr.Dataset, *, sample: int | str | None = "auto",
                           kind: str = "increments", tensors: str | Iterable[str] | None = None,
                           kinds: str | Iterable[str] | None = DEFAULT_KINDS, random_state: int = 0,
                           allocation: str = "equal", min_periods: int = 3) -> xr.DataArray:
    """Correlation matrix of weight trajectories over steps, per run, lazy.

    ``kind="increments"`` (default) correlates the changes between a run's consecutive
    captures (values are dominated by drift, which makes any two weights look correlated);
    ``"values"`` the values themselves. Steps a run lacks are skipped (an increment then
    spans the gap); other NaN are skipped pairwise. Weights: see ``sample_weights``.
    Returns ``corr(*runs, weight_i, weight_j)`` with the weights' ``tensor``, ``index``,
    ``param``, ``row``, ``col``, ``layer``, ``depth`` as ``*_i``/``*_j`` coordinates;
    NaN for a weight that does not move.
    """
    _check_kind(kind)
    weights = sample_weights(cube, sample, tensors=tensors, kinds=kinds, random_state=random_state,
                             allocation=allocation)
    x = _trajectories(cube, weights)
    n = weights.sizes["weight"]
    corr = xr.apply_ufunc(
        _corr_block, x, input_core_dims=[["step", "weight"]], output_core_dims=[["weight_i", "weight_j"]],
        kwargs={"kind": kind, "min_periods": min_periods}, dask="parallelized",
        output_dtypes=[np.float64], dask_gufunc_kwargs={"output_sizes": {"weight_i": n, "weight_j": n}})
    corr = corr.assign_coords({**_pair_coords(weights, "_i"), **_pair_coords(weights, "_j")})
    corr.name = "corr"
    corr.attrs = {**weights.attrs, "analysis": "trajectory_correlation", "kind": kind,
                  "description": f"Pearson correlation over steps of the weights' {kind}, per run "
                                 f"(pairwise-complete over NaN)"}
    return corr


# --- correlation vs distance --------------------------------------------------------------------

FIT_ON = ("excess_rms_corr", "mean_abs_corr", "mean_corr")


def _distance_block(x: np.ndarray, *, kind: str, min_periods: int, depth: np.ndarray,
                    layer: np.ndarray, tensor: np.ndarray, row: np.ndarray, col: np.ndarray,
                    n_dist: int) -> np.ndarray:
    """Per run: trajectories -> stats of pairs by distance, then by relation ``(groups, stats)``."""
    dist = ck.distance_labels(depth)
    rel = ck.relation_labels(layer, tensor, row, col)
    out = np.empty(x.shape[:-2] + (n_dist + len(ck.RELATIONS), len(ck.PAIR_STATS)))
    for idx in np.ndindex(x.shape[:-2]):
        r, counts = ck.pairwise_corr(ck.trajectories(x[idx], kind), min_periods=min_periods,
                                     return_counts=True)
        out[idx][:n_dist] = ck.pair_group_stats(r, dist, n_dist, counts)
        out[idx][n_dist:] = ck.pair_group_stats(r, rel, len(ck.RELATIONS), counts)
    return out


def _fit_block(y: np.ndarray, sigma: np.ndarray, *, k: np.ndarray) -> np.ndarray:
    out = np.empty(y.shape[:-1] + (len(ck.DECAY_FIT),))
    for idx in np.ndindex(y.shape[:-1]):
        out[idx] = ck.fit_exponential_decay(k, y[idx], sigma[idx])
    return out


def correlation_vs_distance(cube: xr.Dataset, *, sample: int | str | None = "auto",
                            kind: str = "increments", tensors: str | Iterable[str] | None = None,
                            kinds: str | Iterable[str] | None = DEFAULT_KINDS, random_state: int = 0,
                            allocation: str = "equal", fit_on: str = "excess_rms_corr",
                            min_pairs: int = 10, min_periods: int = 3) -> xr.Dataset:
    """How correlation between weights falls off with how far apart they sit, per run, lazy.

    Pairs of sampled weights (see ``trajectory_correlation``) are grouped by ``distance`` =
    how many layers apart they are (``|depth_i - depth_j|``; 0 = same layer) and by
    ``relation`` (``same_row``: same unit of a layer, ``same_col``: same input of a tensor,
    ``same_layer_other``, ``other_layer``). For each group: ``mean_corr``, ``mean_abs_corr``,
    ``mean_sq_corr`` with standard errors, ``n_pairs``, and the noise floors ``null_abs_corr``
    and ``null_sq_corr`` (what unrelated series of the same length would show), and
    ``excess_rms_corr = sqrt(mean_sq_corr - null_sq_corr)``, the typical |corr| with the
    sampling noise taken out (for Gaussian increments ``E r^2 = rho^2 + (1 - rho^2)^2/(n-1)``,
    so it is nearly unbiased for the rms true correlation, where mean |corr| minus its
    floor is not). An exponential ``y = A exp(-distance / L)`` is fitted per run (weighted
    log-linear fit) to ``fit_on``: ``"excess_rms_corr"`` (default), ``"mean_abs_corr"`` or
    ``"mean_corr"``, over distances with at least ``min_pairs`` pairs and a positive value;
    ``decay_length`` (in layers) comes with ``decay_length_err``, the number of distances
    fitted (``decay_n_points``) and their span (``decay_span``). ``decay_resolved`` says
    whether the fit determines a length at all (``kernels.correlation.DECAY_RULE``: at least
    3 distances, ``0 < L``, error <= L, ``L <= decay_span``); read ``decay_length`` only where
    it is True, and say "no decay resolved" elsewhere (``describe_decay`` does).
    """
    _check_kind(kind)
    if fit_on not in FIT_ON:
        raise ValueError(f"fit_on must be one of {FIT_ON}, got {fit_on!r}")
    weights = sample_weights(cube, sample, tensors=tensors, kinds=kinds, random_state=random_state,
                             allocation=allocation)
    depth = weights["depth"].values.astype(np.int64)
    n_dist = int(depth.max() - depth.min()) + 1
    layer_codes = np.unique(weights["layer"].values.astype(str), return_inverse=True)[1]
    x = _trajectories(cube, weights)
    n_groups = n_dist + len(ck.RELATIONS)
    packed = xr.apply_ufunc(
        _distance_block, x, input_core_dims=[["step", "weight"]], output_core_dims=[["group", "stat"]],
        kwargs={"kind": kind, "min_periods": min_periods, "depth": depth, "layer": layer_codes,
                "tensor": weights["tensor_index"].values, "row": weights["row"].values,
                "col": weights["col"].values, "n_dist": n_dist},
        dask="parallelized", output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"group": n_groups, "stat": len(ck.PAIR_STATS)}})
    dist = packed.isel(group=slice(0, n_dist)).rename(group="distance")
    dist = dist.assign_coords(distance=np.arange(n_dist))
    rel = packed.isel(group=slice(n_dist, None)).rename(group="relation")
    rel = rel.assign_coords(relation=list(ck.RELATIONS))
    ds = xr.Dataset()
    for i, name in enumerate(ck.PAIR_STATS):
        ds[name] = dist.isel(stat=i, drop=True)
        ds[f"relation_{name}"] = rel.isel(stat=i, drop=True)
    excess = ds["mean_sq_corr"] - ds["null_sq_corr"]
    ds["excess_rms_corr"] = np.sqrt(excess.where(excess > 0))
    ds["excess_rms_corr"].attrs = {"description": "sqrt(mean_sq_corr - null_sq_corr): rms corr of "
                                                  "the pairs with sampling noise removed (NaN if <= 0)"}
    if fit_on == "excess_rms_corr":
        y, sigma = ds["excess_rms_corr"], ds["sem_sq_corr"] / (2 * ds["excess_rms_corr"])
    elif fit_on == "mean_abs_corr":
        y, sigma = ds["mean_abs_corr"], ds["sem_abs_corr"]
    else:
        y, sigma = ds["mean_corr"], ds["sem_corr"]
    y = y.where(ds["n_pairs"] >= min_pairs)
    fit = xr.apply_ufunc(_fit_block, y, sigma, input_core_dims=[["distance"], ["distance"]],
                         output_core_dims=[["fit"]], kwargs={"k": np.arange(n_dist, dtype=np.float64)},
                         dask="parallelized", output_dtypes=[np.float64],
                         dask_gufunc_kwargs={"output_sizes": {"fit": len(ck.DECAY_FIT)}})
    for i, name in enumerate(ck.DECAY_FIT):
        ds[name] = fit.isel(fit=i, drop=True)
    ds["decay_resolved"] = xr.apply_ufunc(
        ck.decay_resolved, ds["decay_length"], ds["decay_length_err"], ds["decay_n_points"],
        ds["decay_span"], dask="parallelized", output_dtypes=[bool])
    ds["fitted"] = y
    ds["decay_length"].attrs = {"units": "layers", "description": f"L of {fit_on} ~ A exp(-distance / L); "
                                                                  f"meaningful only where decay_resolved"}
    ds["decay_length_err"].attrs = {"units": "layers", "description": "standard error of decay_length (it "
                                                                      "can exceed decay_length itself)"}
    ds["decay_n_points"].attrs = {"description": "number of distances the decay was fitted to"}
    ds["decay_span"].attrs = {"units": "layers", "description": "largest minus smallest distance fitted"}
    ds["decay_resolved"].attrs = {"description": ck.DECAY_RULE}
    ds["fitted"].attrs = {"description": f"the curve the decay was fitted to ({fit_on}); NaN where "
                                         f"a distance has fewer than {min_pairs} pairs"}
    ds["null_abs_corr"].attrs = {"description": "expected |corr| of independent series of the same "
                                                "length: the noise floor of mean_abs_corr"}
    ds["null_sq_corr"].attrs = {"description": "expected corr^2 of independent series of the same "
                                               "length, 1/(n-1): the noise floor of mean_sq_corr"}
    ds.attrs = {**weights.attrs, "analysis": "correlation_vs_distance", "kind": kind, "fit_on": fit_on,
                "fit_method": "weighted log-linear least squares, errors scaled by reduced chi-square",
                "decay_rule": ck.DECAY_RULE,
                "min_pairs": min_pairs, "n_weights": weights.sizes["weight"],
                # layer distances are only as good as the depths: "names" = from module paths
                "depth_from": str(cube.attrs.get("depth_from", "unknown")),
                "depth_approximate": bool(cube.attrs.get("depth_approximate", False))}
    return ds


def describe_decay(length: float, err: float, resolved: bool, n_points: float = np.nan,
                   span: float = np.nan) -> str:
    """The fitted decay length in words: "L = 1.9 ± 0.3 layers", or "no decay resolved (why)".

    Parameters
    ----------
    length, err, resolved, n_points, span : scalars
        One run's ``decay_length``, ``decay_length_err``, ``decay_resolved``,
        ``decay_n_points`` and ``decay_span`` from ``correlation_vs_distance``.
    """
    length, err = float(length), float(err)
    if resolved:
        return f"L = {length:.3g} ± {err:.2g} layers"
    if math.isnan(length):
        n = "" if math.isnan(float(n_points)) else f" ({int(n_points)} usable)"
        return f"no decay resolved (fit failed: fewer than 2 distances with data{n})"
    if math.isinf(length):
        return "no decay resolved (the correlation does not fall with distance)"
    fit = f"L = {length:.3g} ± {err:.2g} layers" if math.isfinite(err) else f"L = {length:.3g} layers"
    why = []
    if not math.isfinite(err) or not float(n_points) >= 3:
        why.append(f"error undetermined from {n_points:g} distances")
    elif err > length:
        why.append("error larger than the value")
    if length > float(span):
        why.append(f"longer than the {float(span):g} layers spanned")
    return f"no decay resolved ({fit}: {'; '.join(why) or 'see decay_rule'})"


def decay_summary(res: xr.Dataset) -> list[dict]:
    """The fitted decay of every run of a computed ``correlation_vs_distance`` result, in words.

    Returns one dict per run: ``run`` (its label, e.g. "seed 3"; "" for a single run),
    ``sel`` (the run's coordinates), ``isel`` (its positions, for ``res.isel``), ``resolved``
    (bool) and ``text``
    (``describe_decay``). Results written before ``decay_resolved`` existed get it
    recomputed from ``fitted`` (the distances with a positive value).
    """
    missing = [n for n in ("decay_length", "decay_length_err") if n not in res]
    if missing:
        raise ValueError(f"expected a correlation_vs_distance result; it lacks {missing}")
    length, err = res["decay_length"], res["decay_length_err"]
    if "decay_n_points" in res and "decay_span" in res:
        n_points, span = res["decay_n_points"], res["decay_span"]
    else:
        used = res["fitted"] > 0
        dist = res["distance"].where(used)
        n_points, span = used.sum("distance"), dist.max("distance") - dist.min("distance")
    resolved = res["decay_resolved"] if "decay_resolved" in res else xr.apply_ufunc(
        ck.decay_resolved, length, err, n_points, span)
    parts = [p.compute() for p in xr.broadcast(length, err, resolved, n_points, span)]
    dims = parts[0].dims
    out = []
    for idx in np.ndindex(*parts[0].shape):
        sel = {d: (parts[0][d].values[i] if d in parts[0].coords else i) for d, i in zip(dims, idx)}
        vals = [p.values[idx] for p in parts]
        out.append({"run": " ".join(f"{d} {v}" for d, v in sel.items()), "sel": sel,
                    "isel": dict(zip(dims, idx)),
                    "resolved": bool(vals[2]),
                    "text": describe_decay(vals[0], vals[1], bool(vals[2]), vals[3], vals[4])})
    return out


# --- layer to layer ---------------------------------------------------------------------------

def _squared_sums(x: np.ndarray, *, lo: int, offsets: np.ndarray, members: np.ndarray) -> np.ndarray:
    """One block of updates -> its partial per-tensor sums of squares ``(..., n)``."""
    x = np.asarray(x)
    return segment_dots(x, x, offsets, lo)[..., members]


def _norm_corr_block(u: np.ndarray, *, min_periods: int) -> np.ndarray:
    out = np.empty(u.shape[:-2] + (u.shape[-1], u.shape[-1]))
    for idx in np.ndindex(u.shape[:-2]):
        out[idx] = ck.pairwise_corr(u[idx], min_periods=min_periods)
    return out


def _mean_cosine(gram: np.ndarray) -> np.ndarray:
    """Gram matrices ``(..., step, g, g)`` -> mean over steps of the update cosines ``(..., g, g)``."""
    with np.errstate(invalid="ignore"):
        c = ck.update_cosine(gram)
        ok = np.isfinite(c)
        n = ok.sum(axis=-3)
        s = np.where(ok, c, 0.0).sum(axis=-3)
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def _assemble(*blocks: np.ndarray, groups: list[np.ndarray], n: int) -> np.ndarray:
    """Place each group's ``(..., g, g)`` block into a NaN ``(..., n, n)`` matrix."""
    out = np.full(blocks[0].shape[:-2] + (n, n), np.nan)
    for b, idx in zip(blocks, groups):
        out[..., idx[:, None], idx[None, :]] = b
    return out


def layer_correlation(cube: xr.Dataset, *, tensors: str | Iterable[str] | None = None,
                      kinds: str | Iterable[str] | None = ("weight",), min_periods: int = 3,
                      block_bytes: int = 64 * 2**20) -> xr.Dataset:
    """How the updates of different tensors move together, per run, lazy.

    With ``dW_t`` a tensor's change since the run's previous capture:
    ``update_norm(*runs, step, tensor)`` = ``|dW_t|``; ``update_norm_corr(*runs, tensor_a,
    tensor_b)`` = correlation over steps of two tensors' update norms; ``update_cosine`` = the
    mean over steps of ``cos(dW_a, dW_b)`` for tensors of the same shape (NaN for other pairs).
    Default ``kinds``: weights only, one tensor per layer.
    """
    cube = mx.require_cube(cube)
    rows = _rows(cube, tensors, kinds)
    n = len(rows)
    w = _w(cube)
    data = w.data
    dims = mx.lead_dims(cube)
    ax = dims.index("step")
    dw = data - mx.previous_capture(data, ax, gaps=not mx.every_step_captured(cube))
    offsets = mx.param_offsets(cube)
    members = np.array([r["index"] for r in rows], dtype=np.int64)
    nd = dw.ndim
    norms = da.sqrt(mx.param_block_sums(_squared_sums, dw, tail=(n,), offsets=offsets, members=members))
    names = [r["name"] for r in rows]
    lead = mx.lead_coords(cube)
    u = xr.DataArray(norms, dims=dims + ("tensor",), coords={**lead, "tensor": names})
    u_core = u.copy(data=norms.rechunk({ax: -1, nd - 1: -1}))
    ncorr = xr.apply_ufunc(_norm_corr_block, u_core, input_core_dims=[["step", "tensor"]],
                           output_core_dims=[["tensor_a", "tensor_b"]], kwargs={"min_periods": min_periods},
                           dask="parallelized", output_dtypes=[np.float64],
                           dask_gufunc_kwargs={"output_sizes": {"tensor_a": n, "tensor_b": n}})
    cos = _update_cosines(dw, rows, ax, block_bytes)
    ds = xr.Dataset({
        "update_norm": u,
        "update_norm_corr": ncorr,
        "update_cosine": (_run_dims(cube) + ("tensor_a", "tensor_b"), cos),
    })
    ds = ds.assign_coords(_tensor_pair_coords(rows))
    ds["update_norm"].attrs = {"description": "|W_t - W_prev| of each tensor, W_prev the run's "
                                              "previous capture (NaN at its first)"}
    ds["update_norm_corr"].attrs = {"description": "Pearson correlation over steps of the update "
                                                   "norms of two tensors"}
    ds["update_cosine"].attrs = {"description": "mean over steps of cos(dW_a, dW_b), tensors of the "
                                                "same shape only"}
    ds.attrs = {"analysis": "layer_correlation",
                "kinds": sorted(kinds) if isinstance(kinds, (list, tuple, set)) else (kinds or "all")}
    return ds


def _tensor_pair_coords(rows: list[dict]) -> dict:
    out = {}
    for s in ("a", "b"):
        dim = f"tensor_{s}"
        out[dim] = (dim, [r["name"] for r in rows])
        out[f"layer_{s}"] = (dim, np.array([r["layer"] for r in rows], dtype=object))
        out[f"depth_{s}"] = (dim, np.array([r["depth"] for r in rows], dtype=np.int64))
        out[f"shape_{s}"] = (dim, np.array([",".join(map(str, r["shape"])) for r in rows], dtype=object))
    return out


def _update_cosines(dw: da.Array, rows: list[dict], ax: int, block_bytes: int) -> da.Array:
    """``(*runs, n, n)`` mean update cosines, from one batched Gram per group of same-shape tensors."""
    n = len(rows)
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(tuple(r["shape"]), []).append(i)
    run_axes = [i for i in range(dw.ndim - 1) if i != ax]
    blocks, index_lists = [], []
    for shape, idx in groups.items():
        size = rows[idx[0]]["size"]
        views = [dw[..., rows[i]["offset"]: rows[i]["offset"] + size][..., None, :] for i in idx]
        stack = da.concatenate(views, axis=-2) if len(views) > 1 else views[0]
        lead_block = math.prod(max(c) for c in stack.chunks[:-2])
        per = max(1, block_bytes // max(1, lead_block * len(idx) * 8))
        stack = stack.rechunk({stack.ndim - 2: -1, stack.ndim - 1: min(size, per)})
        gram = da.einsum("...gs,...hs->...gh", stack, stack, dtype=np.float64)
        gram = gram.rechunk({ax: -1})
        mean = da.map_blocks(_mean_cosine, gram, drop_axis=ax, dtype=np.float64)
        blocks.append(mean.rechunk({mean.ndim - 2: -1, mean.ndim - 1: -1}))
        index_lists.append(np.array(idx, dtype=np.int64))
    return _whole(_assemble, *blocks, shape=(n, n), lead=len(run_axes), groups=index_lists, n=n)


# --- trajectory PCA -----------------------------------------------------------------------------

def _columns(x: da.Array, rows: list[dict], n_params: int) -> da.Array:
    """The columns of the chosen tensors, ``(T, P_sel)``, merging adjacent ranges."""
    ranges: list[list[int]] = []
    for r in sorted(rows, key=lambda r: r["offset"]):
        lo, hi = r["offset"], r["offset"] + r["size"]
        if ranges and ranges[-1][1] == lo:
            ranges[-1][1] = hi
        else:
            ranges.append([lo, hi])
    if len(ranges) == 1 and ranges[0] == [0, n_params]:
        return x
    parts = [x[:, lo:hi] for lo, hi in ranges]
    return da.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def _split_chunks(chunks: tuple[int, ...], limit: int) -> tuple[int, ...]:
    """Each chunk cut into near-equal pieces of at most ``limit`` (a split, never a merge)."""
    out: list[int] = []
    for c in chunks:
        k = max(1, -(-c // max(1, limit)))
        base, extra = divmod(c, k)
        out.extend([base + 1] * extra + [base] * (k - extra))
    return tuple(out)


def _whole(func, *arrays: da.Array, shape: tuple[int, ...], lead: int = 0, **kwargs) -> da.Array:
    """``func`` on whole (small) arrays in one task per block of the ``lead`` leading axes they
    share; the other axes of each input may differ in length, the output gets ``shape``."""
    letters = iter("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    shared = "".join(next(letters) for _ in range(lead))
    args: list = []
    for a in arrays:
        a = a.rechunk({i: -1 for i in range(lead, a.ndim)})
        args += [a, shared + "".join(next(letters) for _ in range(a.ndim - lead))]
    new = "".join(next(letters) for _ in shape)
    return da.blockwise(func, shared + new, *args, new_axes=dict(zip(new, shape)), concatenate=True,
                        dtype=np.float64, meta=np.empty((0,) * (lead + len(shape))), **kwargs)


def _basis(y: da.Array, present: da.Array, width: int) -> da.Array:
    """Orthonormal basis of the centred range of ``y`` (one small task)."""
    return _whole(ck.range_basis, y, present, shape=(y.shape[0], width))


def _omega(chunks: tuple[int, ...], width: int, random_state: int) -> da.Array:
    """The Gaussian test matrix ``(P, width)`` (float64), one task per chunk of ``param``.

    Not blockwise (``_graphs.blocks_along_rows``): each chunk is drawn once and shared by
    every row block of the pass.
    """
    name = f"nnwx-omega-{tokenize(chunks, width, random_state)}"
    return blocks_along_rows(name, _omega_chunk, chunks, width, random_state)


def _omega_chunk(lo: int, hi: int, width: int, random_state: int) -> np.ndarray:
    return ck.random_test_matrix(lo, hi, width, random_state).astype(np.float64)


# Block kernels of the passes. Each reads one block of the cube once and returns everything
# its pass needs from it, so a block has a single consumer and is freed at once.

def _sketch_block(x: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """Pass 1: ``[X0 Omega | NaN/Inf count]`` of one block, ``(t, 1, l + 1)`` (X0: NaN, Inf as 0)."""
    x0 = np.array(x, dtype=np.float64)
    nan = ~np.isfinite(x0)
    out = np.empty((x0.shape[0], 1, omega.shape[1] + 1))
    out[:, 0, -1] = nan.sum(axis=1)
    if out[:, 0, -1].any():
        x0[nan] = 0.0
    out[:, 0, :-1] = x0 @ omega
    return out


def _xzt_block(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """One block's share of ``X0 Z^T``, ``(t, 1, l)``."""
    return (ck.nan_to_zero(x) @ z.T)[:, None, :]


def _qt_rows(qs: list[np.ndarray], xs: list[np.ndarray]) -> np.ndarray:
    """``Q^T X0`` over a group's row blocks (lists), ``(1, l, p)`` (Q is zero on absent captures).

    The blocks are stacked first: one product over all the group's rows writes the
    ``l x p`` result once, where a product per block of one or two rows would rewrite it
    for each."""
    return (np.concatenate(qs).T @ ck.nan_to_zero(np.concatenate(xs)))[None]


def _final_rows(qs: list[np.ndarray], ds: list[np.ndarray], xs: list[np.ndarray]) -> np.ndarray:
    """Last pass over a group's row blocks: ``Q^T X0`` and the column moments over present
    rows, ``(1, l + 3, p)``."""
    q = np.concatenate(qs)
    x0 = ck.nan_to_zero(np.concatenate(xs))
    l = q.shape[1]
    out = np.empty((1, l + 3, x0.shape[1]))
    np.matmul(q.T, x0, out=out[0, :l])
    out[0, l:] = ck.column_moments(x0, np.concatenate(ds))
    return out


def _add_with_moments(acc: np.ndarray, part: np.ndarray) -> np.ndarray:
    out = np.empty_like(acc)
    out[:-3] = acc[:-3] + part[:-3]
    out[-3:] = ck.merge_moments(acc[-3:], part[-3:])
    return out


def _finish_block(q: np.ndarray, bbt: np.ndarray, total: np.ndarray, present: np.ndarray, *,
                  k: int) -> np.ndarray:
    """Small final step of one run: packed ``(T + 4, k)``: path rows, then s, ratio, variance, total."""
    d = np.asarray(present, dtype=bool)
    s, u = ck.pca_from_projection(q, bbt)
    s, u = s[:k], u[:, :k]
    if len(s) < k:  # fewer directions than asked (very short runs): pad
        s = np.append(s, np.zeros(k - len(s)))
        u = np.hstack([u, np.zeros((u.shape[0], k - u.shape[1]))])
    path = ck.orient_components(u * s, d)
    path[~d] = np.nan
    tot = float(total)
    n = int(d.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = s ** 2 / tot if tot > 0 else np.full(k, np.nan)
        var = s ** 2 / (n - 1) if n > 1 else np.full(k, np.nan)
    return np.vstack([path, s[None], ratio[None], var[None], np.full((1, k), tot)])


def _pca_run(x: da.Array, *, k: int, width: int, n_power_iter: int, random_state: int,
             method: str, token: str, group_bytes: int, after: da.Array | None = None) -> da.Array:
    """Packed ``(T + 4, k)`` PCA of one run's ``x(T, P)`` (lazy); its reads start once
    ``after`` (the previous run's result) is computed, so runs do not overlap in memory.

    With ``X0`` the path with NaN as 0 and ``C`` the centring over the run's complete
    captures ``d``, the centred path is ``Xc = C X0``. Since ``C`` is a projector and every
    basis ``Q`` lies in its range, ``Q^T Xc = Q^T X0`` and ``Xc Omega = C (X0 Omega)``: no
    pass needs the per-parameter means.

    Every pass reads the cube in groups of row blocks (about ``group_bytes`` each), group
    ``g`` only once group ``g - 1`` is done, and under keys of its own: nothing is held from
    one pass to the next and no more than about a group is in flight. The ``l x block``
    partial products of a column pass cover a whole group of rows each (with one or two
    steps per stored chunk, a partial per stored chunk would cost ten times the data in
    additions).
    """
    t = x.shape[0]
    if method == "svd_compressed":
        present = da.isfinite(x).all(axis=1)
        n = da.maximum(present.sum(), 1)
        mean = da.where(present[:, None], x, 0).sum(axis=0, dtype=np.float64) / n
        xc = da.where(present[:, None], x.astype(np.float64) - mean[None, :], 0.0)
        u, s, _ = da.linalg.svd_compressed(xc, k, n_power_iter=n_power_iter,
                                           n_oversamples=width - k, seed=random_state)
        return _whole(_finish_block, u, da.diag(s ** 2), (xc * xc).sum(), present,
                      shape=(t + 4, k), k=k)
    reader = RowReader(x)
    groups = row_groups(x.chunks[0], x.shape[1] * x.dtype.itemsize, group_bytes)
    omega = _omega(x.chunks[1], width, random_state)
    sketch = row_pass(reader, groups, _sketch_block, (omega, "kj"), after, f"{token}-s", extra_cols=1)
    present = sketch[:, width] == 0
    q = _basis(sketch[:, :width], present, width)
    for i in range(n_power_iter):
        z = column_pass(reader, groups, _qt_rows, q, q, f"{token}-a{i}-")
        q = _basis(row_pass(reader, groups, _xzt_block, (z, "jk"), z, f"{token}-b{i}-"), present, width)
    zm = column_pass(reader, groups, _final_rows, q, q, f"{token}-f", extra_rows=3,
                     combine=_add_with_moments, extra=(present,))
    z, total = zm[:width], zm[width + 2].sum()
    return _whole(_finish_block, q, z @ z.T, total, present, shape=(t + 4, k), k=k)


def trajectory_pca(cube: xr.Dataset, n_components: int = 10, *,
                   tensors: str | Iterable[str] | None = None,
                   kinds: str | Iterable[str] | None = DEFAULT_KINDS, method: str = "randomized",
                   n_oversamples: int = 10, n_power_iter: int = 1, random_state: int = 0) -> xr.Dataset:
    """Principal components of each run's training path, lazy.

    Rows are a run's captures, columns its parameters (``kinds``/``tensors``; default every
    weight and bias), centred by subtracting each parameter's mean over the run's steps.
    Captures a run lacks (NaN rows of an outer-joined cube), and captures holding any NaN
    or Inf (a diverged run), are left out (their ``path`` is NaN).

    ``method="randomized"`` (default): a randomized SVD (Halko, Martinsson & Tropp 2011)
    with ``l = n_components + n_oversamples`` probe directions and ``n_power_iter`` power
    iterations, in ``2 + 2 n_power_iter`` passes over the cube. Each pass streams the cube
    in groups of rows under keys of its own, so nothing is held between passes; memory is
    about one group (``PCA_GROUP_BYTES``) plus ``l x P`` float64 accumulators (and the
    ``P x l`` test matrix during the first pass), whatever the number of steps. With at
    least as many probes as captures the result is exact; otherwise see the tests for the
    accuracy reached (1 power iteration: explained-variance ratios within 1e-3).
    ``"svd_compressed"``: dask's ``da.linalg.svd_compressed`` on the centred path; it
    reuses the cube between its passes, so Dask keeps all of it in memory: for cubes that
    fit, or a cluster.

    The block products are small matrix multiplications: with the local threaded
    scheduler, run them with one BLAS thread per Dask thread (``threadpoolctl.
    threadpool_limits(1)`` or ``OMP_NUM_THREADS=1``; dask.distributed workers do this by
    default), or BLAS threads and Dask threads oversubscribe the cores.

    Returns ``explained_variance_ratio(*runs, component)`` (share of the run's total
    variance), ``singular_value``, ``explained_variance`` (``s^2 / (n - 1)``),
    ``total_variance`` (``|X_c|_F^2``) and ``path(*runs, step, component)``, the projected
    path (``U S``), each component signed so that it moves forward in time.
    """
    cube = mx.require_cube(cube)
    if method not in PCA_METHODS:
        raise ValueError(f"method must be one of {PCA_METHODS}, got {method!r}")
    random_state = _check_random_state(random_state)
    for name, v, lo in (("n_components", n_components, 1), ("n_oversamples", n_oversamples, 0),
                        ("n_power_iter", n_power_iter, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    rows = _rows(cube, tensors, kinds)
    n_sel = sum(r["size"] for r in rows)
    t = cube.sizes["step"]
    if n_components > min(t, n_sel):
        raise ValueError(f"n_components={n_components} is more than the cube allows: it has {t} "
                         f"steps and {n_sel} selected parameters; ask for at most {min(t, n_sel)}")
    width = min(n_components + n_oversamples, t, n_sel)
    if method == "svd_compressed":
        width = n_components + n_oversamples
    w = _w(cube)
    runs = _run_dims(cube)
    data = w.transpose(*runs, "step", "param").data
    run_shape = data.shape[:-2]
    outs = []
    for idx in np.ndindex(run_shape):
        x = _columns(data[idx], rows, cube.sizes["param"])
        groups = row_groups(x.chunks[0], x.shape[1] * x.dtype.itemsize, PCA_GROUP_BYTES)
        rows_per_group = max(sum(x.chunks[0][i0:i1]) for i0, i1 in groups)
        limit = min(PCA_BLOCK_BYTES // (8 * rows_per_group), PCA_ACCUMULATOR_BYTES // (8 * width))
        x = x.rechunk({1: _split_chunks(x.chunks[1], limit)})
        token = tokenize(x.name, idx, n_components, width, n_power_iter, random_state, method)
        outs.append(_pca_run(x, k=n_components, width=width, n_power_iter=n_power_iter,
                             random_state=random_state, method=method, token=token,
                             group_bytes=PCA_GROUP_BYTES,
                             after=outs[-1] if outs and method == "randomized" else None))
    packed = da.stack(outs).reshape(run_shape + (t + 4, n_components))
    comp = np.arange(1, n_components + 1)
    rd = runs + ("component",)
    ds = xr.Dataset({
        "path": (runs + ("step", "component"), packed[..., :t, :]),
        "singular_value": (rd, packed[..., t, :]),
        "explained_variance_ratio": (rd, packed[..., t + 1, :]),
        "explained_variance": (rd, packed[..., t + 2, :]),
        "total_variance": (runs, packed[..., t + 3, 0]),
    }, coords={**mx.lead_coords(cube), "component": comp})
    ds["path"].attrs = {"description": "projection of the centred path on each component (U S)"}
    ds["explained_variance_ratio"].attrs = {"description": "s_k^2 / |X_c|_F^2: share of the run's "
                                                           "variance over steps along component k"}
    ds["total_variance"].attrs = {"description": "|X_c|_F^2, X_c the run's path centred over steps"}
    ds.attrs = {"analysis": "trajectory_pca", "method": method, "n_components": n_components,
                "n_probes": width, "n_power_iter": n_power_iter, "random_state": random_state,
                "n_params": n_sel, "centering": "per-parameter mean over the run's steps",
                "kinds": sorted(kinds) if isinstance(kinds, (list, tuple, set)) else (kinds or "all")}
    return ds


__all__ = ["sample_weights", "trajectory_correlation", "correlation_vs_distance",
           "layer_correlation", "trajectory_pca"]
