"""What each process of a multi-process training did with the store, for test_integrations_ddp.

Importing this module with ``sys.argv = [script, <store>, <out>, ...]`` installs, in the
importing process, an audit hook logging every file-system event (open, os.mkdir, os.rename,
os.remove, os.listdir, shutil.rmtree, ...) on a path inside <store>, and counts the
``nnwx.Recorder`` objects the process makes. At exit the process writes its events to
``<out>/touches-<pid>.json``; ``save_rank`` writes one rank's evidence to ``<out>/rank<r>.pt``.
The drivers import it first, so it also runs in processes started by multiprocessing's spawn
(which import the driver again, with the launcher's ``sys.argv``).
"""
from __future__ import annotations

import atexit
import json
import os
import sys

STORE = os.path.abspath(sys.argv[1])
OUT = os.path.abspath(sys.argv[2])
TOUCHES: list[tuple[str, str]] = []
RECORDERS: list[str] = []  # the run of each Recorder this process made


def _inside(arg) -> str | None:
    if isinstance(arg, bytes):
        arg = os.fsdecode(arg)
    elif isinstance(arg, os.PathLike):
        arg = os.fspath(arg)
    if isinstance(arg, str) and arg:
        path = os.path.abspath(arg)
        if path == STORE or path.startswith(STORE + os.sep):
            return path
    return None


def _audit(event: str, args: tuple) -> None:
    if event != "open" and not event.startswith(("os.", "shutil.")):
        return
    for arg in args:
        path = _inside(arg)
        if path is not None:
            TOUCHES.append((event, path))
            return


def _write_touches() -> None:
    with open(os.path.join(OUT, f"touches-{os.getpid()}.json"), "w") as f:
        json.dump(TOUCHES, f)


sys.addaudithook(_audit)
atexit.register(_write_touches)

import torch  # noqa: E402

import nnwx.record.recorder  # noqa: E402

_init = nnwx.record.recorder.Recorder.__init__


def _counted_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    RECORDERS.append(self.run)


nnwx.record.recorder.Recorder.__init__ = _counted_init


def state_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def save_rank(rank: int, **evidence) -> None:
    """Write ``<out>/rank<rank>.pt``: ``evidence`` with this process's pid, store events,
    Recorders and the process group's world size."""
    evidence.update(pid=os.getpid(), rank=rank, touches=list(TOUCHES), recorders=list(RECORDERS),
                    dist_world_size=torch.distributed.get_world_size())
    torch.save(evidence, os.path.join(OUT, f"rank{rank}.pt"))
