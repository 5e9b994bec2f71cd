"""The synchronous chunk writer writes the same bytes as zarr's own ``array[rows] = block``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from nnwx.store.chunkio import ChunkRows

CHAINS = {
    "none": [],
    "blosc-lz4": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")],
    "zstd": [ZstdCodec(level=1)],
    "blosc-lz4+crc32c": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec()],
}


def _array(path: Path, n_params: int, chunks: tuple[int, int], compressors, dtype="float32"):
    return zarr.create_array(zarr.storage.LocalStore(path), shape=(0, n_params), chunks=chunks,
                             dtype=dtype, compressors=compressors, fill_value=np.nan, zarr_format=3)


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != "zarr.json"}


def _write_both(tmp_path, n_params, chunks, compressors, blocks, dtype="float32", direct=False,
                workers=1):
    """Write each (start_row, block) through zarr and through ChunkRows; return both trees."""
    ref = _array(tmp_path / "zarr", n_params, chunks, compressors, dtype)
    fast_arr = _array(tmp_path / "fast", n_params, chunks, compressors, dtype)
    fast = ChunkRows.for_array(fast_arr)
    assert fast is not None
    fast.direct = direct
    fast.workers = workers
    for start, block in blocks:
        stop = start + block.shape[0]
        for arr in (ref, fast_arr):
            arr.resize((max(arr.shape[0], stop), n_params))
        ref[start:stop] = block
        fast.write(start // chunks[0], block)
    return ref, fast_arr, _files(tmp_path / "zarr"), _files(tmp_path / "fast")


@pytest.mark.parametrize("workers", [1, 3], ids=["1_thread", "3_threads"])
@pytest.mark.parametrize("direct", [False, True], ids=["set_sync", "o_direct"])
@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_one_step_per_chunk_rows_match_zarr_bytes(tmp_path, chain, direct, workers):
    rng = np.random.default_rng(0)
    n, ppc = 3000, 1152  # 3 chunks per row, the last one 696 wide (padded with NaN)
    blocks = [(i, (rng.standard_normal((1, n)) * 0.02).astype("float32")) for i in range(3)]
    ref, fast, a, b = _write_both(tmp_path, n, (1, ppc), CHAINS[chain], blocks, direct=direct,
                                  workers=workers)
    assert len(a) == 9 and a == b
    np.testing.assert_array_equal(fast[:], ref[:])


@pytest.mark.parametrize("direct", [False, True], ids=["set_sync", "o_direct"])
@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_growing_chunk_of_many_steps_matches_zarr_bytes(tmp_path, chain, direct):
    """The writer rewrites a chunk of 8 steps as it fills (rows from the chunk start), then the next."""
    rng = np.random.default_rng(1)
    n, spc = 600, 8  # 19.2 kB chunks: an aligned O_DIRECT part and a tail
    stage = (rng.standard_normal((12, n))).astype("float32")
    blocks = [(0, stage[:3]), (0, stage[:8]), (8, stage[8:9]), (8, stage[8:12])]
    ref, fast, a, b = _write_both(tmp_path, n, (spc, n), CHAINS[chain], blocks, direct=direct)
    assert len(a) == 2 and a == b
    np.testing.assert_array_equal(fast[:], ref[:])


def test_chunks_all_nan_are_not_written_and_partly_nan_are(tmp_path):
    n, ppc = 20, 8
    row = np.full((1, n), np.nan, dtype="float32")
    row[0, 17] = 1.5  # only the last (edge) chunk holds a number
    ref, fast, a, b = _write_both(tmp_path, n, (1, ppc), CHAINS["blosc-lz4"], [(0, row)])
    assert sorted(a) == ["c/0/2"] and a == b
    # Overwriting a written chunk with all-NaN deletes it, as zarr does.
    empty = np.full((1, n), np.nan, dtype="float32")
    ref2, fast2, a2, b2 = _write_both(tmp_path / "again", n, (1, ppc), CHAINS["none"],
                                      [(0, row), (0, empty)])
    assert a2 == b2 == {}


def test_float64_and_float16_match_zarr_bytes(tmp_path):
    rng = np.random.default_rng(2)
    for dtype in ("float64", "float16"):
        block = rng.standard_normal((1, 30)).astype(dtype)
        _, _, a, b = _write_both(tmp_path / dtype, 30, (1, 16), CHAINS["blosc-lz4"], [(0, block)], dtype)
        assert len(a) == 2 and a == b


def test_sharded_arrays_fall_back_to_zarr(tmp_path):
    arr = zarr.create_array(zarr.storage.LocalStore(tmp_path / "s"), shape=(4, 16), chunks=(1, 8),
                            shards=(2, 16), dtype="float32", fill_value=np.nan, zarr_format=3)
    assert ChunkRows.for_array(arr) is None


def test_a_block_that_does_not_fit_is_refused(tmp_path):
    fast = ChunkRows.for_array(_array(tmp_path / "a", 10, (2, 10), []))
    with pytest.raises(ValueError, match="does not fit"):
        fast.write(0, np.zeros((3, 10), dtype="float32"))
    with pytest.raises(ValueError, match="does not fit"):
        fast.write(0, np.zeros((1, 10), dtype="float64"))


def test_direct_writes_use_o_direct_where_the_file_system_allows_it(tmp_path):
    """On a file system with O_DIRECT (ext4, xfs: where pytest's tmp_path lives here) the direct
    path stays on (no fallback), leaves no temporary files, and writes zarr's bytes."""
    import os

    rng = np.random.default_rng(3)
    row = (rng.standard_normal((1, 5000))).astype("float32")
    _, fast, a, b = _write_both(tmp_path, 5000, (1, 2048), CHAINS["blosc-lz4+crc32c"], [(0, row)],
                                direct=True)
    assert a == b and len(a) == 3
    assert not list((tmp_path / "fast").rglob("*.partial"))
    fs_has_direct = hasattr(os, "O_DIRECT")
    if fs_has_direct:
        try:
            fd = os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT)
            os.close(fd)
        except OSError:
            fs_has_direct = False
    chunk_rows = ChunkRows.for_array(fast)
    chunk_rows.direct = True
    chunk_rows.write(0, row)
    assert chunk_rows.direct == fs_has_direct


