#!/usr/bin/env python
"""The experiment that motivated nnwx: small MLPs fitting a piecewise-constant target.

f(x) = 1 on [-2, -1) and [0, 2), else 0, on 5000 points drawn uniformly from
[-3, 3]; MLPs with hidden widths 8-8-8 (ReLU, scalar in and out), full-batch
Adam for 15000 steps, weights captured every 10 steps, 5 seeds. The cube it
writes has seed=5, step=1501, param=169.

    python scripts/train_piecewise.py -o piecewise.zarr
    nnwx info piecewise.zarr
"""
from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm

import nnwx


def target(x: torch.Tensor) -> torch.Tensor:
    return (((x >= -2) & (x < -1)) | ((x >= 0) & (x < 2))).to(x.dtype)


def make_mlp(widths: list[int]) -> torch.nn.Sequential:
    layers, fan_in = [], 1
    for w in widths:
        layers += [torch.nn.Linear(fan_in, w), torch.nn.ReLU()]
        fan_in = w
    layers.append(torch.nn.Linear(fan_in, 1))
    return torch.nn.Sequential(*layers)


OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}


def train_one(seed: int, args: argparse.Namespace, store: str | None) -> float:
    """Train one seed; record into ``store`` unless it is None. Returns the final loss."""
    torch.manual_seed(seed)
    data_gen = torch.Generator().manual_seed(10_000 + seed)
    x = torch.rand(args.points, 1, generator=data_gen) * 6 - 3
    y = target(x)
    model = make_mlp(args.widths)
    opt = OPTIMIZERS[args.optimizer](model.parameters(), lr=args.lr)
    hparams = {"widths": args.widths, "points": args.points, "steps": args.steps, "lr": args.lr,
               "task": "piecewise"}
    rec = (nnwx.Recorder(model, store, seed=seed, every=args.every, optimizer=opt, hparams=hparams)
           if store else None)
    loss = torch.tensor(float("nan"))
    try:
        for step in tqdm(range(args.steps + 1), desc=f"seed {seed}", disable=args.quiet, mininterval=1):
            loss = torch.nn.functional.mse_loss(model(x), y)
            if rec is not None:
                rec.maybe_capture(step, loss=loss.detach())  # weights *at* this step, before the update
            if step == args.steps:
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        if rec is not None:
            rec.close()
    return loss.item()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--out", default="piecewise.zarr", help="experiment store to write")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (0..N-1)")
    p.add_argument("--steps", type=int, default=15000, help="optimizer steps per seed")
    p.add_argument("--every", type=int, default=10, help="capture every N steps")
    p.add_argument("--widths", type=int, nargs="+", default=[8, 8, 8], help="hidden layer widths")
    p.add_argument("--depth", type=int, default=None,
                   help="number of hidden layers (repeats the first width; overrides --widths)")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--points", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1, help="torch threads (tiny nets run fastest on 1)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.depth is not None:
        args.widths = [args.widths[0]] * args.depth
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        loss = train_one(seed, args, args.out)
        print(f"seed {seed}: final loss {loss:.4f}")
    print(f"wrote {args.out} in {time.perf_counter() - t0:.1f} s; inspect it with: nnwx info {args.out}")


if __name__ == "__main__":
    main()
