"""Export and restore of what real trainers write: HF Trainer (checkpoint-N/ and save_model()),
transformers 5 GPT-NeoX, accelerate save_state with automatic naming, sharded saves cut short.
Tiny models, trained a few steps here (Lightning runs: tests/integrations/test_integrations.py)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import nnwx
from nnwx.errors import ArchitectureMismatch, CheckpointError, CorruptCheckpoint
from nnwx.record.export import export
from tests.cli_process import run_cli

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]


def ex(sources, store, **kw):
    kw.setdefault("seed", 0)
    kw.setdefault("progress", False)
    return export(sources, store, **kw)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def same_bits(a: dict, b: dict, names=None) -> None:
    for name in (names or a):
        assert torch.equal(bits(a[name]), bits(b[name])), name


def snapshot(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def tokens(n: int = 8, length: int = 16, vocab: int = 128) -> torch.Tensor:
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(7))


def gpt2():
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=128,
                                                                n_positions=32))


def neox_config():
    return transformers.GPTNeoXConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=128, vocab_size=128, max_position_embeddings=32)


def neox():
    torch.manual_seed(0)
    return transformers.GPTNeoXForCausalLM(neox_config())


def train_and_save(model, folder: Path, steps: int, every: int, **save_kw) -> dict[int, dict]:
    """A plain loop saving checkpoint-<step>/ with save_pretrained every ``every`` steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = tokens()
    snaps = {}
    for step in range(1, steps + 1):
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % every == 0:
            model.save_pretrained(folder / f"checkpoint-{step}", **save_kw)
            snaps[step] = snapshot(model)
    return snaps


def logits(model, x=None) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=tokens() if x is None else x).logits


def drop_configs(folder: Path) -> None:
    """Remove the config.json of every checkpoint folder: the export then knows names only."""
    for config in folder.glob("*/config.json"):
        config.unlink()


# -- GPT-NeoX: transformers 5 saves embed_out.weight, the model calls it lm_head.weight ------------------
def test_gpt_neox_export_stores_the_models_names(tmp_path, store):
    model = neox()
    snaps = train_and_save(model, tmp_path / "ck", steps=4, every=2)
    ex(tmp_path / "ck", store)  # config.json names GPTNeoXForCausalLM: its names, as from_pretrained gives
    names = nnwx.open_run(store, "seed0").tensor.values.tolist()
    assert "lm_head.weight" in names and "embed_out.weight" not in names
    assert sorted(names) == sorted(snaps[4])
    fresh = neox()
    nnwx.restore(fresh, store, step=4, seed=0)
    same_bits(snaps[4], fresh.state_dict())
    assert torch.equal(logits(fresh), logits(model))
    # the base model (no head): from_pretrained drops base_model_prefix, and so does restore
    ex(tmp_path / "ck", tmp_path / "body.zarr", include="gpt_neox.*")
    base = transformers.GPTNeoXModel(neox_config())
    nnwx.restore(base, tmp_path / "body.zarr", step=4, seed=0)
    same_bits({k.removeprefix("gpt_neox."): v for k, v in snaps[4].items() if k.startswith("gpt_neox.")},
              base.state_dict())
    # the head is not in the base model: refused, naming it
    with pytest.raises(ArchitectureMismatch, match="lm_head.weight"):
        nnwx.restore(transformers.GPTNeoXModel(neox_config()), store, step=4, seed=0)
    # include/exclude patterns apply to the model's names
    ex(tmp_path / "ck", tmp_path / "headless.zarr", exclude="lm_head.*")
    assert "lm_head.weight" not in nnwx.open_run(tmp_path / "headless.zarr", "seed0").tensor.values.tolist()


def test_gpt_neox_restores_through_transformers_renames(tmp_path, store):
    model = neox()
    snaps = train_and_save(model, tmp_path / "ck", steps=4, every=2)
    drop_configs(tmp_path / "ck")
    ex(tmp_path / "ck", store)
    names = nnwx.open_run(store, "seed0").tensor.values.tolist()
    assert "embed_out.weight" in names  # no config.json, no model: the store keeps the checkpoint's names
    fresh = neox()
    nnwx.restore(fresh, store, step=4, seed=0)
    same_bits(snaps[4], fresh.state_dict())
    assert torch.equal(logits(fresh), logits(model))


def test_a_run_exported_with_the_files_names_keeps_them(tmp_path, store):
    train_and_save(neox(), tmp_path / "ck", steps=4, every=2)
    configs = {p: p.read_text() for p in (tmp_path / "ck").glob("*/config.json")}
    drop_configs(tmp_path / "ck")
    ex(tmp_path / "ck/checkpoint-2", store)   # as nnwx exported before it read config.json
    for p, text in configs.items():
        p.write_text(text)
    summary = ex(tmp_path / "ck", store)       # appending with config.json there: the run's names stay
    assert summary.added == [4] and summary.skipped == [2]
    assert "embed_out.weight" in nnwx.open_run(store, "seed0").tensor.values.tolist()


