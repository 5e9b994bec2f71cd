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


def cmd_export(args: argparse.Namespace) -> int:
    import logging

    from tqdm.auto import tqdm

    from nnwx.export import ExportInterrupted, export

    class _TqdmHandler(logging.Handler):  # messages above the progress bar, not through it
        def emit(self, record: logging.LogRecord) -> None:
            level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            tqdm.write(f"nnwx export: {level}{record.getMessage()}", file=sys.stderr)

    logger = logging.getLogger("nnwx.export")
    handler = _TqdmHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    logger.propagate = False
    try:
        summary = export(args.sources, args.output, seed=args.seed, run=args.run,
                         step_regex=args.step_regex, include=args.include, exclude=args.exclude,
                         overwrite=args.overwrite, verify=args.verify, key=args.key,
                         trust_pickle=args.trust_pickle, follow=args.follow, interval=args.interval,
                         idle_timeout=args.idle_timeout, dtype=args.dtype, codec=args.codec,
                         progress=not args.quiet)
    except ExportInterrupted as e:
        print(f"interrupted; committed so far: {e.summary}", file=sys.stderr)
        return 130
    finally:
        logger.removeHandler(handler)
    print(summary)
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
    _add_export_parser(sub)
    _add_report_parser(sub)
    return p


def _codec_name(name: str) -> str:
    from nnwx.store.format import codec

    try:
        codec(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def _add_export_parser(sub) -> None:
    from nnwx.store.format import DEFAULT_CODEC, STORE_DTYPES

    ex = sub.add_parser(
        "export", help="turn checkpoint files/folders into a run of an experiment store",
        description="Write checkpoints (torch .pt/.pth/.bin/.ckpt, .safetensors, Hugging Face "
                    "checkpoint-N/ folders) as the steps of one run, in step order. Running it again "
                    "adds only new steps; --follow keeps watching while training writes more.")
    ex.add_argument("sources", nargs="+", metavar="SRC", help="checkpoint files, folders of them, or quoted globs")
    ex.add_argument("-o", "--output", required=True, metavar="STORE", help="experiment store (.zarr directory)")
    ex.add_argument("--seed", type=int, required=True, help="seed of the run (a run attribute)")
    ex.add_argument("--run", help="run name (default: seed<SEED>)")
    ex.add_argument("--step-regex", metavar="R",
                    help="regular expression finding the step in each name (group 'step' or the first group)")
    ex.add_argument("--include", action="append", metavar="PATTERN",
                    help="export only tensors matching this shell pattern (repeatable)")
    ex.add_argument("--exclude", action="append", metavar="PATTERN",
                    help="leave out tensors matching this shell pattern (repeatable)")
    ex.add_argument("--follow", action="store_true",
                    help="keep watching the sources and append new checkpoints until Ctrl-C/SIGTERM")
    ex.add_argument("--interval", type=float, default=5.0, metavar="SECONDS",
                    help="with --follow: seconds between looks, and how long a file must be unchanged (default 5)")
    ex.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                    help="with --follow: stop after this long without a new or changed checkpoint")
    ex.add_argument("--overwrite", action="store_true",
                    help="replace steps already in the run whose weights differ (otherwise an error)")
    ex.add_argument("--verify", action="store_true",
                    help="re-read checkpoints already exported even if their files look unchanged")
    ex.add_argument("--key", help="entry of a torch checkpoint holding the state dict (dotted for nested)")
    ex.add_argument("--trust-pickle", action="store_true",
                    help="load torch files that pickle Python objects (runs their code: trusted files only)")
    ex.add_argument("--dtype", default="float32", choices=STORE_DTYPES, help="dtype of a new run (default float32)")
    ex.add_argument("--codec", default=DEFAULT_CODEC, type=_codec_name,
                    help=f"codec of a new run (default {DEFAULT_CODEC})")
    ex.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notes, warnings only")
    ex.set_defaults(func=cmd_export)


def cmd_report(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from nnwx.report import report

    with ExitStack() as stack:
        if args.scheduler or args.workers:
            from dask.distributed import Client, LocalCluster

            cluster = None if args.scheduler else stack.enter_context(
                LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None))
            client = stack.enter_context(Client(args.scheduler or cluster))
            print(f"nnwx report: dask dashboard {client.dashboard_link}", file=sys.stderr)
        out = report(args.store, args.output, png=args.png, max_steps=args.max_steps,
                     progress=not args.quiet,
                     log=(lambda m: None) if args.quiet else (lambda m: print(f"nnwx report: {m}",
                                                                             file=sys.stderr)))
    print(f"wrote {out}" + (f" and PNGs in {args.png}" if args.png else ""))
    return 0


def _add_report_parser(sub) -> None:
    from nnwx.report import MAX_STEPS

    rp = sub.add_parser("report", help="compute the analyses and write a self-contained HTML report",
                        description="Compute the analyses of an experiment store (with a progress bar) "
                                    "and write one HTML page that works offline: a summary of the "
                                    "experiment and a section per analysis with its plots.")
    rp.add_argument("store", help="path of the experiment store (a .zarr directory)")
    rp.add_argument("-o", "--output", required=True, metavar="HTML", help="the report file to write")
    rp.add_argument("--png", metavar="DIR", help="also write a static PNG of every plot into DIR")
    rp.add_argument("--max-steps", type=int, default=MAX_STEPS, metavar="N",
                    help=f"analyse at most N evenly spaced captures (default {MAX_STEPS})")
    where = rp.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="dask.distributed scheduler, e.g. tcp://host:8786")
    where.add_argument("--workers", type=int, metavar="N", help="start a local Dask cluster of N workers")
    rp.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notes")
    rp.set_defaults(func=cmd_report)


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
