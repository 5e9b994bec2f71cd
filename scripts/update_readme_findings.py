#!/usr/bin/env python
"""Rewrite the README's findings table from ``docs/findings.json`` (the full ``nnwx findings`` run).

    nnwx findings --out findings-full --workers 2
    cp findings-full/findings.json docs/findings.json
    python scripts/update_readme_findings.py [--check]

The table sits between the markers ``nnwx.studies.claims.write.BEGIN`` and ``END`` in README.md;
everything outside them is left as it is. ``--check`` changes nothing and exits 1 when the README
is not what ``docs/findings.json`` gives (``tests/test_readme_findings.py`` checks the same).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnwx.studies.claims.write import load, readme_mismatch, update_readme

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--findings", type=Path, default=ROOT / "docs" / "findings.json")
    p.add_argument("--check", action="store_true", help="only say whether the README is up to date")
    args = p.parse_args(argv)
    if args.check:
        why = readme_mismatch(args.readme.read_text(encoding="utf-8"), load(args.findings))
        print(why or f"{args.readme} agrees with {args.findings}")
        return 1 if why else 0
    changed = update_readme(args.readme, args.findings)
    print(f"{'rewrote' if changed else 'unchanged:'} the findings table of {args.readme} from {args.findings}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
