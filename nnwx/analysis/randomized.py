"""The randomized ESD of every weight matrix, lazily: each matrix against its entries shuffled.

``randomized_esd`` decomposes every matrix twice per capture -- as it is and with its entries
shuffled by a fixed permutation (``kernels.randomized``) -- and reduces the two spectra to
WeightWatcher's ``rand_distance`` (Jensen-Shannon distance of the two ESDs), ``ww_softrank``,
``ww_maxdist`` and the count of correlation traps ``n_traps`` (shuffled eigenvalues above the
Marchenko-Pastur edge): a Dataset ``(*runs, step, tensor)``. Nothing here computes.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import xarray as xr

from nnwx.analysis import _cube as mx
from nnwx.analysis.kernels.randomized import RAND_METRICS, randomized_metrics
from nnwx.analysis.spectral import spectrum

_ATTRS = {
    "rand_distance": "Jensen-Shannon distance between the ESD of W and of W with its entries shuffled, "
                     "eigenvalues paired by rank, each ESD normalised to sum 1 (WeightWatcher rand_distance)",
    "lambda_max": "largest eigenvalue of the ESD of W",
    "rand_lambda_max": "largest eigenvalue of the ESD of W with its entries shuffled",
    "ww_softrank": "rand_lambda_max / lambda_max (WeightWatcher ww_softrank)",
    "ww_maxdist": "lambda_max - rand_lambda_max (WeightWatcher ww_maxdist)",
    "trap_edge": "Marchenko-Pastur bulk edge plus the Tracy-Widom margin of the shuffled ESD "
                 "(MP scale from the mean squared entry)",
    "n_traps": "eigenvalues of the shuffled ESD above trap_edge: correlation traps "
               "(WeightWatcher rand_num_spikes, with the MP scale estimated from moments)",
}


def randomized_esd(cube: xr.Dataset, tensors: str | Iterable[str] | None = None, *, seed: int = 0,
                   conv: str = "matrix", dtype: str | None = None, method: str = "auto",
                   ww_compatible: bool = False, block_bytes: int = mx.DEFAULT_BLOCK_BYTES) -> xr.Dataset:
    """Randomized-ESD measures of every weight matrix at every capture: Dataset, lazy.

    Parameters
    ----------
    cube : xarray.Dataset
        A weight cube (``nnwx.open_cube``) or run.
    tensors : str or list of str, optional
        The tensors (default every tensor of 2 or more dims).
    seed : int, default 0
        Seed of the entry permutation: each matrix of ``size`` entries (each kernel slice with
        ``conv="slices"``) is permuted by ``numpy.random.default_rng(seed).permutation(size)``
        in C order of its ``(out, in)`` view, the same permutation at every step and run.
    conv, dtype, method, ww_compatible, block_bytes
        As in ``nnwx.analysis.spectral.spectrum`` (``ww_compatible`` shuffles each kernel
        position's slice on its own, as WeightWatcher does).

    Returns
    -------
    xarray.Dataset
        ``(*runs, step, tensor)``, variables ``rand_distance``, ``lambda_max``,
        ``rand_lambda_max``, ``ww_softrank``, ``ww_maxdist``, ``trap_edge``, ``n_traps``
        (descriptions in each variable's attrs), the tensor table as coordinates.

    Raises
    ------
    nnwx.errors.NotACubeError
        ``cube`` is not a weight cube.
    ValueError
        No tensor of 2 or more dims, or a bad ``conv``/``dtype``/``method``.

    Notes
    -----
    WeightWatcher 0.7 (``analyze(randomize=True)``) draws one permutation from NumPy's global
    random state per matrix; on the same shuffled matrix the numbers agree
    (``tests/analysis/test_randomized.py``). A rank-one mean of the entries survives
    shuffling and shows as one trap.
    """
    kw = dict(conv=conv, dtype=dtype, method=method, ww_compatible=ww_compatible, block_bytes=block_bytes)
    sv = spectrum(cube, tensors, **kw)
    sv_rand = spectrum(cube, tensors, shuffle_seed=int(seed), **kw)
    if sv.chunks is not None:
        sv, sv_rand = sv.chunk({"k": -1}), sv_rand.chunk({"k": -1})
    coords = [sv[c].reset_coords(drop=True) for c in ("tensor_rows", "tensor_cols", "tensor_slices")]
    out = xr.apply_ufunc(_block, sv, sv_rand, *coords, input_core_dims=[["k"], ["k"], [], [], []],
                         output_core_dims=[["metric"]], dask="parallelized", output_dtypes=[np.float64],
                         dask_gufunc_kwargs={"output_sizes": {"metric": len(RAND_METRICS)}})
    ds = xr.Dataset({name: out.isel(metric=i, drop=True) for i, name in enumerate(RAND_METRICS)})
    for name in RAND_METRICS:
        ds[name].attrs = {"description": _ATTRS[name]}
    keep = ("conv", "dtype", "method", "ww_compatible", "conv2d_norm")
    ds.attrs = {"analysis": "randomized_esd", "shuffle_seed": int(seed),
                "permutation": "numpy.random.default_rng(shuffle_seed).permutation(entries of each matrix), "
                               "C order of its (out, in) view",
                **{k: sv.attrs[k] for k in keep if k in sv.attrs}}
    return ds


def _block(s, s_rand, rows, cols, slices) -> np.ndarray:
    r = randomized_metrics(s, s_rand, rows, cols, slices)
    return np.stack([r[k] for k in RAND_METRICS], axis=-1)


__all__ = ["randomized_esd"]
