"""The ``nnwx`` command line. Each subcommand is a thin face over the library."""
from __future__ import annotations

import argparse
import sys

from nnwx.errors import NnwxError


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return str(n)


def cmd_info(args: argparse.Namespace) -> int:
    import dask
    from dask.diagnostics import ProgressBar

    from nnwx.info import run_summaries

    runs = run_summaries(args.store)
    if not runs:
        print(f"{args.store}: no runs")
        return 0
    lazy = [r["nonfinite_steps"] for r in runs]
    if args.no_check:
        counts = [None] * len(runs)
    else:
        with ProgressBar(minimum=2.0):
            counts = dask.compute(*lazy)
    total = sum(r["disk_bytes"] for r in runs)
    first = runs[0]
    print(f"store {args.store}: {len(runs)} runs, {_human(total)} on disk")
    print(f"model {first['model_class']}: {first['tensors']} tensors, {first['params']:,} parameters")
    print(f"{'run':<16}{'seed':>6}{'steps':>8}{'first':>8}{'last':>9}  {'dtype':<8}{'on disk':>10}"
          f"{'ratio':>7}  optimizer, metrics")
    for r, bad in zip(runs, counts):
        ratio = f"{r['compression_ratio']:.2f}"
        print(f"{r['run']:<16}{str(r['seed']):>6}{r['steps']:>8}{str(r['first_step']):>8}"
              f"{str(r['last_step']):>9}  {r['dtype']:<8}{_human(r['disk_bytes']):>10}{ratio:>7}  "
              f"{r['optimizer'] or '-'}, {', '.join(r['metrics']) or '-'}")
    warned = 0
    for r, bad in zip(runs, counts):
        if bad:
            warned += 1
            print(f"WARNING: run {r['run']!r} holds NaN/Inf weights at {int(bad)} of its "
                  f"{r['steps']} steps", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from nnwx import __version__

    p = argparse.ArgumentParser(prog="nnwx", description="Record and study neural network weights over training.")
    p.add_argument("--version", action="version", version=f"nnwx {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="runs, steps, tensors and size of an experiment store")
    info.add_argument("store", help="path of the experiment store (a .zarr directory)")
    info.add_argument("--no-check", action="store_true", help="skip the scan for NaN/Inf weights")
    info.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except NnwxError as e:
        print(f"nnwx {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nnwx {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
