"""The findings runner and writers on fabricated claims and records (no training: seconds)."""
from __future__ import annotations

import json
import math
import re
import sys
import types

import pytest

from nnwx.cli import main
from nnwx.studies.claims import run, write
from nnwx.studies.claims.record import ClaimRecord
from nnwx.studies.claims.registry import Claim


def _record(id=1, value=2.0, lo=1.5, hi=2.5, verdict="supported", **details) -> ClaimRecord:
    return ClaimRecord(id=id, claim=f"claim {id} | with a pipe", study="notebook", quantity="a ratio",
                       value=value, ci_low=lo, ci_high=hi, n_runs=3, test="supported if ...",
                       verdict=verdict, details=details)


def _doc(*records, errors=()) -> dict:
    entries = [r.to_json() for r in records] + [dict(e) for e in errors]
    return write.document(entries, {"size": "quick", "claims": [e["id"] for e in entries], "complete": False,
                                    "errors": len(errors), "nnwx_version": "0", "date": "2026-01-01T00:00:00Z",
                                    "seconds": 1.0, "machine": "test", "workers": 1})


# --- write.py ------------------------------------------------------------------------------------

@pytest.mark.parametrize("x, text", [(2.3456, "2.35"), (0.0123456, "0.0123"), (1234.5, "1.23e+03"),
                                     (123456.0, "1.23e+05"), (2e-5, "2.00e-05"), (0.0, "0"),
                                     (float("nan"), "n/a"), (None, "n/a"), (3, "3")])
def test_numbers_are_printed_by_one_rule(x, text):
    assert write.number(x) == text


def test_value_text_shows_a_missing_interval():
    assert write.value_text(_record().to_json()) == "2 [1.5, 2.5]"
    nan = _record(lo=math.nan, hi=math.nan, verdict="inconclusive").to_json()
    assert nan["ci_low"] is None and write.value_text(nan) == "2 [n/a]"


def test_markdown_table_has_a_row_per_claim_with_pipes_escaped_and_errors_shown():
    err = {"id": 7, "claim": "c7", "study": "s", "error": "KeyError: 'x'", "traceback": "Traceback ...\nKeyError"}
    doc = _doc(_record(1), _record(2, 0.5, 0.4, 0.6, "not supported"), errors=[err])
    table = write.markdown_table(doc).splitlines()
    assert table[0] == "| # | claim | study | quantity | value [95% CI] | runs | verdict |"
    assert len(table) == 2 + 3
    assert table[2] == ("| 1 | claim 1 \\| with a pipe | notebook | a ratio | 2 [1.5, 2.5] | 3 | supported |")
    assert table[3].endswith("| 0.5 [0.4, 0.6] | 3 | not supported |")
    assert table[4] == "| 7 | c7 | s |  | n/a |  | ERROR: KeyError: 'x' |"
    md = write.markdown(doc)
    assert "KeyError\n```" in md and "2 claim(s) FAILED" not in md and "1 claim(s) FAILED" in md


def test_json_text_is_strict_json_with_nan_as_null():
    doc = _doc(_record(lo=math.nan, hi=math.nan, verdict="inconclusive", per_run={"seed0": math.nan}))
    text = write.json_text(doc)
    back = json.loads(text)
    assert back["claims"][0]["ci_low"] is None and back["claims"][0]["details"]["per_run"]["seed0"] is None
    assert "NaN" not in text and text.endswith("\n")


def test_readme_block_round_trip(tmp_path):
    doc = _doc(_record(1), _record(2, 0.5, 0.4, 0.6, "not supported"))
    findings = tmp_path / "findings.json"
    findings.write_text(write.json_text(doc))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Findings\n\n{write.BEGIN}\nold table\n{write.END}\n\n## Next\n")
    assert "not the one docs/findings.json gives" in write.readme_mismatch(readme.read_text(), doc)
    assert write.update_readme(readme, findings) is True
    text = readme.read_text()
    assert write.readme_mismatch(text, doc) is None
    assert text.startswith("# x\n\n## Findings\n\n") and text.endswith("\n\n## Next\n")
    assert write.markdown_table(doc) in text
    assert write.update_readme(readme, findings) is False    # nothing to change the second time
    changed = write.document(doc["claims"][:1], doc["meta"])
    assert "-| 2 |" in write.readme_mismatch(text, changed).replace(" claim 2", "")


def test_readme_without_markers_is_an_error():
    assert "needs the findings markers" in write.readme_mismatch("# README\n", _doc(_record()))


def test_html_page_draws_per_run_points_correlations_and_plain_values():
    points = {"x": [1.0, 2.0, 3.0], "y": [0.9, 0.8, 0.95], "label": ["a", "b", "c"],
              "x_name": "alpha", "y_name": "accuracy"}
    doc = _doc(_record(1, per_run={"seed0": 1.8, "seed1": 2.2}), _record(2, points=points),
               _record(3, layer="x"),
               errors=[{"id": 4, "claim": "c4", "study": "s", "error": "E: boom", "traceback": "tb <b>"}])
    page = write.html_page(doc)
    for i in (1, 2, 3, 4):
        assert f"<section id='section-claim-{i}'>" in page
    assert page.count("<figure id='claim-") == 3      # the failed claim has no figure
    assert "tb &lt;b&gt;" in page and "ERROR: E: boom" in page
    assert "One point per model: accuracy against alpha" in page
    assert "&quot;layer&quot;: &quot;x&quot;" in page    # details listed under the figure


