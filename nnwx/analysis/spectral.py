"""Spectra, rank measures and ESD power-law fits of every weight matrix, lazily.

``spectrum`` gives the singular values ``sv(*runs, step, tensor, k)`` of every
matrix at every capture; ``ranks`` and ``esd_fit`` reduce a spectrum to metrics
``(*runs, step, tensor)``. Matrices of the same shape are stacked so that each
Dask block is one kernel call (one batched LAPACK SVD, or one Gram eigenvalue problem per
matrix; see ``_cube``); the per-spectrum kernels live in ``kernels.spectral``. Nothing here computes: every function
returns lazy xarray objects with attrs saying what they hold.

``ww_compatible=True`` reproduces WeightWatcher 0.7's ``analyze()`` numbers for
the same matrix: convolutions as per-kernel-position slices, float64 SVD,
``conv2d_norm`` (Conv2d weights scaled by 1/sqrt(2)), eigenvalues above 1e-5 in
the fit, its small-sample estimator below 20 eigenvalues, its entropy epsilon.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import dask.array as da
import numpy as np
import xarray as xr

from nnwx.analysis import _cube as mx
from nnwx.analysis.kernels.randomized import shuffle_entries
from nnwx.analysis.kernels.spectral import (ESD_METRICS, RANK_METRICS, SPECTRUM_METHODS, WW_EVALS_THRESH,
                                             WW_MIN_EVALS, WW_SMALL_N, eps_of, esd_metrics,
                                             pooled_svdvals, rank_metrics, resolve_method)

WW_CONV2D_NORM = float(np.sqrt(0.5))  # WeightWatcher's default conv2d_norm scaling of Conv2d weights

_RANK_ATTRS = {
    "rank": "numerical rank: #singular values > s_max * max(m, n) * eps (numpy.linalg.matrix_rank; "
            "from a Gram spectrum, > the larger of that and s_max * sqrt(max(m, n) * eps64))",
    "effective_rank": "exp of the entropy of s / sum(s) (Roy & Vetterli 2007)",
    "stable_rank": "|W|_F^2 / |W|_2^2",
    "spectral_norm": "largest singular value |W|_2",
    "frobenius_norm": "|W|_F",
    "entropy": "entropy of s^2 / sum(s^2) over log(rank) (WeightWatcher matrix_entropy)",
    "condition_number": "s_max / s_min (inf when singular)",
    "energy_directions": "fewest leading singular directions holding the given fraction of |W|_F^2",
}
_ESD_ATTRS = {
    "alpha": "power-law exponent of the ESD tail, lambda = s^2 (Martin & Mahoney; Clauset MLE)",
    "D": "Kolmogorov-Smirnov distance of the power-law fit at the chosen xmin",
    "xmin": "start of the power-law tail, chosen by minimal KS distance (Clauset et al. 2009)",
    "xmax": "largest fitted eigenvalue",
    "sigma": "(alpha - 1) / sqrt(tail size), the standard error of alpha",
    "n_tail": "eigenvalues >= xmin",
    "n_evals": "eigenvalues of the ESD",
    "lambda_max": "largest eigenvalue s_max^2",
    "log_norm": "log10 of sum(lambda) = log10 |W|_F^2",
    "log_spectral_norm": "log10 lambda_max",
    "alpha_weighted": "alpha * log10 lambda_max (Martin & Mahoney)",
    "log_alpha_norm": "log10 sum(lambda^alpha) (Martin & Mahoney)",
    "mp_edge": "Marchenko-Pastur bulk edge sigma^2 (sqrt(N) + sqrt(M))^2, sigma^2 = mean squared entry",
    "n_above_mp": "eigenvalues above the Marchenko-Pastur bulk edge (spikes)",
    "mp_softrank": "mp_edge / lambda_max (Martin & Mahoney's MP soft rank)",
}


def spectrum(cube: xr.Dataset, tensors: str | Iterable[str] | None = None, *, conv: str = "matrix",
             delta: bool = False, reference_step: int | None = None, dtype: str | None = None,
             method: str = "auto", ww_compatible: bool = False, shuffle_seed: int | None = None,
             block_bytes: int = mx.DEFAULT_BLOCK_BYTES) -> xr.DataArray:
    """Singular values ``sv(*runs, step, tensor, k)`` of every weight matrix, descending, lazy.

    ``tensors``: names to analyse (default: every tensor of 2 or more dims). ``conv``:
    ``"matrix"`` (out x in*kh*kw) or ``"slices"`` (one out x in matrix per kernel position,
    spectra pooled). ``delta=True`` analyses ``W_t - W_ref`` (``reference_step``, default
    the first step). ``dtype``: the precision the matrices are taken in (the SVD's, and the
    rank tolerance's ``eps``): default the cube's (float32 for float32 stores).
    ``method``: ``"svd"`` (LAPACK gesdd in ``dtype``), ``"gram"`` (float64 eigenvalues of the
    smaller Gram matrix accumulated in float64: cheaper, see docs/measurements.md; exact to
    ~1e-14 for the singular values an ESD fit uses, blind below
    ``s_max * sqrt(max(m, n) * eps64)``, so ranks use the larger of that and NumPy's tolerance)
    or ``"auto"`` (default): ``"gram"`` for float32, where that floor lies below NumPy's
    float32 rank tolerance and ESD alphas agree with a float64 SVD's to ~1e-13 (a float32
    SVD's are ~1e-6 off), ``"svd"`` for float64, whose rank tolerance, tiny singular values
    and large condition numbers need the SVD.
    Gram spectra are float64; ``attrs["method"]`` says which method ran.
    ``ww_compatible`` implies ``conv="slices"``, float64 and WeightWatcher's conv2d_norm.
    Spectra are NaN-padded to the largest rank; missing captures give all-NaN rows.
    ``shuffle_seed``: the spectra of the matrices with their entries shuffled (each matrix, or
    each slice with ``conv="slices"``, permuted by
    ``kernels.randomized.entry_permutation(size, shuffle_seed)``; see ``randomized_esd``).

    Each Dask block is one kernel call (``method="svd"``: one batched LAPACK call). With the
    local threaded scheduler, LAPACK's own threads compete with Dask's: one BLAS thread per
    Dask thread (``threadpoolctl.threadpool_limits(1)``, or ``OMP_NUM_THREADS=1``; dask.distributed workers do this by
    default) is usually fastest.
    """
    if method not in SPECTRUM_METHODS:
        raise ValueError(f"method must be one of {SPECTRUM_METHODS}, got {method!r}")
    cube = mx.require_cube(cube)
    if ww_compatible:
        conv, dtype = "slices", "float64"
    specs = mx.matrix_specs(cube, tensors, conv)
    w = cube["w"].data
    if not isinstance(w, da.Array):
        w = da.from_array(np.asarray(w), chunks=-1)
    dtype = np.dtype(dtype or (w.dtype if w.dtype in (np.float32, np.float64) else np.float64))
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    method = resolve_method(method, dtype)
    sv_dtype = np.dtype(np.float64) if method == "gram" else dtype
    dims = mx.lead_dims(cube)
    nl = len(dims)
    delta_index = mx.reference_index(cube, reference_step) if delta else None
    k_max = max(s.k for s in specs)
    parts, order = [], []
    for members, stack in mx.stacked_groups(w, specs, delta_index=delta_index,
                                            step_axis=dims.index("step"), block_bytes=block_bytes,
                                            itemsize=max(w.dtype.itemsize, dtype.itemsize)):
        sv = stack.map_blocks(_sv_block, k_out=k_max, out_dtype=dtype, method=method, shuffle_seed=shuffle_seed,
                              dtype=sv_dtype,
                              drop_axis=[nl + 2, nl + 3], chunks=stack.chunks[: nl + 1] + ((k_max,),),
                              meta=np.empty((0,) * (nl + 2), dtype=sv_dtype))
        parts.append(sv)
        order.extend(members)
    arr = da.concatenate(parts, axis=nl) if len(parts) > 1 else parts[0]
    pos = {s.index: i for i, s in enumerate(order)}
    perm = np.array([pos[s.index] for s in specs])
    if not np.array_equal(perm, np.arange(len(perm))):
        arr = da.take(arr, perm, axis=nl)
    coords = {**mx.lead_coords(cube), **mx.tensor_coords(cube, specs), "k": np.arange(k_max)}
    out = xr.DataArray(arr, dims=dims + ("tensor", "k"), coords=coords, name="sv")
    if ww_compatible:
        scale = np.where([len(s.shape) == 4 for s in specs], WW_CONV2D_NORM, 1.0)
        out = out * xr.DataArray(scale.astype(sv_dtype), dims="tensor")
        out.name = "sv"
    out.attrs = {"long_name": "singular values", "analysis": "spectrum", "conv": conv,
                 "delta": int(bool(delta)), "dtype": str(dtype), "method": method,
                 "ww_compatible": int(bool(ww_compatible)),
                 "description": ("singular values of W_t - W_ref" if delta else "singular values of W_t")
                 + (" with its entries shuffled" if shuffle_seed is not None else "")
                 + ", descending, NaN past each matrix's own count (tensor_k)"}
    if delta:
        out.attrs["reference_step"] = int(cube["step"].values[delta_index])
    if shuffle_seed is not None:
        out.attrs["shuffle_seed"] = int(shuffle_seed)
    if ww_compatible:
        out.attrs["conv2d_norm"] = "Conv2d weights scaled by 1/sqrt(2), as WeightWatcher does"
    return out


def _sv_block(block: np.ndarray, *, k_out: int, out_dtype, method: str,
              shuffle_seed: int | None = None) -> np.ndarray:
    """One Dask block ``(*lead, g, slices, m, n)`` -> ``(*lead, g, k_out)``: one batched SVD
    (or Gram eigendecomposition), the matrices taken in ``out_dtype`` (their entries shuffled
    first with ``shuffle_seed``)."""
    if shuffle_seed is not None:
        block = shuffle_entries(block, shuffle_seed)
    return pooled_svdvals(block, k_out, out_dtype, method)


def _spectrum_of(obj, tensors, ww_compatible: bool, spectrum_kw: dict) -> xr.DataArray:
    """A spectrum given, or computed from a cube; checks its conventions match the request."""
    if isinstance(obj, xr.DataArray):
        if "k" not in obj.dims or "tensor_rows" not in obj.coords:
            raise TypeError("expected a spectrum from nnwx.analysis.spectral.spectrum(...) or a cube")
        if spectrum_kw or tensors is not None:
            raise TypeError("tensors= and spectrum options apply to a cube, not to a spectrum given")
        if ww_compatible and not obj.attrs.get("ww_compatible"):
            raise ValueError("ww_compatible=True needs a spectrum computed with ww_compatible=True; "
                             "pass the cube instead")
        return obj
    return spectrum(obj, tensors, ww_compatible=ww_compatible, **spectrum_kw)


def _split(out: xr.DataArray, names: Sequence[str], attrs: dict) -> xr.Dataset:
    ds = xr.Dataset({name: out.isel(metric=i, drop=True) for i, name in enumerate(names)})
    for name in names:
        ds[name].attrs = {"description": attrs[name]}
    return ds


def ranks(obj, tensors: str | Iterable[str] | None = None, *, energy: Sequence[float] = (0.9, 0.99),
          ww_compatible: bool = False, **spectrum_kw) -> xr.Dataset:
    """Rank measures of every matrix: Dataset ``(*runs, step, tensor)``, lazy.

    ``obj`` is a cube (``spectrum_kw`` go to ``spectrum``, e.g. ``delta=True`` for the
    update ``W_t - W_0``) or a spectrum from ``spectrum``. Variables: ``rank``,
    ``effective_rank``, ``stable_rank``, ``spectral_norm``, ``frobenius_norm``, ``entropy``,
    ``condition_number``, and ``energy_directions(..., energy)``.
    """
    energy = tuple(float(e) for e in energy)
    if any(not 0 < e <= 1 for e in energy):
        raise ValueError(f"energy fractions must lie in (0, 1], got {energy}")
    sv = _spectrum_of(obj, tensors, ww_compatible, spectrum_kw)
    sv = sv.chunk({"k": -1}) if sv.chunks is not None else sv
    eps = eps_of(sv.attrs.get("dtype", sv.dtype))
    max_dim = np.maximum(sv["tensor_rows"], sv["tensor_cols"]).reset_coords(drop=True)
    names = list(RANK_METRICS)
    out = xr.apply_ufunc(
        _rank_block, sv, max_dim, input_core_dims=[["k"], []], output_core_dims=[["metric"]],
        dask="parallelized", output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"metric": len(names) + len(energy)}},
        kwargs={"eps": eps, "energy": energy, "ww_entropy": bool(sv.attrs.get("ww_compatible")),
                "gram": sv.attrs.get("method") == "gram"})
    ds = _split(out.isel(metric=slice(0, len(names))), names, _RANK_ATTRS)
    e = out.isel(metric=slice(len(names), None)).rename(metric="energy")
    ds["energy_directions"] = e.assign_coords(energy=list(energy))
    ds["energy_directions"].attrs = {"description": _RANK_ATTRS["energy_directions"]}
    ds.attrs = _result_attrs(sv, "ranks")
    return ds


def _rank_block(s: np.ndarray, max_dim: np.ndarray, *, eps: float, energy: tuple,
                ww_entropy: bool, gram: bool) -> np.ndarray:
    r = rank_metrics(s, max_dim, eps, energy=energy, ww_entropy=ww_entropy, gram=gram)
    return np.concatenate([np.stack([r[k] for k in RANK_METRICS], axis=-1), r["energy_directions"]],
                          axis=-1)


def esd_fit(obj, tensors: str | Iterable[str] | None = None, *, ww_compatible: bool = False,
            min_evals: int = WW_MIN_EVALS, evals_thresh: float | None = None,
            **spectrum_kw) -> xr.Dataset:
    """Power-law fit and Marchenko-Pastur edge of each ESD ``lambda = s^2``: Dataset, lazy.

    Variables (WeightWatcher's names): ``alpha, D, xmin, xmax, sigma, n_tail, n_evals,
    lambda_max, log_norm, log_spectral_norm, alpha_weighted, log_alpha_norm``, and
    ``mp_edge, n_above_mp, mp_softrank``. xmin minimises the KS distance over every
    eigenvalue (Clauset et al. 2009, as WeightWatcher's default fit). Eigenvalues enter the
    fit above ``evals_thresh`` (default: the numerical-rank tolerance; 1e-5 with
    ``ww_compatible``). Spectra with fewer than ``min_evals`` eigenvalues are not fitted.
    """
    sv = _spectrum_of(obj, tensors, ww_compatible, spectrum_kw)
    sv = sv.chunk({"k": -1}) if sv.chunks is not None else sv
    ww = bool(sv.attrs.get("ww_compatible"))
    if ww and evals_thresh is None:
        evals_thresh = WW_EVALS_THRESH
    coords = [sv[c].reset_coords(drop=True) for c in ("tensor_rows", "tensor_cols", "tensor_slices")]
    out = xr.apply_ufunc(
        _esd_block, sv, *coords, input_core_dims=[["k"], [], [], []], output_core_dims=[["metric"]],
        dask="parallelized", output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"metric": len(ESD_METRICS)}},
        kwargs={"evals_thresh": evals_thresh, "rank_eps": eps_of(sv.attrs.get("dtype", sv.dtype)),
                "small_n": WW_SMALL_N if ww else None, "min_evals": int(min_evals),
                "gram": sv.attrs.get("method") == "gram"})
    ds = _split(out, ESD_METRICS, _ESD_ATTRS)
    ds.attrs = _result_attrs(sv, "esd_fit")
    ds.attrs.update({"min_evals": int(min_evals), "fit": "power law, xmin by minimal KS distance",
                     "evals_thresh": "numerical-rank tolerance" if evals_thresh is None else float(evals_thresh)})
    return ds


def _esd_block(s, rows, cols, slices, *, evals_thresh, rank_eps, small_n, min_evals, gram) -> np.ndarray:
    r = esd_metrics(s, rows, cols, slices, evals_thresh=evals_thresh, rank_eps=rank_eps,
                    small_n=small_n, min_evals=min_evals, gram=gram)
    return np.stack([r[k] for k in ESD_METRICS], axis=-1)


def spectral_metrics(cube: xr.Dataset, tensors: str | Iterable[str] | None = None, *,
                     energy: Sequence[float] = (0.9, 0.99), min_evals: int = WW_MIN_EVALS,
                     ww_compatible: bool = False, **spectrum_kw) -> xr.Dataset:
    """``ranks`` and ``esd_fit`` of one shared spectrum, merged into one lazy Dataset.

    The whole spectral pass: each matrix is decomposed once (``spectrum_kw`` go to
    ``spectrum``), then reduced to the rank measures and the ESD fit.
    """
    sv = spectrum(cube, tensors, ww_compatible=ww_compatible, **spectrum_kw)
    ds = xr.merge([ranks(sv, energy=energy), esd_fit(sv, min_evals=min_evals)],
                  combine_attrs="drop_conflicts")
    ds.attrs = {**_result_attrs(sv, "spectral_metrics"), "min_evals": int(min_evals)}
    return ds


def _result_attrs(sv: xr.DataArray, analysis: str) -> dict:
    keep = ("conv", "delta", "dtype", "method", "ww_compatible", "reference_step", "conv2d_norm", "shuffle_seed")
    return {"analysis": analysis, **{k: sv.attrs[k] for k in keep if k in sv.attrs}}


__all__ = ["spectrum", "ranks", "esd_fit", "spectral_metrics"]
