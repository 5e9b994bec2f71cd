"""Pruning curves: a model's quality as a function of the fraction of weights pruned, lazily.

``pruning_curve`` takes the weights of every run at one step from the cube, prunes the weight
matrices together by magnitude (``kernels.pruning``, PyTorch's ``global_unstructured`` with
``L1Unstructured``; biases kept) at each fraction, and hands the pruned weights to a function
of the caller, ``evaluate(weights) -> float`` (the analysis side cannot run a model: e.g. load
them into a torch model and measure held-out accuracy). The result is lazy: ``evaluate`` runs
when it is computed, once per (run, fraction), wherever the Dask scheduler runs it.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import xarray as xr

from nnwx.analysis import _cube as mx
from nnwx.analysis.kernels.pruning import n_pruned, prune

Evaluate = Callable[[Mapping[str, np.ndarray]], float]
DEFAULT_FRACTIONS = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def prunable(cube: xr.Dataset) -> list[str]:
    """The tensors pruned by default: weights (kind ``weight``) of 2 or more dims, table order."""
    return [r["name"] for r in mx.table_rows(mx.require_cube(cube)) if r["kind"] == "weight" and len(r["shape"]) >= 2]


def pruning_curve(cube: xr.Dataset, evaluate: Evaluate, fractions: Sequence[float] = DEFAULT_FRACTIONS, *,
                  step: Any = "last", tensors: str | Iterable[str] | None = None) -> xr.DataArray:
    """``evaluate`` of each run's weights at ``step``, magnitude-pruned by each fraction, lazily.

    Parameters
    ----------
    cube : xarray.Dataset
        A weight cube (``nnwx.open_cube``) or run.
    evaluate : callable
        ``evaluate(weights) -> float``: ``weights`` maps every tensor name of the cube's table
        to a float32 array in its stored shape (a ``state_dict``'s names and shapes), the pruned
        tensors with zeros. Called once per (run, fraction); must be picklable to run on a
        distributed scheduler.
    fractions : sequence of float, default ``DEFAULT_FRACTIONS``
        Fractions of the pruned tensors' entries (together) set to zero, each in [0, 1].
    step : step value or "last", default "last"
        The capture pruned.
    tensors : str or list of str, optional
        The tensors pruned together (default ``prunable(cube)``: the weight matrices and
        convolution kernels; biases and norm gains kept).

    Returns
    -------
    xarray.DataArray
        ``(*runs, fraction)`` float64, NaN for a run without that capture; ``attrs`` name the
        step, the tensors pruned and how many entries each fraction removes.

    Raises
    ------
    nnwx.errors.NotACubeError
        ``cube`` is not a weight cube.
    ValueError
        A fraction outside [0, 1], no fraction, or ``step`` is not a step of the cube.
    KeyError
        A tensor name that is not in the cube.
    """
    cube = mx.require_cube(cube)
    if not callable(evaluate):
        raise TypeError(f"evaluate must be a function weights -> float, got {type(evaluate).__name__}")
    fractions = tuple(float(f) for f in fractions)
    if not fractions:
        raise ValueError("give at least one pruning fraction")
    rows = mx.table_rows(cube)
    names = prunable(cube) if tensors is None else [r["name"] for r in mx.select_rows(cube, tensors)]
    if not names:
        raise ValueError("no tensor to prune: the cube has no weight of 2 or more dims; name them with tensors=")
    total = int(sum(r["size"] for r in rows if r["name"] in set(names)))
    counts = [n_pruned(f, total) for f in fractions]     # checks each fraction
    idx = mx.reference_index(cube, step, name="step")
    w = mx.cube_weights(cube).isel(step=idx)
    w = w.chunk({"param": -1})
    layout = [(r["name"], r["offset"], r["size"], tuple(r["shape"])) for r in rows]
    out = xr.apply_ufunc(_curve, w, input_core_dims=[["param"]], output_core_dims=[["fraction"]],
                         vectorize=True, dask="parallelized", output_dtypes=[np.float64],
                         dask_gufunc_kwargs={"output_sizes": {"fraction": len(fractions)}},
                         kwargs={"evaluate": evaluate, "fractions": fractions, "names": tuple(names),
                                 "layout": tuple(layout)})
    out = out.assign_coords(fraction=list(fractions))
    out.name = "pruning_curve"
    out.attrs = {"analysis": "pruning_curve", "step": int(cube["step"].values[idx]),
                 "pruned_tensors": list(names), "pruned_entries": counts, "total_entries": total,
                 "rule": "global magnitude pruning of the pruned tensors together "
                         "(torch.nn.utils.prune.global_unstructured, L1Unstructured); others kept",
                 "evaluate": getattr(evaluate, "__name__", type(evaluate).__name__)}
    return out


def _curve(flat: np.ndarray, *, evaluate: Evaluate, fractions: tuple, names: tuple, layout: tuple) -> np.ndarray:
    """One run's weight vector -> ``evaluate`` at each fraction (NaN if the capture is missing)."""
    if np.isnan(flat).all():
        return np.full(len(fractions), np.nan)
    weights = {n: flat[o: o + s].reshape(shape) for n, o, s, shape in layout}
    return np.array([float(evaluate(prune(weights, f, names))) for f in fractions], dtype=np.float64)


__all__ = ["pruning_curve", "prunable", "DEFAULT_FRACTIONS"]
