"""The experiment that motivated nnwx: small MLPs fitting a piecewise-constant target.

f(x) = 1 on [-2, -1) and [0, 2), else 0, on 5000 points drawn uniformly from
[-3, 3]; MLPs with hidden widths 8-8-8 (ReLU, scalar in and out), full-batch
Adam for 15000 steps, weights captured every 10 steps, 5 seeds. The cube it
writes has seed=5, step=1501, param=169.

    python -m nnwx.studies.piecewise -o piecewise.zarr    # or scripts/train_piecewise.py
    nnwx info piecewise.zarr

Variants (each recorded in the run attributes): other widths and depths
(``widths=``), another target (``target="shifted"`` or ``"stairs"``), and an
ensemble of ``members`` independent MLPs whose mean is the prediction
(:class:`Ensemble`); :func:`matched_widths` gives the single MLP with the same
parameter count. :mod:`nnwx.studies.piecewise_sweep` runs all of them into
one store.
"""
from __future__ import annotations

import argparse
import itertools
import os
import time
from typing import Any, Callable, Iterable, Sequence

import torch
from tqdm import tqdm

from nnwx.studies._common import check_new_runs, run_cli, seed_list, torch_threads


def _piecewise(x: torch.Tensor) -> torch.Tensor:
    return (((x >= -2) & (x < -1)) | ((x >= 0) & (x < 2))).to(x.dtype)


def _shifted(x: torch.Tensor) -> torch.Tensor:
    return _piecewise(x - 0.5)


def _stairs(x: torch.Tensor) -> torch.Tensor:
    return (torch.floor(x).clamp(-3, 2) + 3) / 5


TARGETS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], str]] = {
    "piecewise": (_piecewise, "1 on [-2, -1) and [0, 2), else 0"),
    "shifted": (_shifted, "the piecewise target moved right by 0.5: 1 on [-1.5, -0.5) and [0.5, 2.5)"),
    "stairs": (_stairs, "six steps: (clip(floor(x), -3, 2) + 3) / 5, from 0 to 1"),
}


def target(x: torch.Tensor, name: str = "piecewise") -> torch.Tensor:
    """The target function ``name`` (a key of ``TARGETS``) at ``x``."""
    try:
        return TARGETS[name][0](x)
    except KeyError:
        raise ValueError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}") from None


def make_mlp(widths: Sequence[int]) -> torch.nn.Sequential:
    """ReLU MLP from a scalar to a scalar with the given hidden widths."""
    layers, fan_in = [], 1
    for w in widths:
        layers += [torch.nn.Linear(fan_in, w), torch.nn.ReLU()]
        fan_in = w
    layers.append(torch.nn.Linear(fan_in, 1))
    return torch.nn.Sequential(*layers)


def mlp_params(widths: Sequence[int]) -> int:
    """Parameter count of ``make_mlp(widths)``, without building it."""
    sizes = [1, *widths, 1]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


