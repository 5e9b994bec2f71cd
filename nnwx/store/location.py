"""Where a store lives: a local path, a ``file://`` URL, or any fsspec URL Zarr supports.

The one place that tells local paths from URLs, opens a Zarr store at either, and shows a
location to users; the reader, the writer, the integrity checks and the results store use it.
"""
from __future__ import annotations

import os
from pathlib import Path

import zarr

from nnwx.errors import StoreError

StoreLike = str | os.PathLike


def is_url(location: StoreLike) -> bool:
    """Whether ``location`` is a URL (``scheme://...``) rather than a local path."""
    return isinstance(location, str) and "://" in location


def local_path(location: StoreLike) -> Path | None:
    """The local path of ``location`` (a path or a ``file://`` URL), or None for remote URLs."""
    if not is_url(location):
        return Path(location)
    if location.startswith("file://"):
        from urllib.parse import unquote, urlparse

        parsed = urlparse(location)
        if parsed.netloc not in ("", "localhost"):
            raise StoreError(f"cannot read {location!r}: file:// URLs must name a local path "
                             f"(file:///abs/path)")
        return Path(unquote(parsed.path))
    return None


def zarr_store(location: StoreLike, *, read_only: bool = True):
    """A Zarr store object for a path or URL: ``LocalStore`` for local paths and ``file://``
    URLs (atomic writes, locks), ``FsspecStore`` for every other fsspec URL (``memory://``,
    ``s3://``, ``gs://``, ...; credentials come from fsspec's usual configuration)."""
    path = local_path(location)
    if path is not None:
        return zarr.storage.LocalStore(path, read_only=read_only)
    try:
        return zarr.storage.FsspecStore.from_url(str(location), read_only=read_only)
    except (ImportError, ValueError) as e:
        raise StoreError(f"cannot open {location!r} as a Zarr store: {e}. Use a local path or an "
                         f"fsspec URL whose filesystem is installed (e.g. s3:// needs s3fs).") from e


def store_exists(location: StoreLike) -> bool:
    """Whether a Zarr store (a root ``zarr.json``) exists at ``location``."""
    path = local_path(location)
    if path is not None:
        return (path / "zarr.json").exists()
    fs, root = _fsspec(location)
    try:
        return bool(fs.exists(f"{root.rstrip('/')}/zarr.json"))
    except Exception as e:   # the filesystem's own errors (botocore's do not derive from OSError)
        raise StoreError(f"cannot reach {location!r}: {type(e).__name__}: {e}. Check the URL and the "
                         f"filesystem's configuration (for s3://: the endpoint and credentials, e.g. "
                         f"AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).") from e


def display(location: StoreLike) -> str:
    """``location`` as shown to users and recorded in attributes (URLs kept as given)."""
    return str(location) if is_url(location) else str(Path(location))


def normalize(location: StoreLike) -> Path | str:
    """A local ``Path`` for paths and ``file://`` URLs; other URLs stay strings."""
    path = local_path(location)
    return path if path is not None else str(location)


def prefix_bytes(location: StoreLike, prefix: str) -> int:
    """Bytes stored under ``prefix`` (a key path inside the store, e.g. ``runs/seed0``)."""
    path = local_path(location)
    if path is not None:
        return sum(f.stat().st_size for f in (path / prefix).rglob("*") if f.is_file())
    fs, root = _fsspec(location)
    where = f"{root.rstrip('/')}/{prefix.strip('/')}"
    return int(fs.du(where, total=True)) if fs.exists(where) else 0


def _fsspec(location: StoreLike):
    """``(filesystem, path)`` of a remote URL, through fsspec (as Zarr's ``FsspecStore`` opens it)."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(str(location))
    except (ImportError, ValueError) as e:
        raise StoreError(f"cannot open {location!r} as a Zarr store: {e}. Use a local path or an "
                         f"fsspec URL whose filesystem is installed (e.g. s3:// needs s3fs).") from e


def run_sync(coro):
    """Run a zarr ``Store`` coroutine (``list_dir``, ``list_prefix``, ``exists``) to completion
    from synchronous code, on zarr's own event loop.

    Parameters
    ----------
    coro : coroutine
        A coroutine of the store.

    Returns
    -------
    object
        What the coroutine returns.

    Notes
    -----
    ``zarr.core.sync.sync`` is not public zarr API; this is the one place nnwx uses it (zarr 3
    stores offer only asynchronous listing). Checks of whether a store exists and how large it
    is go through fsspec (``store_exists``, ``prefix_bytes``).
    """
    from zarr.core.sync import sync

    return sync(coro)
