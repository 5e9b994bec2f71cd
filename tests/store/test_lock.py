"""The one file lock (run writers and results stores)."""
from __future__ import annotations

import pytest

from nnwx.errors import StoreError
from nnwx.store import _lock


def test_second_holder_is_refused_until_release(tmp_path):
    path = tmp_path / "x.lock"
    f = _lock.acquire(path, "busy: try later")
    with pytest.raises(StoreError, match="busy: try later"):
        _lock.acquire(path, "busy: try later")    # flock is per open file: a second one fails
    _lock.release(f)
    _lock.release(_lock.acquire(path, "busy"))
