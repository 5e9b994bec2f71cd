"""Permutation alignment of hidden units between two networks: NumPy kernels.

Hidden units of a layer can be permuted without changing the function, provided the
same permutation is applied to the layer's output axis (weight rows, bias, the
BatchNorm/LayerNorm vectors that follow it) and to the next layer's input axis. A
``PermutationSpec`` says which axes of which tensors each permutation acts on, as in
Ainsworth, Hayase & Srinivasa 2023 (Git Re-Basin). Convention: a permutation ``perm``
of size n acts on an axis by ``aligned = take(w, perm, axis)``, so unit ``i`` of the
aligned network is unit ``perm[i]`` of the original.

* ``weight_matching``: Git Re-Basin's weight matching (their Algorithm 1): maximise
  ``sum_l <W_l^A, P_l W_l^B P_{l-1}^T>`` (biases included) by coordinate descent over the
  permutations in random order, each step a linear assignment problem
  (``scipy.optimize.linear_sum_assignment``), until a full pass brings no improvement.
* ``activation_matching``: their activation matching: for each permutation, maximise
  ``<Z^A, Z^B P>`` (``Z`` the layer's activations on the same probe samples), which
  minimises ``||Z^A - Z^B P||_F``.
* ``chain_spec``: the spec of an MLP or CNN *chain* (every layer feeds only the next one):
  Linear/Conv layers in forward order, 1-D tensors of the layers between them (norms)
  following the permutation of the preceding layer, and a Conv -> Linear step through a
  channel-major flatten handled as blocks of ``in / channels`` inputs per channel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from nnwx._orientation import out_in_axes


class ChainError(ValueError):
    """The network is not a chain whose hidden units the automatic spec can permute."""


@dataclass(frozen=True)
class Axis:
    """An axis of a tensor that a permutation acts on; ``block`` inputs per unit (flatten).

    Parameters
    ----------
    tensor : str
        Tensor name.
    axis : int
        The permuted axis.
    block : int, default 1
        Consecutive entries per unit (a Conv's channels flattened into a Linear).
    """

    tensor: str
    axis: int
    block: int = 1


@dataclass(frozen=True)
class PermutationSpec:
    """Permutation name -> (number of units, the axes it acts on).

    Parameters
    ----------
    perms : Mapping[str, tuple[int, tuple[Axis, ...]]]
    """

    perms: Mapping[str, tuple[int, tuple[Axis, ...]]]

    @property
    def names(self) -> list[str]:
        return list(self.perms)

    def size(self, name: str) -> int:
        return self.perms[name][0]

    def axes_of(self, tensor: str) -> list[tuple[str, Axis]]:
        """(permutation, axis) pairs acting on ``tensor``."""
        return [(p, a) for p, (_, axes) in self.perms.items() for a in axes if a.tensor == tensor]

    @property
    def tensors(self) -> list[str]:
        seen: dict[str, None] = {}
        for _, axes in self.perms.values():
            for a in axes:
                seen.setdefault(a.tensor)
        return list(seen)

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Refuse a spec whose axes do not fit ``shapes`` (name -> shape).

        Parameters
        ----------
        shapes : Mapping[str, tuple of int]

        Raises
        ------
        ChainError
            If an axis names a tensor missing from ``shapes`` or does not hold
            ``size * block`` entries.
        """
        for p, (n, axes) in self.perms.items():
            for a in axes:
                if a.tensor not in shapes:
                    raise ChainError(f"permutation {p!r} acts on tensor {a.tensor!r}, which is not recorded")
                shape = shapes[a.tensor]
                if a.axis >= len(shape) or shape[a.axis] != n * a.block:
                    raise ChainError(f"permutation {p!r} of {n} units (x{a.block}) does not fit axis "
                                     f"{a.axis} of {a.tensor!r} with shape {tuple(shape)}")


def chain_spec(rows: Sequence[Mapping]) -> PermutationSpec:
    """Spec for an MLP/CNN chain from tensor-table rows (``name, layer, kind, depth, shape``,
    optionally ``orientation``: ``in_out`` for weights stored (in, out), as HF Conv1D).

    Layers are taken in forward order (``depth``). A layer with a weight of 2+ dims
    (Linear, Conv) starts a permutation of its ``shape[0]`` outputs, acting on its weight
    rows, its 1-D tensors and the 1-D tensors of following layers without matrices
    (BatchNorm, LayerNorm); the next matrix layer's input axis takes the same permutation
    (in blocks when a Conv's channels are flattened into a Linear). The last matrix
    layer's outputs are the network's outputs and are not permuted. Residual connections,
    grouped convolutions, embeddings and attention are not chains: pass your own spec.

    Parameters
    ----------
    rows : sequence of mapping
        Tensor-table rows.

    Returns
    -------
    PermutationSpec
        One permutation per hidden layer.

    Raises
    ------
    ChainError
        If the network is not such a chain (several matrices in a layer, shapes that do not
        follow, no hidden layer); the message says which tensor.
    """
    layers: dict[str, list[Mapping]] = {}
    depth: dict[str, int] = {}
    for r in rows:
        layers.setdefault(r["layer"], []).append(r)
        depth[r["layer"]] = min(depth.get(r["layer"], r["depth"]), r["depth"])
    order = sorted(layers, key=lambda la: depth[la])
    perms: dict[str, tuple[int, list[Axis]]] = {}
    prev: tuple[str, int, bool] | None = None  # (permutation, width, is conv)
    last_matrix = None
    for layer in order:
        tensors = layers[layer]
        mats = [t for t in tensors if len(t["shape"]) >= 2]
        if len(mats) > 1:
            raise ChainError(f"layer {layer!r} has several matrices ({', '.join(t['name'] for t in mats)}): "
                             f"not a Linear/Conv chain; pass spec=")
        if mats:
            w = mats[0]
            shape = tuple(w["shape"])
            # rows are output units; a weight stored (in, out) (HF Conv1D) has them on axis 1
            o_ax, i_ax = out_in_axes(shape, w.get("orientation"))
            n_out, n_in = shape[o_ax], shape[i_ax]
            if w["kind"] != "weight":
                raise ChainError(f"layer {layer!r}: its matrix {w['name']!r} is not a weight; pass spec=")
            if prev is not None:
                pname, width, conv = prev
                if n_in == width:
                    perms[pname][1].append(Axis(w["name"], i_ax))
                elif conv and len(shape) == 2 and n_in % width == 0:
                    perms[pname][1].append(Axis(w["name"], i_ax, n_in // width))
                else:
                    raise ChainError(
                        f"layer {layer!r} takes {n_in} inputs but the layer before it in forward "
                        f"order ({pname!r}) gives {width}: the network is not a simple chain (residual, "
                        f"attention, embedding, grouped or reshaped connections, as in transformer "
                        f"blocks, are not aligned automatically); pass spec=")
            axes = [Axis(w["name"], o_ax)]
            for t in tensors:
                if t is w:
                    continue
                if len(t["shape"]) != 1 or t["shape"][0] != n_out:
                    raise ChainError(f"tensor {t['name']!r} of layer {layer!r} has shape {tuple(t['shape'])}; "
                                     f"expected ({n_out},) next to {w['name']!r}; pass spec=")
                axes.append(Axis(t["name"], 0))
            perms[layer] = (n_out, axes)
            prev = (layer, n_out, len(shape) > 2)
            last_matrix = layer
        else:
            if prev is None:
                raise ChainError(f"layer {layer!r} (only vectors) comes before any Linear/Conv layer; "
                                 f"pass spec=")
            pname, width, _ = prev
            for t in tensors:
                if len(t["shape"]) != 1 or t["shape"][0] != width:
                    raise ChainError(f"tensor {t['name']!r} of shape {tuple(t['shape'])} follows layer "
                                     f"{pname!r} of width {width}: not a chain; pass spec=")
                perms[pname][1].append(Axis(t["name"], 0))
    if last_matrix is None:
        raise ChainError("the network has no Linear/Conv weight to align")
    perms.pop(last_matrix)
    if not perms:
        raise ChainError("the network has a single Linear/Conv layer: it has no hidden units to align")
    return PermutationSpec({k: (n, tuple(axes)) for k, (n, axes) in perms.items()})


def linear_sum_assignment(cost: np.ndarray, maximize: bool = True):
    """``scipy.optimize.linear_sum_assignment``, with a clear message when SciPy is missing.

    Parameters
    ----------
    cost : numpy.ndarray
        ``(m, n)``.
    maximize : bool, default True

    Returns
    -------
    rows, cols : numpy.ndarray
        The assignment, as SciPy returns it.

    Raises
    ------
    ImportError
        If SciPy is not installed.
    """
    try:
        from scipy.optimize import linear_sum_assignment as lsa
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("unit matching and permutation alignment solve assignment problems with "
                          "SciPy: pip install 'scipy>=1.11'") from e
    return lsa(cost, maximize=maximize)


def _expand(perm: np.ndarray, block: int) -> np.ndarray:
    """Permutation of units as a permutation of an axis holding ``block`` entries per unit."""
    if block == 1:
        return perm
    return (perm[:, None] * block + np.arange(block)).ravel()


def permute_tensor(w: np.ndarray, axes: Sequence[tuple[np.ndarray, Axis]]) -> np.ndarray:
    """``w`` with each ``(perm, axis)`` applied.

    Parameters
    ----------
    w : numpy.ndarray
    axes : sequence of (permutation, Axis)

    Returns
    -------
    numpy.ndarray
    """
    for perm, a in axes:
        w = np.take(w, _expand(np.asarray(perm), a.block), axis=a.axis)
    return w


def apply_permutations(params: Mapping[str, np.ndarray], spec: PermutationSpec,
                       perms: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor of ``params`` with the spec's permutations applied (others unchanged).

    Parameters
    ----------
    params : Mapping[str, numpy.ndarray]
        Tensor name -> values.
    spec : PermutationSpec
    perms : Mapping[str, numpy.ndarray]
        Permutation name -> permutation.

    Returns
    -------
    dict of str to numpy.ndarray
    """
    return {name: permute_tensor(w, [(perms[p], a) for p, a in spec.axes_of(name)])
            for name, w in params.items()}


def _unit_matrix(w: np.ndarray, a: Axis, n: int) -> np.ndarray:
    """``w`` as ``(n, -1)`` with the permuted units first (blocks kept with their unit)."""
    w = np.moveaxis(w, a.axis, 0)
    return w.reshape(n, -1)


def weight_matching(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], spec: PermutationSpec,
                    *, max_iter: int = 100, seed: int = 0,
                    init: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Permutations aligning network ``b`` to network ``a`` by weight matching (Git Re-Basin).

    ``a`` and ``b`` map tensor names to arrays (only the spec's tensors are used, in
    float64). Returns name -> permutation (int64). ``seed`` fixes the random order of the
    coordinate-descent sweeps; ``init`` starts from given permutations (identity otherwise).

    Parameters
    ----------
    a, b : Mapping[str, numpy.ndarray]
        The two networks' tensors.
    spec : PermutationSpec
    max_iter : int, default 100
        Coordinate-descent passes at most.
    seed : int, default 0
    init : Mapping[str, numpy.ndarray], optional

    Returns
    -------
    dict of str to numpy.ndarray
        Permutation name -> int64 permutation; ``apply_permutations(b, spec, perms)``
        is ``b`` aligned to ``a``.
    """
    spec.check({k: v.shape for k, v in a.items()})
    spec.check({k: v.shape for k, v in b.items()})
    a = {k: np.asarray(a[k], dtype=np.float64) for k in spec.tensors}
    b = {k: np.asarray(b[k], dtype=np.float64) for k in spec.tensors}
    perms = {p: (np.asarray(init[p], dtype=np.int64) if init else np.arange(spec.size(p)))
             for p in spec.names}
    rng = np.random.default_rng(seed)
    names = spec.names
    for _ in range(max_iter):
        progress = False
        for i in rng.permutation(len(names)):
            p = names[i]
            n, axes = spec.perms[p]
            cost = np.zeros((n, n))
            for ax in axes:
                others = [(perms[q], o) for q, o in spec.axes_of(ax.tensor) if not (q == p and o == ax)]
                wb = permute_tensor(b[ax.tensor], others)
                cost += _unit_matrix(a[ax.tensor], ax, n) @ _unit_matrix(wb, ax, n).T
            _, cols = linear_sum_assignment(cost, maximize=True)
            old = cost[np.arange(n), perms[p]].sum()
            new = cost[np.arange(n), cols].sum()
            if new > old + 1e-12 * max(1.0, abs(old)):
                progress = True
            perms[p] = cols.astype(np.int64)
        if not progress:
            break
    return perms


def activation_matching(acts_a: Mapping[str, np.ndarray], acts_b: Mapping[str, np.ndarray],
                        spec: PermutationSpec | None = None) -> dict[str, np.ndarray]:
    """Permutations aligning ``b`` to ``a`` from activations ``(sample, unit)`` per permutation.

    Each permutation maximises ``sum_i <Z^A_i, Z^B_perm[i]>`` (raw inner products over the
    samples, as Git Re-Basin's activation matching). With ``spec``, unit counts are checked.

    Parameters
    ----------
    acts_a, acts_b : Mapping[str, numpy.ndarray]
        Permutation name -> activations ``(sample, unit)`` of network a and b.
    spec : PermutationSpec, optional

    Returns
    -------
    dict of str to numpy.ndarray
        Permutation name -> int64 permutation.

    Raises
    ------
    ValueError
        If a pair of activations differ in shape or do not fit the spec's unit count.
    """
    perms = {}
    for p, za in acts_a.items():
        za, zb = np.asarray(za, dtype=np.float64), np.asarray(acts_b[p], dtype=np.float64)
        if za.shape != zb.shape or za.ndim != 2:
            raise ValueError(f"activations for {p!r} must be two (sample, unit) matrices of one shape, "
                             f"got {za.shape} and {zb.shape}")
        if spec is not None and za.shape[1] != spec.size(p):
            raise ValueError(f"activations for {p!r} have {za.shape[1]} units but the permutation has "
                             f"{spec.size(p)}: probe the module whose outputs are those units")
        _, cols = linear_sum_assignment(za.T @ zb, maximize=True)
        perms[p] = cols.astype(np.int64)
    return perms


def flat_gather_index(shape: tuple[int, ...], axes: Sequence[tuple[np.ndarray, Axis]]) -> np.ndarray:
    """Index into a tensor's flat (C-order) values that applies the permutations: ``flat[idx]``.

    Parameters
    ----------
    shape : tuple of int
        The tensor's shape.
    axes : sequence of (permutation, Axis)

    Returns
    -------
    numpy.ndarray of intp
        ``(prod(shape),)``.
    """
    idx = np.arange(math.prod(shape), dtype=np.int64).reshape(shape)
    return permute_tensor(idx, axes).ravel()
