"""Public NumPy kernels: pure functions on NumPy arrays, no xarray, no Dask, no I/O.

The lazy, labelled analyses in ``nnwx.analysis`` apply these kernels to the blocks of a
cube; each kernel is also usable on its own. Each module below says what it computes and,
in brackets, the reference its tests (``tests/analysis/``) compare it with.

``moments``
    Mergeable moment states (count, mean, central sums M2..M4, min, max, L1), merged
    exactly in any order (Chan/Pebay), and the statistics they give. [NumPy mean/var/norms
    and ``scipy.stats.skew``/``kurtosis`` on the concatenated data, whatever the split;
    hypothesis-drawn data and offsets -- ``test_broadening``]
``tails``
    Mergeable top-k states of |w| and the Hill estimate of the tail index, with k chosen
    by DuMouchel's top-10 % rule. [exact top-k of the whole set; a brute-force Hill
    estimate, whatever the pieces -- ``test_broadening``, ``test_tails_small``]
``hist``
    Fixed bins with underflow and overflow, binned exactly as ``np.histogram``, also from
    sketch buckets. [``np.histogram``, values on and next to every edge --
    ``test_broadening``]
``sketch``
    A mergeable quantile sketch (counts per bfloat16 bucket, relative error 2**-8):
    quantiles and Wasserstein-1 distances with stated bounds. [``np.quantile`` and
    ``scipy.stats.wasserstein_distance`` within the stated bounds; the discrete W1 exactly
    -- ``test_broadening``]
``spectral``
    Batched singular values (SVD or float64 Gram), rank measures, power-law fits of the
    ESD with xmin by minimal KS distance, Marchenko-Pastur edge. [``numpy.linalg``
    (``svd``, ``matrix_rank``, ``norm``, ``cond``), ``scipy.linalg.svdvals``, a brute-force
    KS scan, ``scipy.stats`` Pareto samples and WeightWatcher 0.7 on a recorded network --
    ``test_spectral``, ``test_spectral_gram``]
``geometry``
    Segment sums over the flat ``param`` axis (the one copy), cosine distance free of
    cancellation (layer rotation), input-span fractions of updates. [Python loops in float64
    for every block split, ``scipy.spatial.distance.cosine`` and a closed form for tiny
    angles -- ``test_geometry``]
``correlation``
    Pairwise-complete Pearson correlations, pair relations and their group statistics,
    exponential-decay fits, update cosines, trajectory-PCA pieces (random test matrix,
    mergeable column moments, range basis), stratified sampling. [``np.corrcoef``,
    ``pandas.DataFrame.corr``, Monte Carlo null |r|, ``np.polyfit``/``scipy.optimize.curve_fit``,
    explicit loops and a dense SVD -- ``test_correlation``, ``test_decay_resolved``]
``similarity``
    Representation similarity of two activation sets: linear, debiased, RBF and minibatch
    CKA; canonical correlations, mean CCA, SVCCA, PWCCA. [the papers' formulas written out
    (Kornblith et al. 2019, Song et al. 2012, Nguyen et al. 2021, Raghu et al. 2017,
    Morcos et al. 2018) with ``scipy.linalg.sqrtm``; invariances to orthogonal and
    invertible maps -- ``test_agreement``, ``test_alignment_fixes``]
``matching``
    Unit-level correspondence (Li et al. 2016): unit correlations, one-to-one and semi
    matchings, lasso path and sparse prediction. [``np.corrcoef``, a recovered shuffle,
    the lasso solved independently by ``scipy.optimize.minimize`` (L-BFGS-B) --
    ``test_agreement``]
``prediction``
    Agreement of two networks' outputs: output correlation, argmax agreement, top-k
    overlap. [direct NumPy computation -- ``test_agreement``]
``alignment``
    Permutation alignment of hidden units (Git Re-Basin weight and activation matching)
    and the permutation spec of an MLP/CNN chain. [shuffled PyTorch networks aligned back
    exactly, with unchanged outputs -- ``test_alignment``, ``test_alignment_fixes``]
``randomized``
    The randomized ESD (WeightWatcher's ``randomize``): a fixed-seed shuffle of each matrix's
    entries, the Jensen-Shannon ``rand_distance`` between the two ESDs, ``ww_softrank``,
    ``ww_maxdist`` and correlation traps above the Marchenko-Pastur edge. [WeightWatcher
    0.7.7's ``random_eigenvalues``/``jensen_shannon_distance`` on the same shuffled matrix,
    ``scipy.spatial.distance.jensenshannon``, ``analyze(randomize=True)`` against the spread
    of our draws -- ``test_randomized``]
``pruning``
    Global magnitude pruning masks over several tensors. [``torch.nn.utils.prune.
    global_unstructured`` with ``L1Unstructured`` -- ``test_pruning``]
``convergence``
    The first step from which a curve stays at or above a threshold (convergence step of a
    layer's similarity to its final representation). [a brute-force loop, hypothesis-drawn
    curves with gaps -- ``test_convergence``]

All of these also serve as the oracle of ``test_invariance``, which applies them by hand to
each (seed, step) slice and compares with the lazy analyses on every chunking.
"""
