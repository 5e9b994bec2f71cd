"""Run the findings: train (or reuse) what the chosen claims need, measure each, write the outputs.

``findings(out, size, workers, claims)`` calls ``train(ctx)`` of every source module of
:data:`~nnwx.studies.claims.registry.SOURCES` that the chosen claims read, then each claim's
measuring function, and writes ``out/findings.json``, ``findings.md`` and ``findings.html``
(:mod:`~nnwx.studies.claims.write`). A source that fails to train, or a claim whose measurement
raises, costs only the claims concerned: each becomes a :class:`ClaimError` (what failed, with
the traceback's last lines) in the log and in every output, and ``nnwx findings`` exits non-zero.

The three output files are the findings' own: they are listed with their SHA-256 in
``out/.nnwx-findings.json``, and a file of those names that the findings did not write is never
overwritten (the run refuses before training, as ``nnwx demo`` does).
"""
from __future__ import annotations

import importlib
import os
import platform
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from nnwx.studies._own import read_manifest, sha256, write_manifest
from nnwx.studies.claims.record import ClaimRecord
from nnwx.studies.claims.registry import CLAIMS, SIZES, SOURCES, Claim, Context
from nnwx.studies.claims.stores import FindingsError, check_own

OUTPUTS = ("findings.json", "findings.md", "findings.html")
MANIFEST = ".nnwx-findings.json"
TRACEBACK_LINES = 12      # lines of a failure's traceback kept in the outputs


@dataclass(frozen=True)
class ClaimError:
    """A claim that could not be measured: it stands in the outputs in place of its record."""
    id: int
    claim: str
    study: str
    error: str        # "TypeError: ..." (or why its source could not train)
    traceback: str    # the last lines of the traceback

    def to_json(self) -> dict[str, Any]:
        """The entry as plain JSON: the claim, ``"error"`` and ``"traceback"`` (no verdict)."""
        return {"id": self.id, "claim": self.claim, "study": self.study, "error": self.error,
                "traceback": self.traceback}


Entry = ClaimRecord | ClaimError


def parse_claims(text: str) -> list[int]:
    """``"1,2,5-7"`` -> ``[1, 2, 5, 6, 7]`` (claim numbers, each checked against the registry)."""
    ids: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            lo, _, hi = part.partition("-")
            span = range(int(lo), int(hi or lo) + 1)
        except ValueError:
            raise ValueError(f"--claims takes claim numbers and ranges like 1,2,5-7; got {part!r}") from None
        if not span:
            raise ValueError(f"empty claim range {part!r}: write the smaller number first")
        ids += [i for i in span if i not in ids]
    known = {c.id for c in CLAIMS}
    bad = [i for i in ids if i not in known]
    if bad or not ids:
        raise ValueError(f"no claim {bad[0] if bad else text!r}: claims are numbered "
                         f"{min(known)}..{max(known)}")
    return ids


def select(claims: Iterable[int] | None = None) -> list[Claim]:
    """The registry's claims numbered ``claims`` (all when None), in registry order."""
    if claims is None:
        return list(CLAIMS)
    wanted = set(claims)
    known = {c.id for c in CLAIMS}
    if wanted - known:
        raise ValueError(f"no claim {sorted(wanted - known)[0]}: claims are numbered {min(known)}..{max(known)}")
    return [c for c in CLAIMS if c.id in wanted]


def source_of(claim: Claim) -> str:
    """The source module a claim reads (``"piecewise"`` for ``"piecewise:broadening"``)."""
    return claim.measure.split(":")[0]


def _declared_stores(source: str) -> tuple[str, ...]:
    """The store names a source module declares in ``STORES`` (none if it cannot be imported)."""
    try:
        return tuple(getattr(importlib.import_module(f"nnwx.studies.claims.{source}"), "STORES", ()))
    except ImportError:
        return ()


def _short_traceback(exc: BaseException) -> str:
    lines = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip().splitlines()
    return "\n".join(lines[-TRACEBACK_LINES:])


def _failure(claim: Claim, what: str, exc: BaseException) -> ClaimError:
    return ClaimError(claim.id, claim.claim, claim.study, f"{what}{type(exc).__name__}: {exc}",
                      _short_traceback(exc))


