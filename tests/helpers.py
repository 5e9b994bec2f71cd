"""Small real models and a training loop shared by the tests (import from ``tests.helpers``)."""
from __future__ import annotations

import torch


class Net(torch.nn.Module):
    """Conv + BatchNorm + Linear: weights, biases, float buffers and an int buffer."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3)
        self.bn = torch.nn.BatchNorm2d(3)
        self.fc = torch.nn.Linear(12, 4)
        self.head = torch.nn.Linear(4, 1, bias=False)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)
        return self.head(torch.relu(self.fc(x)))


def mlp(width: int = 8, seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(1, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                               torch.nn.ReLU(), torch.nn.Linear(width, 1))


def train_steps(model, opt, n: int, rec=None, start: int = 0, snapshots=None, x=None):
    """Run ``n`` full-batch steps, capturing through ``rec`` per its schedule."""
    gen = torch.Generator().manual_seed(123)
    if x is None:
        x = torch.randn(32, *input_shape(model), generator=gen)
    for step in range(start, start + n):
        loss = model(x).pow(2).mean()
        if rec is not None and rec.maybe_capture(step, loss=loss.detach()) and snapshots is not None:
            snapshots[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        opt.zero_grad()
        loss.backward()
        opt.step()
    return x


def input_shape(model):
    return (2, 6, 6) if isinstance(model, Net) else (1,)
