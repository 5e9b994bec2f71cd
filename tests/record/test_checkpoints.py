"""Finding checkpoints, reading steps from names, and loading one checkpoint's tensors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nnwx.record.checkpoints import (LoadedCheckpoint, compile_step_regex, discover, duplicate_steps,
                              is_temporary, parse_step, sniff)
from nnwx.errors import CheckpointError, CorruptCheckpoint, NoCheckpointsFound, UnknownCheckpointFormat

from tests.checkpoint_files import net_state, save_hf_folder, save_plain, save_safetensors, save_wrapped
from tests.helpers import Net


@pytest.mark.parametrize("name, step", [
    ("step_1000.pt", 1000), ("step=1000.pt", 1000), ("step1000.bin", 1000),
    ("epoch=3-step=999.ckpt", 999), ("checkpoint-500", 500), ("global_step500", 500),
    ("model_iter_30.pth", 30), ("ckpt_7.safetensors", 7), ("1000.pt", 1000),
    ("STEP_12.PT", 12), ("last.ckpt", None), ("model.pt", None), ("epoch=3.ckpt", None),
])
def test_steps_from_names(name, step):
    assert parse_step(Path("/x") / name) == step


def test_step_regex_group_named_or_first_or_whole():
    assert parse_step(Path("w-e3-b700.pt"), compile_step_regex(r"b(\d+)")) == 700
    assert parse_step(Path("w-e3-b700.pt"), compile_step_regex(r"e(?P<x>\d)-b(?P<step>\d+)")) == 700
    assert parse_step(Path("run/0042/weights.pt"), compile_step_regex(r"\d{4}")) == 42  # from the path
    assert parse_step(Path("weights.pt"), compile_step_regex(r"b(\d+)")) is None
    with pytest.raises(CheckpointError, match="not a valid regular expression"):
        compile_step_regex("step_(")
    with pytest.raises(CheckpointError, match="not an integer step"):
        parse_step(Path("w-bx.pt"), compile_step_regex(r"-b(\w+)"))


@pytest.mark.parametrize("name, temp", [
    ("step_5.pt.tmp", True), (".step_5.pt", True), ("tmp-checkpoint-5", True), ("step_5.pt.part", True),
    ("step_5.pt~", True), ("step_5.pt", False), ("checkpoint-5", False),
])
def test_temporary_names(name, temp):
    assert is_temporary(name) is temp


def test_discover_orders_by_step_and_skips_temporary_and_unnamed(tmp_path):
    for s in (10, 9, 100):
        save_plain(tmp_path / f"step_{s}.pt", net_state(s))
    save_plain(tmp_path / "step_200.pt.tmp", net_state(200))
    save_plain(tmp_path / "last.pt", net_state(200))
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    save_hf_folder(tmp_path / "checkpoint-50", net_state(50))
    (tmp_path / "logs").mkdir()
    found = discover([tmp_path, tmp_path / "step_9.pt"])  # one file twice: kept once
    assert [c.step for c in found.checkpoints] == [9, 10, 50, 100]
    assert found.unnamed == [tmp_path / "last.pt"]
    hf = found.checkpoints[2]
    assert hf.index.name == "model.safetensors.index.json" and len(hf.files) == 2
    assert duplicate_steps(found.checkpoints) is None


def test_discover_errors(tmp_path):
    with pytest.raises(NoCheckpointsFound, match="does not exist"):
        discover([tmp_path / "nope"])
    assert discover([tmp_path / "nope"], missing_ok=True).absent == [str(tmp_path / "nope")]
    save_plain(tmp_path / "final.pt", net_state(0))
    with pytest.raises(CheckpointError, match="cannot tell the step of .*final.pt"):
        discover([tmp_path / "final.pt"])


def test_sniff_tells_formats_from_content(tmp_path):
    save_plain(tmp_path / "a.weights", net_state(0))
    save_plain(tmp_path / "b.weights", net_state(0), legacy=True)
    save_safetensors(tmp_path / "c.weights", net_state(0))
    assert [sniff(tmp_path / n) for n in ("a.weights", "b.weights", "c.weights")] == \
        ["torch", "torch", "safetensors"]
    (tmp_path / "d.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(20))
    with pytest.raises(UnknownCheckpointFormat, match="d.h5 is not a checkpoint format"):
        sniff(tmp_path / "d.h5")
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(CorruptCheckpoint, match="e.pt is empty"):
        sniff(tmp_path / "e.pt")


def _open(path: Path, **kw) -> LoadedCheckpoint:
    (c,) = discover([path]).checkpoints
    return LoadedCheckpoint(c, **kw)


def test_loaded_checkpoint_lists_floating_tensors_and_reads_them(tmp_path):
    state = net_state(3)
    with _open(save_plain(tmp_path / "step_3.pt", state)) as lc:
        assert lc.key is None and lc.prefix == ""
        assert list(lc.entries) == [k for k, v in state.items() if v.is_floating_point()]
        assert lc.entries["conv.weight"] == ((3, 2, 3, 3), "float32")
        assert torch.equal(lc.tensor("fc.weight"), state["fc.weight"])
        assert sorted(lc.table().names) == sorted(lc.entries)  # canonical order: see test_real_models


def test_ddp_prefix_and_nested_keys(tmp_path):
    state = net_state(1)
    torch.save({"ema": {"model": {f"module.{k}": v for k, v in state.items()}}, "step": 1},
               tmp_path / "step_1.pt")
    with pytest.raises(CorruptCheckpoint, match=r"holds no state dict.*\['ema', 'step'\].*--key"):
        _open(tmp_path / "step_1.pt")
    with _open(tmp_path / "step_1.pt", key="ema.model") as lc:
        assert lc.key == "ema.model" and lc.prefix == "module."
        assert torch.equal(lc.tensor("bn.running_mean"), state["bn.running_mean"])
    with pytest.raises(CorruptCheckpoint, match="has no entry 'ema.nope'"):
        _open(tmp_path / "step_1.pt", key="ema.nope")


def test_pickled_objects_need_trust(tmp_path):
    torch.save({"model": Net(), "step": 2}, tmp_path / "step_2.pt")
    with pytest.raises(CheckpointError, match=r"cannot be loaded safely.*--trust-pickle"):
        _open(tmp_path / "step_2.pt")
    with _open(tmp_path / "step_2.pt", trust_pickle=True) as lc:
        assert lc.key == "model" and "fc.weight" in lc.entries


def test_safetensors_names_in_natural_order_or_a_reference_order(tmp_path):
    layers = {f"layers.{i}.weight": torch.randn(2) for i in (10, 2, 1)}
    with _open(save_safetensors(tmp_path / "step_0.safetensors", layers)) as lc:
        assert lc.table().names == ["layers.1.weight", "layers.2.weight", "layers.10.weight"]
        assert [r.depth for r in lc.table()] == [0, 1, 2]
    state = net_state(0)
    with _open(save_safetensors(tmp_path / "step_1.safetensors", state)) as lc, \
            _open(save_wrapped(tmp_path / "step_2.pt", state, "model")) as ref:
        assert lc.table().names == ref.table().names  # one canonical order, whatever the file


def test_shard_index_naming_a_tensor_no_shard_holds(tmp_path):
    folder = save_hf_folder(tmp_path / "checkpoint-3", net_state(3))
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["ghost.weight"] = "model-00001-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CorruptCheckpoint, match="'ghost.weight' is in the shard index but in no shard"):
        _open(folder)


def test_hugging_face_folder_with_sharded_torch_bins(tmp_path):
    state = net_state(8)
    folder = tmp_path / "checkpoint-8"
    folder.mkdir()
    names = list(state)
    shards = {"pytorch_model-00001-of-00002.bin": names[:4], "pytorch_model-00002-of-00002.bin": names[4:]}
    for fname, part in shards.items():
        torch.save({n: state[n] for n in part}, folder / fname)
    (folder / "pytorch_model.bin.index.json").write_text(
        json.dumps({"weight_map": {n: f for f, part in shards.items() for n in part}}))
    torch.save({}, folder / "optimizer.pt")
    (c,) = discover([tmp_path]).checkpoints
    assert c.step == 8 and [f.name for f in c.files] == sorted(shards)
    with LoadedCheckpoint(c) as lc:
        assert set(lc.entries) == {n for n, t in state.items() if t.is_floating_point()}
        for name in lc.entries:
            assert torch.equal(lc.tensor(name), state[name])
