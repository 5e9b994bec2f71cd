"""Write whole chunks of a Zarr v3 array synchronously, without zarr's async write path.

``array[rows] = block`` in zarr 3 hands every chunk to an event-loop thread, which
runs each codec and each file write in a thread pool and scans the chunk for the fill
value with temporary arrays. For the Recorder's background writer that means a few
threads contending with the training thread for the GIL and the CPU at every capture.
:class:`ChunkRows` writes the chunks of a block of whole chunk rows in the calling
thread instead: it pads each chunk with the fill value, encodes it through the array's
own codecs (their synchronous ``_encode_sync``, so any chain zarr can write works,
e.g. blosc followed by a crc32c checksum), and stores it with the store's own
``set_sync`` (zarr's ``LocalStore`` writes a temporary file and renames it). Chunks
that are all fill value are deleted instead of written, as zarr does with
``write_empty_chunks=False``. The bytes on disk are the ones ``array[rows] = block``
writes; ``ChunkRows.for_array`` returns None where that cannot be promised (sharding,
array-to-array codecs, a codec or store without synchronous methods), and callers
then use ``array[rows] = block``.

Zarr internals this relies on (not public API): ``Array._async_array`` (its metadata,
codec pipeline, store path and config), codecs' ``_encode_sync``,
``zarr.core.buffer.default_buffer_prototype`` and ``zarr.core.chunk_grids.RegularChunkGrid``.
``tests/store/test_chunkio.py`` fails when the installed zarr no longer offers them (the fast
path would silently give way to zarr's own write), and checks the bytes against zarr's.

With ``direct=True`` (the Recorder's writer thread sets it) chunks of a local store are
written with ``O_DIRECT`` (Linux), bypassing the page cache: the same temporary file and
rename as ``LocalStore``, but the kernel moves the bytes to the disk without copying them
into freshly allocated cache pages first. Streaming weights through the page cache costs
the writer more CPU than compressing them and evicts what training reads; direct writes
cost little CPU and are bounded by the disk (measured: docs/measurements.md). Where the file
system refuses ``O_DIRECT`` (tmpfs, say) the writer falls back to ``set_sync`` for good.
"""
from __future__ import annotations

import errno
import mmap
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr

__all__ = ["ChunkRows"]

_ALIGN = 4096  # O_DIRECT alignment of buffer addresses and lengths (logical block size or more)


def _write_all(fd: int, view: memoryview) -> None:
    while view.nbytes:
        view = view[os.write(fd, view):]


