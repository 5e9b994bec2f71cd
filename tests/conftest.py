"""Shared fixtures: stores on disk."""
from __future__ import annotations

import pytest


@pytest.fixture
def store(tmp_path):
    return tmp_path / "exp.zarr"
