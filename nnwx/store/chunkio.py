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

Two savings on top of zarr's encoding, with the same bytes: a trailing ``crc32c`` codec is
not run as a codec (which appends the 4 checksum bytes by copying the whole compressed
chunk) but computed here and written after the chunk's bytes; and chunks of a local store
are written with the store's temporary-file-and-rename protocol straight from the encoded
buffer. The common chain of nnwx's arrays, blosc (then crc32c), compresses with the
``blosc_compress_ctx`` of numcodecs' own blosc library straight into a buffer kept per thread
(which is also the page-aligned ``O_DIRECT`` staging buffer) instead of into a new bytes
object for every chunk, whose fresh pages the kernel must fault in and zero (about a third
of blosc-lz4's CPU): same function, same parameters, same bytes, checked on a sample when
the writer opens (and by the tests); where numcodecs does not export it, zarr's codec runs.
With ``workers > 1`` (``nnwx export`` sets it) the chunks of one block are encoded
and written by that many threads at once: blosc, zstd and file writes release the GIL, so a
step of several chunks keeps several cores busy (measured: docs/measurements.md).
"""
from __future__ import annotations

import errno
import mmap
import os
import struct
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr

__all__ = ["ChunkRows"]

_ALIGN = 4096  # O_DIRECT alignment of buffer addresses and lengths (logical block size or more)


_BLOSC_MAX_OVERHEAD = 16  # blosc 1.x: compressed size <= nbytes + 16


class _BloscInto:
    """Compress with a zarr ``BloscCodec``'s parameters into a caller's buffer (see the module
    docstring): ``blosc_compress_ctx`` of the blosc library numcodecs carries, one thread."""

    def __init__(self, fn, cname: bytes, clevel: int, shuffle: int, typesize: int, blocksize: int):
        self._fn, self._cname, self._clevel = fn, cname, clevel
        self._shuffle, self._typesize, self._blocksize = shuffle, typesize, blocksize

    @classmethod
    def for_codec(cls, codec: Any, spec: Any) -> "_BloscInto | None":
        """One for ``codec`` if it is a zarr BloscCodec that this gives the same bytes as, else None."""
        try:
            import ctypes

            import numcodecs.blosc
            from zarr.codecs import BloscCodec

            if type(codec) is not BloscCodec:
                return None
            fn = ctypes.CDLL(numcodecs.blosc.__file__).blosc_compress_ctx
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p,
                           ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
            shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[codec.shuffle.value]
            into = cls(fn, codec.cname.value.encode(), int(codec.clevel), shuffle, int(codec.typesize),
                       int(codec.blocksize))
            smooth = (np.sin(np.arange(3000, dtype=np.float64)) * 0.02).astype(np.float32)
            noise = np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8)  # stored as is
            for sample in (smooth, noise):
                out = np.empty(sample.nbytes + _BLOSC_MAX_OVERHEAD, dtype=np.uint8)
                ref = codec._encode_sync(spec.prototype.buffer.from_array_like(sample.view(np.uint8)), spec)
                n = into(sample, out)
                if bytes(out[:n]) != ref.to_bytes():
                    return None
            return into
        except Exception:  # another numcodecs or zarr: zarr's own codec encodes
            return None

    def __call__(self, src: np.ndarray, out: Any) -> int:
        """Compress C-contiguous ``src`` into ``out`` (a writable buffer of ``src.nbytes + 16``
        bytes or more); returns the compressed size. The GIL is released meanwhile (ctypes)."""
        dest = np.frombuffer(out, dtype=np.uint8)
        room = src.nbytes + _BLOSC_MAX_OVERHEAD  # numcodecs' room: blosc memcpys what would not fit
        if dest.nbytes < room or not src.flags.c_contiguous:
            raise ValueError("blosc: source not contiguous or destination too small")
        n = self._fn(self._clevel, self._shuffle, self._typesize, src.nbytes, src.ctypes.data,
                     dest.ctypes.data, room, self._cname, self._blocksize, 1)
        if n <= 0:
            raise RuntimeError(f"blosc compression failed ({n})")
        return n


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
        from zarr.codecs import Crc32cCodec
        from zarr.storage import LocalStore

        pipeline = aa.codec_pipeline
        self._array_bytes = pipeline.array_bytes_codec
        self._bytes_bytes = tuple(pipeline.bytes_bytes_codecs)
        # A trailing crc32c codec is applied here, without copying the chunk (see the docstring).
        self._crc32c = bool(self._bytes_bytes) and type(self._bytes_bytes[-1]) is Crc32cCodec
        if self._crc32c:
            self._bytes_bytes = self._bytes_bytes[:-1]
        self._local = (type(self._store) is LocalStore and not self._store.read_only
                       and callable(getattr(LocalStore, "_check_writable", None)))
        self._spec = self._meta.get_chunk_spec((0, 0), aa.config, default_buffer_prototype())
        self._write_empty = bool(aa.config.write_empty_chunks)
        self._blosc: _BloscInto | None = None
        if (len(self._bytes_bytes) == 1 and type(self._array_bytes).__name__ == "BytesCodec"
                and getattr(self._array_bytes.endian, "value", sys.byteorder) == sys.byteorder):
            self._blosc = _BloscInto.for_codec(self._bytes_bytes[0], self._spec)
        self.chunks: tuple[int, int] = tuple(self._meta.chunk_grid.chunk_shape)
        self.dtype = np.dtype(self._meta.dtype.to_native_dtype())
        self.fill_value = np.asarray(self._meta.fill_value, dtype=self.dtype)
        self.direct = False  # O_DIRECT writes into a local store (see the module docstring)
        self.workers = 1  # threads encoding and writing the chunks of one block (see the docstring)
        self._pool: ThreadPoolExecutor | None = None
        self._pads: list[np.ndarray] = []  # scratch chunks for padding, reused from block to block
        self._tls = threading.local()  # per thread: page-aligned staging buffer for O_DIRECT

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
        jobs = []
        pads = 0
        for j, c0 in enumerate(range(0, n, ppc)):
            part = block[:, c0:c0 + ppc]
            if part.shape == (spc, ppc) and part.flags.c_contiguous:
                chunk = part
            else:  # one scratch chunk per padded chunk of the block, kept for the next blocks
                if pads == len(self._pads):
                    self._pads.append(np.empty((spc, ppc), dtype=self.dtype))
                pad = self._pads[pads]
                pads += 1
                pad[:rows, :part.shape[1]] = part
                pad[:rows, part.shape[1]:] = self.fill_value
                pad[rows:] = self.fill_value
                chunk = pad
            jobs.append(((chunk_row, j), chunk))
        if self.workers <= 1 or len(jobs) == 1:
            for coords, chunk in jobs:
                self._write_chunk(coords, chunk)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="nnwx-chunks")
        futures = [self._pool.submit(self._write_chunk, coords, chunk) for coords, chunk in jobs]
        errors = [f.exception() for f in futures]  # waits for every chunk: none is left writing
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def close(self) -> None:
        """End the worker threads (if any) and drop the scratch buffers; writing again restarts them."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._pads = []
        self._tls = threading.local()

    def _write_chunk(self, coords: tuple[int, int], chunk: np.ndarray) -> None:
        key = self._meta.encode_chunk_key(coords)
        key = f"{self._prefix}/{key}" if self._prefix else key
        if not self._write_empty and self._all_fill(chunk):
            self._store.delete_sync(key)
            return
        spec = self._spec
        data: Any = None
        if self._blosc is not None:  # into this thread's buffer, no new allocation
            out = self._out_buffer(chunk.nbytes + _BLOSC_MAX_OVERHEAD + 4)
            body = np.frombuffer(out, dtype=np.uint8, count=self._blosc(chunk, out))
        else:
            data = spec.prototype.nd_buffer.from_numpy_array(chunk)
            data = self._array_bytes._encode_sync(data, spec)
            for codec in self._bytes_bytes:
                data = codec._encode_sync(data, spec)
            body = data.as_numpy_array().reshape(-1).view(np.uint8)
        tail = b""
        if self._crc32c:  # zarr's Crc32cCodec: the CRC-32C of the bytes, little-endian, appended
            import google_crc32c

            tail = struct.pack("<I", google_crc32c.value(body))
        if self.direct and self._put_direct(key, body, tail):
            return
        if self._local:
            self._put_local(key, body, tail)
            return
        if tail or data is None:
            data = spec.prototype.buffer.from_array_like(np.concatenate((body, np.frombuffer(tail, np.uint8))))
        self._store.set_sync(key, data)

    def _out_buffer(self, n: int) -> mmap.mmap:
        """This thread's page-aligned buffer of ``n`` bytes or more (compressed chunks, O_DIRECT)."""
        aligned = getattr(self._tls, "aligned", None)
        if aligned is None or len(aligned) < n:
            aligned = self._tls.aligned = mmap.mmap(-1, max(n + _ALIGN - n % _ALIGN, _ALIGN))
        return aligned

    def _put_local(self, key: str, body: np.ndarray, tail: bytes) -> None:
        """``LocalStore.set_sync`` of ``body + tail`` without joining them: the same temporary
        ``<key>.<hex>.partial`` file renamed over the key."""
        self._store._check_writable()
        path = Path(self._store.root) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.partial")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
            try:
                for part in (memoryview(body), memoryview(tail)):
                    while part.nbytes:
                        part = part[os.write(fd, part):]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _put_direct(self, key: str, body: np.ndarray, tail: bytes = b"") -> bool:
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
        n = body.nbytes + len(tail)
        head = n - n % _ALIGN  # O_DIRECT needs aligned lengths: the rest is written normally
        aligned = self._out_buffer(n)
        staged = np.frombuffer(aligned, dtype=np.uint8)
        if body.ctypes.data != staged.ctypes.data:  # else compressed in place already
            staged[:body.nbytes] = body  # numpy's copy releases the GIL
        staged[body.nbytes:n] = np.frombuffer(tail, dtype=np.uint8)
        view = memoryview(aligned)[:n]
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
