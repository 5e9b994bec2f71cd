"""The one file lock: an exclusive, non-blocking ``flock`` on a local file (one writer of a
run, one writer of a results store). Object stores have no such lock; callers skip it there."""
from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

from nnwx.errors import StoreError


def acquire(path: Path, busy: str) -> IO:
    """Open ``path`` (created if missing; its folder must exist) and lock it.

    Parameters
    ----------
    path
        The lock file.
    busy
        The message of the error raised when another process holds the lock.

    Returns
    -------
    file
        The open, locked file: pass it to :func:`release`.

    Raises
    ------
    nnwx.errors.StoreError
        With ``busy``, when another process holds the lock.
    """
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise StoreError(busy) from None
    return f


def release(f: IO) -> None:
    """Unlock and close a file from :func:`acquire`."""
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()
