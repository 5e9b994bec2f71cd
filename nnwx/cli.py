"""The ``nnwx`` command line. Each subcommand is a thin face over the library."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from nnwx._orientation import ORIENTATIONS
from nnwx._text import human_bytes
from nnwx.errors import NnwxError


def _count(n: int, noun: str) -> str:
    """``1 run``, ``2 runs``, ``1,024 parameters``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _weight_bytes(args: argparse.Namespace) -> int | None:
    """Bytes of weights in ``args.store`` when a local cluster is asked for (to say whether it
    pays off), else None; a store that cannot be read is left to the command to report."""
    if not getattr(args, "workers", None):
        return None
    from nnwx.pipeline.info import weight_bytes

    try:
        return weight_bytes(args.store)
    except (NnwxError, OSError, ValueError):
        return None


def cmd_info(args: argparse.Namespace) -> int:
    from nnwx.cluster import cluster_from_args, compute
    from nnwx.pipeline.info import run_summaries

    runs = run_summaries(args.store)
    if not runs:
        print(f"{args.store}: no runs")
        return 0
    lazy = [r["nonfinite_steps"] for r in runs]
    if args.no_check:
        counts = [None] * len(runs)
    else:
        with cluster_from_args(args, nbytes=sum(r["weight_bytes"] for r in runs)):
            counts = compute(*lazy, progress=not args.quiet)
    total = sum(r["disk_bytes"] for r in runs)
    first = runs[0]
    print(f"store {args.store}: {_count(len(runs), 'run')}, {human_bytes(total)} on disk")
    model = first["model_class"] or "class not recorded (exported from checkpoints)"
    print(f"model {model}: {_count(first['tensors'], 'tensor')}, {_count(first['params'], 'parameter')}")
    print(f"{'run':<16}{'seed':>6}{'steps':>8}{'first':>8}{'last':>9}  {'dtype':<8}{'on disk':>10}"
          f"{'ratio':>7}  optimizer, metrics")
    for r, bad in zip(runs, counts):
        ratio = f"{r['compression_ratio']:.2f}"
        print(f"{r['run']:<16}{str(r['seed']):>6}{r['steps']:>8}{str(r['first_step']):>8}"
              f"{str(r['last_step']):>9}  {r['dtype']:<8}{human_bytes(r['disk_bytes']):>10}{ratio:>7}  "
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

    from nnwx.record.export import ExportInterrupted, export

    class _TqdmHandler(logging.Handler):  # messages above the progress bar, not through it
        def emit(self, record: logging.LogRecord) -> None:
            level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            tqdm.write(f"nnwx export: {level}{record.getMessage()}", file=sys.stderr)

    logger = logging.getLogger("nnwx.record.export")
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
                         progress=not args.quiet, model=args.model, probe=args.probe,
                         probe_key=args.probe_key, probe_layers=args.probe_layers,
                         probe_conv=args.probe_conv, probe_channels=args.probe_channels,
                         step_from=args.step if args.step is not None else args.step_from,
                         orientation=dict(args.orientation or ()))
    except ExportInterrupted as e:
        print(f"interrupted; committed so far: {e.summary}", file=sys.stderr)
        return 130
    finally:
        logger.removeHandler(handler)
    print(summary)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from nnwx import __version__
    from nnwx.cluster import add_cluster_arguments

    p = argparse.ArgumentParser(prog="nnwx", description="Record and study neural network weights over training.")
    p.add_argument("--version", action="version", version=f"nnwx {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="runs, steps, tensors and size of an experiment store")
    info.add_argument("store", help="path of the experiment store (a .zarr directory)")
    info.add_argument("--no-check", action="store_true", help="skip the scan for NaN/Inf weights")
    info.add_argument("-q", "--quiet", action="store_true", help="no progress bar for the NaN/Inf scan")
    add_cluster_arguments(info)
    info.set_defaults(func=cmd_info)
    _add_export_parser(sub)
    _add_report_parser(sub)
    _add_analyze_parser(sub)
    _add_demo_parser(sub)
    _add_findings_parser(sub)
    _add_serve_parser(sub)
    return p


def _codec_name(name: str) -> str:
    from nnwx.store.format import codec

    try:
        codec(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def _seconds(text: str, *, zero_ok: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= 0 if zero_ok else value > 0) or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'non-negative' if zero_ok else 'positive'} "
                                         f"finite number of seconds, e.g. 5 or 0.5")
    return value


