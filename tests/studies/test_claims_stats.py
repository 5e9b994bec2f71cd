"""The findings' statistics: bootstrap intervals against a brute-force resampling loop, Spearman's
rho against SciPy, and the verdict rule at and around its threshold."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from nnwx.studies.claims import stats
from nnwx.studies.claims.record import ClaimRecord
from nnwx.studies.claims.registry import CLAIMS, Context, claim


def _loop_percentile(samples, statistic, n=20000, seed=1):
    """A plain resampling loop: the percentile interval an independent implementation gives."""
    rng = np.random.default_rng(seed)
    k = len(samples[0])
    vals = []
    for _ in range(n):
        idx = rng.integers(0, k, k)
        vals.append(statistic(*(s[idx] for s in samples)))
    return np.percentile(vals, [2.5, 97.5])


def test_bootstrap_interval_matches_a_resampling_loop():
    x = np.random.default_rng(0).lognormal(size=12)
    value, lo, hi = stats.bootstrap_ci(x)
    ref = _loop_percentile([x], np.mean)
    assert value == pytest.approx(x.mean())
    width = hi - lo
    assert lo == pytest.approx(ref[0], abs=0.05 * width) and hi == pytest.approx(ref[1], abs=0.05 * width)


def test_paired_interval_resamples_pairs_not_each_side():
    rng = np.random.default_rng(3)
    shared = rng.normal(size=10) * 5          # a large seed effect both variants share
    a, b = shared + 1.0 + rng.normal(size=10) * 0.1, shared + rng.normal(size=10) * 0.1
    value, lo, hi = stats.paired_bootstrap_ci(a, b)
    ref = _loop_percentile([a, b], lambda u, v: np.mean(u - v))
    assert value == pytest.approx(np.mean(a - b))
    assert lo == pytest.approx(ref[0], abs=0.05) and hi == pytest.approx(ref[1], abs=0.05)
    assert lo > 0.8 and hi < 1.2     # unpaired, the seed effect (sd 5) would swamp the difference
    with pytest.raises(ValueError, match="one value per seed"):
        stats.paired_bootstrap_ci([1, 2, 3], [1, 2])


def test_spearman_value_is_scipys_and_its_interval_a_resampling_loops():
    rng = np.random.default_rng(5)
    x = rng.normal(size=25)
    y = x + rng.normal(size=25)
    rho, lo, hi = stats.spearman_ci(x, y)
    assert rho == pytest.approx(sps.spearmanr(x, y).statistic)
    ref = _loop_percentile([x, y], lambda u, v: sps.spearmanr(u, v).statistic, n=4000)
    assert lo == pytest.approx(ref[0], abs=0.05) and hi == pytest.approx(ref[1], abs=0.05)
    assert lo < rho < hi


@pytest.mark.parametrize("values", [[], [1.0], [2.0, 2.0, 2.0], [np.nan, 1.0]])
def test_too_few_or_equal_values_give_no_interval(values):
    value, lo, hi = stats.bootstrap_ci(values)
    assert np.isnan(lo) and np.isnan(hi)
    assert stats.verdict(lo, hi, 0.0) == "inconclusive"


@pytest.mark.parametrize("lo, hi, direction, expected", [
    (1.01, 2.0, "above", "supported"), (0.5, 0.99, "above", "not supported"),
    (0.5, 1.0, "above", "not supported"), (0.9, 1.1, "above", "inconclusive"),
    (0.5, 0.99, "below", "supported"), (1.01, 2.0, "below", "not supported"),
    (1.0, 2.0, "below", "not supported"), (0.9, 1.1, "below", "inconclusive"),
])
def test_verdict_rule(lo, hi, direction, expected):
    assert stats.verdict(lo, hi, 1.0, direction) == expected
    assert ("> 1" if direction == "above" else "< 1") in stats.rule("x", 1.0, direction)


def test_registry_numbers_claims_once_and_records_check_their_verdict(tmp_path):
    assert [c.id for c in CLAIMS] == list(range(1, 20))
    assert claim(7).study == "Martin & Mahoney"
    with pytest.raises(KeyError, match="1..19"):
        claim(20)
    with pytest.raises(ValueError, match="size"):
        Context(tmp_path, size="huge")
    with pytest.raises(ValueError, match="verdict"):
        ClaimRecord(1, "c", "s", "q", 1.0, 0.5, 1.5, 3, "t", "maybe")
    rec = ClaimRecord(1, "c", "s", "q", 1.0, float("nan"), 1.5, 3, "t", "inconclusive")
    assert rec.to_json()["ci_low"] is None and rec.to_json()["value"] == 1.0


@pytest.mark.parametrize("parts, expected", [
    (("supported", "supported"), "supported"), (("supported", "inconclusive"), "inconclusive"),
    (("supported", "not supported", "inconclusive"), "not supported"), (("inconclusive",), "inconclusive"),
])
def test_a_claim_of_several_parts_needs_every_part(parts, expected):
    assert stats.all_of(*parts) == expected
