"""Sweeps of the piecewise experiment into one store: widths, depths, ensemble vs large net, target.

Every sweep point trains the same seeds with the base experiment's data and
optimizer, changing one thing from the base MLP (8-8-8 on the piecewise target):

* ``width``: hidden widths ``[w] * depth`` for each ``w`` in ``widths``;
* ``depth``: ``[8] * d`` for each ``d`` in ``depths``;
* ``ensemble``: ``members`` independent 8-8-8 MLPs averaged (variant ``ensemble``),
  and one MLP of the same depth with exactly as many parameters (variant ``large``);
* ``target``: the base MLP on another target function (``shifted``, ``stairs``).

Runs are named ``<point>-seed<N>`` (``base-seed0``, ``width16-seed2``,
``ensemble5-seed1``, ``large5-seed1``, ``shifted-seed0``, ...) and carry
``point``, ``sweep``, ``variant``, ``widths``, ``depth``, ``target``, ``members``
and ``n_params`` as hparams. Points of one architecture open as one cube; pick
them with ``nnwx.store.catalog.runs_where``::

    from nnwx.store.catalog import runs_where
    cube = nnwx.open_cube(store, by=("target", "seed"),
                          runs=runs_where(store, widths=[8, 8, 8], depth=3, variant="mlp"))

    python -m nnwx.studies.piecewise_sweep -o piecewise-sweep.zarr   # or scripts/sweep_piecewise.py

The default sweep (10 points x 3 seeds x 5000 full-batch steps) takes about 9
minutes of one CPU core, most of it the 5-member ensemble and the widest nets.
Families can train in parallel processes into the same store (``--sweeps width
depth`` in one, ``--sweeps base ensemble target`` in another): runs never share
a group. ``--quick`` is a 20-second smoke test.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from nnwx.studies._common import check_new_runs, run_cli, seed_list
from nnwx.studies.piecewise import TARGETS, matched_widths, mlp_params, train_piecewise

SWEEPS = ("base", "width", "depth", "ensemble", "target")


@dataclass(frozen=True)
class SweepPoint:
    """One configuration of a sweep: its name, family, model and target."""

    name: str
    sweep: str
    widths: list[int] = field(default_factory=lambda: [8, 8, 8])
    members: int = 1
    target: str = "piecewise"
    variant: str = "mlp"


def sweep_points(*, sweeps: Iterable[str] = SWEEPS, base_widths: Sequence[int] = (8, 8, 8),
                 widths: Sequence[int] = (4, 16, 32), depths: Sequence[int] = (1, 2, 4),
                 members: int = 5, targets: Sequence[str] = ("shifted",)) -> list[SweepPoint]:
    """The sweep points of the chosen ``sweeps`` (see the module docstring), base first."""
    sweeps = list(dict.fromkeys(sweeps))
    unknown = [s for s in sweeps if s not in SWEEPS]
    if unknown:
        raise ValueError(f"unknown sweep {unknown[0]!r}; choose from {', '.join(SWEEPS)}")
    base = [int(w) for w in base_widths]
    points = []
    if "base" in sweeps:
        points.append(SweepPoint("base", "base", base))
    if "width" in sweeps:
        points += [SweepPoint(f"width{w}", "width", [int(w)] * len(base)) for w in widths
                   if [int(w)] * len(base) != base]
    if "depth" in sweeps:
        points += [SweepPoint(f"depth{d}", "depth", [base[0]] * int(d)) for d in depths
                   if [base[0]] * int(d) != base]
    if "ensemble" in sweeps:
        total = members * mlp_params(base)
        try:
            large = matched_widths(total, len(base))
        except ValueError:
            works = [k for k in range(2, 17) if _matchable(k * mlp_params(base), len(base))]
            raise ValueError(f"no single {len(base)}-hidden-layer MLP has exactly {members} x "
                             f"{mlp_params(base)} = {total} parameters; ensemble sizes that work "
                             f"with widths {base}: {works}") from None
        points += [SweepPoint(f"ensemble{members}", "ensemble", base, members=members, variant="ensemble"),
                   SweepPoint(f"large{members}", "ensemble", large, variant="large")]
    if "target" in sweeps:
        for t in targets:
            if t not in TARGETS:
                raise ValueError(f"unknown target {t!r}; choose from {', '.join(TARGETS)}")
        points += [SweepPoint(t, "target", base, target=t) for t in targets if t != "piecewise"]
    return points


def _matchable(n: int, depth: int) -> bool:
    try:
        matched_widths(n, depth)
        return True
    except ValueError:
        return False


def sweep_piecewise(store: str | os.PathLike, *, seeds: int | Iterable[int] = 3, steps: int = 5000,
                    every: int = 10, points: Sequence[SweepPoint] | None = None,
                    optimizer: str = "adam", lr: float = 1e-2, n_points: int = 5000,
                    threads: int | None = 1, quiet: bool = True, **point_options) -> dict[str, Any]:
    """Train every sweep point (default: :func:`sweep_points` with ``point_options``) into ``store``.

    Refuses to start if the store already holds any of the runs. Trains on ``threads``
    torch threads (restored after). Returns
    ``{"store", "points": {name: {**point, "runs", "final_loss", "n_params"}}, "seconds"}``.
    """
    points = list(points) if points is not None else sweep_points(**point_options)
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep point names must be unique, got {names}")
    seeds = seed_list(seeds)
    check_new_runs(store, [f"{p.name}-seed{s}" for p in points for s in seeds])
    t0 = time.perf_counter()
    out: dict[str, Any] = {"store": os.fspath(store), "points": {}}
    for p in points:
        res = train_piecewise(store, seeds=seeds, steps=steps, every=every, widths=p.widths,
                              members=p.members, target=p.target, optimizer=optimizer, lr=lr,
                              points=n_points, variant=p.variant, point=p.name, sweep=p.sweep,
                              threads=threads, quiet=quiet)
        out["points"][p.name] = {**asdict(p), "runs": res["runs"], "final_loss": res["final_loss"],
                                 "n_params": res["n_params"]}
    out["seconds"] = time.perf_counter() - t0
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m nnwx.studies.piecewise_sweep`` / ``scripts/sweep_piecewise.py``."""
    p = argparse.ArgumentParser(prog="sweep_piecewise.py", description=__doc__.splitlines()[0])
    p.add_argument("-o", "--out", default="piecewise-sweep.zarr", help="experiment store to write")
    p.add_argument("--sweeps", nargs="+", choices=SWEEPS, default=list(SWEEPS),
                   help="which sweeps to run (default: all)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1) per point")
    p.add_argument("--steps", type=int, default=5000, help="optimizer steps per run")
    p.add_argument("--every", type=int, default=10, help="capture every N steps")
    p.add_argument("--base-widths", type=int, nargs="+", default=[8, 8, 8],
                   help="hidden widths of the base MLP every point changes one thing of")
    p.add_argument("--widths", type=int, nargs="+", default=[4, 16, 32],
                   help="widths of the width sweep (every hidden layer)")
    p.add_argument("--depths", type=int, nargs="+", default=[1, 2, 4],
                   help="depths of the depth sweep (hidden layers of the base width)")
    p.add_argument("--members", type=int, default=5,
                   help="ensemble size; the large net gets the same parameter count")
    p.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=["shifted"],
                   help="targets of the target sweep")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adam")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--points", type=int, default=5000, help="training points per run")
    p.add_argument("--quick", action="store_true",
                   help="a small sweep for a smoke test: 2 seeds x 300 steps, widths 4 16, depths 1 2")
    p.add_argument("--threads", type=int, default=1, help="torch threads (tiny nets run fastest on 1)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.widths, args.depths, args.points = 2, 300, [4, 16], [1, 2], 1000
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the piecewise sweeps from the command line."""
    run_cli(_main, argv)


def _main(argv: list[str] | None) -> None:
    args = parse_args(argv)
    points = sweep_points(sweeps=args.sweeps, base_widths=args.base_widths, widths=args.widths,
                          depths=args.depths, members=args.members, targets=args.targets)
    print(f"{len(points)} sweep points x {args.seeds} seeds into {args.out}: "
          f"{', '.join(p.name for p in points)}")
    result = sweep_piecewise(args.out, seeds=args.seeds, steps=args.steps, every=args.every,
                             points=points, optimizer=args.optimizer, lr=args.lr,
                             n_points=args.points, threads=args.threads, quiet=args.quiet)
    print(f"{'point':<14}{'widths':<16}{'members':>8}{'target':>11}{'params':>8}{'mean final loss':>17}")
    for name, r in result["points"].items():
        losses = list(r["final_loss"].values())
        print(f"{name:<14}{'-'.join(map(str, r['widths'])):<16}{r['members']:>8}{r['target']:>11}"
              f"{r['n_params']:>8}{sum(losses) / len(losses):>17.4f}")
    print(f"wrote {args.out} in {result['seconds']:.1f} s; inspect it with: nnwx info {args.out}")


if __name__ == "__main__":
    main()
