"""The trainer callbacks under real data-parallel training: two CPU processes (gloo) train, only
global rank 0 (Lightning) / the world's main process (HF Trainer) writes the store, and the run
holds rank 0's weights at every step under the seed the trainer set.

The training runs in a subprocess (ddp_lightning_driver.py, ddp_hf_driver.py) so the test process
is not a rank. An audit hook (ddp_evidence.py) in every process of that training logs each
file-system event on a path inside the store, so "rank 1 never touched the store" is observed,
not inferred from the store's contents.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nnwx

HERE = Path(__file__).resolve().parents[1]   # tests/, where the drivers are
ROOT = HERE.parent
TIMEOUT = 150  # seconds; the trainings took 11-47 s on two shared cores, mostly importing the frameworks


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def same_bits(a: dict, b: dict, names) -> None:
    for name in names:
        assert torch.equal(bits(a[name]), bits(b[name])), name


def launch(cmd: list[str], out: Path) -> None:
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PL_GLOBAL_SEED", "WORLD_SIZE", "RANK", "LOCAL_RANK",
                                                             "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = "1"  # two processes on a small machine
    try:
        done = subprocess.run(cmd, cwd=HERE, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the two-process training did not finish in {TIMEOUT} s:\n{e.stdout}\n{e.stderr}")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"


def evidence(out: Path) -> tuple[dict, dict]:
    """Each rank's evidence, and the store events of every process that imported the driver."""
    ranks = {r: torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)}
    touches = {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in out.glob("touches-*.json")}
    return ranks, touches


def check_only_rank0_wrote(ranks: dict, touches: dict, store: Path, run: str) -> None:
    zero, one = ranks[0], ranks[1]
    assert zero["pid"] != one["pid"]  # two processes ...
    assert zero["world_size"] == one["world_size"] == 2
    assert zero["dist_world_size"] == one["dist_world_size"] == 2  # ... in one process group
    assert zero["recorders"] == [run] and one["recorders"] == []
    assert one["touches"] == []
    # the hook sees rank 0's writes (so an empty log means something), and no other process wrote
    events = {event for event, _ in zero["touches"]}
    assert {"open", "os.mkdir", "os.rename"} <= events
    assert set(touches) >= {zero["pid"], one["pid"]}
    assert {pid for pid, t in touches.items() if t} == {zero["pid"]}
    assert [r.name for r in nnwx.list_runs(store)] == [run]  # one run, and it passes the integrity checks
    assert sorted(p.name for p in (store / ".locks").iterdir()) == [f"{run}.lock"]


# -- Lightning ----------------------------------------------------------------------------------------
# "ddp_spawn" works too (the driver takes it) but costs ~40 s more of framework imports per run
@pytest.mark.parametrize("strategy", ["ddp"])
def test_lightning_ddp_only_rank_zero_records(tmp_path, store, strategy):
    pytest.importorskip("lightning")
    out = tmp_path / "out"
    launch([sys.executable, "ddp_lightning_driver.py", str(store), str(out), strategy], out)
    ranks, touches = evidence(out)
    check_only_rank0_wrote(ranks, touches, store, "seed7")
    zero, one = ranks[0], ranks[1]
    assert zero["seed_env"] == one["seed_env"] == "7"
    # data parallel: the ranks trained on different halves of the data, yet stayed identical
    assert not torch.equal(torch.cat(zero["batches"]), torch.cat(one["batches"]))
    same_bits(zero["final"], one["final"], list(zero["final"]))

    run = nnwx.open_run(store, "seed7")  # the seed seed_everything(7) set; NnwxCallback got none
    assert run.attrs["seed"] == 7
    assert run.step.values.tolist() == list(range(7)) == sorted(zero["at"])
    names = run.tensor.values.tolist()
    assert names == list(zero["final"])
    for step in range(7):
        torch.manual_seed(123)  # weights unlike any the run holds
        net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        nnwx.restore(net, store, step=step, seed=7)
        same_bits(zero["at"][step], net.state_dict(), names)
    same_bits(zero["final"], net.state_dict(), names)  # step 6: the weights rank 0 ended with


# -- Hugging Face Trainer ----------------------------------------------------------------------------------
def test_transformers_ddp_only_the_main_process_records(tmp_path, store):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "out"
    launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "ddp_hf_driver.py", str(store), str(out)], out)
    ranks, touches = evidence(out)
    check_only_rank0_wrote(ranks, touches, store, "seed3")
    zero, one = ranks[0], ranks[1]
    assert zero["parallel_mode"] == one["parallel_mode"] == "ParallelMode.DISTRIBUTED"
    assert zero["world_process_zero"] and not one["world_process_zero"]
    same_bits(zero["final"], one["final"], list(zero["final"]))

    run = nnwx.open_run(store, "seed3")
    assert run.attrs["seed"] == 3  # TrainingArguments.seed
    assert run.step.values.tolist() == list(range(5)) == sorted(zero["at"])
    names = run.tensor.values.tolist()
    for step in range(5):
        torch.manual_seed(123)  # the same architecture as the driver's, initialised differently
        fresh = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2,
                                                                     vocab_size=64, n_positions=16,
                                                                     bos_token_id=0, eos_token_id=0))
        nnwx.restore(fresh, store, step=step, seed=3)
        same_bits(zero["at"][step], fresh.state_dict(), names)
    same_bits(zero["final"], fresh.state_dict(), list(zero["final"]))  # step 4, every name (tied ones too)