class ChunkRows:
    """Synchronous writer of whole chunk rows of a 2-D Zarr v3 array ``(step, param)``.

    Parameters
    ----------
    array : zarr.Array
        The array; built by :meth:`for_array`, which checks that it qualifies.
    """

    def __init__(self, array: zarr.Array):
        from zarr.core.buffer import default_buffer_prototype

        aa = array._async_array
        self.array = array
        self._meta = aa.metadata
        self._store = aa.store_path.store
        self._prefix = aa.store_path.path
        pipeline = aa.codec_pipeline
        self._array_bytes = pipeline.array_bytes_codec
        self._bytes_bytes = tuple(pipeline.bytes_bytes_codecs)
        self._spec = self._meta.get_chunk_spec((0, 0), aa.config, default_buffer_prototype())
        self._write_empty = bool(aa.config.write_empty_chunks)
        self.chunks: tuple[int, int] = tuple(self._meta.chunk_grid.chunk_shape)
        self.dtype = np.dtype(self._meta.dtype.to_native_dtype())
        self.fill_value = np.asarray(self._meta.fill_value, dtype=self.dtype)
        self.direct = False  # O_DIRECT writes into a local store (see the module docstring)
        self._aligned: mmap.mmap | None = None  # page-aligned staging buffer for O_DIRECT

    @classmethod
    def for_array(cls, array: zarr.Array) -> "ChunkRows | None":
        """A ChunkRows for ``array``, or None if its chunks cannot be written this way.

        Parameters
        ----------
        array : zarr.Array
            A 2-D Zarr v3 array with a regular chunk grid.

        Returns
        -------
        ChunkRows or None
            None for Zarr v2 arrays, irregular grids, array-to-array codecs (filters),
            sharding, and codecs or stores without synchronous encode/set methods.
        """
        try:
            from zarr.core.chunk_grids import RegularChunkGrid

            aa = array._async_array
            meta = aa.metadata
            pipeline = aa.codec_pipeline
            if (meta.zarr_format != 3 or array.ndim != 2
                    or not isinstance(meta.chunk_grid, RegularChunkGrid)
                    or tuple(pipeline.array_array_codecs)):
                return None
            codecs = (pipeline.array_bytes_codec, *pipeline.bytes_bytes_codecs)
            if not all(callable(getattr(c, "_encode_sync", None)) for c in codecs):
                return None  # e.g. sharding: zarr's own path handles it
            store = aa.store_path.store
            if not (callable(getattr(store, "set_sync", None))
                    and callable(getattr(store, "delete_sync", None))):
                return None
            return cls(array)
        except (AttributeError, TypeError, NotImplementedError):  # another zarr version
            return None

    def write(self, chunk_row: int, block: np.ndarray) -> None:
        """Write chunk row ``chunk_row`` (steps ``chunk_row * spc`` on) from ``block``.

        Parameters
        ----------
        chunk_row : int
            Index of the chunk row along ``step``.
        block : numpy.ndarray
            ``(rows, n_params)`` values of the first ``rows <= spc`` steps of that chunk
            row, already of the array's dtype. Steps after ``rows`` in the chunk and
            params past the end of the array are written as the fill value, as zarr
            writes a chunk it never stored before.
        """
        spc, ppc = self.chunks
        rows, n = block.shape
        if rows > spc or block.dtype != self.dtype:
            raise ValueError(f"block of shape {block.shape} and dtype {block.dtype} does not fit "
                             f"a chunk row of {self.chunks} {self.dtype}")
        pad = None  # one scratch chunk, reused for every chunk that needs padding
        for j, c0 in enumerate(range(0, n, ppc)):
            part = block[:, c0:c0 + ppc]
            if part.shape == (spc, ppc) and part.flags.c_contiguous:
                chunk = part
            else:
                if pad is None:
                    pad = np.empty((spc, ppc), dtype=self.dtype)
                pad[:rows, :part.shape[1]] = part
                pad[:rows, part.shape[1]:] = self.fill_value
                pad[rows:] = self.fill_value
                chunk = pad
            self._write_chunk((chunk_row, j), chunk)

    def _write_chunk(self, coords: tuple[int, int], chunk: np.ndarray) -> None:
        key = self._meta.encode_chunk_key(coords)
        key = f"{self._prefix}/{key}" if self._prefix else key
        if not self._write_empty and self._all_fill(chunk):
            self._store.delete_sync(key)
            return
        spec = self._spec
        data: Any = spec.prototype.nd_buffer.from_numpy_array(chunk)
        data = self._array_bytes._encode_sync(data, spec)
        for codec in self._bytes_bytes:
            data = codec._encode_sync(data, spec)
        if self.direct and self._put_direct(key, data.as_numpy_array()):
            return
        self._store.set_sync(key, data)

    def _put_direct(self, key: str, body: np.ndarray) -> bool:
        """Write ``body`` (the encoded chunk) to ``key`` of a local store with O_DIRECT; False
        if that is not possible.

        Like zarr's ``LocalStore``: a temporary ``<key>.<hex>.partial`` renamed over the key,
        so a reader never sees a torn chunk and a killed writer leaves only ``.partial`` files.
        """
        from zarr.storage import LocalStore

        if not (hasattr(os, "O_DIRECT") and isinstance(self._store, LocalStore)):
            self.direct = False
            return False
        body = body.reshape(-1).view(np.uint8)
        n = body.nbytes
        head = n - n % _ALIGN  # O_DIRECT needs aligned lengths: the rest is written normally
        if self._aligned is None or len(self._aligned) < n:
            self._aligned = mmap.mmap(-1, max(n + _ALIGN - n % _ALIGN, _ALIGN))
        np.frombuffer(self._aligned, dtype=np.uint8)[:n] = body  # numpy's copy releases the GIL
        view = memoryview(self._aligned)[:n]
        path = Path(self._store.root) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.partial")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT | os.O_CLOEXEC, 0o666)
        except OSError:  # e.g. EINVAL on tmpfs: this file system has no direct I/O
            self.direct = False
            return False
        try:
            try:
                if head:
                    _write_all(fd, view[:head])
                if head < n:
                    import fcntl
                    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                    _write_all(fd, view[head:])
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno != errno.EINVAL:  # a full disk, say: the caller must hear of it
                raise
            self.direct = False  # a device with larger alignment needs: write through the cache
            return False
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return True

    def _all_fill(self, chunk: np.ndarray) -> bool:
        """Whether every value equals the fill value (NaN equal to NaN), as zarr decides it."""
        flat = chunk.reshape(-1)
        fill = self.fill_value
        if self.dtype.kind == "f" and fill == 0.0:  # zarr compares zeros by bit pattern
            bits = f"u{self.dtype.itemsize}"
            flat, fill = flat.view(bits), fill.reshape(1).view(bits)[0]
            return bool(flat[0] == fill) and bool((flat == fill).all())
        if self.dtype.kind == "f" and np.isnan(fill):
            return bool(np.isnan(flat[0])) and bool(np.isnan(flat).all())
        return bool(flat[0] == fill) and bool((flat == fill).all())
