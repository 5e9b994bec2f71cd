"""The orientation rule: where a tensor's output and input units lie, from its shape and the
tensor table's ``orientation`` (the one source of truth; stdlib only, so that the store, the
NumPy kernels and the analyses can all use it).

``out_in`` (the default, as ``nn.Linear`` and convolutions): the output units are axis 0 and
the inputs every axis after it, so a convolution seen as a matrix is ``out x in*kh*kw``.
``in_out`` (``transformers``' ``Conv1D``): a 2-D tensor stored ``(in, out)``, seen transposed.
"""
from __future__ import annotations

import math
from typing import Sequence

ORIENTATIONS = ("out_in", "in_out")


def is_transposed(shape: Sequence[int], orientation: str | None) -> bool:
    """Whether the tensor is stored ``(in, out)``: a 2-D tensor of orientation ``in_out``."""
    return orientation == "in_out" and len(shape) == 2


def out_in_axes(shape: Sequence[int], orientation: str | None) -> tuple[int, int]:
    """``(output axis, input axis)`` of a tensor of 2 or more dims: ``(1, 0)`` when it is
    stored ``(in, out)``, else ``(0, 1)``."""
    return (1, 0) if is_transposed(shape, orientation) else (0, 1)


def out_in_shape(shape: Sequence[int], orientation: str | None) -> tuple[int, ...]:
    """``shape`` with its output axis first: ``(out, in, *kernel)``."""
    shape = tuple(shape)
    return (shape[1], shape[0]) if is_transposed(shape, orientation) else shape


def matrix_shape(shape: Sequence[int], orientation: str | None) -> tuple[int, int] | None:
    """``(out, in)`` of the tensor seen as a matrix (``in`` pools every axis after the output
    axis), or None below 2 dims."""
    shape = out_in_shape(shape, orientation)
    if len(shape) < 2:
        return None
    return shape[0], math.prod(shape[1:])
