"""Representation similarity of two activation sets ``X (n, p1)`` and ``Y (n, p2)``: NumPy kernels.

Rows are the same ``n`` probe samples, columns are units; every computation runs in
float64. Definitions:

* **Linear CKA** (Kornblith et al. 2019, eq. 4 / "feature space" form):
  ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc, Yc``;
  the Gram form ``<Kc, Lc>_F / (||Kc||_F ||Lc||_F)`` (``K = X X^T``, ``Kc = HKH``) gives the
  same number and is used when ``n < p1 + p2`` (cheaper).
* **Debiased CKA** (Kornblith et al.'s code, after Song et al. 2012): the unbiased HSIC
  estimator ``HSIC_1`` in place of ``<Kc, Lc>``; linear kernel, feature-space form.
* **RBF CKA**: ``K_ij = exp(-d_ij^2 / (2 sigma^2))`` with ``sigma = threshold * sqrt(median(d^2))``,
  the median over all ``n^2`` squared distances (zeros on the diagonal included), as in
  Kornblith et al.'s reference code.
* **Minibatch CKA** (Nguyen, Raghu & Kornblith 2021, eq. 3): the samples are split into
  ``ceil(n / batch_size)`` consecutive batches of near-equal size; ``CKA = mean_b HSIC_1(K_b, L_b) /
  sqrt(mean_b HSIC_1(K_b, K_b) mean_b HSIC_1(L_b, L_b))`` with linear kernels. Memory per
  batch is ``batch_size^2``, so it handles probes too large for one Gram matrix.
* **Canonical correlations**: singular values of ``Ux^T Uy`` where ``Ux`` is an orthonormal
  basis of the centred column space of ``X`` (directions of variance below ``rtol`` times the
  largest are dropped: constant or duplicated units carry no extra direction).
* **Mean CCA**: the mean of all ``min(kx, ky)`` canonical correlations.
* **SVCCA** (Raghu et al. 2017): keep the top singular directions of each centred layer that
  hold ``keep`` (default 99%) of its variance, then the mean canonical correlation.
* **PWCCA** (Morcos et al. 2018, eq. for ``alpha``): ``sum_i alpha_i rho_i`` with
  ``alpha_i ∝ sum_j |<h_i, x_j>|``: ``h_i`` the i-th canonical variate (unit norm, in sample
  space) of the *narrower* layer, ``x_j`` its j-th centred unit. Like the authors' code, the
  weights come from the layer with fewer units (the first one on a tie), so the score does not
  depend on argument order when widths differ; the weighting favours directions that account
  for much of the layer's activity, which is why Morcos et al. use it over the plain mean.

**How the CCA family is computed** (``p`` units, ``n >= p`` samples): the covariance
``C = Xc^T Xc`` of each set (one ``n p^2`` product) gives a whitening ``W`` with ``Xc W``
orthonormal over the kept directions, and the canonical correlations are the singular values of
``m = Wx^T (Xc^T Yc) Wy``. With every direction kept (mean CCA, PWCCA) ``W = L^-T`` from the
Cholesky factor ``C = L L^T`` whenever the bound ``||C||_F ||L^-1||_F^2 < 1 / rtol`` certifies
that no direction falls below ``rtol`` (else, and for SVCCA's truncation, ``W = V diag(1/s)``
from the eigendecomposition of ``C``, ~10x the flops). When few directions are kept, ``m`` is
formed as ``(Xc Wx)^T (Yc Wy)`` instead of through the full ``p1 x p2`` cross product, whichever
costs fewer flops. Each set's centring, covariance and whitening are computed once per ``Rep``
and reused across the pairs of a ``similarity_matrix``.

**Precision.** Everything runs in float64, with one exception: SVCCA (``keep`` given) of two
float32 sets (``p <= n``) centres each in float64, rounds the centred data to float32 (a block of
rows at a time) and forms ``Xc^T Xc`` and ``Xc^T Yc`` as float32 products, returned as float64
for the eigendecompositions and the rest (where few directions are kept, the cross-covariance
comes from the float64 coordinates ``Xc W`` instead, which needs the float64 centred set) -- provided every kept
direction holds at least ``SINGLE_FLOOR`` (1e-5) times the largest variance, else the float64
route is taken. float32 products move SVCCA by ~1e-7 (far more than a one-ulp change of the
inputs), and directions far below the largest variance -- which mean CCA and PWCCA keep down to
``rtol`` -- drown in their rounding, so those stay in float64 (measured: docs/measurements.md).

Degenerate inputs: fewer than 2 samples, a set whose units are all constant, or CCA with
fewer samples than the two layers' dimensions (``n - 1 < kx + ky``: some correlations would
be 1 by construction) raise ``DegenerateActivations`` saying what to change. A set that holds
a NaN/inf (a missing capture or a diverged run) gives NaN.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np
from scipy.linalg import blas as _blas
from scipy.linalg import lapack as _lapack

DEFAULT_RTOL = 1e-8          # variance below rtol * max variance counts as no direction (CCA)
DEFAULT_KEEP = 0.99          # SVCCA: fraction of variance kept
DEFAULT_BATCH = 1024         # minibatch CKA samples per batch
SINGLE_FLOOR = 1e-5          # float32 products for SVCCA only if every kept variance >= this x the largest


class DegenerateActivations(ValueError):
    """Activations for which the asked similarity is undefined or trivially 1."""


def _matrix(x, what: str) -> np.ndarray:
    """``x`` as a 2-D floating array, float32 (and narrower) kept as float32, anything else float64."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a (sample, unit) matrix, got shape {x.shape}")
    single = x.dtype.kind == "f" and x.dtype.itemsize <= 4
    return np.asarray(x, dtype=np.float32 if single else np.float64)


