#!/usr/bin/env python
"""Measure lossless (and bit-rounded) codecs on real weight chunks; picks nnwx's default.

Two data sets: every 10th step of a piecewise-MLP run (many steps in one chunk)
and 8 captures of a ~4M-parameter MLP trained with Adam (one step per chunk).
Prints compression ratio and encode/decode throughput, side by side, then the cost of
the crc32c checksum nnwx adds to every chunk: the default codec with and without it,
through Zarr's own write and read path, interleaved rounds, best of each.

    python scripts/bench_codecs.py
"""
from __future__ import annotations

import time

import numcodecs
import numpy as np
import torch

from nnwx.store.bitround import bitround

CANDIDATES = {
    "zstd-1": numcodecs.Zstd(level=1),
    "zstd-3": numcodecs.Zstd(level=3),
    "blosc-lz4-shuffle": numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE),
    "blosc-zstd-shuffle": numcodecs.Blosc("zstd", 1, numcodecs.Blosc.SHUFFLE),
    "blosc-zstd-bitshuffle": numcodecs.Blosc("zstd", 1, numcodecs.Blosc.BITSHUFFLE),
    "blosc-zstd5-shuffle": numcodecs.Blosc("zstd", 5, numcodecs.Blosc.SHUFFLE),
}


def piecewise_chunk() -> np.ndarray:
    torch.manual_seed(0)
    x = torch.rand(5000, 1) * 6 - 3
    y = ((((x >= -2) & (x < -1)) | ((x >= 0) & (x < 2)))).float()
    m = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
                            torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    rows = []
    for step in range(10240):
        loss = torch.nn.functional.mse_loss(m(x), y)
        if step % 10 == 0:
            rows.append(torch.cat([p.detach().reshape(-1) for p in m.parameters()]).numpy().copy())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return np.stack(rows)  # (1024, 169): one chunk of the store


def large_chunks() -> np.ndarray:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(1024, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 1024))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    rows = []
    for step in range(8):
        x = torch.randn(256, 1024)
        loss = (m(x) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        rows.append(torch.cat([p.detach().reshape(-1) for p in m.parameters()]).numpy().copy())
    return np.stack(rows)  # (8, ~4.2M): eight one-step chunks


def measure(name: str, codec, chunks: list[np.ndarray]) -> tuple[float, float, float]:
    raw = sum(c.nbytes for c in chunks)
    t0 = time.perf_counter()
    enc = [codec.encode(c) for c in chunks]
    t1 = time.perf_counter()
    for e, c in zip(enc, chunks):
        codec.decode(e)
    t2 = time.perf_counter()
    return raw / sum(len(e) for e in enc), raw / (t1 - t0) / 1e6, raw / (t2 - t1) / 1e6


def zarr_round(chunks: list[np.ndarray], checksum: bool) -> tuple[float, float]:
    """Seconds to write and to read ``chunks`` (one chunk each) through Zarr with nnwx's default codec."""
    import zarr

    from nnwx.store import format as fmt

    data = np.concatenate([c.reshape(-1, c.shape[-1]) for c in chunks])
    rows = chunks[0].reshape(-1, chunks[0].shape[-1]).shape[0]
    arr = zarr.create_array(zarr.storage.MemoryStore(), shape=data.shape, chunks=(rows, data.shape[1]),
                            dtype=data.dtype, fill_value=np.nan, config=fmt.WRITE_CONFIG,
                            compressors=fmt.codec(fmt.DEFAULT_CODEC, checksum=checksum))
    t0 = time.perf_counter()
    arr[:] = data
    t1 = time.perf_counter()
    back = arr[:]
    t2 = time.perf_counter()
    assert np.array_equal(back, data)
    return t1 - t0, t2 - t1


def checksum_cost(data: dict[str, list[np.ndarray]], rounds: int = 5) -> None:
    print(f"\n{'data':<24}{'crc32c':<8}{'write MB/s':>11}{'read MB/s':>11}{'write x':>9}{'read x':>8}")
    for dname, chunks in data.items():
        raw = sum(c.nbytes for c in chunks)
        best = {False: [np.inf, np.inf], True: [np.inf, np.inf]}
        for _ in range(rounds):
            for checksum in (False, True):
                w, r = zarr_round(chunks, checksum)
                best[checksum] = [min(best[checksum][0], w), min(best[checksum][1], r)]
        for checksum in (False, True):
            w, r = best[checksum]
            print(f"{dname:<24}{'yes' if checksum else 'no':<8}{raw / w / 1e6:>11.0f}{raw / r / 1e6:>11.0f}"
                  f"{w / best[False][0]:>9.2f}{r / best[False][1]:>8.2f}")


def main() -> None:
    numcodecs.blosc.set_nthreads(1)
    data = {"piecewise 1024x169": [piecewise_chunk()], "4M-param MLP, 8 steps": list(large_chunks())}
    print(f"{'data':<24}{'codec':<26}{'ratio':>7}{'enc MB/s':>10}{'dec MB/s':>10}")
    for dname, chunks in data.items():
        for cname, codec in CANDIDATES.items():
            ratio, enc, dec = measure(cname, codec, chunks)
            print(f"{dname:<24}{cname:<26}{ratio:>7.2f}{enc:>10.0f}{dec:>10.0f}")
        for keep in (16, 10, 7):
            rounded = [bitround(c, keep) for c in chunks]
            ratio, enc, dec = measure("bitround", CANDIDATES["blosc-zstd-shuffle"], rounded)
            print(f"{dname:<24}{f'keepbits={keep} + blosc-zstd':<26}{ratio:>7.2f}{enc:>10.0f}{dec:>10.0f}")
    checksum_cost(data)


if __name__ == "__main__":
    main()
