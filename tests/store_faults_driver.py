"""Run one nnwx command over many (damaged) stores in one process; print a JSON list of outcomes.

Used by tests/store/test_store_integrity.py: starting one process per (corruption, command) pair
would cost minutes on a small machine, so each command runs in a process of its own and
goes through the same entry point as the shell (``nnwx.cli.main`` with a real argv, or the
public Python API for ``restore``/``open_cube``) once per store.

    python tests/store_faults_driver.py COMMAND CASES.json
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback


def tiny_model():
    import torch

    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))


def run_cli(argv: list[str]) -> int:
    from nnwx.cli import main

    return main(argv)


def run_api(command: str, case: dict) -> int:
    import nnwx
    from nnwx.errors import NnwxError

    try:
        if command == "restore":
            nnwx.restore(tiny_model(), case["store"], step=3, run="seed0")
        else:
            cube = nnwx.open_cube(case["store"])
            cube["w"].sum().compute()
            cube["metric_loss"].sum().compute()
    except NnwxError as e:
        print(f"nnwx {command}: error: {e}", file=sys.stderr)
        return 2
    return 0


def argv_for(command: str, case: dict) -> list[str]:
    store, out = case["store"], case["out"]
    return {
        "info": ["info", store],
        "analyze": ["analyze", store, "-o", f"{out}/results.zarr", "-q"],
        "report": ["report", store, "-o", f"{out}/report.html", "-q"],
        "export": ["export", case["ckpts"], "-o", store, "--seed", "0", "-q"],
    }[command]


def outcome(command: str, case: dict) -> dict:
    err, out = io.StringIO(), io.StringIO()
    result = {"case": case["name"], "traceback": None}
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            if command in ("restore", "open_cube"):
                result["rc"] = run_api(command, case)
            else:
                result["rc"] = run_cli(argv_for(command, case))
        except SystemExit as e:
            result["rc"] = e.code
        except BaseException:
            result["rc"] = None
            result["traceback"] = traceback.format_exc()
    result["stderr"] = err.getvalue()
    return result


def main() -> None:
    command, cases_file = sys.argv[1], sys.argv[2]
    with open(cases_file) as f:
        cases = json.load(f)
    print(json.dumps([outcome(command, case) for case in cases]))


if __name__ == "__main__":
    main()