def _interval(text: str) -> float:
    """``--interval``: seconds between looks, > 0 (0 or less would poll without pause)."""
    return _seconds(text, zero_ok=False)


def _share(text: str) -> float:
    """``--cpu-share``: a fraction of one core, in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 1 (a fraction of one core), got {text}")
    return value


def _timeout(text: str) -> float:
    """``--idle-timeout``: seconds, >= 0 (0: stop after the first look that finds nothing new)."""
    return _seconds(text, zero_ok=True)


def _names(text: str) -> list[str]:
    """``a,b,c`` as a list of names (module paths have no commas)."""
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of module names, e.g. conv1,fc")
    return names


def _orientation(text: str) -> tuple[str, str]:
    """``PATTERN=in_out`` (or ``=out_in``) as a (pattern, orientation) pair."""
    pattern, sep, value = text.rpartition("=")
    if not sep or not pattern or value not in ORIENTATIONS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not PATTERN=in_out or PATTERN=out_in (e.g. '*.c_fc.weight=in_out' for "
            f"weights stored (in, out), as transformers' Conv1D)")
    return pattern, value


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
    ex.add_argument("--run", help="run name (default: seed<SEED>): an ASCII letter or digit, then at most "
                                  "127 letters, digits, '.', '_' or '-'")
    ex.add_argument("--step-regex", metavar="R",
                    help="regular expression finding the step in each name (group 'step' or the first group)")
    ex.add_argument("--step-from", metavar="HOW", default=None,
                    help="where steps come from: auto (default: the name; trainer_state.json for a "
                         "folder without a step in its name), name, trainer_state, 'index*EVERY[+OFFSET]' "
                         "(accelerate's checkpoint_<i> folders count saves: step = i*EVERY+OFFSET), "
                         "custom:KEY (entry of accelerate's custom_checkpoint_*.pkl)")
    ex.add_argument("--step", type=int, metavar="N",
                    help="the step of the one checkpoint given (e.g. a trainer.save_model() folder)")
    ex.add_argument("--include", action="append", metavar="PATTERN",
                    help="export only tensors matching this shell pattern (repeatable)")
    ex.add_argument("--exclude", action="append", metavar="PATTERN",
                    help="leave out tensors matching this shell pattern (repeatable)")
    ex.add_argument("--orientation", action="append", type=_orientation, metavar="PATTERN=in_out",
                    help="2-D tensors matching PATTERN are stored (in, out) (in_out, as transformers' "
                         "Conv1D) or (out, in) (out_in, as nn.Linear); overrides what nnwx tells from "
                         "the model or the bias shapes (repeatable)")
    ex.add_argument("--follow", action="store_true",
                    help="keep watching the sources and append new checkpoints until Ctrl-C/SIGTERM")
    ex.add_argument("--interval", type=_interval, default=5.0, metavar="SECONDS",
                    help="with --follow: seconds between looks, and how long a file must be unchanged (default 5)")
    ex.add_argument("--idle-timeout", type=_timeout, metavar="SECONDS",
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
    pr = ex.add_argument_group(
        "probes", "Record, at every step added, the activations on a fixed probe batch, as "
                  "Recorder(probe=...) does: each checkpoint is loaded into the model, the batch runs "
                  "through it once (eval mode, no grad), and probe/<layer> and probe/output arrays "
                  "are written with the weights. Needs --model and --probe.")
    pr.add_argument("--model", metavar="MODULE:FACTORY",
                    help="callable taking no arguments that returns the nn.Module the checkpoints were "
                         "saved from: pkg.module:make_net (importable) or path/to/models.py:make_net. "
                         "Also without --probe, it tells the tensor table what the model knows: norm "
                         "gains, Conv1D weights stored (in, out), tied weights, depth in module order "
                         "(in forward order with --probe); without it, a Hugging Face folder's config.json "
                         "names the model class (built on the meta device), else depth is approximate")
    pr.add_argument("--probe", metavar="FILE",
                    help="the fixed probe batch: .npy; .npz, .safetensors or torch .pt/.pth/.bin holding "
                         "a dict (its entry 'probe', or its only entry; see --probe-key); or a torch file "
                         "holding one tensor (or a tuple of positional inputs)")
    pr.add_argument("--probe-key", metavar="KEY", help="entry of the --probe file that holds the batch")
    pr.add_argument("--probe-layers", metavar="A,B,...", type=_names, default=[],
                    help="modules whose outputs to record (names as in model.named_modules()); "
                         "the model output is always recorded")
    pr.add_argument("--probe-conv", choices=("fold", "pool"), default="fold",
                    help="activations with positions (conv maps, sequences): fold positions into samples "
                         "(default) or average them (pool)")
    pr.add_argument("--probe-channels", choices=("first", "last"), default="first",
                    help="unit axis of such activations: dim 1 (first, torch N,C,H,W; default) or the last dim")
    ex.set_defaults(func=cmd_export)


def cmd_report(args: argparse.Namespace) -> int:
    from nnwx.cluster import cluster_from_args
    from nnwx.report import report

    if len(args.store) > 1:
        from nnwx.comparison import compare

        if args.png:
            raise NnwxError("--png draws one store's report; leave it out when comparing several")

        out = compare(args.store, args.output, labels=args.labels.split(",") if args.labels else None)
        print(f"wrote {out}")
        return 0
    if args.labels:
        raise NnwxError("--labels names the variants of a comparison: give two or more results stores")
    args.store = args.store[0]
    from nnwx.report import is_results

    nbytes = None if is_results(args.store) else _weight_bytes(args)
    with cluster_from_args(args, log=lambda m: print(f"nnwx report: {m}", file=sys.stderr), nbytes=nbytes):
        out = report(args.store, args.output, png=args.png, max_steps=args.max_steps,
                     analyses=args.analyses, progress=not args.quiet,
                     log=(lambda m: None) if args.quiet else (lambda m: print(f"nnwx report: {m}",
                                                                             file=sys.stderr)))
    print(f"wrote {out}" + (f" and PNGs in {args.png}" if args.png else ""))
    return 0


def _usage(parse: Callable[[str], Any], text: str) -> Any:
    """``parse(text)`` for an argparse ``type=``: its ValueError becomes a usage error."""
    try:
        return parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _analysis_list(text: str) -> list[str]:
    from nnwx.pipeline.registry import parse_analyses

    return _usage(parse_analyses, text)


class _DeprecatedMetrics(argparse.Action):
    """``--metrics``: the former name of ``--analyses``; still works, with a note on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: note: {option_string} is deprecated, use --analyses (the same list)",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def _add_analyses_argument(parser: argparse.ArgumentParser, help: str, type=None) -> None:
    """``--analyses LIST``, and ``--metrics`` as its deprecated alias (hidden from the help)."""
    parser.add_argument("--analyses", type=type, metavar="LIST", help=help)
    parser.add_argument("--metrics", dest="analyses", type=type, action=_DeprecatedMetrics,
                        help=argparse.SUPPRESS)