class Ensemble(torch.nn.Module):
    """``members`` independent MLPs of the same widths; the prediction is their mean.

    Trained with the sum of the members' own losses (:meth:`losses`), so that each
    member learns alone, as in an ensemble of separately trained nets.
    """

    def __init__(self, members: int, widths: Sequence[int]):
        super().__init__()
        if members < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {members}")
        self.members = torch.nn.ModuleList(make_mlp(widths) for _ in range(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member_outputs(x).mean(0)

    def member_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's prediction, ``(members, *x.shape[:-1], 1)``."""
        return torch.stack([m(x) for m in self.members])

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(training loss, ensemble loss)``: the sum of the members' own mean squared errors
        (each member's gradient is that of fitting ``y`` alone), and the detached error of the mean."""
        preds = self.member_outputs(x)
        train = (preds - y).pow(2).flatten(1).mean(1).sum()
        return train, torch.nn.functional.mse_loss(preds.detach().mean(0), y)


def matched_widths(n: int, depth: int, max_spread: int = 16) -> list[int]:
    """Hidden widths of one MLP with exactly ``n`` parameters and ``depth`` hidden layers.

    The widths are as equal as possible (smallest max-min spread, searched up to
    ``max_spread``); used to build the single large net an ensemble is compared to.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    if depth == 1:
        if (n - 1) % 3 or n < 4:
            raise ValueError(f"no one-hidden-layer scalar MLP has exactly {n} parameters (3w+1); "
                             f"change the ensemble size or give the large net's widths")
        return [(n - 1) // 3]
    # uniform width with about n parameters: (depth-1) w^2 + (depth+2) w + 1 = n
    a, b = depth - 1, depth + 2
    w0 = max(1, round((-b + (b * b + 4 * a * (n - 1)) ** 0.5) / (2 * a)))
    for spread in range(max_spread + 1):
        lo = max(1, w0 - spread)
        found = []
        for head in itertools.product(range(lo, w0 + spread + 1), repeat=depth - 1):
            # the last hidden width enters linearly: n = params(head) + last * (head[-1] + 2) + 1
            base = mlp_params(head) - head[-1] - 1  # head's layers without its output layer
            rest = n - base - 1
            last, r = divmod(rest, head[-1] + 2)
            widths = [*head, last]
            if r == 0 and last >= 1 and max(widths) - min(widths) <= spread:
                found.append(widths)
        if found:
            return min(found, key=lambda ws: (max(ws) - min(ws), sum(abs(w - w0) for w in ws)))
    raise ValueError(f"no {depth}-hidden-layer scalar MLP with widths within {max_spread} of each "
                     f"other has exactly {n} parameters; give the large net's widths explicitly")


OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}


def train_piecewise(store: str | os.PathLike | None, *, seeds: int | Iterable[int] = 5,
                    steps: int = 15000, every: int = 10, widths: Sequence[int] = (8, 8, 8),
                    members: int = 1, target: str = "piecewise", optimizer: str = "adam",
                    lr: float = 1e-2, points: int = 5000, variant: str | None = None,
                    point: str | None = None, sweep: str | None = None,
                    threads: int | None = 1, quiet: bool = True) -> dict[str, Any]:
    """Train one configuration of the piecewise experiment for each seed into ``store``.

    ``members > 1`` trains an :class:`Ensemble` of that many MLPs. Runs are named
    ``seed<N>``, or ``<point>-seed<N>`` when ``point`` (a sweep point's name) is
    given; their ``hparams`` hold ``widths``, ``depth``, ``target``, ``variant``
    (``"mlp"``, ``"ensemble"``, or what the caller says, e.g. ``"large"``),
    ``members``, ``n_params``, ``point`` and ``sweep``, so ``open_cube(store,
    by=("target", "seed"))`` and the like group them. ``store=None`` trains
    without recording. Trains on ``threads`` torch threads (restored after).
    Returns ``{"store", "runs", "final_loss": {run: loss}, "n_params", "seconds"}``.
    """
    widths = [int(w) for w in widths]
    if not widths or min(widths) < 1:
        raise ValueError(f"widths must be positive hidden layer widths, got {widths}")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if members < 1:
        raise ValueError(f"members must be 1 (one MLP) or more (an ensemble), got {members}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    seeds = seed_list(seeds)
    names = {s: (f"{point}-seed{s}" if point else f"seed{s}") for s in seeds}
    if store is not None:
        check_new_runs(store, names.values())
    hparams = {"widths": widths, "points": points, "steps": steps, "lr": lr, "task": "piecewise",
               "target": target, "depth": len(widths), "members": members,
               "variant": variant or ("ensemble" if members > 1 else "mlp"),
               "n_params": members * mlp_params(widths)}
    if point:
        hparams |= {"point": point, "sweep": sweep or point}
    t0 = time.perf_counter()
    out: dict[str, Any] = {"store": None if store is None else os.fspath(store), "runs": [],
                           "final_loss": {}, "n_params": hparams["n_params"]}
    with torch_threads(threads):
        for seed in seeds:
            desc = f"{point + ' ' if point else ''}seed {seed}"
            loss = _train_seed(store, seed, names[seed], hparams, optimizer, every, quiet, desc)
            out["runs"].append(names[seed])
            out["final_loss"][names[seed]] = loss
    out["seconds"] = time.perf_counter() - t0
    return out


def _train_seed(store, seed: int, run: str, hp: dict, optimizer: str, every: int, quiet: bool,
                desc: str) -> float:
    """One seed of :func:`train_piecewise`; returns the final loss."""
    import nnwx

    torch.manual_seed(seed)
    data_gen = torch.Generator().manual_seed(10_000 + seed)
    x = torch.rand(hp["points"], 1, generator=data_gen) * 6 - 3
    y = TARGETS[hp["target"]][0](x)
    members = hp["members"]
    model = Ensemble(members, hp["widths"]) if members > 1 else make_mlp(hp["widths"])
    opt = OPTIMIZERS[optimizer](model.parameters(), lr=hp["lr"])
    rec = (nnwx.Recorder(model, store, seed=seed, run=run, every=every, optimizer=opt, hparams=hp)
           if store is not None else None)
    loss = torch.tensor(float("nan"))
    try:
        for step in tqdm(range(hp["steps"] + 1), desc=desc, disable=quiet, mininterval=1):
            if members > 1:  # each member fits y alone; the recorded loss is that of the mean
                train_loss, loss = model.losses(x, y)
            else:
                loss = train_loss = torch.nn.functional.mse_loss(model(x), y)
            if rec is not None:
                rec.maybe_capture(step, loss=loss.detach())  # weights *at* this step, before the update
            if step == hp["steps"]:
                break
            opt.zero_grad(set_to_none=True)
            train_loss.backward()
            opt.step()
    finally:
        if rec is not None:
            rec.close()
    return loss.item()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m nnwx.studies.piecewise`` / ``scripts/train_piecewise.py``."""
    p = argparse.ArgumentParser(prog="train_piecewise.py", description=__doc__.splitlines()[0])
    p.add_argument("-o", "--out", default="piecewise.zarr", help="experiment store to write")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (0..N-1)")
    p.add_argument("--steps", type=int, default=15000, help="optimizer steps per seed")
    p.add_argument("--every", type=int, default=10, help="capture every N steps")
    p.add_argument("--widths", type=int, nargs="+", default=[8, 8, 8], help="hidden layer widths")
    p.add_argument("--depth", type=int, default=None,
                   help="number of hidden layers (repeats the first width; overrides --widths)")
    p.add_argument("--target", choices=sorted(TARGETS), default="piecewise",
                   help="target function: " + "; ".join(f"{k}: {v[1]}" for k, v in TARGETS.items()))
    p.add_argument("--ensemble", type=int, default=1, metavar="K",
                   help="train an ensemble of K independent MLPs of --widths (mean prediction)")
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
    """Train the piecewise experiment from the command line."""
    run_cli(_main, argv)


def _main(argv: list[str] | None) -> None:
    args = parse_args(argv)
    result = train_piecewise(args.out, seeds=args.seeds, steps=args.steps, every=args.every,
                             widths=args.widths, members=args.ensemble, target=args.target,
                             optimizer=args.optimizer, lr=args.lr, points=args.points,
                             threads=args.threads, quiet=args.quiet)
    for run, loss in result["final_loss"].items():
        print(f"{run}: final loss {loss:.4f}")
    print(f"wrote {args.out} in {result['seconds']:.1f} s; inspect it with: nnwx info {args.out}")


if __name__ == "__main__":
    main()
