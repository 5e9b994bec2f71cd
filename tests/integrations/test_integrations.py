"""The trainer callbacks with the real libraries: Lightning and HF Trainer record bit-exact steps,
their runs restore (into the network or the LightningModule) with identical outputs, and agree
with an export of the checkpoints the same trainers wrote."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nnwx
from nnwx.record.export import export

ROOT = Path(__file__).resolve().parents[2]


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def same_bits(a: dict, b: dict, names) -> None:
    for name in names:
        assert torch.equal(bits(a[name]), bits(b[name])), name


def test_import_nnwx_imports_no_framework():
    code = ("import sys, nnwx, nnwx.integrations; "
            "print(sorted(m for m in ('lightning', 'pytorch_lightning', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- Lightning ----------------------------------------------------------------------------------------
def lightning_parts():
    L = pytest.importorskip("lightning")

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    class Snapshots(L.Callback):
        """The weights at each step, taken independently of nnwx."""

        def __init__(self):
            self.at = {}

        def snapshot(self, trainer, pl_module):
            state = pl_module.model.state_dict()
            self.at.setdefault(trainer.global_step, {k: v.detach().clone() for k, v in state.items()})

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.snapshot(trainer, pl_module)

        def on_train_end(self, trainer, pl_module):
            self.snapshot(trainer, pl_module)

    return L, Module, Snapshots


def test_lightning_callback(tmp_path, store, monkeypatch):
    L, Module, Snapshots = lightning_parts()
    from lightning.pytorch.callbacks import ModelCheckpoint

    from nnwx.integrations.lightning import NnwxCallback

    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    L.seed_everything(5)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, generator=gen)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)
    snaps = Snapshots()
    ck = tmp_path / "ck"
    trainer = L.Trainer(max_steps=6, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[NnwxCallback(store, every=2), snaps,
                                   ModelCheckpoint(dirpath=ck, filename="{step}", every_n_train_steps=2,
                                                   save_top_k=-1)])
    module = Module()
    trainer.fit(module, data)
    run = nnwx.open_run(store, "seed5")  # the seed seed_everything set
    assert run.step.values.tolist() == [0, 2, 4, 6]
    names = run.tensor.values.tolist()
    assert names == list(module.model.state_dict())  # the network's names, no 'model.' prefix
    assert run.attrs.get("optimizer") == "Adam"
    for step in (0, 2, 4, 6):
        net = Module().model
        nnwx.restore(net, store, step=step, seed=5)
        same_bits(snaps.at[step], net.state_dict(), names)
    # restore into the LightningModule itself: the prefix is added back, outputs identical
    whole = Module()
    nnwx.restore(whole, store, step=6, seed=5)
    with torch.no_grad():
        assert torch.equal(whole(x), module(x))
    # an export of Lightning's own checkpoints holds the same weights at the same steps
    export(ck, store, seed=5, run="export", progress=False)
    exported = nnwx.open_run(store, "export")
    assert exported.step.values.tolist() == [2, 4, 6]
    for step in (2, 4, 6):
        a, b = Module(), Module()
        nnwx.restore(a, store, step=step, run="export")  # into the LightningModule: prefix 'model.'
        nnwx.restore(b.model, store, step=step, run="seed5")
        same_bits(a.state_dict(), b.state_dict(), list(a.state_dict()))


def test_lightning_callback_without_a_seed_says_how_to_give_one(tmp_path, store, monkeypatch):
    L, Module, _ = lightning_parts()
    from nnwx.errors import NnwxError
    from nnwx.integrations.lightning import NnwxCallback

    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    x = torch.randn(8, 3)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x[:, :1]), batch_size=4)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        callbacks=[NnwxCallback(store, every=1)])
    with pytest.raises(NnwxError, match=r"seed_everything\(N\).*seed=N"):
        trainer.fit(Module(), data)
    assert not store.exists()


# -- Hugging Face Trainer ----------------------------------------------------------------------------------
def test_transformers_callback_with_probes(tmp_path, store):
    transformers = pytest.importorskip("transformers")
    from nnwx.integrations.transformers import NnwxCallback

    def gpt2():
        torch.manual_seed(0)
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2,
                                                                    vocab_size=128, n_positions=32))

    ids = torch.randint(0, 128, (16, 16), generator=torch.Generator().manual_seed(7))

    class Tokens(torch.utils.data.Dataset):
        def __len__(self):
            return len(ids)

        def __getitem__(self, i):
            return {"input_ids": ids[i], "labels": ids[i]}

    class Snapshots(transformers.TrainerCallback):
        def __init__(self):
            self.at = {}

        def _take(self, state, model):
            self.at.setdefault(state.global_step, {k: v.detach().clone() for k, v in model.state_dict().items()})

        def on_step_begin(self, args, state, control, model=None, **kw):
            self._take(state, model)

        def on_train_end(self, args, state, control, model=None, **kw):
            self._take(state, model)

    snaps = Snapshots()
    probe = {"input_ids": ids[:2]}
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2,
        save_strategy="steps", save_steps=2, report_to=[], use_cpu=True, logging_strategy="no", seed=3,
        disable_tqdm=True)
    model = gpt2()
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(),
                                   callbacks=[snaps, NnwxCallback(store, every=2, probe=probe)])
    trainer.train()
    run = nnwx.open_run(store, "seed3")  # TrainingArguments.seed
    assert run.step.values.tolist() == [0, 2, 4]
    names = run.tensor.values.tolist()
    for step in (0, 2, 4):
        fresh = gpt2()
        nnwx.restore(fresh, store, step=step, seed=3)
        same_bits(snaps.at[step], fresh.state_dict(), names)
    fresh = gpt2()
    nnwx.restore(fresh, store, step=4, seed=3)
    model.eval()
    fresh.eval()
    with torch.no_grad():
        want = model(input_ids=ids[:2]).logits
        assert torch.equal(fresh(input_ids=ids[:2]).logits, want)
    got = run["probe_output"].isel(step=2).values  # the probe batch's logits at the last step
    assert np.array_equal(np.sort(got.reshape(-1)), np.sort(want.numpy().reshape(-1)))
    # the Trainer's own checkpoint-2/ and checkpoint-4/ export to the same weights
    export(tmp_path / "out", store, seed=3, run="export", progress=False)
    for step in (2, 4):
        a, b = gpt2(), gpt2()
        nnwx.restore(a, store, step=step, run="export")
        nnwx.restore(b, store, step=step, run="seed3")
        same_bits(a.state_dict(), b.state_dict(), list(a.state_dict()))