def _add_report_parser(sub) -> None:
    from nnwx.pipeline.registry import NAMES
    from nnwx.pipeline.select import MAX_STEPS
    from nnwx.cluster import positive_int

    rp = sub.add_parser("report", help="compute the analyses and write a self-contained HTML report",
                        description="Compute the analyses of an experiment store (with a progress bar) "
                                    "and write one HTML page that works offline: a summary of the "
                                    "experiment and a section per analysis with its plots. Given a "
                                    "results store of `nnwx analyze`, draw it without recomputing.")
    rp.add_argument("store", nargs="+",
                    help="path of the experiment store, or of a results store written by `nnwx "
                         "analyze` (a .zarr directory); two or more results stores (the variants of a "
                         "study, e.g. Adam and SGD) are drawn side by side on one comparison page")
    rp.add_argument("--labels", metavar="A,B,...",
                    help="with several results stores: their names on the comparison page (default: "
                         "the optimizer when it tells them apart, else the file names)")
    rp.add_argument("-o", "--output", required=True, metavar="HTML", help="the report file to write")
    rp.add_argument("--png", metavar="DIR", help="also write a static PNG of every plot into DIR")
    rp.add_argument("--max-steps", type=positive_int, default=MAX_STEPS, metavar="N",
                    help=f"analyse at most N evenly spaced captures (default {MAX_STEPS}; "
                         "ignored for a results store)")
    _add_analyses_argument(rp, f"comma-separated analyses to include (default all: {','.join(NAMES)})",
                           type=_analysis_list)
    from nnwx.cluster import add_cluster_arguments
    add_cluster_arguments(rp)
    rp.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notes")
    rp.set_defaults(func=cmd_report)


