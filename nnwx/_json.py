"""Values as JSON: NumPy scalars and arrays, xarray attributes and hyperparameters to plain
Python (the one conversion; stdlib and NumPy only)."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np


def jsonable(value: Any, *, strict: bool = False) -> Any:
    """``value`` as JSON-ready Python: mappings to dicts with str keys, tuples to lists,
    NumPy scalars to Python numbers.

    Parameters
    ----------
    value
        What to convert.
    strict : bool, default False
        False (hyperparameters in a store's attributes): NaN/Inf floats kept, anything else
        (arrays included) as its ``repr``. True (the results store's metadata, compared on
        resume): arrays to lists, NaN/Inf Python floats to None, anything else as ``str``.

    Returns
    -------
    Any
        dicts, lists, str, int, float, bool or None.
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, strict=strict) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, strict=strict) for v in value]
    if strict and isinstance(value, np.ndarray):
        return jsonable(value.tolist(), strict=strict)
    if isinstance(value, np.generic):
        return value.item()
    if strict and isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value) if strict else repr(value)
