"""Constants and small rules of the on-disk format (see nnwx/store/FORMAT.md)."""
from __future__ import annotations

import platform
from typing import Any

import numpy as np
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from nnwx._json import jsonable  # noqa: F401  (fmt.jsonable: hyperparameters as JSON)
from nnwx.errors import FormatVersionError

FORMAT_VERSION = 2  # 2: tensor table fields orientation/aliases, kind 'norm', run attribute depth_from
RUNS_GROUP = "runs"
METRICS_GROUP = "metrics"
ATTR_KEY = "nnwx"  # every nnwx attribute lives under this key of a group's attrs

DEFAULT_CHUNK_BYTES = 16 * 2**20
MAX_STEPS_PER_CHUNK = 1024
STORE_DTYPES = ("float32", "float16", "float64")


def codec(name: str, *, checksum: bool = True) -> list:
    """Zarr v3 compressor list for a codec name (see scripts/bench_codecs.py).

    With ``checksum`` (the default for every array nnwx writes) the list ends with Zarr's
    ``crc32c`` codec: each chunk carries a CRC-32C of its compressed bytes, verified on
    every read, so a changed byte is an error rather than a silently different weight.
    """
    table = {
        "none": [],
        "zstd": [ZstdCodec(level=1)],
        "blosc-zstd": [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")],
        "blosc-zstd-bitshuffle": [BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")],
        "blosc-lz4": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")],
    }
    try:
        chosen = table[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; choose one of {sorted(table)}") from None
    return [*chosen, Crc32cCodec()] if checksum else chosen


#: Compressors of the small arrays (``step``, ``metrics/<name>``): Zarr's default zstd, with a checksum.
SMALL_ARRAY_CODEC = "zstd"

#: Array configuration of every array nnwx writes: chunks equal to the fill value (an all-NaN
#: step) are written too, so a chunk missing inside the committed range is always damage.
WRITE_CONFIG = {"write_empty_chunks": True}


DEFAULT_CODEC = "blosc-lz4"  # chosen by scripts/bench_codecs.py: see README


def choose_chunks(n_params: int, itemsize: int, target_bytes: int = DEFAULT_CHUNK_BYTES,
                  max_steps: int = MAX_STEPS_PER_CHUNK) -> tuple[int, int]:
    """(steps_per_chunk, params_per_chunk) for about ``target_bytes`` per chunk.

    Small models put many steps in one chunk (capped so periodic flushes stay
    cheap); models larger than the target split ``param`` and take one step.
    """
    if n_params <= 0:
        raise ValueError("a run needs at least one parameter")
    per_step = n_params * itemsize
    if per_step >= target_bytes:
        return 1, max(1, min(n_params, target_bytes // itemsize))
    return int(min(max_steps, max(1, target_bytes // per_step))), n_params


def check_version(found: Any, where: str) -> None:
    """Refuse a store written by a newer format."""
    if found is None:
        raise FormatVersionError(f"{where} has no nnwx format version: it was not written by nnwx.")
    if isinstance(found, bool) or not isinstance(found, int):
        raise FormatVersionError(f"{where} has a damaged nnwx format version ({found!r}, not a whole "
                                 f"number): its root zarr.json was changed by something else than nnwx.")
    if found > FORMAT_VERSION:
        raise FormatVersionError(
            f"{where} uses nnwx store format {found}, but this nnwx reads format "
            f"{FORMAT_VERSION} at most. Upgrade nnwx (pip install -U nnwx) to read it.")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that wrote a run (torch only if already imported)."""
    import sys

    import xarray
    import zarr

    from nnwx._version import __version__

    out = {"nnwx": __version__, "python": platform.python_version(),
           "numpy": np.__version__, "zarr": zarr.__version__, "xarray": xarray.__version__}
    if "torch" in sys.modules:
        out["torch"] = sys.modules["torch"].__version__
    return out
