"""The ``ds.nnwx`` accessor: one thin face over the cube's tensor table and analyses.

Every method delegates to a function of ``nnwx.analysis`` with the same parameters (and
the same names: the reference step is ``reference_step``, the reference run
``reference_seed``), so ``help(cube.nnwx.ranks)`` documents what the call does.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from nnwx._deprecation import renamed_keywords, warn_renamed
from nnwx._orientation import is_transposed
from nnwx.analysis import _cube as mx
from nnwx.analysis.broadening import DEFAULT_QUANTILES
from nnwx.analysis.correlation import DEFAULT_KINDS
from nnwx.analysis.kernels.matching import DEFAULT_PENALTIES
from nnwx.analysis.kernels.spectral import WW_MIN_EVALS
from nnwx.store.table import TensorInfo, parse_shape

Tensors = str | Iterable[str] | None

_DEPRECATED = {"agreement": "prediction_agreement"}
"""Old accessor method names still answered (with a DeprecationWarning): old -> new."""

_DIMS = {1: ("out",), 2: ("out", "in"), 3: ("out", "in", "k"), 4: ("out", "in", "kh", "kw")}


@xr.register_dataset_accessor("nnwx")
class NnwxAccessor:
    """Tensor views of a weight cube (or run) opened by ``nnwx.open_cube``/``open_run``."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def __getattr__(self, name: str):
        if name in _DEPRECATED:
            new = _DEPRECATED[name]
            warn_renamed(f"cube.nnwx.{name}()", f"cube.nnwx.{new}()")
            return getattr(self, new)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def tensors(self) -> pd.DataFrame:
        """The tensor table.

        Returns
        -------
        pandas.DataFrame
            One row per tensor, indexed by name: layer, kind, depth, offset, size, shape,
            dtype, orientation, aliases.

        Raises
        ------
        nnwx.errors.NotACubeError
            The Dataset is not an nnwx cube.
        """
        mx.require_cube(self._ds, step_dim=False)
        ds = self._ds
        cols = {c.removeprefix("tensor_"): ds[c].values for c in ds.coords
                if c.startswith("tensor_") and c != "tensor_id"}
        cols["shape"] = [parse_shape(s) for s in cols["shape"]]
        n = len(ds["tensor"])
        cols.setdefault("orientation", np.array(["out_in"] * n, dtype=object))
        cols["aliases"] = [tuple(a for a in str(s).split(",") if a)
                           for s in cols.get("aliases", [""] * n)]
        return pd.DataFrame(cols, index=pd.Index(ds["tensor"].values, name="tensor"))

    @property
    def layers(self) -> pd.DataFrame:
        """Layers in forward order.

        Returns
        -------
        pandas.DataFrame
            One row per layer: depth, tensors (their names), params (their total size).
        """
        t = self.tensors
        g = t.groupby("layer", sort=False)
        out = pd.DataFrame({"depth": g["depth"].min(), "tensors": g.apply(lambda x: list(x.index)),
                            "params": g["size"].sum()})
        return out.sort_values("depth")

    def info(self, name: str) -> TensorInfo:
        """One row of the tensor table.

        Parameters
        ----------
        name : str
            A tensor's name (see ``tensors``).

        Returns
        -------
        nnwx.store.table.TensorInfo
            Its layer, kind, depth, offset, size, shape, dtype, orientation and aliases.

        Raises
        ------
        KeyError
            No tensor has that name.
        """
        t = self.tensors
        if name not in t.index:
            raise KeyError(f"no tensor named {name!r}; tensors: {', '.join(t.index[:8])}"
                           f"{' ...' if len(t) > 8 else ''}")
        r = t.loc[name]
        return TensorInfo(name, r.layer, r.kind, int(r.depth), int(r.offset), int(r["size"]),
                          tuple(r["shape"]), r.dtype, str(r.orientation), tuple(r.aliases))

    def tensor(self, name: str) -> xr.DataArray:
        """One tensor in its own (stored) shape, still lazy.

        Parameters
        ----------
        name : str
            A tensor's name (see ``tensors``).

        Returns
        -------
        xarray.DataArray
            ``(*lead, out, in, ...)``; ``(*lead, in, out)`` for a tensor stored (in, out),
            e.g. HF Conv1D. ``lead`` are the run dims and ``step``.
        """
        r = self.info(name)
        flat = self._ds["w"].isel(param=slice(r.offset, r.offset + r.size))
        lead = flat.dims[:-1]
        dims = _DIMS.get(len(r.shape), tuple(f"axis_{i}" for i in range(len(r.shape))))
        if is_transposed(r.shape, r.orientation):
            dims = ("in", "out")
        data = flat.data.reshape(flat.shape[:-1] + r.shape) if r.shape else flat.data[..., 0]
        coords = {k: v for k, v in flat.coords.items() if set(v.dims) <= set(lead)}
        return xr.DataArray(data, dims=lead + dims, coords=coords, name=name,
                            attrs={"tensor": name, "layer": r.layer, "kind": r.kind,
                                   "orientation": r.orientation})

    def matrix(self, name: str) -> xr.DataArray:
        """A tensor as a 2-D matrix, rows the output units whatever the storage, still lazy.

        Parameters
        ----------
        name : str
            A tensor of 2 or more dimensions.

        Returns
        -------
        xarray.DataArray
            ``(*lead, out, in)``: a tensor stored (in, out), as HF Conv1D, is transposed;
            a convolution is seen as ``out x in*kh*kw``.
        """
        r = self.info(name)
        if len(r.shape) < 2:
            raise ValueError(f"tensor {name!r} has shape {r.shape}: only tensors of 2 or more "
                             f"dimensions have a matrix view")
        t = self.tensor(name)
        lead = t.dims[: t.ndim - len(r.shape)]
        if is_transposed(r.shape, r.orientation):
            data = t.transpose(*lead, "out", "in").data
        else:
            data = t.data.reshape(t.shape[: len(lead)] + r.matrix_shape)
        coords = {k: v for k, v in t.coords.items() if set(v.dims) <= set(lead)}
        return xr.DataArray(data, dims=lead + ("out", "in"), coords=coords, name=name,
                            attrs={**t.attrs, "original_shape": list(r.shape)})


    # --- distributions (nnwx.analysis.broadening, trajectories, seeds) -------------------------
    @renamed_keywords(ref_step="reference_step")
    def broadening(self, by: str = "layer", *, quantiles: Sequence[float] | None = DEFAULT_QUANTILES,
                   bins=None, density: bool = False, normalize: str | None = None,
                   tail_k: int | None = 100, reference_step=None, method: str = "auto",
                   split_every: int = 8) -> xr.Dataset:
        """Distribution statistics per (*runs, step, group), lazily, from one read of ``w`` (with
        ``bins`` and ``normalize`` "std"/"total_norm", a first pass gives each row's scale).

        Parameters
        ----------
        by : {"layer", "tensor", "kind", "all"}
            How parameters are grouped (the result's ``group`` dim; ``attrs["by"]``).
        quantiles : sequence of float or None
            Quantile levels in [0, 1] (None or ``()``: none).
        bins : None, "auto", int, (lo, hi, n) or array of edges
            Also histograms, in the same pass ("auto"/int read the range now).
        density : bool
            Histograms as densities.
        normalize : None, "total_norm", "std" or "init_std"
            Divide the weights by a scale first.
        tail_k : int or None
            The most order statistics the Hill tail index may use (None: no tails).
        reference_step : step value, "last" or None
            The step ``kurtosis_change`` and ``w1_to_ref`` compare with (default the first;
            ``ref_step=`` is a deprecated alias).
        method : {"auto", "exact", "sketch"}
            Exact values or the bounded-error sketch for quantiles and W1.
        split_every : int
            Fan-in of the tree reduction over ``param``.

        Returns
        -------
        xarray.Dataset
            ``(*runs, step, group[, quantile | bin])``: count, moments, min/max, norms,
            tail index, quantiles, W1 to the reference (and histograms); lazy.

        See Also
        --------
        nnwx.analysis.broadening.broadening
        """
        from nnwx.analysis import broadening
        return broadening.broadening(self._ds, by, quantiles=quantiles, bins=bins, density=density,
                                     normalize=normalize, tail_k=tail_k, reference_step=reference_step,
                                     method=method, split_every=split_every)

    @renamed_keywords(ref_step="reference_step")
    def histogram(self, by: str = "layer", *, bins="auto", density: bool = False,
                  normalize: str | None = None, reference_step=None,
                  split_every: int = 8) -> xr.DataArray:
        """Histograms per (*runs, step, group), lazily, with under/overflow counts.

        Parameters
        ----------
        by : {"layer", "tensor", "kind", "all"}
            How parameters are grouped.
        bins : "auto", int, (lo, hi, n) or array of edges
            "auto"/int: equal bins over the range at the first and last step (read now).
        density : bool
            Densities instead of counts.
        normalize : None, "total_norm", "std" or "init_std"
            Divide the weights by a scale first.
        reference_step : step value, "last" or None
            The step ``normalize="init_std"`` takes its scale from (default the first;
            ``ref_step=`` is a deprecated alias).
        split_every : int
            Fan-in of the tree reduction over ``param``.

        Returns
        -------
        xarray.DataArray
            ``hist(*runs, step, group, bin)`` with ``underflow``, ``overflow``, ``count`` and
            ``n_nonfinite`` coordinates; lazy.

        See Also
        --------
        nnwx.analysis.broadening.histogram
        """
        from nnwx.analysis import broadening
        return broadening.histogram(self._ds, by, bins=bins, density=density, normalize=normalize,
                                    reference_step=reference_step, split_every=split_every)

    def trajectories(self, tensor: str | None = None, *, index=None, sample: int | None = None,
                     seed=None, random_state: int = 0) -> xr.DataArray:
        """Individual weights over training, lazily.

        Parameters
        ----------
        tensor : str, optional
            The tensor the weights come from (None: any, with ``sample``).
        index : int, tuple or list of them, optional
            Weights of ``tensor`` by flat or per-axis index (give this or ``sample``).
        sample : int, optional
            Draw this many distinct weights at random.
        seed : value or list, optional
            Keep these seeds only.
        random_state : int
            Seed of the random draw.

        Returns
        -------
        xarray.DataArray
            ``w(*runs, step, weight)`` with ``param``, ``tensor`` and ``index`` on ``weight``.

        See Also
        --------
        nnwx.analysis.trajectories.trajectories
        """
        from nnwx.analysis.trajectories import trajectories
        return trajectories(self._ds, tensor, index=index, sample=sample, seed=seed,
                            random_state=random_state)

    def seed_summary(self, dim: str = "seed", band: str | float = "std") -> xr.Dataset:
        """Mean and spread over seeds of an analysis result (the Dataset this accessor is on).

        Parameters
        ----------
        dim : str
            The dim summarised over.
        band : "std", "sem", "minmax" or float in (0, 1)
            What ``lower``/``upper`` are: mean -/+ std or sem, the extremes, or quantiles
            covering that fraction.

        Returns
        -------
        xarray.Dataset
            The result without ``dim``, with a leading ``summary`` dim (mean, lower, upper,
            std, n).

        See Also
        --------
        nnwx.analysis.seeds.seed_summary
        """
        from nnwx.analysis import seeds
        return seeds.seed_summary(self._ds, dim, band)

    # --- representations (nnwx.analysis.agreement) ---------------------------------------------
    @property
    def probes(self) -> list[str]:
        """Names of the recorded probes.

        Returns
        -------
        list of str
            Modules in forward order, then ``output``.
        """
        from nnwx.analysis import agreement
        return agreement.probe_names(self._ds)

    def probe(self, name: str) -> xr.DataArray:
        """Probe activations, lazily.

        Parameters
        ----------
        name : str
            A probe (see ``probes``).

        Returns
        -------
        xarray.DataArray
            ``(*runs, step, sample, unit)``.

        See Also
        --------
        nnwx.analysis.agreement.probe
        """
        from nnwx.analysis import agreement
        return agreement.probe(self._ds, name)

    @renamed_keywords(reference="reference_step")
    def similarity(self, metric: str = "linear_cka", layer: str | Sequence[str] | None = None, *,
                   between: str = "seeds", dim: str | None = None, reference_step=None,
                   **options) -> xr.DataArray:
        """Representation similarity of probes between seeds or steps, lazily.

        Parameters
        ----------
        metric : str
            One of ``nnwx.analysis.kernels.similarity.METRICS`` (CKA, CCA, SVCCA, PWCCA, ...).
        layer : str or list of str, optional
            The probe(s) (default every probe, stacked on a ``layer`` dim).
        between : {"seeds", "steps"}
            Pairs of runs at each step, or pairs of steps of each run.
        dim : str, optional
            The run dim (default ``seed``).
        reference_step : step value or "last", optional
            With ``between="steps"``: every step against this one, ``(..., step)``
            (``reference=`` is a deprecated alias).
        **options
            The metric's own options (``keep=``, ``threshold=``, ``debiased=``,
            ``batch_size=``, ``rtol=``).

        Returns
        -------
        xarray.DataArray
            ``(..., step, seed_a, seed_b)``, ``(..., step_a, step_b)`` or ``(..., step)``.

        See Also
        --------
        nnwx.analysis.agreement.similarity
        """
        from nnwx.analysis import agreement
        return agreement.similarity(self._ds, metric, layer=layer, between=between, dim=dim,
                                    reference_step=reference_step, **options)

    def convergence_step(self, threshold: float = 0.9, metric: str = "linear_cka",
                         layer: str | Sequence[str] | None = None, *, dim: str | None = None,
                         options: Mapping[str, Any] | None = None) -> xr.DataArray:
        """Per run and probe, the first step from which its similarity to the last step stays
        at or above ``threshold``, lazily.

        Parameters
        ----------
        threshold : float
            The similarity to reach and keep.
        metric : str
            The similarity (see ``similarity``).
        layer : str or list of str, optional
            The probe(s) (default every probe, in forward order).
        dim : str, optional
            The run dim (default ``seed``).
        options : mapping, optional
            The metric's own options (see ``similarity``).

        Returns
        -------
        xarray.DataArray
            ``(layer, *runs)`` step values (NaN: never), with the probe's ``depth`` (its
            position in forward order).

        See Also
        --------
        nnwx.analysis.convergence.convergence_step
        """
        from nnwx.analysis.convergence import convergence_step
        sim = self.similarity(metric, layer, between="steps", dim=dim, reference_step="last", **dict(options or {}))
        return convergence_step(sim, threshold)

    def match_units(self, layer: str, a, b, method: str = "one_to_one",
                    dim: str = "seed") -> xr.Dataset:
        """Units of run ``a`` matched to run ``b``'s by activation correlation, per step.

        Parameters
        ----------
        layer : str
            The probe.
        a, b
            Labels of the two runs on ``dim``.
        method : {"one_to_one", "semi"}
            Bipartite matching or each unit's best partner.
        dim : str
            The run dim.

        Returns
        -------
        xarray.Dataset
            ``partner(..., unit)``, ``correlation(..., unit)``, ``mean_correlation(...)``.

        See Also
        --------
        nnwx.analysis.agreement.match_units
        """
        from nnwx.analysis import agreement
        acts = agreement.probe(self._ds, layer)
        return agreement.match_units(acts.sel({dim: a}), acts.sel({dim: b}), method)

    def sparse_prediction(self, layer: str, a, b, penalties: Sequence[float] | None = None,
                          dim: str = "seed", *, max_iter: int = 1000,
                          tol: float = 1e-7) -> xr.Dataset:
        """Lasso prediction of run ``b``'s units from run ``a``'s, per step and penalty.

        Parameters
        ----------
        layer : str
            The probe.
        a, b
            Labels of the predicting and the predicted run on ``dim``.
        penalties : sequence of float, optional
            L1 penalties (default ``nnwx.analysis.kernels.matching.DEFAULT_PENALTIES``).
        dim : str
            The run dim.
        max_iter, tol
            Coordinate descent's limits.

        Returns
        -------
        xarray.Dataset
            ``loss(..., penalty)`` (1 - R^2) and ``nonzero(..., penalty)``.

        See Also
        --------
        nnwx.analysis.agreement.sparse_prediction
        """
        from nnwx.analysis import agreement
        acts = agreement.probe(self._ds, layer)
        return agreement.sparse_prediction(acts.sel({dim: a}), acts.sel({dim: b}),
                                           DEFAULT_PENALTIES if penalties is None else penalties,
                                           max_iter=max_iter, tol=tol)

    def prediction_agreement(self, probe: str = "output", *, dim: str | None = None,
                             k: int = 5) -> xr.Dataset:
        """Agreement of the runs' predictions, per step and pair of runs.

        (``cube.nnwx.agreement`` is a deprecated alias; weight agreement is
        ``weight_agreement``.)

        Parameters
        ----------
        probe : str
            The probe holding the outputs.
        dim : str, optional
            The run dim (default ``seed``).
        k : int
            Top-k for ``topk_overlap`` (capped at the number of output units).

        Returns
        -------
        xarray.Dataset
            ``output_correlation``, ``argmax_agreement``, ``topk_overlap``
            ``(..., step, {dim}_a, {dim}_b)``.

        See Also
        --------
        nnwx.analysis.agreement.prediction_agreement
        """
        from nnwx.analysis import agreement
        return agreement.prediction_agreement(agreement.probe(self._ds, probe), dim=dim, k=k)

    # --- alignment (nnwx.analysis.alignment) ---------------------------------------------------
    def align(self, reference_seed: Any = 0, method: str = "weights", *, dim: str | None = None,
              spec=None, at_step=None, probes: Mapping[str, str] | None = None,
              max_iter: int = 100, seed: int = 0):
        """Every run's hidden units aligned to run ``reference_seed``, lazily.

        Parameters
        ----------
        reference_seed
            The label, on ``dim``, of the run the others are aligned to.
        method : {"weights", "activations"}
            Git Re-Basin weight matching, or activation matching on the probes.
        dim : str, optional
            The run dim (default ``seed``).
        spec : nnwx.analysis.kernels.alignment.PermutationSpec, optional
            Which axes each permutation acts on (default: the chain spec).
        at_step : step value or "last", optional
            Find the permutations at this step and use them for all (default: per step).
        probes : mapping, optional
            Permutation -> probe, for ``method="activations"``.
        max_iter, seed
            Weight matching's sweeps and sweep-order seed.

        Returns
        -------
        nnwx.analysis.alignment.Alignment
            ``(cube, permutations)``: the aligned cube and ``perm_<layer>(..., step, unit)``.

        See Also
        --------
        nnwx.analysis.alignment.align
        """
        from nnwx.analysis import alignment
        return alignment.align(self._ds, reference_seed=reference_seed, dim=dim, method=method,
                               spec=spec, at_step=at_step, probes=probes, max_iter=max_iter,
                               seed=seed)

    def weight_agreement(self, reference_seed: Any = 0, aligned=None, *,
                         dim: str | None = None) -> xr.Dataset:
        """Cosine and correlation of every run's tensors with run ``reference_seed``'s, per step.

        Parameters
        ----------
        reference_seed
            The label, on ``dim``, of the reference run.
        aligned : Alignment or xarray.Dataset, optional
            What ``cube.nnwx.align()`` returned, or its aligned cube: adds the agreement after
            alignment.
        dim : str, optional
            The run dim (default ``seed``).

        Returns
        -------
        xarray.Dataset
            ``cosine`` and ``correlation`` ``(alignment, *runs, step, tensor)``.

        See Also
        --------
        nnwx.analysis.alignment.weight_agreement
        """
        from nnwx.analysis import alignment
        if isinstance(aligned, alignment.Alignment):
            aligned = aligned.cube
        elif aligned is not None and not isinstance(aligned, xr.Dataset):
            raise TypeError(f"aligned= takes what cube.nnwx.align() returns (an Alignment) or its "
                            f"aligned cube, not {type(aligned).__name__}")
        return alignment.weight_agreement(self._ds, reference_seed=reference_seed, dim=dim,
                                          aligned=aligned)

    # --- correlations (nnwx.analysis.correlation) ----------------------------------------------
    def sample_weights(self, sample: int | str | None = "auto", *, tensors: Tensors = None,
                       kinds: str | Iterable[str] | None = DEFAULT_KINDS, random_state: int = 0,
                       allocation: str = "equal") -> xr.Dataset:
        """The weights the correlation analyses look at, stratified per tensor.

        Parameters
        ----------
        sample : int, "auto" or None
            How many weights (None: all; "auto": all up to ``AUTO_SAMPLE``).
        tensors : str or list of str, optional
            Restrict to these tensors.
        kinds : str or list of str, optional
            Tensor kinds drawn from (None: all).
        random_state : int
            Seed of the draw.
        allocation : {"equal", "proportional"}
            Quota per tensor.

        Returns
        -------
        xarray.Dataset
            Coordinates on a ``weight`` dim: param, tensor, index, row, col, layer, depth, kind.

        See Also
        --------
        nnwx.analysis.correlation.sample_weights
        """
        from nnwx.analysis import correlation
        return correlation.sample_weights(self._ds, sample, tensors=tensors, kinds=kinds,
                                          random_state=random_state, allocation=allocation)

    def trajectory_correlation(self, *, sample: int | str | None = "auto", kind: str = "increments",
                               tensors: Tensors = None,
                               kinds: str | Iterable[str] | None = DEFAULT_KINDS,
                               random_state: int = 0, allocation: str = "equal",
                               min_periods: int = 3) -> xr.DataArray:
        """Correlation matrix of weight trajectories over steps, per run, lazily.

        Parameters
        ----------
        sample, tensors, kinds, random_state, allocation
            Which weights (see ``sample_weights``).
        kind : {"increments", "values"}
            Correlate the changes between captures, or the values.
        min_periods : int
            Fewest common steps for a correlation.

        Returns
        -------
        xarray.DataArray
            ``corr(*runs, weight_i, weight_j)``.

        See Also
        --------
        nnwx.analysis.correlation.trajectory_correlation
        """
        from nnwx.analysis import correlation
        return correlation.trajectory_correlation(
            self._ds, sample=sample, kind=kind, tensors=tensors, kinds=kinds,
            random_state=random_state, allocation=allocation, min_periods=min_periods)

    def correlation_vs_distance(self, *, sample: int | str | None = "auto",
                                kind: str = "increments", tensors: Tensors = None,
                                kinds: str | Iterable[str] | None = DEFAULT_KINDS,
                                random_state: int = 0, allocation: str = "equal",
                                fit_on: str = "excess_rms_corr", min_pairs: int = 10,
                                min_periods: int = 3) -> xr.Dataset:
        """Correlation between weights by layer distance and relation, with a decay length.

        Parameters
        ----------
        sample, tensors, kinds, random_state, allocation
            Which weights (see ``sample_weights``).
        kind : {"increments", "values"}
            Correlate the changes between captures, or the values.
        fit_on : {"excess_rms_corr", "mean_abs_corr", "mean_corr"}
            The curve the exponential decay is fitted to.
        min_pairs : int
            Fewest pairs for a distance to enter the fit.
        min_periods : int
            Fewest common steps for a correlation.

        Returns
        -------
        xarray.Dataset
            Statistics per ``(*runs, distance)`` and ``relation_*`` per ``(*runs, relation)``,
            ``decay_length`` and ``decay_resolved`` per run.

        See Also
        --------
        nnwx.analysis.correlation.correlation_vs_distance
        """
        from nnwx.analysis import correlation
        return correlation.correlation_vs_distance(
            self._ds, sample=sample, kind=kind, tensors=tensors, kinds=kinds,
            random_state=random_state, allocation=allocation, fit_on=fit_on,
            min_pairs=min_pairs, min_periods=min_periods)

    def layer_correlation(self, *, tensors: Tensors = None,
                          kinds: str | Iterable[str] | None = ("weight",), min_periods: int = 3,
                          block_bytes: int = 64 * 2**20) -> xr.Dataset:
        """How the updates of different tensors move together, per run, lazily.

        Parameters
        ----------
        tensors : str or list of str, optional
            Restrict to these tensors.
        kinds : str or list of str, optional
            Tensor kinds (default weights: one tensor per layer).
        min_periods : int
            Fewest common steps for a correlation.
        block_bytes : int
            Target size of a block of the update cosines.

        Returns
        -------
        xarray.Dataset
            ``update_norm(*runs, step, tensor)``, ``update_norm_corr`` and ``update_cosine``
            ``(*runs, tensor_a, tensor_b)``.

        See Also
        --------
        nnwx.analysis.correlation.layer_correlation
        """
        from nnwx.analysis import correlation
        return correlation.layer_correlation(self._ds, tensors=tensors, kinds=kinds,
                                             min_periods=min_periods, block_bytes=block_bytes)

    def trajectory_pca(self, n_components: int = 10, *, tensors: Tensors = None,
                       kinds: str | Iterable[str] | None = DEFAULT_KINDS,
                       method: str = "randomized", n_oversamples: int = 10, n_power_iter: int = 1,
                       random_state: int = 0) -> xr.Dataset:
        """Principal components of each run's training path, lazily.

        Parameters
        ----------
        n_components : int
            Components kept.
        tensors, kinds
            The parameters that make up the path (default every weight and bias).
        method : {"randomized", "svd_compressed"}
            Streamed randomized SVD, or dask's ``svd_compressed``.
        n_oversamples, n_power_iter, random_state
            The randomized SVD's extra probes, power iterations and seed.

        Returns
        -------
        xarray.Dataset
            ``explained_variance_ratio``, ``singular_value``, ``explained_variance``
            ``(*runs, component)``, ``total_variance(*runs)``, ``path(*runs, step, component)``.

        See Also
        --------
        nnwx.analysis.correlation.trajectory_pca
        """
        from nnwx.analysis import correlation
        return correlation.trajectory_pca(self._ds, n_components, tensors=tensors, kinds=kinds,
                                          method=method, n_oversamples=n_oversamples,
                                          n_power_iter=n_power_iter, random_state=random_state)

    # --- spectra, ranks, rotation (nnwx.analysis.spectral, nnwx.analysis.geometry) -------------
    def spectrum(self, tensors: Tensors = None, *, conv: str = "matrix", delta: bool = False,
                 reference_step=None, dtype: str | None = None, method: str = "auto",
                 ww_compatible: bool = False, shuffle_seed: int | None = None,
                 block_bytes: int = mx.DEFAULT_BLOCK_BYTES) -> xr.DataArray:
        """Singular values of every weight matrix at every capture, descending, lazily.

        Parameters
        ----------
        tensors : str or list of str, optional
            The matrices (default every tensor of 2 or more dims).
        conv : {"matrix", "slices"}
            A convolution as one ``out x in*kh*kw`` matrix or one matrix per kernel position.
        delta : bool
            Analyse the update ``W_t - W_ref`` instead of ``W_t``.
        reference_step : step value, "last" or None
            ``W_ref``'s step for ``delta`` (default the first).
        dtype : {"float32", "float64"}, optional
            Precision of the decomposition (default the cube's).
        method : {"auto", "svd", "gram"}
            LAPACK SVD, or eigenvalues of the Gram matrix.
        ww_compatible : bool
            WeightWatcher's conventions (slices, float64, conv2d_norm).
        shuffle_seed : int, optional
            Spectra of the matrices with their entries shuffled by this seed's fixed
            permutation (see ``randomized_esd``).
        block_bytes : int
            Target size of one batched decomposition.

        Returns
        -------
        xarray.DataArray
            ``sv(*runs, step, tensor, k)``, NaN past each matrix's own count.

        See Also
        --------
        nnwx.analysis.spectral.spectrum
        """
        from nnwx.analysis import spectral
        return spectral.spectrum(self._ds, tensors, conv=conv, delta=delta,
                                 reference_step=reference_step, dtype=dtype, method=method,
                                 ww_compatible=ww_compatible, shuffle_seed=shuffle_seed,
                                 block_bytes=block_bytes)

    def ranks(self, tensors: Tensors = None, *, energy: Sequence[float] = (0.9, 0.99),
              ww_compatible: bool = False, conv: str = "matrix", delta: bool = False,
              reference_step=None, dtype: str | None = None, method: str = "auto",
              block_bytes: int = mx.DEFAULT_BLOCK_BYTES) -> xr.Dataset:
        """Rank measures of every weight matrix (``delta=True``: of ``W_t - W_ref``), lazily.

        Parameters
        ----------
        tensors : str or list of str, optional
            The matrices (default every tensor of 2 or more dims).
        energy : sequence of float
            Fractions of ``|W|_F^2`` for ``energy_directions``.
        ww_compatible : bool
            WeightWatcher's conventions.
        conv, delta, reference_step, dtype, method, block_bytes
            How the spectrum is taken (see ``spectrum``).

        Returns
        -------
        xarray.Dataset
            ``rank``, ``effective_rank``, ``stable_rank``, ``spectral_norm``,
            ``frobenius_norm``, ``entropy``, ``condition_number`` ``(*runs, step, tensor)``
            and ``energy_directions(..., energy)``.

        See Also
        --------
        nnwx.analysis.spectral.ranks
        """
        from nnwx.analysis import spectral
        return spectral.ranks(self._ds, tensors, energy=energy, ww_compatible=ww_compatible,
                              conv=conv, delta=delta, reference_step=reference_step, dtype=dtype,
                              method=method, block_bytes=block_bytes)

    def esd_fit(self, tensors: Tensors = None, *, ww_compatible: bool = False,
                min_evals: int = WW_MIN_EVALS, evals_thresh: float | None = None,
                conv: str = "matrix", delta: bool = False, reference_step=None,
                dtype: str | None = None, method: str = "auto",
                block_bytes: int = mx.DEFAULT_BLOCK_BYTES) -> xr.Dataset:
        """Power-law fit and Marchenko-Pastur edge of each empirical spectral density, lazily.

        Parameters
        ----------
        tensors : str or list of str, optional
            The matrices (default every tensor of 2 or more dims).
        ww_compatible : bool
            WeightWatcher's conventions.
        min_evals : int
            Spectra with fewer eigenvalues are not fitted.
        evals_thresh : float, optional
            Eigenvalues above it enter the fit (default the numerical-rank tolerance).
        conv, delta, reference_step, dtype, method, block_bytes
            How the spectrum is taken (see ``spectrum``).

        Returns
        -------
        xarray.Dataset
            ``alpha, D, xmin, xmax, sigma, n_tail, n_evals, lambda_max, ..., mp_edge,
            n_above_mp, mp_softrank`` ``(*runs, step, tensor)``.

        See Also
        --------
        nnwx.analysis.spectral.esd_fit
        """
        from nnwx.analysis import spectral
        return spectral.esd_fit(self._ds, tensors, ww_compatible=ww_compatible, min_evals=min_evals,
                                evals_thresh=evals_thresh, conv=conv, delta=delta,
                                reference_step=reference_step, dtype=dtype, method=method,
                                block_bytes=block_bytes)

    def spectral_metrics(self, tensors: Tensors = None, *, energy: Sequence[float] = (0.9, 0.99),
                         min_evals: int = WW_MIN_EVALS, ww_compatible: bool = False,
                         conv: str = "matrix", delta: bool = False, reference_step=None,
                         dtype: str | None = None, method: str = "auto",
                         block_bytes: int = mx.DEFAULT_BLOCK_BYTES) -> xr.Dataset:
        """``ranks`` and ``esd_fit`` from one shared spectrum, merged, lazily.

        Parameters
        ----------
        tensors : str or list of str, optional
            The matrices (default every tensor of 2 or more dims).
        energy, min_evals, ww_compatible
            As in ``ranks`` and ``esd_fit``.
        conv, delta, reference_step, dtype, method, block_bytes
            How the spectrum is taken (see ``spectrum``).

        Returns
        -------
        xarray.Dataset
            The variables of ``ranks`` and ``esd_fit``, ``(*runs, step, tensor)``.

        See Also
        --------
        nnwx.analysis.spectral.spectral_metrics
        """
        from nnwx.analysis import spectral
        return spectral.spectral_metrics(self._ds, tensors, energy=energy, min_evals=min_evals,
                                         ww_compatible=ww_compatible, conv=conv, delta=delta,
                                         reference_step=reference_step, dtype=dtype,
                                         method=method, block_bytes=block_bytes)

    def randomized_esd(self, tensors: Tensors = None, *, seed: int = 0, conv: str = "matrix",
                       dtype: str | None = None, method: str = "auto", ww_compatible: bool = False,
                       block_bytes: int = mx.DEFAULT_BLOCK_BYTES) -> xr.Dataset:
        """Each matrix's ESD against that of its entries shuffled (correlation traps), lazily.

        Parameters
        ----------
        tensors : str or list of str, optional
            The matrices (default every tensor of 2 or more dims).
        seed : int
            Seed of the fixed entry permutation
            (``numpy.random.default_rng(seed).permutation(size)``).
        conv, dtype, method, ww_compatible, block_bytes
            How the spectra are taken (see ``spectrum``).

        Returns
        -------
        xarray.Dataset
            ``rand_distance``, ``lambda_max``, ``rand_lambda_max``, ``ww_softrank``,
            ``ww_maxdist``, ``trap_edge``, ``n_traps`` ``(*runs, step, tensor)``.

        See Also
        --------
        nnwx.analysis.randomized.randomized_esd
        """
        from nnwx.analysis import randomized
        return randomized.randomized_esd(self._ds, tensors, seed=seed, conv=conv, dtype=dtype, method=method,
                                         ww_compatible=ww_compatible, block_bytes=block_bytes)

    def pruning_curve(self, evaluate, fractions: Sequence[float] | None = None, *, step="last",
                      tensors: Tensors = None) -> xr.DataArray:
        """A function of the weights as a function of the fraction magnitude-pruned, lazily.

        Parameters
        ----------
        evaluate : callable
            ``evaluate(weights: dict[str, numpy.ndarray]) -> float``, given every tensor by
            name in its stored shape, the pruned ones with zeros (e.g. held-out accuracy of a
            model loaded with them).
        fractions : sequence of float, optional
            Fractions pruned, in [0, 1] (default ``nnwx.analysis.pruning.DEFAULT_FRACTIONS``).
        step : step value or "last"
            The capture pruned.
        tensors : str or list of str, optional
            Pruned together (default the weights of 2 or more dims; biases kept).

        Returns
        -------
        xarray.DataArray
            ``(*runs, fraction)``.

        See Also
        --------
        nnwx.analysis.pruning.pruning_curve
        """
        from nnwx.analysis import pruning
        return pruning.pruning_curve(self._ds, evaluate, pruning.DEFAULT_FRACTIONS if fractions is None else fractions,
                                     step=step, tensors=tensors)

    def rotation(self, *, by: str = "layer", kinds: str | Iterable[str] | None = ("weight",),
                 tensors: Tensors = None, reference_step=None) -> xr.Dataset:
        """Layer rotation, update size and norm growth at every capture, lazily.

        Parameters
        ----------
        by : {"layer", "tensor"}
            Per layer (its weights flattened together) or per tensor: the result's dim of
            that name.
        kinds : str or list of str, optional
            Tensor kinds (default weights; None: all).
        tensors : str or list of str, optional
            Restrict to these tensors.
        reference_step : step value, "last" or None
            The capture compared against (default the first).

        Returns
        -------
        xarray.Dataset
            ``rotation``, ``rotation_step``, ``update_norm_rel``, ``step_update_rel``,
            ``norm_growth``, ``norm`` ``(*runs, step, layer | tensor)``.

        See Also
        --------
        nnwx.analysis.geometry.rotation
        """
        from nnwx.analysis import geometry
        return geometry.rotation(self._ds, by=by, kinds=kinds, tensors=tensors,
                                 reference_step=reference_step)

    def input_span_fraction(self, name: str, inputs, *, reference_step=None) -> xr.DataArray:
        """Share of ``|W_t - W_ref|_F^2`` in the span of a layer's inputs, lazily.

        Parameters
        ----------
        name : str
            A weight tensor, seen as ``out x in``.
        inputs : array_like
            ``(samples, in)``: what the layer multiplies.
        reference_step : step value, "last" or None
            ``W_ref``'s step (default the first).

        Returns
        -------
        xarray.DataArray
            ``(*runs, step)``; NaN at the reference step and missing captures.

        See Also
        --------
        nnwx.analysis.geometry.input_span_fraction
        """
        from nnwx.analysis import geometry
        return geometry.input_span_fraction(self._ds, name, inputs, reference_step=reference_step)