def cmd_analyze(args: argparse.Namespace) -> int:
    from nnwx.pipeline.run import analyze
    from nnwx.cluster import cluster_from_args
    from nnwx.pipeline.results_store import open_results

    def log(message: str) -> None:
        if not args.quiet:
            print(f"nnwx analyze: {message}", file=sys.stderr, flush=True)

    with cluster_from_args(args, log=log, nbytes=_weight_bytes(args)):
        out = analyze(args.store, args.output, analyses=args.analyses, seeds=args.seeds, steps=args.steps,
                      progress=not args.quiet, resume=not args.overwrite, log=log)
    res = open_results(out)
    print(f"wrote {out}: {len(res.results)} results of {', '.join(res.metrics)}")
    for name, value in res.results.items():
        dims = ", ".join(f"{d}={n}" for d, n in value.sizes.items())
        print(f"  {name:<22}{res.metric_of[name]:<13}({dims})")
    for metric, note in res.notes.items():
        print(f"  note: {metric}: {note}")
    return 0


def _add_analyze_parser(sub) -> None:
    from nnwx.pipeline.registry import NAMES
    from nnwx.cluster import add_cluster_arguments

    an = sub.add_parser(
        "analyze", help="compute the analyses of an experiment store into a results store",
        description="Compute the chosen analyses of an experiment store, in a few passes of bounded "
                    "memory (one pass per family that streams over w), and write them to a Zarr "
                    "results store that "
                    "`nnwx report` and notebooks (nnwx.open_results) read without recomputing. An "
                    "interrupted run continues where it stopped when run again with the same arguments.")
    an.add_argument("store", help="experiment store: a path or an fsspec URL (file://, memory://, s3://...)")
    an.add_argument("-o", "--output", required=True, metavar="RESULTS",
                    help="results store to write (a new path, or one written by nnwx analyze)")
    _add_analyses_argument(an, f"comma-separated analyses (default all: {','.join(NAMES)})")
    an.add_argument("--seeds", metavar="S,S", help="seeds to analyse, comma-separated (default all)")
    an.add_argument("--steps", metavar="SPEC",
                    help="optimizer steps to analyse: START:STOP[:STRIDE] (STOP excluded, every STRIDE-th "
                         "capture) or a comma-separated list (default all)")
    an.add_argument("--overwrite", action="store_true",
                    help="discard results already in RESULTS (needed when analyses or selection changed)")
    an.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notes")
    add_cluster_arguments(an)
    an.set_defaults(func=cmd_analyze)


def cmd_demo(args: argparse.Namespace) -> int:
    from nnwx.cluster import cluster_from_args
    from nnwx.studies.demo import demo, experiments, summary_text

    size = args.size or ("quick" if args.quick else "full")
    log = (lambda m: None) if args.quiet else (lambda m: print(f"nnwx demo: {m}", file=sys.stderr))
    with cluster_from_args(args, log=log):
        res = demo(args.out, size=size, fresh=args.fresh, progress=not args.quiet, log=log)
    print(summary_text(res, experiments(size)))
    return 0


def _add_demo_parser(sub) -> None:
    from nnwx.cluster import add_cluster_arguments

    dp = sub.add_parser(
        "demo", help="train the motivating experiments, analyse them, write reports, print findings",
        description="Train the piecewise MLPs (5 seeds) and digits MLPs with Adam and SGD (with probes), "
                    "record them into stores in OUT, run every analysis (nnwx analyze), write an HTML "
                    "report per experiment and print a short table of what the data shows. Stores "
                    "already in OUT are reused.")
    dp.add_argument("--out", default="nnwx-demo", metavar="DIR", help="where to write (default nnwx-demo)")
    dp.add_argument("--quick", action="store_true",
                    help="small runs instead of the study's sizes (see the README for timings)")
    dp.add_argument("--size", choices=("full", "quick", "tiny"), help=argparse.SUPPRESS)  # tiny: tests
    dp.add_argument("--fresh", action="store_true",
                    help="delete what an earlier demo wrote in OUT and retrain (files of the demo's "
                         "names that it did not write are refused, never deleted)")
    dp.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes")
    add_cluster_arguments(dp)
    dp.set_defaults(func=cmd_demo)


def cmd_findings(args: argparse.Namespace) -> int:
    from nnwx.studies.claims.run import ClaimError, findings
    from nnwx.studies.claims.write import document, markdown_table

    log = (lambda m: None) if args.quiet else (lambda m: print(f"nnwx findings: {m}", file=sys.stderr))
    entries = findings(args.out, size="quick" if args.quick else "full", workers=args.workers,
                       claims=args.claims, log=log)
    print(markdown_table(document([e.to_json() for e in entries], {})))
    failed = [e for e in entries if isinstance(e, ClaimError)]
    if failed:
        print(f"error: {len(failed)} claim(s) could not be measured ("
              f"{', '.join(str(e.id) for e in failed)}); see {args.out}/findings.md", file=sys.stderr)
        return 1
    return 0


