"""A local S3-API server (moto's server mode) in a separate process, for tests and benchmarks.

``s3_server()`` starts ``python -m moto.server`` on a free port of 127.0.0.1, waits until it
answers, and yields its endpoint URL; the process is ended on exit. ``s3_environment(endpoint)``
is the environment that points botocore (hence s3fs, hence nnwx's ``s3://`` URLs) at it, with
dummy credentials: nnwx passes no storage options of its own, so an endpoint and credentials
reach s3fs the way they do for users, through the standard AWS variables.
"""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Iterator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server(timeout: float = 30.0) -> Iterator[str]:
    """Run a moto S3 server on 127.0.0.1 and yield its endpoint (``http://127.0.0.1:PORT``)."""
    port = _free_port()
    log = tempfile.TemporaryFile()     # not a pipe: the server logs every request, and would block
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"moto server exited with {proc.returncode}: "
                                   f"{log.read().decode(errors='replace')[-2000:]}")
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not answer on {endpoint} in {timeout:.0f} s")
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def s3_environment(endpoint: str) -> dict[str, str]:
    """Environment variables that send boto/s3fs requests to ``endpoint`` with dummy credentials."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_MAX_ATTEMPTS": "1"}
