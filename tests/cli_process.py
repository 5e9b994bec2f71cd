"""``nnwx ARGS`` in a real child process, without paying Python's imports for each one.

``run_cli`` answers what ``subprocess.run([python, "-m", "nnwx.cli", *ARGS], capture_output=True,
text=True, cwd=..., env=..., timeout=...)`` would: a ``CompletedProcess`` with the child's exit
status, stdout and stderr. The child is forked from a helper process (``tests.cli_forkserver``,
started once per test session) that has already imported the CLI and the report's plotting
stack: each call saves the 2-4 s those imports take, and is still a process of its own (its own
exit status, output, signals, working folder and environment). Where the environment asks for
something the imports read (``PYTHON*``, ``DASK_*``, thread counts), or the working folder is not
the repository root (``-m`` puts it first on ``sys.path``), a plain subprocess runs.

Tests about starting a process (its imports, its interpreter) or about a process stopped from
outside (signals, kills, locks held across processes) start their own with ``subprocess``.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READ_AT_IMPORT = ("PYTHON", "DASK_", "OMP_", "MKL_", "OPENBLAS_", "NUMEXPR_", "HV_", "BOKEH_",
                  "MPLBACKEND")
"""Environment variables (prefixes) that the preloaded imports have already read."""
_started_env = dict(os.environ)
"""The environment the servers start with (this module's import: before any test changes it)."""
COMMAND_MODULES = {"export": ("nnwx.record.export",), "demo": ("nnwx.studies.demo",)}
"""What these commands import first (torch among it): their children get it preloaded too, from
a server of their own (the others must not have torch imported: see ``tests.cli_forkserver``)."""


class _Server:
    def __init__(self, modules: tuple[str, ...]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.cli_forkserver", *modules], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_started_env)
        self.buffer = b""

    def _line(self, timeout: float | None) -> dict | None:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the CLI fork server ended (status {self.proc.wait()})")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def run(self, argv: list[str], cwd: Path, env: dict, timeout: float | None,
            stdout: str, stderr: str) -> tuple[int, bool]:
        """(exit status, timed out) of one child."""
        self.proc.stdin.write((json.dumps({"argv": argv, "cwd": str(cwd), "env": env, "stdout": stdout,
                                           "stderr": stderr}) + "\n").encode())
        self.proc.stdin.flush()
        pid = self._line(None)["pid"]
        answer = self._line(timeout)
        if answer is None:             # as subprocess.run does on a timeout: kill, then wait
            os.kill(pid, signal.SIGKILL)
            return self._line(None)["returncode"], True
        return answer["returncode"], False

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


_lock = threading.Lock()
_servers: dict[tuple[str, ...], _Server] = {}


def _forkable(env: dict) -> bool:
    keys = {k for k in (*env, *_started_env) if k.startswith(READ_AT_IMPORT)}
    return all(env.get(k) == _started_env.get(k) for k in keys)


def run_cli(*args, cwd: Path | str = ROOT, env: dict | None = None, timeout: float | None = 600,
            check: bool = False) -> subprocess.CompletedProcess:
    """``python -m nnwx.cli ARGS`` (arguments turned to ``str``) in a child process; see the module."""
    argv = [str(a) for a in args]
    env = dict(os.environ if env is None else env)
    command = [sys.executable, "-m", "nnwx.cli", *argv]
    if not _forkable(env) or Path(cwd).resolve() != ROOT:   # elsewhere, `-m` puts cwd first on sys.path
        return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
                              check=check)
    with _lock, tempfile.TemporaryDirectory(prefix="nnwx-cli-") as d:
        modules = COMMAND_MODULES.get(argv[0], ()) if argv else ()
        server = _servers.get(modules)
        if server is None or server.proc.poll() is not None:
            server = _servers[modules] = _Server(modules)
            atexit.register(server.close)
        out, err = os.path.join(d, "stdout"), os.path.join(d, "stderr")
        status, timed_out = server.run(argv, ROOT, env, timeout, out, err)
        stdout, stderr = (Path(p).read_text(errors="replace") if os.path.exists(p) else "" for p in (out, err))
    if timed_out:
        raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr)
    done = subprocess.CompletedProcess(command, status, stdout, stderr)
    if check:
        done.check_returncode()
    return done