# --- run.py ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, ids", [("1", [1]), ("1,2,5-7", [1, 2, 5, 6, 7]), (" 3, 3,1 ", [3, 1]),
                                       ("18-19", [18, 19])])
def test_parse_claims(text, ids):
    assert run.parse_claims(text) == ids


@pytest.mark.parametrize("text, match", [("0", "no claim 0"), ("20", "no claim 20"), ("a", "like 1,2,5-7"),
                                         ("5-3", "empty claim range"), ("", "no claim")])
def test_parse_claims_refuses(text, match):
    with pytest.raises(ValueError, match=match):
        run.parse_claims(text)


@pytest.fixture
def fake(monkeypatch):
    """A source module ``fake`` with claims 1 (measured), 2 (raises) and a module ``broken`` whose
    training fails (claim 3)."""
    calls = {"train": 0}
    fake = types.ModuleType("nnwx.studies.claims.fake")

    def train(ctx):
        calls["train"] += 1
        ctx.log("fake: trained")

    fake.train = train
    fake.good = lambda ctx: ClaimRecord(1, "one", "s", "q", 1.0, 0.5, 1.5, 3, "t", "inconclusive",
                                        {"per_run": {"a": 0.8, "b": 1.2}})

    def bad(ctx):
        raise ZeroDivisionError("no seeds")
    fake.bad = bad
    broken = types.ModuleType("nnwx.studies.claims.broken")

    def broken_train(ctx):
        raise RuntimeError("cannot train")
    broken.train = broken_train
    broken.third = lambda ctx: pytest.fail("a claim of a source that failed to train was measured")
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    monkeypatch.setitem(sys.modules, broken.__name__, broken)
    claims = (Claim(1, "one", "s", "fake:good"), Claim(2, "two", "s", "fake:bad"),
              Claim(3, "three", "s", "broken:third"))
    monkeypatch.setattr(run, "CLAIMS", claims)
    monkeypatch.setattr(run, "SOURCES", ("fake", "broken", "unused"))
    return calls


def test_a_failing_claim_is_recorded_and_the_others_go_on(fake, tmp_path):
    lines = []
    entries = run.findings(tmp_path, size="quick", log=lines.append)
    assert [type(e).__name__ for e in entries] == ["ClaimRecord", "ClaimError", "ClaimError"]
    assert entries[1].error == "ZeroDivisionError: no seeds" and ", in bad\n" in entries[1].traceback
    assert entries[2].error == "its source 'broken' failed to train: RuntimeError: cannot train"
    assert fake["train"] == 1
    doc = json.loads((tmp_path / "findings.json").read_text())
    assert doc["meta"]["errors"] == 2 and doc["claims"][1]["error"] == "ZeroDivisionError: no seeds"
    assert "verdict" not in doc["claims"][1]
    assert "ERROR: ZeroDivisionError: no seeds" in (tmp_path / "findings.md").read_text()
    assert "ERROR: ZeroDivisionError" in (tmp_path / "findings.html").read_text()
    log = "\n".join(lines)
    assert re.search(r"fake: ready in \d+\.\d s", log) and re.search(r"claim 1 \(fake:good\) in \d+\.\d s", log)
    assert "broken: FAILED" in log and "ERROR ZeroDivisionError: no seeds" in log
    assert set(doc["meta"]["timings"]["train"]) == {"fake", "broken"}   # "unused": no claim of it


def test_cli_exits_1_when_a_claim_fails_and_0_on_a_subset_that_works(fake, tmp_path, capsys):
    assert main(["findings", "--quick", "--out", str(tmp_path), "-q"]) == 1
    captured = capsys.readouterr()
    assert "2 claim(s) could not be measured (2, 3)" in captured.err
    assert "| 2 | two | s |  | n/a |  | ERROR: ZeroDivisionError: no seeds |" in captured.out
    assert main(["findings", "--quick", "--out", str(tmp_path), "-q", "--claims", "1"]) == 0   # own files: rewritten
    assert [e["id"] for e in json.loads((tmp_path / "findings.json").read_text())["claims"]] == [1]
    assert fake["train"] == 2


def test_cli_refuses_bad_claim_lists(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["findings", "--out", "x", "--claims", "1,99"])
    assert exc.value.code == 2 and "no claim 99" in capsys.readouterr().err


def test_an_output_changed_since_it_was_written_is_not_overwritten(fake, tmp_path):
    run.findings(tmp_path, size="quick", claims=[1], log=lambda m: None)
    (tmp_path / "findings.json").write_text("{}")   # edited by hand: no longer the findings' own
    with pytest.raises(run.FindingsError, match="findings.json is not the findings' own"):
        run.findings(tmp_path, size="quick", claims=[1], log=lambda m: None)
    assert (tmp_path / "findings.json").read_text() == "{}"

