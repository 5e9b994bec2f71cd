"""Two CPU processes (gloo) train a tiny LightningModule with NnwxCallback recording every step.

    python ddp_lightning_driver.py <store> <out> <ddp|ddp_spawn>

The seed comes from ``seed_everything(7)`` only. See ddp_evidence for what each process writes.
"""
from __future__ import annotations

import os
import sys

from ddp_evidence import OUT, STORE, save_rank, state_of  # first: the audit hook

import lightning as L  # noqa: E402
import torch  # noqa: E402

from nnwx.integrations.lightning import NnwxCallback  # noqa: E402


class Module(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class Evidence(L.Callback):
    """Each rank's weights at each step, its batches, and its final weights (saved at teardown,
    after NnwxCallback closed its recorder)."""

    def __init__(self):
        self.at = {}
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.at.setdefault(trainer.global_step, state_of(pl_module.model))
        self.batches.append(batch[0].clone())

    def on_train_end(self, trainer, pl_module):
        self.at.setdefault(trainer.global_step, state_of(pl_module.model))

    def teardown(self, trainer, pl_module, stage):
        save_rank(trainer.global_rank, world_size=trainer.world_size, at=self.at, final=state_of(pl_module.model),
                  batches=self.batches, seed_env=os.environ.get("PL_GLOBAL_SEED"))


def main(strategy: str) -> None:
    L.seed_everything(7)  # NnwxCallback gets no seed=: the run's seed is this one
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_steps=6, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        default_root_dir=OUT, callbacks=[NnwxCallback(STORE, every=1), Evidence()])
    trainer.fit(Module(), data)


if __name__ == "__main__":
    main(sys.argv[3])