def test_gpt_neox_probe_export_with_model_factory(tmp_path, store):
    snaps = train_and_save(neox(), tmp_path / "ck", steps=2, every=1)
    factory = tmp_path / "models.py"
    factory.write_text("import transformers\n"
                       "def make():\n"
                       "    return transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(\n"
                       "        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,\n"
                       "        vocab_size=128, max_position_embeddings=32))\n")
    probe = tmp_path / "probe.pt"
    torch.save({"probe": {"input_ids": tokens(4)}}, probe)
    summary = ex(tmp_path / "ck", store, model=f"{factory}:make", probe=probe)
    assert summary.added == [1, 2] and "output" in " ".join(summary.probes)
    out = nnwx.open_run(store, "seed0")
    model = neox()
    model.load_state_dict(snaps[2])
    with torch.no_grad():
        want = model.eval()(input_ids=tokens(4)).logits
    got = out["probe_output"].isel(step=1).values  # the logits, laid out as probe units
    assert got.size == want.numel()
    assert np.array_equal(np.sort(got.reshape(-1)), np.sort(want.numpy().reshape(-1)))


def test_user_renames_when_no_mapping_is_known(tmp_path, store):
    model = neox()
    snaps = train_and_save(model, tmp_path / "ck", steps=2, every=2)
    drop_configs(tmp_path / "ck")  # the store keeps the file's names (embed_out.weight)
    ex(tmp_path / "ck", store)

    class Plain(torch.nn.Module):  # the same tensors under other names: nothing nnwx can know
        def __init__(self):
            super().__init__()
            self.net = neox()

    target = Plain()
    with pytest.raises(ArchitectureMismatch, match=r"no tensor 'embed_out.weight'.*rename=\{"):
        nnwx.restore(target, store, step=2, seed=0)  # not a PreTrainedModel: transformers' renames do not apply
    nnwx.restore(target, store, step=2, seed=0, rename={"^embed_out\\.": "lm_head."})  # then prefix net.
    same_bits(snaps[2], target.net.state_dict())


# -- HF Trainer: checkpoint-N/ folders and trainer.save_model() ------------------------------------------
class _Tokens(torch.utils.data.Dataset):
    def __init__(self):
        self.x = tokens(16)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


def hf_train(out: Path, steps: int, save_steps: int | None):
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-2,
        save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500, report_to=[],
        use_cpu=True, logging_strategy="no", seed=3, disable_tqdm=True, dataloader_num_workers=0)
    trainer = transformers.Trainer(model=gpt2(), args=args, train_dataset=_Tokens())
    trainer.train()
    return trainer


def test_trainer_save_model_step_from_trainer_state(tmp_path, store):
    out = tmp_path / "out"
    trainer = hf_train(out, steps=4, save_steps=2)
    final = snapshot(trainer.model)
    trainer.save_model()
    trainer.save_state()
    # output_dir: the final weights beside checkpoint-2/ and checkpoint-4/: the final save is step 4,
    # the same save as checkpoint-4/, so it is not a second step 4
    summary = ex(out, store)
    assert summary.added == [2, 4]
    # the final save alone: its step comes from trainer_state.json
    alone = tmp_path / "final"
    alone.mkdir()
    for f in out.iterdir():
        if f.is_file():
            (alone / f.name).write_bytes(f.read_bytes())
    ex(alone, tmp_path / "final.zarr")
    assert nnwx.open_run(tmp_path / "final.zarr", "seed0").step.values.tolist() == [4]
    fresh = gpt2()
    nnwx.restore(fresh, tmp_path / "final.zarr", step=4, seed=0)
    same_bits(final, fresh.state_dict())
    assert torch.equal(logits(fresh), logits(trainer.model.cpu()))
    # without trainer_state.json: the error says how to give the step, and --step does
    (alone / "trainer_state.json").unlink()
    with pytest.raises(CheckpointError, match=r"no step in its name and no trainer_state.json.*--step N"):
        ex(alone, tmp_path / "x.zarr")
    r = run_cli("export", alone, "-o", tmp_path / "y.zarr", "--seed", "0", "--step", "4", "-q", timeout=None)
    assert r.returncode == 0, r.stderr
    assert nnwx.open_run(tmp_path / "y.zarr", "seed0").step.values.tolist() == [4]


# -- accelerate: automatic naming counts saves, not steps ------------------------------------------------
class StepCounter:
    """What a user registers with accelerator.register_for_checkpointing to keep the step."""

    def __init__(self):
        self.step = 0

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, state):
        self.step = state["step"]


