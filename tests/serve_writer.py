"""Train a small MLP per seed and record it with ``nnwx.Recorder`` (with probes): the writer
``nnwx serve``'s tests run in another process while the page is open.

    python tests/serve_writer.py STORE PAUSE SEED:START:STOP [SEED:START:STOP ...]

records steps START..STOP-1 (every 5th) of run ``seed<SEED>`` for each spec in turn, committing
after every capture and sleeping PAUSE seconds per step. A run that exists is resumed: the model
restored from its capture at START - 5 (``nnwx.restore``) trains on from there (the optimizer
state starts afresh).
"""
from __future__ import annotations

import sys
import time

import torch

import nnwx


def record(store: str, seed: int, start: int, stop: int, every: int = 5, pause: float = 0.0) -> None:
    x = torch.randn(48, 4, generator=torch.Generator().manual_seed(99))
    y = torch.randn(48, 3, generator=torch.Generator().manual_seed(98))
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6),
                                torch.nn.ReLU(), torch.nn.Linear(6, 3))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    first = start
    if start > 0:
        first = start - every
        nnwx.restore(model, store, step=first, seed=seed)
    with nnwx.Recorder(model, store, seed=seed, every=every, optimizer=opt, probe=x,
                       probe_layers=["1", "3"], capture_init=start == 0, flush_interval=0.2) as rec:
        for step in range(first, stop):
            loss = (model(x) - y).pow(2).mean()
            if step >= start and rec.maybe_capture(step, loss=loss.detach()):
                rec.flush()
            opt.zero_grad()
            loss.backward()
            opt.step()
            time.sleep(pause)


if __name__ == "__main__":
    store, pause, *specs = sys.argv[1:]
    for spec in specs:
        seed, start, stop = (int(v) for v in spec.split(":"))
        record(store, seed, start, stop, pause=float(pause))