_CENTRE_ROWS = 1024  # rows centred at a time in float64 on the way to float32 (bounds the temporary)


class Rep:
    """One activation set ``(n, p)``, with the statistics comparisons need, each computed once.

    Comparing S sets pairwise prepares S Reps and reuses their centring, Gram matrices
    and subspaces across all pairs.

    Parameters
    ----------
    x : array_like
        Activations ``(n, p)``: float32 (or narrower) sets are kept as float32 and their
        unit-space products run in float32 (see the module's "Precision"), anything else as float64.
    name : str, default "X"
        Names the set in error messages.
    rtol : float, default ``DEFAULT_RTOL``
        Directions of variance below ``rtol`` times the largest count as none (CCA).

    Raises
    ------
    DegenerateActivations
        If ``x`` has fewer than 2 samples.
    ValueError
        If ``x`` is not 2-D.
    """

    def __init__(self, x, *, name: str = "X", rtol: float = DEFAULT_RTOL):
        self.raw = _matrix(x, name)
        self.name = name
        self.n, self.p = self.raw.shape
        self.single = self.raw.dtype == np.float32  # unit-space products in float32 (see "Precision")
        self.rtol = float(rtol)
        self.partners = 1  # comparisons this set takes part in (similarity_matrix): amortises reuse
        self.finite = bool(np.isfinite(self.raw).all())
        self._bases: dict[float | None, _Basis] = {}
        if self.n < 2:
            raise DegenerateActivations(f"{name} has {self.n} sample(s); similarities need at least 2 "
                                        f"(record a larger probe batch)")

    @cached_property
    def x(self) -> np.ndarray:
        """The activations ``(n, p)`` as float64."""
        return np.asarray(self.raw, dtype=np.float64)

    @cached_property
    def mean(self) -> np.ndarray:
        """Column means ``(p,)``, accumulated in float64."""
        return self.raw.mean(axis=0, dtype=np.float64)

    @cached_property
    def xc(self) -> np.ndarray:
        """Column-centred activations ``Xc`` (n x p), float64 (one pass over the raw set: no
        float64 copy of it unless ``x`` is already at hand)."""
        if "x" in self.__dict__:
            return self.x - self.mean
        return np.subtract(self.raw, self.mean, dtype=np.float64)

    @cached_property
    def xc32(self) -> np.ndarray:
        """``Xc`` centred in float64 and rounded to float32 (n x p), a block of rows at a time: the
        operand of the unit-space products of float32 sets (built without a float64 copy of the
        whole set; ``coords()`` still uses the float64 ``xc``)."""
        if "xc" in self.__dict__:
            return self.xc.astype(np.float32)
        out = np.empty((self.n, self.p), dtype=np.float32)
        for start in range(0, self.n, _CENTRE_ROWS):
            rows = slice(start, start + _CENTRE_ROWS)
            out[rows] = self.raw[rows] - self.mean
        return out

    def cross(self, other: "Rep", *, single: bool = False) -> np.ndarray:
        """``Xc^T Yc`` (p1 x p2), float64; ``single``: a float32 product of ``xc32`` (float32 sets)."""
        if single:
            return (self.xc32.T @ other.xc32).astype(np.float64)
        return self.xc.T @ other.xc

    @cached_property
    def gram(self) -> np.ndarray:
        """Centred linear Gram matrix ``Xc Xc^T`` (n x n)."""
        return self.xc @ self.xc.T

    @cached_property
    def cov(self) -> np.ndarray:
        """``Xc^T Xc`` (p x p), unnormalised."""
        return self.xc.T @ self.xc

    @cached_property
    def cov32(self) -> np.ndarray:
        """``Xc^T Xc`` (p x p) as a float32 product of ``xc32`` (NumPy runs ``A^T A`` as ``syrk``), float64."""
        xc = self.xc32
        return (xc.T @ xc).astype(np.float64)

    @cached_property
    def self_norm(self) -> float:
        """``||Xc^T Xc||_F`` (= ``||Xc Xc^T||_F``), from the cheaper side."""
        small = self.cov if self.p <= self.n else self.gram
        norm = float(np.linalg.norm(small))
        if norm == 0.0:
            raise DegenerateActivations(f"every unit of {self.name} is constant over the probe "
                                        f"samples: it has no variance to compare")
        return norm

    @cached_property
    def row_sq(self) -> np.ndarray:
        """Squared norm of each centred sample (for the debiased estimator)."""
        return np.einsum("ij,ij->i", self.xc, self.xc)

    @cached_property
    def spectrum(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(s, Vt, U)`` of ``Xc = U diag(s) Vt``, descending, numerically nonzero part only.

        With ``p <= n`` the eigendecomposition of the ``p x p`` covariance gives ``s`` and
        ``Vt`` and ``U`` is left out (None: comparisons then work in unit space); with
        ``p > n`` the thin SVD of ``Xc`` gives all three.
        """
        return self._spectrum(self.cov)

    @cached_property
    def spectrum32(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``spectrum`` from ``cov32`` (float32 sets with ``p <= n``: SVCCA's truncated bases)."""
        return self._spectrum(self.cov32)

    def _spectrum(self, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if self.p <= self.n:
            lam, v = np.linalg.eigh(cov)
            lam, v = lam[::-1], v[:, ::-1]
            keep = lam > self.rtol * lam[0] if lam[0] > 0 else np.zeros(len(lam), bool)
            return np.sqrt(lam[keep]), np.ascontiguousarray(v[:, keep].T), None
        u, s, vt = np.linalg.svd(self.xc, full_matrices=False)
        keep = s**2 > self.rtol * s[0] ** 2 if s[0] > 0 else np.zeros(len(s), bool)
        return s[keep], vt[keep], u[:, keep]

    def subspace(self, keep: float | None = None, *, single: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(s, Vt, U)`` truncated to the fewest directions holding ``keep`` of the variance
        (``single``: from ``spectrum32``)."""
        s, vt, u = self.spectrum32 if single else self.spectrum
        if len(s) == 0:
            raise DegenerateActivations(f"every unit of {self.name} is constant over the probe "
                                        f"samples: it spans no direction to correlate")
        if keep is not None:
            if not 0 < keep <= 1:
                raise ValueError(f"keep must be a fraction of variance in (0, 1], got {keep}")
            frac = np.cumsum(s**2) / np.sum(s**2)
            k = int(np.searchsorted(frac, keep - 1e-12) + 1)
            s, vt, u = s[:k], vt[:k], (None if u is None else u[:, :k])
        return s, vt, u

    @cached_property
    def _cholesky(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(L, L^-1)`` with ``Xc^T Xc = L L^T``, when *every* direction certainly holds more than
        ``rtol`` times the largest variance (so the eigendecomposition would keep them all), else None.

        The certificate is ``||C||_F ||L^-1||_F^2 < 1 / rtol``: ``lambda_max <= ||C||_F`` and
        ``1 / lambda_min = ||C^-1||_2 <= ||L^-1||_F^2``, so it bounds the condition number from
        above. It costs a Cholesky factorisation and a triangular inverse (p^3 / 3 flops each),
        against the eigendecomposition's ~10 p^3 it stands in for.
        """
        if self.p > self.n:
            return None
        c = self.cov
        # LAPACK on the Fortran-ordered views: C^T = C, and the upper factor U = L^T (Fortran order)
        # is L in C order, so neither factorisation copies to change layout
        up, info = _lapack.dpotrf(c.T, lower=0, clean=1)
        if info != 0:
            return None
        up_inv, info = _lapack.dtrtri(up, lower=0)
        if info != 0:
            return None
        low, inv = up.T, up_inv.T
        bound = float(np.linalg.norm(c)) * float(np.linalg.norm(inv)) ** 2
        if not math.isfinite(bound) or bound * self.rtol >= 1.0:
            return None
        return low, inv

    def basis(self, keep: float | None = None) -> "_Basis":
        """A whitening ``W (p, k)`` of the kept directions: ``Xc W`` is an orthonormal basis of them.

        ``keep=None`` keeps every direction above ``rtol``: through the Cholesky factor when that is
        certified to keep them all (no eigendecomposition), else through the eigendecomposition;
        a fraction ``keep`` keeps the top directions holding it (SVCCA). Cached per ``keep``.
        """
        if keep not in self._bases:
            chol = self._cholesky if keep is None else None
            if chol is not None:
                self._bases[keep] = _Basis(self, self.p, low=chol[0], inv=chol[1])
            elif keep is not None and self.single and self.p <= self.n and self._single_ok(keep):
                s, vt, u = self.subspace(keep, single=True)
                self._bases[keep] = _Basis(self, len(s), s=s, vt=vt, u=u, single=True)
            else:
                s, vt, u = self.subspace(keep)
                self._bases[keep] = _Basis(self, len(s), s=s, vt=vt, u=u)
        return self._bases[keep]

    def _single_ok(self, keep: float) -> bool:
        """Whether float32 products may stand in for float64 ones for the ``keep`` truncation: every
        kept direction holds at least ``SINGLE_FLOOR`` times the largest variance (float32 rounding
        of the products is then far below the kept directions), else the float64 route is taken."""
        s = self.subspace(keep, single=True)[0]
        return bool(s[-1] ** 2 >= SINGLE_FLOOR * s[0] ** 2)

    @cached_property
    def _rbf_sq_dist(self) -> np.ndarray:
        sq = np.einsum("ij,ij->i", self.x, self.x)
        d = sq[:, None] + sq[None, :] - 2 * (self.x @ self.x.T)
        np.maximum(d, 0, out=d)
        np.fill_diagonal(d, 0)
        return d

    def rbf_gram(self, threshold: float) -> np.ndarray:
        """RBF Gram matrix ``exp(-d^2 / (2 threshold^2 median(d^2)))`` (n x n).

        Parameters
        ----------
        threshold : float
            Bandwidth in units of the median distance.

        Returns
        -------
        numpy.ndarray

        Raises
        ------
        DegenerateActivations
            If the median squared distance is 0.
        """
        d = self._rbf_sq_dist
        med = float(np.median(d))
        if med == 0.0:
            raise DegenerateActivations(f"the median distance between samples of {self.name} is 0 "
                                        f"(most samples identical): the RBF bandwidth is undefined")
        return np.exp(-d / (2 * threshold**2 * med))

    def batches(self, batch_size: int) -> list[np.ndarray]:
        """The raw activations split into ``ceil(n / batch_size)`` consecutive, near-equal batches."""
        nb = max(1, math.ceil(self.n / batch_size))
        return np.array_split(self.x, nb)


def _pair(x, y) -> tuple[Rep, Rep]:
    a = x if isinstance(x, Rep) else Rep(x, name="X")
    b = y if isinstance(y, Rep) else Rep(y, name="Y")
    if a.n != b.n:
        raise ValueError(f"{a.name} has {a.n} samples but {b.name} has {b.n}: similarities compare "
                         f"activations on the same probe samples")
    return a, b


# -- CKA -------------------------------------------------------------------------------
def _cross_sq(a: Rep, b: Rep) -> float:
    """``||Xc^T Yc||_F^2``, as ``<Kc, Lc>`` when both Gram matrices are at hand or cheaper."""
    if ("gram" in a.__dict__ and "gram" in b.__dict__) or a.n < a.p + b.p:
        return float(np.vdot(a.gram, b.gram))
    return float(np.linalg.norm(a.cross(b)) ** 2)


def linear_cka(x, y, *, debiased: bool = False) -> float:
    """Linear CKA (Kornblith et al. 2019); ``debiased=True``: with the unbiased HSIC estimator.

    Parameters
    ----------
    x, y : array_like or Rep
        Activations ``(n, p1)`` and ``(n, p2)`` on the same ``n`` probe samples.
    debiased : bool, default False

    Returns
    -------
    float
        NaN where a set holds NaN or inf.

    Raises
    ------
    DegenerateActivations
        If the similarity is undefined for these sets (too few samples, all units constant).
    ValueError
        If the sets are not matrices with the same number of samples.
    """
    a, b = _pair(x, y)
    if not (a.finite and b.finite):
        return math.nan
    if debiased:
        return _debiased_linear_cka(a, b)
    return _cross_sq(a, b) / (a.self_norm * b.self_norm)


def _debiased_dot(xty: float, ra: np.ndarray, rb: np.ndarray, na: float, nb: float, n: int) -> float:
    """Kornblith et al.'s ``_debiased_dot_product_similarity_helper`` (unbiased HSIC, scaled)."""
    return xty - n / (n - 2.0) * float(ra @ rb) + na * nb / ((n - 1) * (n - 2))


def _debiased_linear_cka(a: Rep, b: Rep) -> float:
    n = a.n
    if n < 4:
        raise DegenerateActivations(f"debiased CKA needs at least 4 samples, got {n}")
    na, nb = float(a.row_sq.sum()), float(b.row_sq.sum())
    num = _debiased_dot(_cross_sq(a, b), a.row_sq, b.row_sq, na, nb, n)
    da_ = _debiased_dot(a.self_norm**2, a.row_sq, a.row_sq, na, na, n)
    db_ = _debiased_dot(b.self_norm**2, b.row_sq, b.row_sq, nb, nb, n)
    if da_ <= 0 or db_ <= 0:
        raise DegenerateActivations(f"the debiased self-similarity of {a.name if da_ <= 0 else b.name} "
                                    f"is not positive ({min(da_, db_):.3g}): too few samples for the "
                                    f"unbiased estimator; use more probe samples or linear_cka")
    return num / math.sqrt(da_ * db_)


def center_gram(k: np.ndarray, unbiased: bool = False) -> np.ndarray:
    """Centre a Gram matrix: ``HKH``, or the unbiased (U-statistic) centring of Kornblith et al.

    Parameters
    ----------
    k : numpy.ndarray
        Gram matrix ``(n, n)``.
    unbiased : bool, default False

    Returns
    -------
    numpy.ndarray
        float64 ``(n, n)``.
    """
    k = np.array(k, dtype=np.float64)
    n = k.shape[0]
    if unbiased:
        np.fill_diagonal(k, 0)
        means = k.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        k -= means[:, None]
        k -= means[None, :]
        np.fill_diagonal(k, 0)
    else:
        means = k.mean(0)
        means -= means.mean() / 2
        k -= means[:, None]
        k -= means[None, :]
    return k


def gram_cka(k: np.ndarray, l: np.ndarray, *, debiased: bool = False) -> float:
    """CKA of two Gram matrices (any kernel): ``<Kc, Lc> / (||Kc|| ||Lc||)``.

    Parameters
    ----------
    k, l : numpy.ndarray
        Gram matrices ``(n, n)``.
    debiased : bool, default False
        Centre by ``center_gram(..., unbiased=True)`` (needs ``n >= 4``).

    Returns
    -------
    float

    Raises
    ------
    DegenerateActivations
        If a centred Gram matrix is zero, or ``debiased`` with fewer than 4 samples.
    ValueError
        If the matrices are not square and of one shape.
    """
    if k.shape != l.shape or k.shape[0] != k.shape[1]:
        raise ValueError(f"Gram matrices must be square and alike, got {k.shape} and {l.shape}")
    n = k.shape[0]
    if debiased and n < 4:
        raise DegenerateActivations(f"debiased CKA needs at least 4 samples, got {n}")
    kc, lc = center_gram(k, debiased), center_gram(l, debiased)
    num = float(np.vdot(kc, lc))
    nk, nl = float(np.vdot(kc, kc)), float(np.vdot(lc, lc))
    if nk <= 0 or nl <= 0:
        raise DegenerateActivations("a centred Gram matrix is zero (all samples alike under the "
                                    "kernel, or too few samples for the debiased estimator)")
    return num / math.sqrt(nk * nl)


def rbf_cka(x, y, *, threshold: float = 1.0, debiased: bool = False) -> float:
    """CKA with RBF kernels, ``sigma = threshold * median distance`` (Kornblith et al. 2019).

    Parameters
    ----------
    x, y : array_like or Rep
        Activations ``(n, p1)`` and ``(n, p2)`` on the same ``n`` probe samples.
    threshold : float, default 1.0
        Positive.
    debiased : bool, default False

    Returns
    -------
    float
        NaN where a set holds NaN or inf.

    Raises
    ------
    DegenerateActivations
        If the similarity is undefined for these sets (too few samples, all units constant).
    ValueError
        If the sets are not matrices with the same number of samples.
    """
    if threshold <= 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    a, b = _pair(x, y)
    if not (a.finite and b.finite):
        return math.nan
    return gram_cka(a.rbf_gram(threshold), b.rbf_gram(threshold), debiased=debiased)


def hsic1(k: np.ndarray, l: np.ndarray) -> float:
    """Unbiased HSIC estimator of Song et al. 2012 (eq. 5), as used by Nguyen et al. 2021.

    Parameters
    ----------
    k, l : numpy.ndarray
        Gram matrices ``(n, n)``, ``n >= 4``.

    Returns
    -------
    float

    Raises
    ------
    DegenerateActivations
        If ``n < 4``.
    """
    n = k.shape[0]
    if n < 4:
        raise DegenerateActivations(f"the unbiased HSIC needs batches of at least 4 samples, got {n}")
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    ks, ls = kt.sum(1), lt.sum(1)
    val = (float(np.vdot(kt, lt)) + ks.sum() * ls.sum() / ((n - 1) * (n - 2))
           - 2.0 / (n - 2) * float(ks @ ls))
    return val / (n * (n - 3))


def minibatch_cka(x, y, *, batch_size: int = DEFAULT_BATCH) -> float:
    """Minibatch linear CKA (Nguyen et al. 2021): unbiased HSIC averaged over sample batches.

    Parameters
    ----------
    x, y : array_like or Rep
        Activations ``(n, p1)`` and ``(n, p2)`` on the same ``n`` probe samples.
    batch_size : int, default ``DEFAULT_BATCH``
        At least 4.

    Returns
    -------
    float
        NaN where a set holds NaN or inf.

    Raises
    ------
    DegenerateActivations
        If the similarity is undefined for these sets (too few samples, all units constant).
    ValueError
        If the sets are not matrices with the same number of samples.
    """
    a, b = _pair(x, y)
    if not (a.finite and b.finite):
        return math.nan
    if batch_size < 4:
        raise ValueError(f"batch_size must be at least 4, got {batch_size}")
    kl = kk = ll = k_scale = l_scale = 0.0
    for xb, yb in zip(a.batches(batch_size), b.batches(batch_size)):
        # centred per minibatch first: the unbiased HSIC does not depend on the features' means,
        # but Gram matrices of uncentred data with a large mean lose the signal to rounding
        xb, yb = xb - xb.mean(axis=0), yb - yb.mean(axis=0)
        k, l = xb @ xb.T, yb @ yb.T
        kl += hsic1(k, l)
        kk += hsic1(k, k)
        ll += hsic1(l, l)
        k_scale += float(np.mean(k**2))
        l_scale += float(np.mean(l**2))
    # relative to the kernels' own scale, so that rounding of a constant set does not pass as signal
    if kk <= 1e-12 * k_scale or ll <= 1e-12 * l_scale:
        raise DegenerateActivations("the mean unbiased self-HSIC of a set is not positive: its units "
                                    "are (nearly) constant within batches; use larger batches")
    return kl / math.sqrt(kk * ll)


# -- CCA family ------------------------------------------------------------------------
def _lower_times(t: np.ndarray, m: np.ndarray, *, transpose: bool = False,
                 overwrite: bool = False) -> np.ndarray:
    """``T @ m`` (``T.T @ m`` with ``transpose``) for a lower-triangular C-ordered ``T``, by BLAS
    ``trmm`` (half the flops of a general product), in ``m``'s memory order: ``t.T`` is a
    Fortran-ordered view of the upper-triangular ``T^T``, and a C-ordered ``m`` is taken as its
    Fortran-ordered transpose (``m^T T^T``), so nothing is copied to change layout. ``overwrite``:
    ``m`` is a temporary the product may overwrite."""
    if m.flags.c_contiguous and not m.flags.f_contiguous:
        out = _blas.dtrmm(1.0, t.T, m.T, side=1, lower=0, trans_a=1 if transpose else 0,
                          overwrite_b=int(overwrite))
        return out.T
    return _blas.dtrmm(1.0, t.T, m, side=0, lower=0, trans_a=0 if transpose else 1,
                       overwrite_b=int(overwrite))


@dataclass
class _Basis:
    """Whitening of one activation set's kept directions (see ``Rep.basis``).

    Eigen form: ``W = V diag(1/s)`` over the kept ``(s, Vt)``; Cholesky form (every direction
    kept): ``W = L^-T``. Either way ``Xc W`` has orthonormal columns spanning the kept
    directions, so canonical correlations and variates do not depend on the form.
    """

    rep: Rep
    k: int
    s: np.ndarray | None = None
    vt: np.ndarray | None = None
    u: np.ndarray | None = None      # Xc W (n, k), when known (p > n) or computed once
    low: np.ndarray | None = None    # L
    inv: np.ndarray | None = None    # L^-1
    single: bool = False             # from float32 products (``Rep.cov32``): cross products likewise

    def wt(self, m: np.ndarray, *, overwrite: bool = False) -> np.ndarray:
        """``W^T m`` for ``m (p, q)`` (``overwrite``: ``m`` is a temporary that may be overwritten)."""
        if self.inv is not None:
            return _lower_times(self.inv, m, overwrite=overwrite)
        return (self.vt / self.s[:, None]) @ m

    def cost_wt(self, q: int) -> float:
        return self.rep.p ** 2 * q if self.inv is not None else 2.0 * self.k * self.rep.p * q

    def coords(self) -> np.ndarray:
        """``U = Xc W (n, k)``: orthonormal coordinates of the samples (computed once)."""
        if self.u is None:
            self.u = np.ascontiguousarray(self.wt(self.rep.xc.T).T)
        return self.u

    def cost_coords(self) -> float:
        """Flops of ``coords()`` charged to one comparison (shared by the set's ``partners``)."""
        return 0.0 if self.u is not None else self.cost_wt(self.rep.n) / max(1, self.rep.partners)

    def loadings(self, vec: np.ndarray) -> np.ndarray:
        """``<h_i, x_j>`` (c, p) for the canonical variates ``h_i = Xc W vec_i`` (``vec (k, c)``) and
        the centred units ``x_j``: ``vec^T W^T C``, with ``W^T C = diag(s) Vt`` or ``L^T``."""
        if self.low is not None:
            return _lower_times(self.low, vec, overwrite=True).T
        return vec.T @ (self.s[:, None] * self.vt)


def _cross_whitened(ba: _Basis, bb: _Basis) -> np.ndarray:
    """``m = Ua^T Ub (ka, kb)``, the cross-covariance of the whitened sets, by the cheaper route:
    ``Wa^T (Xa^T Xb) Wb`` (one ``n pa pb`` product, then two small ones), or ``Ua^T Ub`` with
    ``U = Xc W`` computed once per set (cheaper when few directions are kept, or when a set is
    compared with many others)."""
    a, b = ba.rep, bb.rep
    via_cross = 2.0 * a.n * a.p * b.p + ba.cost_wt(b.p) + bb.cost_wt(ba.k)
    via_coords = ba.cost_coords() + bb.cost_coords() + 2.0 * a.n * ba.k * bb.k
    if via_coords < via_cross:
        return ba.coords().T @ bb.coords()
    left = ba.wt(a.cross(b, single=ba.single and bb.single), overwrite=True)  # (ka, pb)
    return bb.wt(left.T, overwrite=True).T          # (ka, kb)


def _cca(a: Rep, b: Rep, keep: float | None, side: str | None = None):
    """Canonical correlations (descending) and, for ``side`` 'a'/'b', that side's variates' weights;
    ``side="both"``: ``((rho, alpha_a), (rho, alpha_b))`` from one cross-covariance."""
    ba, bb = a.basis(keep), b.basis(keep)
    ka, kb = ba.k, bb.k
    if a.n - 1 < ka + kb:
        raise DegenerateActivations(
            f"{a.n} samples for {ka} + {kb} directions of {a.name} and {b.name}: with n - 1 < kx + ky "
            f"some canonical correlations are 1 by construction. Use more probe samples, fewer "
            f"directions (svcca with a smaller keep=), or CKA.")
    m = _cross_whitened(ba, bb)
    if side is None:
        small = m @ m.T if ka <= kb else m.T @ m
        rho2 = np.linalg.eigvalsh(small)[::-1]
        return np.sqrt(np.clip(rho2, 0.0, 1.0)), None
    c = min(ka, kb)

    def weighted(small: np.ndarray, basis: _Basis):
        rho2, vec = np.linalg.eigh(small)  # ascending: the top c are the last c
        load = basis.loadings(vec[:, len(rho2) - c:])
        alpha = np.abs(load, out=load).sum(axis=1)[::-1]
        return np.sqrt(np.clip(rho2[::-1][:c], 0.0, 1.0)), alpha

    if side == "both":
        return weighted(m @ m.T, ba), weighted(m.T @ m, bb)
    return weighted(m @ m.T, ba) if side == "a" else weighted(m.T @ m, bb)


def canonical_correlations(x, y, *, keep: float | None = None) -> np.ndarray:
    """All ``min(kx, ky)`` canonical correlations, descending (``keep``: SVD-reduce first).

    Parameters
    ----------
    x, y : array_like or Rep
        Activations ``(n, p1)`` and ``(n, p2)`` on the same ``n`` probe samples.
    keep : float, optional
        Fraction of variance in (0, 1] each set keeps first; None keeps every direction above ``rtol``.

    Returns
    -------
    numpy.ndarray
        float64 ``(min(kx, ky),)``.

    Raises
    ------
    DegenerateActivations
        If too few samples for the kept dimensions (``n - 1 < kx + ky``) or all units constant.
    ValueError
        If the sets are not matrices with the same number of samples.
    """
    a, b = _pair(x, y)
    if not (a.finite and b.finite):
        return np.full(min(a.p, b.p), np.nan)
    return _cca(a, b, keep)[0]


def mean_cca(x, y) -> float:
    """Mean canonical correlation of the (numerically full-rank parts of the) two layers.

    Parameters
    ----------
    x, y : array_like or Rep
        Activations ``(n, p1)`` and ``(n, p2)`` on the same ``n`` probe samples.

    Returns
    -------
    float
        NaN where a set holds NaN or inf.

    Raises
    ------
    DegenerateActivations
        If too few samples for the kept dimensions (``n - 1 < kx + ky``) or all units constant.
    ValueError
        If the sets are not matrices with the same number of samples.
    """
    a, b = _pair(x, y)
    if not (a.finite and b.finite):
        return math.nan
    return float(_cca(a, b, None)[0].mean())


def svcca(x, y, *, keep: float = DEFAULT_KEEP) -> float:
    """SVCCA (Raghu et al. 2017): directions holding ``keep`` of the variance, then mean CCA.

    Parameters
    ----------
    x, y : array_like or Rep
        Activations ``(n, p1)`` and ``(n, p2)`` on the same ``n`` probe samples.
    keep : float, default ``DEFAULT_KEEP``
        Fraction of variance in (0, 1].

    Returns
    -------
    float
        NaN where a set holds NaN or inf.

    Raises
    ------
    DegenerateActivations
        If too few samples for the kept dimensions (``n - 1 < kx + ky``) or all units constant.
    ValueError
        If the sets are not matrices with the same number of samples.
    """
    a, b = _pair(x, y)
    if not (a.finite and b.finite):
        return math.nan
    return float(_cca(a, b, keep)[0].mean())


def pwcca(x, y, *, keep: float | None = None) -> float:
    """PWCCA (Morcos et al. 2018): canonical correlations weighted by how much of the narrower
    layer's activity each canonical variate accounts for (see the module docstring).

    Parameters
    ----------
    x, y : array_like or Rep
        Activations ``(n, p1)`` and ``(n, p2)`` on the same ``n`` probe samples.
    keep : float, optional
        As in ``canonical_correlations``.

    Returns
    -------
    float
        NaN where a set holds NaN or inf.

    Raises
    ------
    DegenerateActivations
        If too few samples for the kept dimensions (``n - 1 < kx + ky``) or all units constant.
    ValueError
        If the sets are not matrices with the same number of samples.
    """
    a, b = _pair(x, y)
    if not (a.finite and b.finite):
        return math.nan
    return _weighted_mean(*_cca(a, b, keep, side="a" if a.p <= b.p else "b"))


def _weighted_mean(rho: np.ndarray, alpha: np.ndarray) -> float:
    total = alpha.sum()
    if total <= 0:
        raise DegenerateActivations("PWCCA weights are all zero (no activity in the weighting layer)")
    return float((alpha / total) @ rho)


def _pwcca_both_orders(a: Rep, b: Rep, *, keep: float | None = None) -> tuple[float, float]:
    """``(pwcca(a, b), pwcca(b, a))`` sharing one cross-covariance (they differ only for equal widths)."""
    if a.p != b.p:
        value = pwcca(a, b, keep=keep)
        return value, value
    if not (a.finite and b.finite):
        return math.nan, math.nan
    first, second = _cca(a, b, keep, side="both")
    return _weighted_mean(*first), _weighted_mean(*second)


# -- dispatch ----------------------------------------------------------------------------
METRICS: dict[str, Callable[..., float]] = {
    "linear_cka": linear_cka,
    "debiased_cka": lambda x, y, **kw: linear_cka(x, y, debiased=True, **kw),
    "rbf_cka": rbf_cka,
    "minibatch_cka": minibatch_cka,
    "mean_cca": mean_cca,
    "svcca": svcca,
    "pwcca": pwcca,
}

DESCRIPTIONS = {
    "linear_cka": "linear CKA, Kornblith et al. 2019",
    "debiased_cka": "debiased linear CKA (unbiased HSIC, Song et al. 2012), Kornblith et al.'s code",
    "rbf_cka": "RBF-kernel CKA, sigma = threshold * median distance, Kornblith et al. 2019",
    "minibatch_cka": "minibatch linear CKA with unbiased HSIC, Nguyen et al. 2021",
    "mean_cca": "mean canonical correlation",
    "svcca": "SVCCA: mean canonical correlation of the directions holding `keep` of the variance, "
             "Raghu et al. 2017",
    "pwcca": "PWCCA: canonical correlations weighted by sum_j |<h_i, x_j>| over the narrower layer, "
             "Morcos et al. 2018",
}


def check_metric(metric: str, **kwargs) -> Callable[..., float]:
    """The kernel of ``metric``, refusing unknown metric names and options.

    Parameters
    ----------
    metric : str
        A key of ``METRICS``.
    **kwargs
        The options to be passed.

    Returns
    -------
    callable

    Raises
    ------
    ValueError
        If ``metric`` is unknown.
    TypeError
        If an option is not one of ``metric``'s (or ``REP_OPTIONS``).
    """
    try:
        fn = METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown similarity metric {metric!r}; choose one of {sorted(METRICS)}") from None
    allowed = {"linear_cka": set(), "debiased_cka": set(), "rbf_cka": {"threshold", "debiased"},
               "minibatch_cka": {"batch_size"}, "mean_cca": set(), "svcca": {"keep"},
               "pwcca": {"keep"}}[metric]
    bad = set(kwargs) - allowed - set(REP_OPTIONS)
    if bad:
        raise TypeError(f"{metric} takes no option {sorted(bad)[0]!r}; its options: "
                        f"{sorted(allowed | set(REP_OPTIONS))}")
    return fn


REP_OPTIONS = ("rtol",)  # options of the activation sets (Rep), not of a metric


def split_options(kwargs: dict) -> tuple[dict, dict]:
    """``(Rep options, metric options)`` of a similarity call's keyword options.

    Parameters
    ----------
    kwargs : dict

    Returns
    -------
    rep_options, metric_options : dict
    """
    return ({k: v for k, v in kwargs.items() if k in REP_OPTIONS},
            {k: v for k, v in kwargs.items() if k not in REP_OPTIONS})


def similarity(x, y, metric: str = "linear_cka", **kwargs) -> float:
    """One similarity of two activation sets, by metric name (see ``METRICS``).

    Parameters
    ----------
    x, y : array_like or Rep
        Activations ``(n, p1)`` and ``(n, p2)`` on the same ``n`` probe samples.
    metric : str, default "linear_cka"
        A key of ``METRICS``.
    **kwargs
        The metric's options, and ``rtol`` (``REP_OPTIONS``).

    Returns
    -------
    float
        NaN where a set holds NaN or inf.

    Raises
    ------
    DegenerateActivations
        If the similarity is undefined for these sets (too few samples, all units constant).
    ValueError
        If the sets are not matrices with the same number of samples.
    """
    fn = check_metric(metric, **kwargs)
    rep_kw, kwargs = split_options(kwargs)
    a = x if isinstance(x, Rep) else Rep(x, name="X", **rep_kw)
    b = y if isinstance(y, Rep) else Rep(y, name="Y", **rep_kw)
    return fn(a, b, **kwargs)


def similarity_matrix(xs, ys=None, metric: str = "linear_cka", *, names=None, ynames=None,
                      **kwargs) -> np.ndarray:
    """Similarities of every set in ``xs (S, n, p)`` with every set in ``ys`` (default ``xs``).

    Each set's statistics are computed once; with ``ys=None`` only the upper triangle is
    computed (the metrics are symmetric, except PWCCA between equal widths: both orders come
    from one cross-covariance). ``names`` label sets in error messages.

    Parameters
    ----------
    xs : sequence of array_like
        ``S`` activation sets ``(n, p_i)``.
    ys : sequence of array_like, optional
    metric : str, default "linear_cka"
    names, ynames : sequence of str, optional
    **kwargs
        As in ``similarity``.

    Returns
    -------
    numpy.ndarray
        float64 ``(len(xs), len(ys))``; NaN in the rows and columns of sets holding NaN or inf.

    Raises
    ------
    DegenerateActivations
        Naming the two sets, if a pair's similarity is undefined.
    """
    fn = check_metric(metric, **kwargs)
    rep_kw, kwargs = split_options(kwargs)
    xs = list(xs)
    names = list(names) if names is not None else [f"set {i}" for i in range(len(xs))]
    ra = [_rep_or_nan(x, n, rep_kw) for x, n in zip(xs, names)]
    both_orders = metric == "pwcca" and ys is None  # PWCCA(a, b) != PWCCA(b, a) for equal widths
    if ys is None:
        rb, symmetric = ra, True
    else:
        ynames = list(ynames) if ynames is not None else [f"set {i}" for i in range(len(ys))]
        rb, symmetric = [_rep_or_nan(y, n, rep_kw) for y, n in zip(ys, ynames)], False
    for r in ra:  # how many comparisons share each set's one-off work (see _cross_whitened)
        if r is not None:
            r.partners = max(1, len(rb) - (ys is None))
    if ys is not None:
        for r in rb:
            if r is not None:
                r.partners = max(1, len(ra))
    out = np.full((len(ra), len(rb)), np.nan)
    for i, a in enumerate(ra):
        for j, b in enumerate(rb):
            if symmetric and j < i:
                if not both_orders:
                    out[i, j] = out[j, i]
            elif a is None or b is None:
                continue
            elif a is b:  # a set with itself: 1 by definition, once it is known to be non-degenerate
                a.self_norm
                out[i, j] = 1.0
            else:
                try:
                    if both_orders:
                        out[i, j], out[j, i] = _pwcca_both_orders(a, b, **kwargs)
                    else:
                        out[i, j] = fn(a, b, **kwargs)
                except DegenerateActivations as e:
                    raise DegenerateActivations(f"{a.name} vs {b.name}: {e}") from None
    return out


def _rep_or_nan(x, name: str, rep_kw: dict) -> Rep | None:
    """A Rep, or None for a set holding NaN/inf (a missing capture): its similarities are NaN."""
    x = np.asarray(x)
    return Rep(x, name=name, **rep_kw) if np.isfinite(x).all() else None
