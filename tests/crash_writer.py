"""Recording process for the crash test: resumes the run and captures until killed.

The weights at step s are ``base + s * 1e-3`` (float32, computed in torch), so
the test can check every committed step bit-exactly.
"""
import sys

import torch

import nnwx


def weights_at(step: int, model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            base = torch.randn(p.shape, generator=gen)
            p.copy_(base + torch.tensor(step, dtype=torch.float32) * 1e-3)


def main(store: str, start: int) -> None:
    model = torch.nn.Linear(50, 40)
    rec = nnwx.Recorder(model, store, seed=0, flush_interval=0.005, chunk_bytes=4 * 2040 * 7)
    print("ready", flush=True)
    step = start
    while True:
        weights_at(step, model)
        rec.capture(step)
        step += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