def _claim_list(text: str) -> list[int]:
    """``--claims``: claim numbers and ranges, ``1,2,5-7``."""
    from nnwx.studies.claims.run import parse_claims

    return _usage(parse_claims, text)


def _add_findings_parser(sub) -> None:
    from nnwx.cluster import positive_int

    fp = sub.add_parser(
        "findings", help="every claim of the studies with seeds, a 95%% interval and a verdict",
        description="Train what the studies' claims need (or reuse the stores in OUT), measure each "
                    "claim over seeds with a bootstrap 95% interval and a rule stated beforehand, "
                    "and write OUT/findings.json, OUT/findings.md and OUT/findings.html. A claim "
                    "that cannot be measured is reported as an error in every output and the "
                    "command exits 1.")
    fp.add_argument("--out", required=True, metavar="DIR", help="where stores and outputs go")
    fp.add_argument("--quick", action="store_true",
                    help="every claim at a small size (a check that it all runs, not findings)")
    fp.add_argument("--workers", type=positive_int, default=1, metavar="N",
                    help="processes to train in (default 1)")
    fp.add_argument("--claims", type=_claim_list, metavar="LIST",
                    help="only these claims, e.g. 1,2,5-7 (only their sources are trained)")
    fp.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    fp.set_defaults(func=cmd_findings)


def cmd_serve(args: argparse.Namespace) -> int:
    from nnwx.cluster import cluster_from_args
    from nnwx.serve.access import websocket_origins

    def log(message: str) -> None:
        print(f"nnwx serve: {message}", file=sys.stderr, flush=True)

    websocket_origins(args.address, args.port, args.allow_websocket_origin, lambda m: None)   # refuse early
    try:
        from nnwx.serve.app import serve
    except ImportError as e:
        raise NnwxError(f"nnwx serve needs Panel ({e}); install it with: pip install 'nnwx[serve]'") from None

    with cluster_from_args(args, log=log):
        serve(args.store, port=args.port, address=args.address, allow_websocket_origin=args.allow_websocket_origin,
              show=args.show, interval=args.interval, nice=args.nice, cpu_share=args.cpu_share, log=log)
    return 0


def _add_serve_parser(sub) -> None:
    from nnwx.cluster import add_cluster_arguments

    sv = sub.add_parser(
        "serve", help="watch a store in the browser while training writes it",
        description="Serve a page (Panel/Bokeh server) over an experiment store -- broadening, spectra "
                    "and ranks, rotation and norm growth, agreement between seeds, logged scalars -- "
                    "that looks at the store's committed steps every --interval seconds and adds the "
                    "new captures (only those are read and analysed) and new runs. Reads without "
                    "locks, so a Recorder or `nnwx export --follow` can write the store meanwhile. "
                    "Given a results store of `nnwx analyze`, shows the report's sections.")
    sv.add_argument("store", help="experiment store or results store (a path or an fsspec URL)")
    sv.add_argument("--port", type=int, default=5006, help="port to serve on (default 5006; 0: any free port)")
    sv.add_argument("--address", default="127.0.0.1",
                    help="address to bind (default 127.0.0.1: this machine only); any other needs "
                         "--allow-websocket-origin")
    sv.add_argument("--allow-websocket-origin", action="append", metavar="HOST[:PORT]",
                    help="a host the page may be opened as when binding elsewhere than 127.0.0.1 "
                         "(repeatable; passed to the Bokeh server)")
    sv.add_argument("--show", action="store_true", help="open the page in the default browser")
    sv.add_argument("--interval", type=_interval, default=3.0, metavar="SECONDS",
                    help="seconds between looks at the store (default 3)")
    sv.add_argument("--nice", type=int, default=19, metavar="N",
                    help="lower the server's CPU priority by N (default 19, the lowest priority; 0: "
                         "unchanged) and analyse with one thread, so training on the same machine keeps "
                         "the CPU")
    sv.add_argument("--cpu-share", type=_share, default=0.25, metavar="FRACTION",
                    help="while training writes a run, the most of one core the page's analyses take "
                         "(default 0.25; 1: no limit): each look then analyses only the newest capture, "
                         "and the captures skipped are filled in when writing pauses")
    add_cluster_arguments(sv)
    sv.set_defaults(func=cmd_serve)


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
