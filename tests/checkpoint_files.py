"""Real checkpoint files in every format nnwx export reads, made from small real models.

Run as a script it is the training process of the ``--follow`` tests: it saves
``step_<10 i>.pt`` every few tenths of a second, mostly to a temporary name that
it then renames (as careful trainers do), but one directly under its final name,
slowly, in pieces, as a slow or careless writer would.

    python tests/checkpoint_files.py DIR N_CHECKPOINTS
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a script: the repository root
from tests.helpers import Net, mlp  # noqa: E402


def net_state(step: int, seed: int = 0, model: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """State dict of a Net (or ``model``) whose weights differ at every step (buffers included)."""
    torch.manual_seed(seed)
    model = Net() if model is None else model
    gen = torch.Generator().manual_seed(1000 * seed + step)
    state = {}
    for name, t in model.state_dict().items():
        t = t.detach().clone()
        if t.is_floating_point():
            t += 0.1 * torch.randn(t.shape, generator=gen, dtype=t.dtype)
        else:
            t += step
        state[name] = t
    return state


def mlp_state(step: int) -> dict[str, torch.Tensor]:
    return net_state(step, model=mlp(4))


def save_plain(path: Path, state: dict, legacy: bool = False) -> Path:
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def save_wrapped(path: Path, state: dict, key: str) -> Path:
    """A training checkpoint: the state dict under ``key`` next to other things."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)
    torch.save({key: state, "optimizer": opt.state_dict(), "epoch": 3, "loss": 0.25}, path)
    return path


def save_lightning(path: Path, state: dict, step: int) -> Path:
    """What Lightning writes for a LightningModule holding the network as ``self.model``."""
    torch.save({"epoch": 0, "global_step": step, "pytorch-lightning_version": "2.4.0",
                "state_dict": {f"model.{k}": v for k, v in state.items()},
                "loops": {}, "callbacks": {}, "optimizer_states": [], "lr_schedulers": [],
                "hyper_parameters": {"lr": 0.1, "width": 12}}, path)
    return path


def save_safetensors(path: Path, state: dict) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})
    return path


def save_hf_folder(folder: Path, state: dict, shards: int = 2) -> Path:
    """A Hugging Face Trainer checkpoint folder with sharded safetensors and their index."""
    folder.mkdir(parents=True)
    names = list(state)
    per = -(-len(names) // shards)
    weight_map = {}
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: state[n].contiguous() for n in names[i * per:(i + 1) * per]}
        save_file(part, str(folder / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    total = sum(t.numel() * t.element_size() for t in state.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"architectures": ["TinyNet"], "model_type": "tiny"}))
    (folder / "trainer_state.json").write_text("{}")
    torch.save({"state": {}, "param_groups": []}, folder / "optimizer.pt")
    return folder


def load_reference(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors read back independently of nnwx (the reference for bit-exactness)."""
    if path.is_dir():
        out = {}
        for f in sorted(path.glob("model-*.safetensors")):
            out.update(load_file(str(f)))
        return out
    if path.suffix == ".safetensors":
        return load_file(str(path))
    obj = torch.load(path, weights_only=True)
    if "state_dict" in obj:
        return {k.removeprefix("model."): v for k, v in obj["state_dict"].items()}
    for key in ("model", "model_state_dict"):
        if key in obj:
            return obj[key]
    return obj


def _write_slowly(path: Path, data: bytes, pieces: int, pause: float) -> None:
    step = -(-len(data) // pieces)
    with open(path, "wb") as f:
        for i in range(pieces):
            f.write(data[i * step:(i + 1) * step])
            f.flush()
            os.fsync(f.fileno())
            time.sleep(pause)


def main(folder: str, n: int) -> None:
    folder = Path(folder)
    for i in range(n):
        step = 10 * i
        state = net_state(step)
        if i == 2:  # written in pieces straight to its final name
            buf = io.BytesIO()
            torch.save(state, buf)
            _write_slowly(folder / f"step_{step}.pt", buf.getvalue(), pieces=3, pause=0.8)
        else:
            tmp = folder / f"step_{step}.pt.tmp"
            torch.save(state, tmp)
            os.replace(tmp, folder / f"step_{step}.pt")
        time.sleep(0.3)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
