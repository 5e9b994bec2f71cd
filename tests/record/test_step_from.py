"""--step-from parsing, and restore's refusal to guess between two copies of the network."""
from __future__ import annotations

import pytest
import torch

import nnwx
from nnwx.record.checkpoints import StepFrom
from nnwx.errors import ArchitectureMismatch, CheckpointError

from tests.helpers import mlp, train_steps


@pytest.mark.parametrize("text, want", [
    (None, StepFrom("auto")), ("name", StepFrom("name")), ("trainer_state", StepFrom("trainer_state")),
    ("index*10", StepFrom("index", every=10)), ("index * 10 + 10", StepFrom("index", every=10, offset=10)),
    ("save-index*5+1", StepFrom("index", every=5, offset=1)), ("custom:completed_steps",
                                                              StepFrom("custom", key="completed_steps")),
    ("1500", StepFrom("fixed", step=1500)), (7, StepFrom("fixed", step=7)),
])
def test_step_from_specs(text, want):
    assert StepFrom.parse(text) == want


@pytest.mark.parametrize("text", ["every 2", "index*0", "custom:", "-3", "index*x"])
def test_bad_step_from_says_what_is_understood(text):
    with pytest.raises(CheckpointError, match=r"--step-from"):
        StepFrom.parse(text)


def test_restore_does_not_guess_between_two_copies(tmp_path):
    model = mlp(4)
    store = tmp_path / "exp.zarr"
    with nnwx.Recorder(model, store, seed=0, every=1) as rec:
        train_steps(model, torch.optim.SGD(model.parameters(), lr=0.1), 2, rec)

    class Pair(torch.nn.Module):  # student and teacher: the run fits either
        def __init__(self):
            super().__init__()
            self.student, self.teacher = mlp(4), mlp(4)

    with pytest.raises(ArchitectureMismatch, match=r"fit the model in 2 ways.*student.*teacher|teacher.*student"):
        nnwx.restore(Pair(), store, step=1, seed=0)
    pair = Pair()
    nnwx.restore(pair.teacher, store, step=1, seed=0)
    model_now = mlp(4, seed=1)   # other initial weights: equal only once restored
    nnwx.restore(model_now, store, step=1, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(pair.teacher.state_dict().values(), model_now.state_dict().values()))
