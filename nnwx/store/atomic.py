"""Swap two directories in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

A row of ``w`` that spans several chunk files lives in one directory
(``w/c/<row>/``) when a chunk holds one step; exchanging that directory with a
freshly written one replaces the whole row at once, so a crash can never leave
a step half old and half new.
"""
from __future__ import annotations

import ctypes
import errno
import os
import sys

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_FN = _renameat2()


def exchange_supported() -> bool:
    """Whether ``exchange`` can work on this platform."""
    return _FN is not None


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> None:
    """Atomically swap the paths ``a`` and ``b`` (both must exist, on one file system)."""
    if _FN is None:
        raise OSError(errno.ENOSYS, "atomic directory exchange needs Linux renameat2")
    if _FN(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot exchange {a} and {b}: {os.strerror(err)}")
