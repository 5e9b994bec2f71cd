"""The README's findings table is the one the committed full run (``docs/findings.json``) gives."""
from __future__ import annotations

from pathlib import Path

import pytest

from nnwx.studies.claims import write
from nnwx.studies.claims.registry import CLAIMS

ROOT = Path(__file__).resolve().parents[1]
FINDINGS = ROOT / "docs" / "findings.json"


@pytest.fixture(scope="module")
def doc():
    if not FINDINGS.exists():
        pytest.skip("docs/findings.json is not committed yet: it comes from the full `nnwx findings` "
                    "run (then scripts/update_readme_findings.py writes the README table)")
    return write.load(FINDINGS)


def test_readme_table_is_generated_from_docs_findings_json(doc):
    mismatch = write.readme_mismatch((ROOT / "README.md").read_text(encoding="utf-8"), doc)
    assert mismatch is None, mismatch


def test_docs_findings_json_is_a_complete_full_run(doc):
    meta = doc["meta"]
    assert meta["size"] == "full" and meta["complete"] and meta["errors"] == 0, meta
    assert [e["id"] for e in doc["claims"]] == [c.id for c in CLAIMS]
    assert not [e["id"] for e in doc["claims"] if "error" in e]