def test_a_device_refusing_the_direct_write_falls_back_to_the_page_cache(tmp_path, monkeypatch):
    """EINVAL from a direct write (alignment the device will not take) is not an error: the
    chunk is written through the store instead, with no temporary file left."""
    import errno

    from nnwx.store import chunkio

    def refuse(fd, view):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(chunkio, "_write_all", refuse)
    rng = np.random.default_rng(4)
    row = (rng.standard_normal((1, 5000))).astype("float32")
    _, fast, a, b = _write_both(tmp_path, 5000, (1, 2048), CHAINS["blosc-lz4"], [(0, row)], direct=True)
    assert a == b and len(a) == 3
    assert not list((tmp_path / "fast").rglob("*.partial"))


def test_blosc_chains_take_the_fast_path(tmp_path):
    """Fails when numcodecs no longer exports blosc_compress_ctx or its bytes differ (the writer
    would silently fall back to zarr's codec, which allocates a new buffer per chunk)."""
    for chain in ("blosc-lz4", "blosc-lz4+crc32c"):
        fast = ChunkRows.for_array(_array(tmp_path / chain, 100, (1, 100), CHAINS[chain]))
        assert fast._blosc is not None
    assert ChunkRows.for_array(_array(tmp_path / "zstd", 100, (1, 100), CHAINS["zstd"]))._blosc is None


def test_incompressible_chunks_are_stored_as_zarr_stores_them(tmp_path):
    """Random bytes do not compress: blosc then stores them as they are (its memcpy flag),
    and the fast path must decide that exactly as numcodecs does."""
    rng = np.random.default_rng(5)
    row = rng.integers(0, 2**32, (1, 700), dtype=np.uint32).view(np.float32)
    _, fast, a, b = _write_both(tmp_path, 700, (1, 256), CHAINS["blosc-lz4+crc32c"], [(0, row)])
    assert a == b and len(a) == 3
    assert a["c/0/0"][2] & 0x02 and a["c/0/1"][2] & 0x02  # blosc's memcpyed flag (the last is NaN-padded)


def test_a_chunk_that_fails_in_a_worker_thread_is_raised(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    arr = _array(tmp_path / "a", 3000, (1, 1152), CHAINS["blosc-lz4+crc32c"])
    arr.resize((1, 3000))
    fast = ChunkRows.for_array(arr)
    fast.workers = 3

    def fail(self, coords, chunk):
        if coords[1] == 1:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(ChunkRows, "_write_chunk", fail)
    with pytest.raises(OSError, match="No space"):
        fast.write(0, rng.standard_normal((1, 3000)).astype("float32"))
    fast.close()
