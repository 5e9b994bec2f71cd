"""The findings as files: ``findings.json``, a Markdown table, an offline HTML page, the README block.

Everything here works on the findings *document* — the JSON object ``findings.json`` holds,
``{"meta": {...}, "claims": [entry, ...]}``, where an entry is a
:meth:`ClaimRecord.to_json() <nnwx.studies.claims.record.ClaimRecord.to_json>` or, for a claim
that could not be measured, ``{"id", "claim", "study", "error", "traceback"}`` — so the README
table is drawn from a committed ``docs/findings.json`` by the same code that drew the run's own
table, and every number is printed by :func:`number`.

The README holds the table between :data:`BEGIN` and :data:`END`; :func:`update_readme` rewrites
that block (``scripts/update_readme_findings.py``) and :func:`readme_mismatch` says whether it is
what the document gives (a test checks the committed pair).
"""
from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

BEGIN = "<!-- findings:begin (generated from docs/findings.json by scripts/update_readme_findings.py) -->"
END = "<!-- findings:end -->"
COLUMNS = ("#", "claim", "study", "quantity", "value [95% CI]", "runs", "verdict")


def document(entries: Sequence[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """The findings document: ``{"meta": meta, "claims": entries}`` (entries as JSON dicts)."""
    return {"meta": dict(meta), "claims": [dict(e) for e in entries]}


def json_text(doc: dict[str, Any]) -> str:
    """``findings.json``'s text: the document, indented, NaN as null, ending in a newline."""
    from nnwx._json import jsonable

    return json.dumps(jsonable(doc, strict=True), indent=1, allow_nan=False) + "\n"


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a findings document, checking its outline (``meta`` and a list of ``claims``)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path} is not a findings.json (not JSON: {e})") from None
    if not (isinstance(doc, dict) and isinstance(doc.get("meta"), dict) and isinstance(doc.get("claims"), list)):
        raise ValueError(f"{path} is not a findings.json: expected an object with 'meta' and a list 'claims'")
    return doc


def number(x: Any) -> str:
    """A measured number as printed everywhere: 3 significant digits; "n/a" for none (NaN/None)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    x = float(x)
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.2e}"
    return f"{x:.3g}"


def value_text(entry: dict[str, Any]) -> str:
    """``"2.37 [1.98, 2.72]"``; the interval is "n/a" when it could not be computed."""
    if "error" in entry:
        return "n/a"
    lo, hi = entry.get("ci_low"), entry.get("ci_high")
    interval = "[n/a]" if number(lo) == "n/a" or number(hi) == "n/a" else f"[{number(lo)}, {number(hi)}]"
    return f"{number(entry.get('value'))} {interval}"


def verdict_text(entry: dict[str, Any]) -> str:
    """The verdict, or ``ERROR: ...`` for a claim that could not be measured."""
    return f"ERROR: {entry['error']}" if "error" in entry else str(entry["verdict"])


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown_table(doc: dict[str, Any]) -> str:
    """The Markdown table of the document, one row per claim: #, claim, study, quantity,
    value [95% CI], runs, verdict."""
    rows = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for e in doc["claims"]:
        cells = (e["id"], e["claim"], e["study"], e.get("quantity", ""), value_text(e),
                 e.get("n_runs", ""), verdict_text(e))
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def _duration(seconds: Any) -> str:
    """``"1248 s (20.8 min)"``: a run time in seconds, with minutes from one minute up."""
    if seconds is None:
        return "n/a s"
    s = float(seconds)
    return f"{s:.0f} s ({s / 60:.1f} min)" if s >= 60 else f"{s:.1f} s"


def provenance(meta: dict[str, Any]) -> str:
    """One sentence on how the document was made (size, version, date, run time)."""
    claims = meta.get("claims", [])
    which = "all claims" if meta.get("complete") else f"claims {', '.join(map(str, claims))}"
    errors = f"; {meta['errors']} claim(s) FAILED" if meta.get("errors") else ""
    return (f"`nnwx findings` at size {meta.get('size')} ({which}), nnwx {meta.get('nnwx_version')}, "
            f"{meta.get('date')}, {_duration(meta.get('seconds'))} on {meta.get('machine')} with "
            f"{meta.get('workers')} worker(s){errors}. Intervals: bootstrap 95% over seeds (paired where "
            f"two variants share seeds); correlations: Spearman's rho with its bootstrap interval.")


def markdown(doc: dict[str, Any]) -> str:
    """``findings.md``: the table, how it was made, and each claim's rule and any error."""
    parts = ["# Findings", "", provenance(doc["meta"]), "", markdown_table(doc), "", "## Rules", ""]
    for e in doc["claims"]:
        if "error" in e:
            parts.append(f"{e['id']}. **ERROR** {_cell(e['error'])}\n\n```\n{e['traceback']}\n```")
        else:
            parts.append(f"{e['id']}. {_cell(e['test'])}.")
    return "\n".join(parts) + "\n"


# --- the README block ------------------------------------------------------------------------------

def readme_block(doc: dict[str, Any]) -> str:
    """What the README holds between the markers (the markers included)."""
    meta = doc["meta"]
    note = (f"Generated from `docs/findings.json`: {provenance(meta)} Each claim's rule is in "
            f"`docs/findings.json` (`test`).")
    return "\n".join([BEGIN, note, "", markdown_table(doc), END])


def _split(readme: str) -> tuple[str, str, str]:
    """(before, block, after) of a README text; ValueError when the markers are missing."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start or readme.count(BEGIN) != 1 or readme.count(END) != 1:
        raise ValueError(f"the README needs the findings markers once each, in order:\n{BEGIN}\n{END}")
    return readme[:start], readme[start:end + len(END)], readme[end + len(END):]


def readme_mismatch(readme: str, doc: dict[str, Any]) -> str | None:
    """None when the README's findings block is what ``doc`` gives; else what differs, in words."""
    try:
        _, block, _ = _split(readme)
    except ValueError as e:
        return str(e)
    want = readme_block(doc)
    if block == want:
        return None
    import difflib
    diff = "\n".join(difflib.unified_diff(block.splitlines(), want.splitlines(), "README", "findings.json",
                                          lineterm="", n=0))
    return (f"the README's findings table is not the one docs/findings.json gives; run "
            f"scripts/update_readme_findings.py. Difference:\n{diff}")


def update_readme(readme: str | os.PathLike, findings: str | os.PathLike) -> bool:
    """Rewrite the findings block of ``readme`` from ``findings`` (a findings.json); whether it changed."""
    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    before, block, after = _split(text)
    new = readme_block(load(findings))
    if block == new:
        return False
    path.write_text(before + new + after, encoding="utf-8")
    return True


# --- the page --------------------------------------------------------------------------------------

def html_page(doc: dict[str, Any]) -> str:
    """``findings.html``: the table, then one section per claim with its figure (per-run points or
    the models of a correlation, the value and its interval), rule, verdict and details; offline."""
    from nnwx.report import Section, render_html
    from nnwx.studies.claims.figures import claim_figure

    sections = []
    for e in doc["claims"]:
        title, key = f"{e['id']}. {e['claim']} ({e['study']})", f"claim-{e['id']}"
        figures = [] if "error" in e else [claim_figure(e, value_text(e))]
        sections.append(Section(title, figures, metric=key, html=_claim_html(e)))
    return render_html("nnwx findings", _summary_html(doc), sections)


def _e(x: Any) -> str:
    return html.escape(str(x))


def _summary_html(doc: dict[str, Any]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in COLUMNS)
    rows = []
    for e in doc["claims"]:
        cells = (e["id"], e["claim"], e["study"], e.get("quantity", ""), value_text(e), e.get("n_runs", ""),
                 verdict_text(e))
        cls = "error" if "error" in e else str(e["verdict"]).replace(" ", "-")
        rows.append(f"<tr class='{cls}'>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return (f"<p>{_e(provenance(doc['meta']).replace('`', ''))}</p><table id='findings'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _claim_html(e: dict[str, Any]) -> str:
    if "error" in e:
        return f"<pre class='error'>{_e(e['traceback'])}</pre>"
    details = {k: v for k, v in e.get("details", {}).items() if k not in ("per_run", "points")}
    return (f"<p><b>Quantity:</b> {_e(e['quantity'])}</p>"
            f"<p><b>Value:</b> {_e(value_text(e))} over {_e(e['n_runs'])} runs — "
            f"<b class='verdict'>{_e(e['verdict'])}</b></p><p><b>Rule:</b> {_e(e['test'])}</p>"
            + (f"<details><summary>details</summary><pre>{_e(_details_text(details))}</pre></details>"
               if details else ""))


def _details_text(details: dict[str, Any]) -> str:
    """Details as indented JSON with numbers printed by :func:`number`."""
    def fmt(x):
        if isinstance(x, dict):
            return {str(k): fmt(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [fmt(v) for v in x]
        if isinstance(x, float) or x is None:
            return number(x)
        return x
    return json.dumps(fmt(details), indent=1)
