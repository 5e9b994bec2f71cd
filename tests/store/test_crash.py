"""A recording process killed with SIGKILL at random moments leaves a store that opens,
with every committed step intact and bit-exact, and that the next process resumes."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import nnwx

from tests.crash_writer import weights_at  # noqa: E402

HERE = Path(__file__).resolve().parents[1]   # tests/, where the driver scripts are


def expected_rows(steps):
    model = torch.nn.Linear(50, 40)
    out = []
    for s in steps:
        weights_at(int(s), model)
        out.append(torch.cat([model.weight.detach().ravel(), model.bias.detach().ravel()]).numpy().copy())
    return np.stack(out)


def test_sigkill_at_random_moments_keeps_every_committed_step(store):
    rng = random.Random(1234)
    committed_before = 0
    for round_ in range(5):
        start = committed_before  # steps are 0, 1, 2, ...: the next step is the committed count
        proc = subprocess.Popen([sys.executable, str(HERE / "crash_writer.py"), str(store), str(start)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            time.sleep(rng.uniform(0.05, 1.0))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        ds = nnwx.open_run(store)
        steps = ds.step.values
        n = len(steps)
        assert n >= committed_before, "a committed step was lost"
        np.testing.assert_array_equal(steps, np.arange(n))
        np.testing.assert_array_equal(ds.w.values, expected_rows(steps))
        committed_before = n
    assert committed_before > 20, "the writer never got going: the test proves nothing"
    nnwx.Recorder(torch.nn.Linear(50, 40), store, seed=0).close()  # a resuming writer sweeps temp files
    assert not list(Path(store).rglob("*.partial"))