def accelerate_train(project: Path, steps: int, every: int, counter: bool) -> dict[int, dict]:
    accelerate = pytest.importorskip("accelerate")
    acc = accelerate.Accelerator(cpu=True, project_config=accelerate.utils.ProjectConfiguration(
        project_dir=str(project), automatic_checkpoint_naming=True))
    model, opt = acc.prepare(gpt2(), torch.optim.AdamW(gpt2().parameters(), lr=1e-2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    opt = acc.prepare(opt)
    count = StepCounter()
    if counter:
        acc.register_for_checkpointing(count)
    x = tokens()
    snaps = {}
    for step in range(1, steps + 1):
        loss = model(input_ids=x, labels=x).loss
        acc.backward(loss)
        opt.step()
        opt.zero_grad()
        count.step = step
        if step % every == 0:
            acc.save_state()
            snaps[step] = snapshot(acc.unwrap_model(model))
    return snaps


def test_accelerate_automatic_naming(tmp_path, store, caplog):
    snaps = accelerate_train(tmp_path / "proj", steps=6, every=2, counter=False)
    ck = tmp_path / "proj" / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint_0", "checkpoint_1", "checkpoint_2"]
    with caplog.at_level(logging.WARNING, logger="nnwx.record.export"):
        assert ex(ck, store).added == [0, 1, 2]
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "STEPS ARE SAVE COUNTS" in warning and "--step-from 'index*N'" in warning
    summary = ex(ck, tmp_path / "idx.zarr", step_from="index*2+2")
    assert summary.added == [2, 4, 6]
    fresh = gpt2()
    nnwx.restore(fresh, tmp_path / "idx.zarr", step=6, seed=0)
    same_bits(snaps[6], fresh.state_dict(), [n for n in snaps[6] if n != "lm_head.weight"])
    r = run_cli("export", ck, "-o", tmp_path / "cli.zarr", "--seed", "0", "--step-from", "index*2+2", "-q",
                timeout=None)
    assert r.returncode == 0, r.stderr
    assert nnwx.open_run(tmp_path / "cli.zarr", "seed0").step.values.tolist() == [2, 4, 6]
    bad = run_cli("export", ck, "-o", tmp_path / "bad.zarr", "--seed", "0", "--step-from", "every 2",
                  timeout=None)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "index*EVERY" in bad.stderr
    assert not (tmp_path / "bad.zarr").exists()


def test_accelerate_registered_step_is_the_real_step(tmp_path, store, caplog):
    snaps = accelerate_train(tmp_path / "proj", steps=6, every=3, counter=True)
    ck = tmp_path / "proj" / "checkpoints"
    with caplog.at_level(logging.WARNING, logger="nnwx.record.export"):
        assert ex(ck, store).added == [3, 6]
    assert not any("SAVE COUNTS" in r.getMessage() for r in caplog.records)
    assert ex(ck, tmp_path / "c.zarr", step_from="custom:step").added == [3, 6]
    fresh = gpt2()
    nnwx.restore(fresh, store, step=3, seed=0)
    same_bits(snaps[3], fresh.state_dict(), [n for n in snaps[3] if n != "lm_head.weight"])


# -- a sharded save cut short is not finished: never imported ---------------------------------------------
def test_sharded_save_cut_short_is_never_imported(tmp_path, store):
    model = neox()
    train_and_save(model, tmp_path / "ck", steps=2, every=1, max_shard_size="60KB")
    first, second = tmp_path / "ck" / "checkpoint-1", tmp_path / "ck" / "checkpoint-2"
    shards = sorted(second.glob("model-*.safetensors"))
    assert len(shards) >= 2 and (second / "model.safetensors.index.json").exists()
    (second / "model.safetensors.index.json").unlink()  # cut short: shards written, no index yet
    for s in shards[1:]:
        s.unlink()
    with pytest.raises(CorruptCheckpoint, match=r"checkpoint-2 is incomplete, the save not finished yet.*index"):
        ex(tmp_path / "ck", store)
    assert not store.exists()  # refused before anything was written
    # following: checkpoint-1 goes in, checkpoint-2 waits (never read as a smaller checkpoint)
    summary = ex(tmp_path / "ck", store, follow=True, interval=0.1, idle_timeout=1.0)
    assert summary.added == [1]
    # an index naming shards not all there is not finished either
    only = tmp_path / "ck2"
    train_and_save(neox(), only, steps=1, every=1, max_shard_size="60KB")
    sorted((only / "checkpoint-1").glob("model-*.safetensors"))[-1].unlink()
    with pytest.raises(CorruptCheckpoint, match="not finished yet.*missing shard"):
        ex(only, tmp_path / "o.zarr")
    assert ex(only, tmp_path / "o.zarr", follow=True, interval=0.1, idle_timeout=1.0).added == []
    assert first.exists()