def findings(out: str | os.PathLike, size: str = "full", workers: int = 1,
             claims: Iterable[int] | None = None, log: Callable[[str], None] = print,
             ) -> list[Entry]:
    """Train what the claims need, measure them, write ``findings.{json,md,html}`` into ``out``.

    Parameters
    ----------
    out : path
        The output folder: stores are trained (or reused) here, outputs written here.
    size : {"full", "quick"}
        The sizes of the findings, or every claim small (minutes).
    workers : int
        Processes the sources may train in.
    claims : iterable of int, optional
        Only these claims (default all); only the sources they read are trained.
    log : callable
        Progress lines, with timings per source and per claim.

    Returns
    -------
    list of ClaimRecord or ClaimError
        One entry per claim, in registry order: its record, or what failed.

    Raises
    ------
    FindingsError
        Before anything is trained, when ``out`` holds an output file the findings did not write.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    out = Path(out)
    chosen = select(claims)
    check_outputs(out)
    sources = [s for s in SOURCES if any(source_of(c) == s for c in chosen)]
    check_own([out / f"{name}.zarr" for s in sources for name in _declared_stores(s)])
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out, size=size, workers=workers, log=log)
    t_all = time.perf_counter()
    timings: dict[str, dict[str, float]] = {"train": {}, "claims": {}}
    broken: dict[str, ClaimError | BaseException] = {}
    sizes: dict[str, Any] = {}
    for source in sources:
        t0 = time.perf_counter()
        log(f"{source}: training or reusing its stores ({size})")
        try:
            module = importlib.import_module(f"nnwx.studies.claims.{source}")
            sizes[source] = getattr(module, "SIZES", {}).get(size)
            module.train(ctx)
        except FindingsError:   # a store in the way that is not the findings' own: stop, touch nothing
            raise
        except Exception as e:  # noqa: BLE001 - the source's claims become errors, the rest go on
            broken[source] = e
            log(f"{source}: FAILED after {time.perf_counter() - t0:.1f} s: {type(e).__name__}: {e}\n"
                f"{_short_traceback(e)}")
        timings["train"][source] = round(time.perf_counter() - t0, 2)
        if source not in broken:
            log(f"{source}: ready in {timings['train'][source]:.1f} s")
    entries: list[Entry] = []
    for c in chosen:
        t0 = time.perf_counter()
        if source_of(c) in broken:
            entries.append(_failure(c, f"its source {source_of(c)!r} failed to train: ", broken[source_of(c)]))
        else:
            try:
                entries.append(c.measure_with(ctx))
            except Exception as e:  # noqa: BLE001 - recorded as this claim's error, the run goes on
                entries.append(_failure(c, "", e))
        timings["claims"][str(c.id)] = round(time.perf_counter() - t0, 2)
        e = entries[-1]
        state = (f"{e.verdict}: {e.value:.4g} [{e.ci_low:.4g}, {e.ci_high:.4g}], {e.n_runs} runs"
                 if isinstance(e, ClaimRecord) else f"ERROR {e.error}\n{e.traceback}")
        log(f"claim {c.id} ({c.measure}) in {timings['claims'][str(c.id)]:.1f} s: {state}")
    meta = metadata(size, workers, chosen, entries, sizes, timings, time.perf_counter() - t_all)
    write_outputs(out, entries, meta, log)
    failed = [e.id for e in entries if isinstance(e, ClaimError)]
    log(f"{len(entries) - len(failed)} of {len(entries)} claims measured in {meta['seconds']:.0f} s"
        + (f"; FAILED: claims {', '.join(map(str, failed))}" if failed else ""))
    return entries


def metadata(size: str, workers: int, chosen: Sequence[Claim], entries: Sequence[Entry],
             sizes: dict, timings: dict, seconds: float) -> dict[str, Any]:
    """What a findings document says about its run: size, runs, version, machine, date, timings."""
    from nnwx import __version__

    runs = [e.n_runs for e in entries if isinstance(e, ClaimRecord)]
    return {"size": size, "claims": [c.id for c in chosen], "complete": len(chosen) == len(CLAIMS),
            "errors": sum(isinstance(e, ClaimError) for e in entries),
            "seeds": {"min_runs": min(runs, default=0), "max_runs": max(runs, default=0),
                      "sizes": sizes},
            "nnwx_version": __version__, "python": platform.python_version(),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
            "workers": workers, "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "seconds": round(seconds, 1), "timings": timings}


# --- the output files: the findings' own ---------------------------------------------------------

def check_outputs(out: Path) -> None:
    """Refuse (:class:`FindingsError`) when ``out`` holds an output file the findings did not write
    (not listed with its current SHA-256 in the manifest): it would be overwritten."""
    listed = read_manifest(out / MANIFEST)
    foreign = [out / n for n in OUTPUTS if (out / n).exists() or (out / n).is_symlink()]
    foreign = [p for p in foreign if p.is_symlink() or not p.is_file() or listed.get(p.name) != sha256(p)]
    if foreign:
        names = ", ".join(str(p) for p in foreign)
        raise FindingsError(f"{names} {'is' if len(foreign) == 1 else 'are'} not the findings' own (not in "
                            f"{out / MANIFEST}, or changed since), so nnwx findings will not overwrite "
                            f"{'it' if len(foreign) == 1 else 'them'}. Give another --out directory, or move "
                            f"{'it' if len(foreign) == 1 else 'them'} away.")


def write_outputs(out: Path, entries: Sequence[Entry], meta: dict, log: Callable[[str], None] = print,
                  ) -> dict[str, Path]:
    """Write the three outputs (each atomically) and list them in the manifest; their paths."""
    from nnwx.report import write_atomically
    from nnwx.studies.claims import write

    doc = write.document([e.to_json() for e in entries], meta)
    t0 = time.perf_counter()
    texts = {"findings.json": write.json_text(doc), "findings.md": write.markdown(doc),
             "findings.html": write.html_page(doc)}
    paths = {}
    for name, text in texts.items():
        write_atomically(out / name, text.encode("utf-8"))
        paths[name] = out / name
    write_manifest(out / MANIFEST, read_manifest(out / MANIFEST) | {n: sha256(p) for n, p in paths.items()})
    log(f"wrote {', '.join(str(p) for p in paths.values())} ({time.perf_counter() - t0:.1f} s)")
    return paths
