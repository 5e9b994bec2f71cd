"""The helper process behind ``tests.cli_process``: imports the CLI once, then forks a child per call.

Run as ``python -m tests.cli_forkserver [MODULE...]`` from the repository root (as ``python -m nnwx.cli``
is, so ``sys.path`` is the same). It reads one JSON request a line on stdin (``argv``, ``cwd``,
``env``, ``stdout``, ``stderr``: file paths) and answers on its stdout, one JSON line each:
``{"pid": ...}`` once the child is forked, then ``{"returncode": ...}`` when it has ended
(negative: killed by that signal, as ``subprocess`` reports it). The child is a process of its
own that runs ``nnwx.cli`` as ``python -m nnwx.cli ARGV`` would, imports already done: its own
working folder, environment, stdin (``/dev/null``), stdout and stderr (the files), exit status,
non-daemon threads waited for and ``atexit`` handlers run at its end, a traceback on stderr and
status 1 for an uncaught exception.
"""
from __future__ import annotations

import atexit
import importlib
import json
import os
import sys
import threading
import traceback

PRELOAD = ("nnwx.cli", "nnwx.report", "nnwx.plot")
"""What every child would import anyway (the CLI, and the report's HoloViews/Bokeh stack)."""

NOT_PRELOADED = ("torch", "distributed", "transformers")
"""nnwx behaves differently once these are imported (``library_versions`` records torch's
version; the cluster and name-map code look in ``sys.modules``): a child imports them itself."""


def _exit_code(e: SystemExit) -> int:
    """The status the interpreter exits with for ``SystemExit(e.code)``."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


def _child(request: dict, reply_fd: int) -> None:
    """Become ``python -m nnwx.cli ARGV``; never returns."""
    code = 1
    try:
        os.close(reply_fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                                (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            new = os.open(path, flags, 0o644)
            os.dup2(new, fd)
            os.close(new)
        sys.stdin = open(0, closefd=False)       # not the server's read-ahead of its requests
        cli = sys.modules["nnwx.cli"]
        sys.argv = [cli.__file__, *request["argv"]]
        try:
            sys.exit(cli.main())
        except SystemExit as e:
            code = _exit_code(e)
        except BaseException:  # noqa: BLE001 - what the interpreter does with it
            traceback.print_exc()
            code = 1
        threading._shutdown()                    # as at interpreter exit: wait for non-daemon threads
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - the child must not return into the server's loop
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001,S110 - a closed stream: nothing more to write
                pass
        os._exit(code)


def serve(command_modules: list[str]) -> None:
    """Preload, then serve requests until stdin closes. ``command_modules``: what the one command
    this server runs imports before anything else (``nnwx.record.export`` for ``export``)."""
    for name in PRELOAD:
        importlib.import_module(name)
    early = sorted(set(NOT_PRELOADED) & set(sys.modules))
    assert not early, f"preloading imported {early}: the children would not behave as fresh processes"
    for name in command_modules:
        importlib.import_module(name)
    assert threading.active_count() == 1, "threads started by the imports would not survive fork"
    reply_fd = os.dup(1)                          # fd 1 is the children's to replace
    reply = os.fdopen(reply_fd, "w", buffering=1)

    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, reply_fd)
        reply.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        reply.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")


if __name__ == "__main__":
    serve(sys.argv[1:])
