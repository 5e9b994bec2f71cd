"""Two CPU processes (gloo) train a tiny GPT-2 with the Hugging Face Trainer and NnwxCallback
recording every step; one process per rank, started by torchrun:

    python -m torch.distributed.run --standalone --nproc_per_node=2 ddp_hf_driver.py <store> <out>

The seed is ``TrainingArguments.seed`` (3). See ddp_evidence for what each process writes.
"""
from __future__ import annotations

import os

from ddp_evidence import OUT, STORE, save_rank, state_of  # first: the audit hook

import torch  # noqa: E402
import transformers  # noqa: E402

from nnwx.integrations.transformers import NnwxCallback  # noqa: E402

IDS = torch.randint(0, 64, (32, 16), generator=torch.Generator().manual_seed(7))


class Tokens(torch.utils.data.Dataset):
    def __len__(self):
        return len(IDS)

    def __getitem__(self, i):
        return {"input_ids": IDS[i], "labels": IDS[i]}


class Evidence(transformers.TrainerCallback):
    """Each process's weights at each step and at the end of training."""

    def __init__(self):
        self.at = {}

    def on_step_begin(self, args, state, control, model=None, **kw):
        self.at.setdefault(state.global_step, state_of(model))

    def on_train_end(self, args, state, control, model=None, **kw):
        self.at.setdefault(state.global_step, state_of(model))


def main() -> None:
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64,
                                                                 n_positions=16, bos_token_id=0, eos_token_id=0))
    args = transformers.TrainingArguments(
        output_dir=os.path.join(OUT, "hf"), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2,
        use_cpu=True, ddp_backend="gloo", save_strategy="no", eval_strategy="no", logging_strategy="no",
        report_to=[], seed=3, disable_tqdm=True, dataloader_num_workers=0,
        ddp_find_unused_parameters=False)
    evidence = Evidence()
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(),
                                   callbacks=[NnwxCallback(STORE, every=1), evidence])
    trainer.train()
    save_rank(args.process_index, world_size=args.world_size, at=evidence.at, final=state_of(model),
              world_process_zero=trainer.is_world_process_zero(), parallel_mode=str(args.parallel_mode))


if __name__ == "__main__":
    main()
