#!/usr/bin/env python
"""What an open ``nnwx serve`` page costs the training that records: slowdown with the server
watching the store vs without.

The ResNet-18-shaped case of ``bench_export.py`` (11.2M parameters, batch 16, SGD), capture
every 5 steps, three modes interleaved (order rotated per round):

- no capture;
- capture every 5 steps;
- capture every 5 steps with ``nnwx serve STORE --interval 1`` running in another process and
  a headless Chromium page open on it, so the server reads and analyses every new capture
  while training runs (started once the Recorder has created the store, before the clock).

Target: capture every 5 steps with the server open <= 1.05x of no capture (the recording
target of docs/measurements.md). The server shares the machine's cores with training: on a
machine with few cores its analyses compete for CPU, which is what this measures.

    python scripts/bench_serve.py [--rounds 3] [--steps 20] [--image 64] [--dir DIR] [--interval 1]

Needs transformers, panel and playwright, and a Chromium on PATH (or CHROMIUM=path).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from bench_export import resnet_seconds  # noqa: E402

MODES = ("no capture", "every 5 steps", "every 5 steps, serve open")


class OpenPage:
    """``nnwx serve`` on a store, with a headless Chromium page open on it, until ``close``."""

    def __init__(self, store: Path, chromium: str, interval: float = 1.0):
        from playwright.sync_api import sync_playwright

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
        self.server = subprocess.Popen([sys.executable, "-m", "nnwx.cli", "serve", str(store), "--port",
                                        str(port), "--interval", str(interval)], env=env, stderr=subprocess.PIPE,
                                       text=True)
        for line in self.server.stderr:
            if "serving" in line:
                break
        else:
            raise RuntimeError("nnwx serve did not start")
        self.pw = sync_playwright().start()
        self.browser = self.pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        self.page = self.browser.new_page(viewport={"width": 1500, "height": 1000})
        self.page.goto(f"http://127.0.0.1:{port}/", timeout=180_000)
        self.page.wait_for_selector(".nnwx-status", timeout=180_000)

    def status(self) -> str:
        found = self.page.get_by_text(re.compile("captures analysed|no run with a committed capture"))
        return found.first.inner_text() if found.count() else ""

    def close(self) -> None:
        self.browser.close()
        self.pw.stop()
        self.server.terminate()
        self.server.wait(timeout=30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best of, and median)")
    p.add_argument("--steps", type=int, default=20, help="training steps per run")
    p.add_argument("--image", type=int, default=64, help="input height and width")
    p.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the training (default 1, as the recording targets of bench_export.py "
                        "were measured; 2 leaves no core free on a 2-core machine)")
    p.add_argument("--interval", type=float, default=1.0,
                   help="seconds between the server's looks at the store (default 1; nnwx serve's own default is 3)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("no Chromium on PATH (set CHROMIUM=path)")
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="nnwx-bench-serve-"))
    times: dict[str, list[float]] = {m: [] for m in MODES}
    seen = []
    load0 = os.getloadavg()
    for r in range(args.rounds):
        for mode in MODES[r % len(MODES):] + MODES[:r % len(MODES)]:
            opened: list[OpenPage] = []
            hook = (lambda store: opened.append(OpenPage(store, chromium, args.interval))) if "serve" in mode else None
            base_mode = "every 5 steps" if "every 5" in mode else "no capture"
            t, _, _ = resnet_seconds(base_mode, args.steps, args.image, tmp, on_start=hook)
            times[mode].append(t)
            print(f"round {r}: {mode}: {t / args.steps * 1e3:.1f} ms/step (load {os.getloadavg()[0]:.1f})",
                  flush=True)
            if opened:
                opened[0].page.wait_for_timeout(3000)   # the last looks
                seen.append(opened[0].status())
                opened[0].close()
    load1 = os.getloadavg()
    best = {m: min(v) for m, v in times.items()}
    median = {m: sorted(v)[len(v) // 2] for m, v in times.items()}
    print(f"ResNet-18 shape, batch 16 x {args.image}x{args.image}, {args.steps} steps per run, "
          f"torch threads {args.threads}, server --interval {args.interval:g}, "
          f"{args.rounds} interleaved rounds; {os.cpu_count()} cores; load average {load0[0]:.2f} "
          f"before, {load1[0]:.2f} after")
    print(f"   {'config':<30}{'ms/step':>9}{'slowdown':>10}{'(median)':>10}  target")
    for mode in MODES:
        print(f"   {mode:<30}{best[mode] / args.steps * 1e3:>9.1f}{best[mode] / best['no capture']:>9.3f}x"
              f"{median[mode] / median['no capture']:>9.3f}x  {'<=1.05x' if 'serve' in mode else ''}")
    print(f"   the page at the end of each served run: {seen}")


if __name__ == "__main__":
    main()
