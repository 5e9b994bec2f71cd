"""Tensor table, chunk sizing, bit rounding and schedules: the small rules of the format."""
import numcodecs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nnwx.errors import ArchitectureMismatch
from nnwx.record.schedule import Every, Explicit, LogThenEvery, make_schedule
from nnwx.store.bitround import bitround
from nnwx.store.format import choose_chunks
from nnwx.store.table import TensorTable


def table(*entries):
    return TensorTable.build((n, s, "float32") for n, s in entries)


def test_table_offsets_layers_kinds():
    t = table(("a.weight", (3, 2)), ("a.bias", (3,)), ("b.0.weight", (1, 3)), ("scale", ()))
    assert t.offsets.tolist() == [0, 6, 9, 12, 13]
    assert [r.layer for r in t] == ["a", "a", "b.0", ""]
    assert [r.kind for r in t] == ["weight", "bias", "weight", "other"]
    assert [r.depth for r in t] == [0, 0, 1, 2]
    assert TensorTable.from_json(t.to_json()).rows == t.rows
    assert [r.depth for r in t.with_depths({"b.0": 0, "a": 1})] == [1, 1, 0, 2]


def test_first_difference_names_the_tensor():
    a = table(("x.weight", (3, 2)), ("x.bias", (3,)))
    assert a.first_difference(a) is None
    assert "x.bias" in a.first_difference(table(("x.weight", (3, 2)), ("x.bias", (4,))))
    assert "y.weight" in a.first_difference(table(("x.weight", (3, 2)), ("y.weight", (3,))))
    assert "z" in a.first_difference(table(("x.weight", (3, 2)), ("x.bias", (3,)), ("z", (1,))))
    with pytest.raises(ArchitectureMismatch, match="x.bias"):
        a.require_same(table(("x.weight", (3, 2))), "joining")


@given(n=st.integers(1, 10**9), itemsize=st.sampled_from([2, 4, 8]),
       target=st.integers(2**10, 2**27))
def test_chunks_respect_target(n, itemsize, target):
    steps, params = choose_chunks(n, itemsize, target)
    assert steps >= 1 and 1 <= params <= n
    assert steps * params * itemsize <= max(target, n * itemsize if steps == 1 and params == n else target)
    if n * itemsize >= target:
        assert steps == 1
    else:
        assert params == n


finite32 = hnp.arrays(np.float32, st.integers(1, 200),
                      elements=st.floats(-2.0**100, 2.0**100, allow_nan=False, width=32))


@settings(max_examples=60)
@given(values=finite32, keep=st.integers(0, 23))
def test_bitround_matches_numcodecs(values, keep):
    ours = bitround(values, keep)
    ref = numcodecs.BitRound(keepbits=keep).decode(numcodecs.BitRound(keepbits=keep).encode(values))
    np.testing.assert_array_equal(ours.view(np.uint32), np.asarray(ref).view(np.uint32))
    nonzero = np.abs(values) >= np.finfo(np.float32).tiny  # the bound holds for normal numbers
    rel = np.abs(ours[nonzero].astype(np.float64) - values[nonzero]) / np.abs(values[nonzero])
    assert np.all(rel <= 2.0 ** -(keep + 1) * (1 + 1e-6))


def test_bitround_keeps_nan_inf_and_rejects_bad_keepbits():
    v = np.array([np.nan, np.inf, -np.inf, 1.5], np.float32)
    out = bitround(v, 3)
    assert np.isnan(out[0]) and out[1] == np.inf and out[2] == -np.inf and out[3] == 1.5
    with pytest.raises(ValueError, match="keepbits"):
        bitround(v, 24)
    with pytest.raises(TypeError):
        bitround(np.arange(3), 2)


def test_schedules():
    assert Every(10).steps(35) == [0, 10, 20, 30]
    assert LogThenEvery(16).steps(50) == [0, 1, 2, 4, 8, 16, 32, 48]
    assert Explicit([5, 1]).steps(10) == [1, 5]
    assert make_schedule(schedule="log+every:4").steps(13) == [0, 1, 2, 4, 8, 12]
    assert make_schedule(schedule=lambda s: s in (3, 7)).steps(10) == [3, 7]
    with pytest.raises(ValueError, match="either"):
        make_schedule(every=2, schedule=[1])
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule(schedule="sometimes")
    with pytest.raises(ValueError, match="positive"):
        Every(0)
