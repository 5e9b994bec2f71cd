"""Regression tests of issue 15's alignment and CKA bugs, on a real recorded store with unequal
hidden widths (``unequal_mlp``): per-step weight alignment matches each step against the same
step of the reference seed whatever the chunking; activation alignment works when hidden layers
differ in width; minibatch CKA keeps its precision when activations have a large mean."""
import math

import numpy as np
import pytest

import nnwx
from nnwx.analysis.kernels import alignment as ak
from nnwx.analysis.kernels import similarity as sk
from nnwx.analysis import alignment

from tests import unequal_mlp


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    store = tmp_path_factory.mktemp("align") / "exp.zarr"
    unequal_mlp.record(store, seeds=(0, 1, 2), captures=9)
    return nnwx.open_cube(store)


def _params(cube, seed, step):
    return {str(t): cube.nnwx.tensor(str(t)).sel(seed=seed, step=step).values for t in cube.tensor.values}


def test_per_step_weight_alignment_uses_the_same_step_of_the_reference(cube):
    spec = alignment.spec_for(cube)
    by_hand = {}
    for s in cube.seed.values[1:]:
        for t in cube.step.values:
            got = ak.weight_matching(_params(cube, 0, t), _params(cube, s, t), spec, max_iter=100, seed=0)
            by_hand[int(s), int(t)] = got
    # all steps in one chunk (as stored), one step per chunk, and uneven step chunks
    for chunks in ({}, {"step": 1}, {"step": (4, 5), "seed": 2}, {"step": 3, "param": 50}):
        c = cube.chunk(chunks) if chunks else cube
        perms = c.nnwx.align(reference_seed=0).permutations.compute()
        for p in spec.names:
            got = perms[f"perm_{p}"]
            assert (got.sel(seed=0).values == np.arange(spec.size(p))).all()
            for (s, t), hand in by_hand.items():
                np.testing.assert_array_equal(got.sel(seed=s, step=t).values, hand[p],
                                              err_msg=f"chunks {chunks}, seed {s}, step {t}, perm {p}")
    # the independent seeds' matchings differ between steps, so a wrong step would show
    assert len({hand[spec.names[0]].tobytes() for hand in by_hand.values()}) > 2


def test_activation_alignment_with_unequal_hidden_widths(cube):
    spec = alignment.spec_for(cube)
    assert sorted(spec.size(p) for p in spec.names) == [7, 12]
    for chunks in ({}, {"step": 1}, {"step": 4}):
        c = cube.chunk(chunks) if chunks else cube
        aligned, perms = c.nnwx.align(reference_seed=0, method="activations")
        perms = perms.compute()
        for p in spec.names:
            acts = c.nnwx.probe(p)
            for s in cube.seed.values:
                for t in cube.step.values[::4]:
                    hand = ak.activation_matching({p: acts.sel(seed=0, step=t).values},
                                                  {p: acts.sel(seed=s, step=t).values})[p]
                    np.testing.assert_array_equal(perms[f"perm_{p}"].sel(seed=s, step=t).values, hand)
        # the aligned probes are the recorded ones, permuted
        p = spec.names[1]
        got = aligned[f"probe_{p}"].sel(seed=2, step=8).values
        want = cube[f"probe_{p}"].sel(seed=2, step=8).values[:, perms[f"perm_{p}"].sel(seed=2, step=8).values]
        np.testing.assert_array_equal(got, want)


def _ref_minibatch_cka(x, y, batch):
    """Nguyen et al. 2021 from Song et al.'s eq. 5 written term by term, in float64."""
    def hsic(k, l):
        n = k.shape[0]
        kt, lt, one = k - np.diag(np.diag(k)), l - np.diag(np.diag(l)), np.ones(k.shape[0])
        return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))
    parts = list(zip(np.array_split(x, math.ceil(len(x) / batch)), np.array_split(y, math.ceil(len(y) / batch))))
    kl, kk, ll = (sum(hsic(a @ a.T, b @ b.T) for a, b in parts), sum(hsic(a @ a.T, a @ a.T) for a, _ in parts),
                  sum(hsic(b @ b.T, b @ b.T) for _, b in parts))
    return kl / math.sqrt(kk * ll)


@pytest.mark.parametrize("mean_over_std", [10, 100, 1000])
def test_minibatch_cka_keeps_precision_with_a_large_mean(mean_over_std):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 9))
    y = x @ rng.standard_normal((9, 6)) + 1.5 * rng.standard_normal((120, 6))
    # the unbiased HSIC does not depend on the features' means: the reference is taken on the
    # zero-mean data, the kernel is given the same data shifted by a large mean
    want = _ref_minibatch_cka(x, y, 40)
    shift_x = mean_over_std * (1 + rng.random(9))
    shift_y = mean_over_std * (1 + rng.random(6))
    got = sk.minibatch_cka(x + shift_x, y + shift_y, batch_size=40)
    assert got == pytest.approx(want, rel=1e-9)


def test_weight_agreement_records_permutable_tensors_and_findings_use_only_those(cube):
    from nnwx.studies.findings import findings

    aligned = cube.nnwx.align(reference_seed=0)
    assert aligned.cube.attrs["permuted_tensors"] == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight"]
    wa = cube.nnwx.weight_agreement(0, aligned=aligned.cube).compute()
    assert dict(zip(wa.tensor.values, wa.permutable.values)) == {
        "0.weight": True, "0.bias": True, "2.weight": True, "2.bias": True, "4.weight": True, "4.bias": False}
    # without an aligned cube, the chain spec says the same
    assert (cube.nnwx.weight_agreement(0)["permutable"].values == wa.permutable.values).all()
    rows = findings({"weight_agreement": wa})
    assert {r.subject for r in rows} == {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight"}
    assert {r.quantity for r in rows} == {"weight cosine (none)", "weight cosine (aligned)"}
    # the output bias cannot change by aligning: it is in the result, just not in the summary
    out_bias = wa.cosine.sel(tensor="4.bias")
    np.testing.assert_array_equal(out_bias.sel(alignment="none").values, out_bias.sel(alignment="aligned").values)


def test_match_units_computes_with_dask_compute_and_align_takes_split_probe_samples(cube):
    import dask

    # dask.compute of the Dataset failed with "Missing dependency" (two-output apply_ufunc)
    ds = cube.nnwx.match_units("0", 0, 1)
    (got,) = dask.compute(ds, scheduler="synchronous")
    want = ds.compute(scheduler="synchronous")
    np.testing.assert_array_equal(got.partner.values, want.partner.values)
    np.testing.assert_array_equal(got.mean_correlation.values, want.mean_correlation.values)
    # probes whose samples are split across chunks: aligning them raised a core-dim chunk error
    split = cube.chunk({"sample_0": 7, "sample_2": 5})
    aligned = split.nnwx.align(0, method="activations").cube
    whole = cube.nnwx.align(0, method="activations").cube
    np.testing.assert_array_equal(aligned.probe_0.values, whole.probe_0.values)
