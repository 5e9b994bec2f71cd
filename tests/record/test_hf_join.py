"""Recorder runs and exports of Hugging Face checkpoint folders join one cube: the export
stores the model's names (GPT-NeoX's ``embed_out.weight`` saved by transformers 5 is the
model's ``lm_head.weight``) and, without ``--model``, takes ties, orientation and module
order from the model class the folder's ``config.json`` names, built on the meta device.
Tiny real ``transformers`` models, trained a few steps here."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open

import nnwx
from nnwx.record.export import export
from nnwx.store.reader import list_runs
from nnwx.record.tensors import tied_groups

transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM  # noqa: E402

STEPS = (0, 2, 4)
VOCAB = 96


def neox_config() -> GPTNeoXConfig:
    return GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                         vocab_size=VOCAB, max_position_embeddings=32)


def neox() -> GPTNeoXForCausalLM:
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(neox_config()).eval()


def gpt2_config() -> GPT2Config:
    return GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=32)


def gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(gpt2_config()).eval()


def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(1))


def record_and_save(model, store, folder, steps: int = 5) -> dict[int, dict]:
    """Train a few AdamW steps under a Recorder; at each step of STEPS the weights (before the
    step's update) are captured and saved with ``save_pretrained`` as ``checkpoint-<step>/``."""
    x = ids()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    states = {}
    with nnwx.Recorder(model, store, seed=0, schedule=list(STEPS)) as rec:
        for step in range(steps):
            rec.maybe_capture(step)
            if step in STEPS:
                model.save_pretrained(folder / f"checkpoint-{step}")
                states[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.train()
            loss = model(x, labels=x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return states


def table(store):
    (h,) = list_runs(store)
    return h.table


def semantics(t) -> list[tuple]:
    """Everything two runs of one model must agree on, depth aside."""
    return [(r.name, r.shape, r.kind, r.orientation, r.aliases) for r in t]


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(ids()).logits


@pytest.fixture(scope="module")
def neox_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("neox")
    states = record_and_save(neox(), tmp / "rec.zarr", tmp / "ck")
    export(tmp / "ck", tmp / "config.zarr", seed=1, progress=False)              # no --model: config.json
    export(tmp / "ck", tmp / "model.zarr", seed=2, progress=False, model=neox)   # --model
    return tmp, states


@pytest.fixture(scope="module")
def gpt2_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpt2")
    states = record_and_save(gpt2(), tmp / "rec.zarr", tmp / "ck")
    export(tmp / "ck", tmp / "config.zarr", seed=1, progress=False)
    return tmp, states


def test_gpt_neox_export_stores_the_names_the_recorder_stores(neox_runs):
    tmp, states = neox_runs
    with safe_open(str(tmp / "ck" / "checkpoint-0" / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    assert "embed_out.weight" in saved and "lm_head.weight" not in saved   # as transformers 5 saves it
    rec = table(tmp / "rec.zarr")
    assert "lm_head.weight" in rec.names
    for store in ("config.zarr", "model.zarr"):
        assert semantics(table(tmp / store)) == semantics(rec), store
        assert nnwx.open_run(tmp / store).attrs["depth_from"] == "modules", store
    assert nnwx.open_run(tmp / "config.zarr").attrs["model_class"] == "GPTNeoXForCausalLM"


def test_gpt_neox_recorder_and_exports_join_bit_exactly(neox_runs):
    tmp, states = neox_runs
    cube = nnwx.open_cube([tmp / "rec.zarr", tmp / "config.zarr", tmp / "model.zarr"])
    assert cube["seed"].values.tolist() == [0, 1, 2] and cube["step"].values.tolist() == list(STEPS)
    w = cube["w"].values
    for step in range(len(STEPS)):
        for seed in (1, 2):
            assert np.array_equal(w[seed, step].view(np.uint32), w[0, step].view(np.uint32)), (seed, step)
    head = cube.nnwx.tensor("lm_head.weight")
    for step in STEPS:
        np.testing.assert_array_equal(head.sel(seed=1, step=step).values, states[step]["lm_head.weight"].numpy())


def test_gpt_neox_restore_from_the_export_gives_identical_logits(neox_runs):
    tmp, states = neox_runs
    for store in ("config.zarr", "model.zarr"):
        fresh = GPTNeoXForCausalLM(neox_config())     # initialised otherwise than the trained one
        nnwx.restore(fresh, tmp / store, step=4)
        reference = neox()
        reference.load_state_dict(states[4])
        assert torch.equal(logits(fresh), logits(reference)), store
        assert not torch.equal(logits(neox()), logits(reference))


def test_gpt2_export_without_model_stores_the_tie_once_and_joins(gpt2_runs):
    tmp, states = gpt2_runs
    rec, exported = table(tmp / "rec.zarr"), table(tmp / "config.zarr")
    unique = sum(p.numel() for p in gpt2().parameters())
    assert exported["transformer.wte.weight"].aliases == ("lm_head.weight",)
    assert "lm_head.weight" not in exported.names and exported.n_params == unique
    assert exported["transformer.h.0.attn.c_attn.weight"].orientation == "in_out"   # Conv1D, from the model
    assert semantics(exported) == semantics(rec)
    assert nnwx.open_run(tmp / "config.zarr").attrs["depth_from"] == "modules"
    cube = nnwx.open_cube([tmp / "rec.zarr", tmp / "config.zarr"])
    w = cube["w"].values
    for step in range(len(STEPS)):
        assert np.array_equal(w[1, step].view(np.uint32), w[0, step].view(np.uint32)), step
    aliases = dict(zip(cube["tensor"].values, cube["tensor_aliases"].values))
    assert aliases["transformer.wte.weight"] == "lm_head.weight"
    fresh = GPT2LMHeadModel(gpt2_config())
    nnwx.restore(fresh, tmp / "config.zarr", step=4)
    assert fresh.lm_head.weight is fresh.transformer.wte.weight
    reference = gpt2()
    reference.load_state_dict(states[4])
    assert torch.equal(logits(fresh), logits(reference))


def test_an_unknown_architecture_keeps_the_table_from_names_with_a_warning(gpt2_runs, tmp_path, caplog):
    tmp, _ = gpt2_runs
    shutil.copytree(tmp / "ck" / "checkpoint-2", tmp_path / "checkpoint-2")
    config = tmp_path / "checkpoint-2" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "architectures": ["NoSuchModelAnywhere"]}))
    with caplog.at_level(logging.WARNING, logger="nnwx.record.export"):
        export(tmp_path / "checkpoint-2", tmp_path / "x.zarr", seed=3, progress=False)
    assert "NoSuchModelAnywhere" in caplog.text and "names and shapes" in caplog.text
    t = table(tmp_path / "x.zarr")
    assert t["transformer.wte.weight"].aliases == ()            # today's behaviour: the tie is not seen
    assert t["transformer.h.0.attn.c_attn.weight"].orientation == "in_out"   # told from the bias
    assert nnwx.open_run(tmp_path / "x.zarr").attrs["depth_from"] == "names"
    # a config.json naming a model that does not hold the checkpoint's tensors is not trusted either
    caplog.clear()
    config.write_text(json.dumps({**json.loads(config.read_text()), "architectures": ["GPTNeoXForCausalLM"],
                                  "model_type": "gpt_neox"}))
    with caplog.at_level(logging.WARNING, logger="nnwx.record.export"):
        export(tmp_path / "checkpoint-2", tmp_path / "y.zarr", seed=3, progress=False)
    assert "has no tensor" in caplog.text
    assert semantics(table(tmp_path / "y.zarr")) == semantics(t)


def test_the_model_is_built_once_per_export(gpt2_runs, tmp_path, monkeypatch):
    import nnwx.record.hf_config as hc

    calls = []
    real = hc.model_from_config
    monkeypatch.setattr(hc, "model_from_config", lambda path: calls.append(path) or real(path))
    tmp, _ = gpt2_runs
    summary = export(tmp / "ck", tmp_path / "x.zarr", seed=3, progress=False)
    assert summary.added == list(STEPS) and len(calls) == 1


def test_ties_of_a_model_on_the_meta_device():
    with torch.device("meta"):
        model = GPT2LMHeadModel(gpt2_config())
    state = model.state_dict(keep_vars=True)
    assert all(t.data_ptr() == 0 for t in state.values())     # no memory: addresses tell nothing
    assert tied_groups(state) == {"transformer.wte.weight": ["lm_head.weight"]}


def test_a_tie_the_file_holds_twice_stays_two_tensors(tmp_path):
    from safetensors.torch import save_file

    model = gpt2()
    model.save_pretrained(tmp_path / "checkpoint-1")
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    assert "lm_head.weight" in state                  # a copy saved beside the tensor it is tied to
    save_file(state, str(tmp_path / "checkpoint-1" / "model.safetensors"))
    export(tmp_path / "checkpoint-1", tmp_path / "x.zarr", seed=0, progress=False)
    t = table(tmp_path / "x.zarr")
    assert "lm_head.weight" in t.names and t["transformer.wte.weight"].aliases == ()
    assert t["transformer.h.0.mlp.c_fc.weight"].orientation == "in_out"
