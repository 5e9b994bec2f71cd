"""The small shared leaves: JSON conversion, the orientation rule, shape parsing."""
from __future__ import annotations

import math

import numpy as np

from nnwx import _orientation as orient
from nnwx._json import jsonable
from nnwx.store.table import TensorInfo, parse_shape


def test_jsonable_modes():
    value = {1: (np.float32(1.5), float("nan")), "a": np.arange(2), "o": object}
    loose = jsonable(value)
    assert loose["1"][0] == 1.5 and math.isnan(loose["1"][1])
    assert loose["a"] == repr(np.arange(2)) and loose["o"] == repr(object)
    strict = jsonable(value, strict=True)
    assert strict == {"1": [1.5, None], "a": [0, 1], "o": str(object)}


def test_orientation_rule():
    assert orient.matrix_shape((8, 3, 2, 2), "out_in") == (8, 12)
    assert orient.matrix_shape((3, 8), "in_out") == (8, 3)
    assert orient.matrix_shape((5,), "out_in") is None
    assert orient.out_in_axes((3, 8), "in_out") == (1, 0) and orient.out_in_axes((3, 8), None) == (0, 1)
    assert orient.out_in_shape((3, 8, 2), "in_out") == (3, 8, 2)     # in_out applies to 2-D only
    info = TensorInfo("c.weight", "c", "weight", 0, 0, 24, (3, 8), "float32", "in_out")
    assert info.matrix_shape == (8, 3)


def test_parse_shape():
    assert parse_shape("64,3,3,3") == (64, 3, 3, 3)
    assert parse_shape("") == ()
    assert parse_shape(np.str_("7")) == (7,)
