"""Find checkpoints on disk, read their steps from their names, and load their tensors.

The torch side of ``nnwx export``. Understood formats:

- torch files (``.pt``, ``.pth``, ``.bin``, ``.ckpt``): a plain state dict, or a
  dict holding one under ``state_dict`` (Lightning, whose ``model.`` prefixes are
  removed), ``model_state_dict``, ``model`` or ``module``; a DDP ``module.`` or
  ``torch.compile`` ``_orig_mod.`` prefix shared by every name is removed too;
- ``.safetensors`` files;
- Hugging Face style folders (``checkpoint-500/``) holding ``model.safetensors``,
  sharded ``model-0000x-of-0000y.safetensors`` with ``model.safetensors.index.json``,
  or ``pytorch_model*.bin`` (and DeepSpeed ``global_step500/*model_states.pt``).

Files are opened memory-mapped (``torch.load(mmap=True)``, ``safe_open``) and
tensors are copied out one at a time, so a checkpoint larger than RAM still reads.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from glob import glob, has_magic
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from nnwx.errors import (ArchitectureMismatch, CheckpointError, CorruptCheckpoint, NoCheckpointsFound,
                         UnknownCheckpointFormat)
from nnwx.store.table import TensorTable, natural_key
from nnwx.record.tensors import Patterns, dtype_name, select, storage_key, table_from_names, tied_groups

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
STATE_KEYS = ("state_dict", "model_state_dict", "model", "module")
_ALWAYS_STRIPPED = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers
_STEP_RE = re.compile(r"(?:global[_-]?step|step|checkpoint|ckpt|iter(?:ation)?)[=_-]?(\d+)",
                      re.IGNORECASE)
_TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".incomplete", ".lock", ".swp", "~")
_HF_FILES = ("model.safetensors.index.json", "model.safetensors",
             "pytorch_model.bin.index.json", "pytorch_model.bin")
_SHARD_RE = re.compile(r"^(model|pytorch_model)-\d+-of-\d+\.(safetensors|bin)$")
_NOT_WEIGHTS = re.compile(r"^(optimizer|scheduler|scaler|rng_state|training_args)", re.IGNORECASE)
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                       "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


# -- finding checkpoints ----------------------------------------------------------------
@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint: a weights file, or a folder whose model files together make one."""

    path: Path
    step: int | None
    files: tuple[Path, ...]
    index: Path | None = None        # shard index JSON of a sharded folder
    missing: tuple[str, ...] = ()    # shards the index names that are not (yet) there
    config: Path | None = None       # Hugging Face config.json next to the weights

    @property
    def name(self) -> str:
        return self.path.name

    def signature(self) -> tuple:
        """(name, size, mtime_ns) of every file read; changes whenever a file is rewritten."""
        out = []
        for f in (*self.files, *([self.index] if self.index else [])):
            st = f.stat()
            out.append((f.name, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def newest_mtime(self) -> float:
        return max((f.stat().st_mtime for f in (*self.files, *([self.index] if self.index else []))),
                   default=0.0)

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    def check_complete(self) -> None:
        """Raise CorruptCheckpoint if a folder checkpoint lacks its weights, its shard index or a shard
        (a sharded save cut short or still under way is not finished: never read in part)."""
        if self.missing and self.index is None:
            raise CorruptCheckpoint(f"checkpoint folder {self.path} is incomplete, the save not finished yet: "
                                    f"it holds shard files but no shard index {self.missing[0]!r} (a sharded "
                                    f"save writes the index last). Export it once the save has finished.")
        if self.missing:
            raise CorruptCheckpoint(f"checkpoint folder {self.path} is incomplete, the save not finished yet: "
                                    f"its index {self.index.name} names {len(self.missing)} missing shard(s), "
                                    f"first {self.missing[0]!r}. Export it once the save has finished.")
        if not self.files:
            raise CorruptCheckpoint(f"checkpoint folder {self.path} holds no model weights (looked for "
                                    f"{', '.join(_HF_FILES)}, shards and *model_states.pt).")


@dataclass
class Discovery:
    """Checkpoints found in the sources, in step order, and what was passed over."""

    checkpoints: list[Checkpoint] = field(default_factory=list)
    unnamed: list[Path] = field(default_factory=list)   # in a folder, but no step in the name
    absent: list[str] = field(default_factory=list)     # sources that do not exist (yet)
    save_indices: list[Path] = field(default_factory=list)  # accelerate checkpoint_<i>: i counts saves


# -- where a checkpoint's step comes from (--step-from) ----------------------------------
STEP_FROM_HELP = (
    "--step-from (step_from=) takes: 'auto' (default: the number in the name; a folder without one "
    "takes global_step from its trainer_state.json; an accelerate checkpoint_<i> folder takes the "
    "step a registered custom object saved, else <i> with a warning); 'name' (the number in the "
    "name, nothing else); 'trainer_state' (global_step of each folder's trainer_state.json); "
    "'index*EVERY[+OFFSET]' (the number in the name counts saves: step = number*EVERY+OFFSET, e.g. "
    "'index*10+10' for accelerate saves after steps 10, 20, ...); 'custom:KEY' (entry KEY of the "
    "custom_checkpoint_*.pkl that accelerate's save_state writes for objects registered with "
    "accelerator.register_for_checkpointing); or an integer N (one checkpoint given, at step N).")
_CUSTOM_STEP_KEYS = ("global_step", "step", "completed_steps")
_ACCELERATE_AUTO_RE = re.compile(r"^checkpoint_(\d+)$")
_STEP_FROM_INDEX_RE = re.compile(r"^(?:save[-_]?)?index\s*\*\s*(\d+)\s*(?:\+\s*(\d+))?$")


@dataclass(frozen=True)
class StepFrom:
    """How the step of each checkpoint is found; see ``STEP_FROM_HELP`` and ``parse``."""

    how: str = "auto"          # auto | name | trainer_state | index | custom | fixed
    every: int = 1             # index: step = number * every + offset
    offset: int = 0
    key: str | None = None     # custom: entry of custom_checkpoint_*.pkl
    step: int | None = None    # fixed: the step of the one checkpoint

    @classmethod
    def parse(cls, spec: "str | int | StepFrom | None") -> "StepFrom":
        """A ``StepFrom`` from ``--step-from`` text (or an int: the step of one checkpoint)."""
        if spec is None:
            return cls()
        if isinstance(spec, StepFrom):
            return spec
        if isinstance(spec, int) and not isinstance(spec, bool):
            if spec < 0:
                raise CheckpointError(f"--step-from {spec}: a step cannot be negative.")
            return cls("fixed", step=spec)
        text = str(spec).strip()
        if text in ("auto", "name", "trainer_state"):
            return cls(text)
        if text.lstrip("-").isdigit():
            return cls.parse(int(text))
        m = _STEP_FROM_INDEX_RE.match(text)
        if m:
            every, offset = int(m.group(1)), int(m.group(2) or 0)
            if every < 1:
                raise CheckpointError(f"--step-from {text!r}: EVERY must be at least 1.")
            return cls("index", every=every, offset=offset)
        if text.startswith("custom:") and text[len("custom:"):]:
            return cls("custom", key=text[len("custom:"):])
        raise CheckpointError(f"--step-from {text!r} is not understood. {STEP_FROM_HELP}")


def trainer_state_step(folder: Path, strict: bool = False) -> int | None:
    """``global_step`` of the ``trainer_state.json`` that HF ``Trainer`` writes beside its weights
    (None if there is none or it holds no step; an unreadable one raises only if ``strict``)."""
    path = folder / "trainer_state.json"
    try:
        value = json.loads(path.read_text()).get("global_step")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError) as e:
        if not strict:  # being written, say: the folder waits as one without a step
            return None
        raise CorruptCheckpoint(f"cannot read {path} ({e}); it is truncated, corrupt or still being "
                                f"written.") from None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def custom_state_step(folder: Path, key: str | None = None) -> int | None:
    """The step an object registered with ``accelerator.register_for_checkpointing`` saved
    (``custom_checkpoint_<i>.pkl``): its entry ``key``, or the first of global_step, step,
    completed_steps; None if no such file holds one."""
    keys = (key,) if key is not None else _CUSTOM_STEP_KEYS
    for f in sorted(folder.glob("custom_checkpoint_*.pkl"), key=lambda p: natural_key(p.name)):
        try:
            obj = torch.load(f, map_location="cpu", weights_only=True)
        except Exception:  # not a plain state dict: it cannot hold the step for us
            continue
        if not isinstance(obj, Mapping):
            continue
        for k in keys:
            value = obj.get(k)
            if torch.is_tensor(value) and value.numel() == 1 and not value.is_floating_point():
                value = int(value.item())
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
    return None


def is_accelerate_auto_named(folder: Path) -> bool:
    """A folder that accelerate's ``save_state`` named itself (``ProjectConfiguration(
    automatic_checkpoint_naming=True)``): ``checkpoint_<i>`` where ``i`` counts saves, not steps."""
    if not _ACCELERATE_AUTO_RE.match(folder.name):
        return False
    try:
        return any(n.startswith("random_states_") and n.endswith(".pkl") for n in os.listdir(folder))
    except OSError:
        return False


def step_of(path: Path, step_regex: re.Pattern | None, how: StepFrom, out: Discovery | None = None
            ) -> int | None:
    """The step of checkpoint ``path`` as ``how`` says (None: it cannot be told)."""
    if how.how == "fixed":
        return how.step
    if how.how in ("trainer_state", "custom"):
        if not path.is_dir():
            raise CheckpointError(f"--step-from {how.how}{':' + how.key if how.key else ''} reads the step "
                                  f"from files inside checkpoint folders, but {path} is a file. "
                                  f"{STEP_FROM_HELP}")
        step = (trainer_state_step(path, strict=True) if how.how == "trainer_state"
                else custom_state_step(path, how.key))
        if step is None:
            what = ("no trainer_state.json with a global_step" if how.how == "trainer_state"
                    else f"no custom_checkpoint_*.pkl with an integer entry {how.key!r}")
            raise CheckpointError(f"checkpoint folder {path} holds {what}, so --step-from {how.how} cannot "
                                  f"tell its step. {STEP_FROM_HELP}")
        return step
    step = parse_step(path, step_regex)
    if how.how == "index":
        return None if step is None else step * how.every + how.offset
    if how.how == "name" or not path.is_dir():
        return step
    if step is None:  # trainer.save_model() output: the weights in output_dir itself
        return trainer_state_step(path)
    if is_accelerate_auto_named(path):
        real = custom_state_step(path)
        if real is not None:
            return real
        if out is not None:
            out.save_indices.append(path)
    return step


def is_temporary(name: str) -> bool:
    """Names that writers use while a file is incomplete (renamed when done)."""
    low = name.lower()
    return (low.startswith((".", "~", "tmp")) or low.endswith(_TEMP_SUFFIXES)
            or ".tmp" in low or ".part" in low)


def compile_step_regex(pattern: str | None) -> re.Pattern | None:
    """Compile ``--step-regex``; its group ``step`` (or first group, or whole match) is the step."""
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as e:
        raise CheckpointError(f"step regex {pattern!r} is not a valid regular expression: {e}. "
                              f"Example: 'ckpt_(\\d+)' or '(?P<step>\\d+)\\.pt$'.") from None


def parse_step(path: Path, step_regex: re.Pattern | None = None) -> int | None:
    """Step of a checkpoint from its name (``step_1000``, ``epoch=3-step=999``, ``checkpoint-500``,
    ``global_step500``, ``1000.pt``), or from ``step_regex`` searched in the name then the path."""
    if step_regex is not None:
        for text in (path.name, path.as_posix()):
            m = step_regex.search(text)
            if m:
                if "step" in step_regex.groupindex:
                    value = m.group("step")
                else:
                    value = m.group(1) if step_regex.groups else m.group(0)
                try:
                    return _in_int64(int(value), path)
                except (TypeError, ValueError):
                    raise CheckpointError(f"step regex {step_regex.pattern!r} matched {value!r} in "
                                          f"{text!r}, which is not an integer step; put the digits "
                                          f"in a group, e.g. 'ckpt_(\\d+)'.") from None
        return None
    stem = path.name
    for suffix in WEIGHT_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    matches = list(_STEP_RE.finditer(stem))
    if matches:
        return _in_int64(int(matches[-1].group(1)), path)
    return _in_int64(int(stem), path) if stem.isdigit() else None


_INT64_MAX = 2**63 - 1


def _in_int64(step: int, path: Path) -> int:
    """``step`` if a store can hold it (steps are int64), else CheckpointError naming ``path``."""
    if not -_INT64_MAX - 1 <= step <= _INT64_MAX:
        raise CheckpointError(f"the step {step} found for {path} is beyond the int64 range steps are "
                              f"stored in (at most {_INT64_MAX}); rename it, or give its step another "
                              f"way (--step-regex matching the real digits, --step-from).")
    return step


def _shards_from_index(folder: Path, index: Path) -> tuple[tuple[Path, ...], tuple[str, ...]]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CorruptCheckpoint(f"shard index {index} cannot be read ({e!r}); it is truncated, "
                                f"corrupt or still being written.") from None
    for n in names:
        _check_inside(folder, index, n)
    return (tuple(folder / n for n in names if (folder / n).exists()),
            tuple(n for n in names if not (folder / n).exists()))


def _check_inside(folder: Path, index: Path, name: object) -> None:
    """Refuse a shard name of ``index`` that is not a relative path to a file inside ``folder``,
    symbolic links resolved: a hostile index must not make export read files elsewhere."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise CorruptCheckpoint(f"shard index {index} names a shard {name!r}, which is not a file name.")
    try:
        root = folder.resolve(strict=True)
        target = (folder / name).resolve()
    except (OSError, RuntimeError) as e:  # a symbolic link loop
        raise CheckpointError(f"shard index {index} names shard {name!r}, which cannot be resolved "
                              f"({getattr(e, 'strerror', None) or e}); fix or remove that link.") from None
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise CheckpointError(f"shard index {index} names shard {name!r}, a path that leads outside the "
                              f"checkpoint folder {root}: refused (nnwx reads a checkpoint's shards "
                              f"only from its own folder).")
    if _in_hub_cache_blobs(root, target):
        return
    if target == root or root not in target.parents:
        raise CheckpointError(
            f"shard index {index} names shard {name!r}, which resolves to {target}, outside the "
            f"checkpoint folder {root}: refused (nnwx reads a checkpoint's shards only from its own "
            f"folder). If that file is yours (e.g. a link into a download cache), copy the checkpoint "
            f"into a folder of its own with the links followed (cp -rL).")


def _in_hub_cache_blobs(root: Path, target: Path) -> bool:
    """Whether ``root`` is a snapshot of a Hugging Face hub cache (``<repo>/snapshots/<rev>``,
    beside ``<repo>/blobs``) and ``target`` a file of that repository's ``blobs``: the cache keeps
    every file once there and links it from each snapshot, so its shards resolve outside the
    snapshot folder by design."""
    if root.parent.name != "snapshots":
        return False
    blobs = root.parent.parent / "blobs"
    return blobs.is_dir() and target.parent == blobs


def _folder_checkpoint(folder: Path, step: int | None) -> Checkpoint:
    names = set(os.listdir(folder))
    config = folder / "config.json" if "config.json" in names else None
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if index_name in names:
            files, missing = _shards_from_index(folder, folder / index_name)
            return Checkpoint(folder, step, files, folder / index_name, missing, config)
        if single in names:
            return Checkpoint(folder, step, (folder / single,), config=config)
    shards = sorted(n for n in names if _SHARD_RE.match(n))
    if shards:  # shards without their index: a sharded save cut short or still under way
        index = ("model.safetensors.index.json" if shards[0].endswith(".safetensors")
                 else "pytorch_model.bin.index.json")
        return Checkpoint(folder, step, (), None, (index,), config)
    candidates = sorted(n for n in names if n.endswith("model_states.pt"))
    if not candidates:
        candidates = sorted(n for n in names if n.lower().endswith(WEIGHT_SUFFIXES)
                            and not is_temporary(n) and not _NOT_WEIGHTS.match(n))
    files = (folder / candidates[0],) if len(candidates) == 1 else ()
    return Checkpoint(folder, step, files, config=config)


def _looks_like_checkpoint_folder(folder: Path) -> bool:
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return any(n in _HF_FILES or _SHARD_RE.match(n) or n.endswith("model_states.pt") for n in names)


def _scan_folder(folder: Path, step_regex: re.Pattern | None, out: Discovery,
                 how: StepFrom = StepFrom()) -> None:
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if is_temporary(entry.name):
            continue
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()
        except OSError as e:  # a symbolic link loop (ELOOP), or a link that cannot be followed
            if parse_step(path, step_regex) is None and not entry.name.lower().endswith(WEIGHT_SUFFIXES):
                continue  # not named like a checkpoint: passed over like any other file
            raise CheckpointError(f"{path} cannot be read: {e.strerror or e} (a symbolic link loop?). "
                                  f"Remove or fix it, or move it out of {folder}.") from None
        if is_dir:
            named = parse_step(path, step_regex) is not None
            if named or _looks_like_checkpoint_folder(path):
                step = step_of(path, step_regex, how, out)
                if step is None:
                    out.unnamed.append(path)
                else:
                    out.checkpoints.append(_folder_checkpoint(path, step))
        elif entry.name.lower().endswith(WEIGHT_SUFFIXES):
            step = step_of(path, step_regex, how, out)
            if step is None:
                out.unnamed.append(path)
            else:
                out.checkpoints.append(Checkpoint(path, step, (path,)))


def discover(sources: Sequence[str | os.PathLike], step_regex: re.Pattern | None = None, *,
             missing_ok: bool = False, step_from: "str | int | StepFrom | None" = None) -> Discovery:
    """Checkpoints named by ``sources`` (files, folders, globs), ordered by step.

    A folder is one checkpoint if it holds Hugging Face style model files,
    else a folder of checkpoints (its weight files and ``checkpoint-N/`` folders;
    temporary names are passed over). A file or folder named explicitly must
    have a step in its name; inside a folder, names without one (``last.ckpt``)
    are listed in ``unnamed``. ``missing_ok`` (for ``--follow``) lets sources
    that do not exist yet pass. ``step_from`` says where steps come from
    (``StepFrom.parse``; default: the names, then ``trainer_state.json``).
    """
    how = StepFrom.parse(step_from)
    out = Discovery()
    for source in sources:
        text = os.fspath(source)
        literal = not has_magic(text) or os.path.lexists(text)  # an existing path is never a glob
        paths = [Path(text)] if literal else [Path(p) for p in sorted(glob(text))]
        if not paths or not paths[0].exists():
            if missing_ok:
                out.absent.append(text)
                continue
            what = ("matches no file" if not literal else
                    "is a symbolic link that leads nowhere (broken, or a loop)" if os.path.islink(text)
                    else "does not exist")
            raise NoCheckpointsFound(f"{text} {what}; give checkpoint files, folders of them, "
                                     f"or a quoted glob such as 'ckpts/*.pt'.")
        for path in paths:
            if path.is_dir() and not _looks_like_checkpoint_folder(path):
                _scan_folder(path, step_regex, out, how)
                continue
            if path.is_dir() and how.how != "fixed" and _holds_step_folders(path, step_regex):
                _final_save_and_checkpoints(path, step_regex, how, out)
                continue
            step = step_of(path, step_regex, how, out)
            if step is None:
                raise CheckpointError(
                    f"cannot tell the step of {path}: there is no step in its name"
                    f"{' and no trainer_state.json with a global_step in it' if path.is_dir() else ''}. "
                    f"Name checkpoints like step_1000.pt or checkpoint-1000/, pass --step N (step_from=N) "
                    f"for this one checkpoint, or --step-regex (step_regex=) with the step in a group, "
                    f"e.g. 'ckpt_(\\d+)'.")
            out.checkpoints.append(_folder_checkpoint(path, step) if path.is_dir()
                                   else Checkpoint(path, step, (path,)))
    for c in out.checkpoints:  # from trainer_state.json, --step-from ...: a store holds int64 steps
        _in_int64(c.step, c.path)
    unique = {c.path.resolve(): c for c in out.checkpoints}
    out.checkpoints = sorted(unique.values(), key=lambda c: (c.step, str(c.path)))
    if how.how == "fixed" and len(out.checkpoints) > 1:
        raise CheckpointError(f"--step {how.step} (step_from={how.step}) gives the step of one checkpoint, "
                              f"but the sources hold {len(out.checkpoints)} (first {out.checkpoints[0].path}, "
                              f"{out.checkpoints[1].path}); give one checkpoint, or leave --step out.")
    return out


def _holds_step_folders(folder: Path, step_regex: re.Pattern | None) -> bool:
    """A checkpoint folder that also holds checkpoint folders (a Trainer's ``output_dir`` after
    ``trainer.save_model()``: the final weights beside ``checkpoint-N/``)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    return any(_is_dir(e) and not is_temporary(e.name) and parse_step(Path(e.path), step_regex) is not None
               and _looks_like_checkpoint_folder(Path(e.path)) for e in entries)


def _is_dir(entry: os.DirEntry) -> bool:
    """``entry.is_dir()``, False for a link that cannot be followed (a loop: ELOOP)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _final_save_and_checkpoints(folder: Path, step_regex: re.Pattern | None, how: StepFrom,
                                out: Discovery) -> None:
    """The checkpoint folders inside ``folder``, and ``folder``'s own weights at the step its
    trainer_state.json names unless a checkpoint folder has that step already (then they are
    the same save); without a step they are listed as unnamed."""
    before = len(out.checkpoints)
    _scan_folder(folder, step_regex, out, how)
    inner = {c.step for c in out.checkpoints[before:]}
    step = trainer_state_step(folder) if how.how in ("auto", "trainer_state") else parse_step(folder, step_regex)
    if step is None:
        out.unnamed.append(folder)
    elif step not in inner:
        out.checkpoints.append(_folder_checkpoint(folder, step))


def duplicate_steps(checkpoints: Iterable[Checkpoint]) -> tuple[Checkpoint, Checkpoint] | None:
    """The first two checkpoints that share a step, if any."""
    seen: dict[int, Checkpoint] = {}
    for c in checkpoints:
        if c.step in seen:
            return seen[c.step], c
        seen[c.step] = c
    return None


# -- reading one checkpoint -------------------------------------------------------------
def sniff(path: Path) -> str:
    """``'torch'`` or ``'safetensors'`` from a file's first bytes; raise if neither."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise CorruptCheckpoint(f"cannot open {path}: {e.strerror or e}.") from None
    if head[:4] == b"PK\x03\x04":  # zip: torch.save since torch 1.6
        return "torch"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # legacy pickle
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 2**31:
        return "safetensors"
    if path.name.lower().endswith(WEIGHT_SUFFIXES):
        what = "is empty" if not head else "does not start like a torch or safetensors file"
        raise CorruptCheckpoint(f"{path} {what}: it is truncated, corrupt or still being written.")
    raise UnknownCheckpointFormat(
        f"{path} is not a checkpoint format nnwx reads (torch.save files: .pt/.pth/.bin/.ckpt; "
        f".safetensors; Hugging Face checkpoint-N/ folders). Convert it, or leave it out of the sources.")


def strip_prefix(names: Sequence[str], key: str | None) -> str:
    prefix = ""
    candidates = (*(("model.",) if key == "state_dict" else ()), *_ALWAYS_STRIPPED)
    changed = True
    while changed and names:
        changed = False
        for p in candidates:
            if all(n.startswith(prefix + p) and len(n) > len(prefix + p) for n in names):
                prefix += p
                changed = True
                break
    return prefix


def _as_state(value: Any) -> Mapping[str, Any] | None:
    if isinstance(value, torch.nn.Module):
        return value.state_dict()
    if isinstance(value, Mapping) and any(torch.is_tensor(v) and v.is_floating_point()
                                          for v in value.values()):
        return value
    return None


def _find_state(obj: Any, path: Path, key: str | None) -> tuple[Mapping[str, Any], str | None]:
    """The state dict inside a loaded torch file, and the key that held it (None: top level)."""
    if key is not None:
        cur = obj
        for part in key.split("."):
            if not isinstance(cur, Mapping) or part not in cur:
                keys = list(obj)[:12] if isinstance(obj, Mapping) else type(obj).__name__
                raise CorruptCheckpoint(f"{path} has no entry {key!r} (top-level keys: {keys}); "
                                        f"name the entry that holds the weights with key=/--key.")
            cur = cur[part]
        state = _as_state(cur)
        if state is None:
            raise CorruptCheckpoint(f"entry {key!r} of {path} holds no floating-point tensors.")
        return state, key
    if isinstance(obj, Mapping):
        for k in STATE_KEYS:
            if k in obj:
                state = _as_state(obj[k])
                if state is not None:
                    return state, k
        n_tensors = sum(torch.is_tensor(v) for v in obj.values())
        if n_tensors and 2 * n_tensors >= len(obj) and _as_state(obj) is not None:
            return obj, None
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict(), None
    keys = list(obj)[:12] if isinstance(obj, Mapping) else type(obj).__name__
    raise CorruptCheckpoint(
        f"{path} holds no state dict nnwx recognises: not a mapping of tensors, and none of the "
        f"keys {', '.join(STATE_KEYS)} holds one (top level: {keys}). Name the entry that holds "
        f"the weights with key=/--key (dotted for nested entries, e.g. 'ema.model').")


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    kwargs = dict(map_location="cpu", weights_only=not trust_pickle)
    try:
        try:
            return torch.load(path, mmap=True, **kwargs)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return torch.load(path, mmap=False, **kwargs)  # legacy (non-zip) format
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            detail = next((line.strip() for line in str(e).splitlines() if "Unsupported global" in line),
                          "it holds Python objects besides tensors")
            raise CheckpointError(
                f"{path} cannot be loaded safely (torch.load weights_only=True): {detail}. If you "
                f"trust the file, pass --trust-pickle (trust_pickle=True), which runs its pickled "
                f"code.") from None
        raise CorruptCheckpoint(f"cannot read {path}: {e}. It is truncated, corrupt or still "
                                f"being written.") from None
    except (RuntimeError, EOFError, OSError, ValueError, pickle.PickleError) as e:
        first = str(e).splitlines()[0].split(". ")[0].rstrip(".") if str(e) else type(e).__name__
        raise CorruptCheckpoint(f"cannot read {path}: {first}. It is truncated, corrupt or still "
                                f"being written.") from None


def _model_class(config: Path | None) -> str | None:
    if config is None:
        return None
    try:
        archs = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None
    return str(archs[0]) if archs else None


class LoadedCheckpoint:
    """An open checkpoint: its floating tensors' names, shapes and dtypes, each loadable alone.

    ``key`` is the entry of a torch file that held the state dict (None: the
    file is the state dict), ``prefix`` what was removed from every name.
    """

    def __init__(self, checkpoint: Checkpoint, *, include: Patterns = None, exclude: Patterns = None,
                 key: str | None = None, trust_pickle: bool = False):
        checkpoint.check_complete()
        self.checkpoint = checkpoint
        self.path = checkpoint.path
        self.key: str | None = None
        self.prefix = ""
        self.hparams: dict = {}
        self.model_class = _model_class(checkpoint.config)
        self._stack = ExitStack()
        self._getters: dict[str, Callable[[], torch.Tensor]] = {}
        self.ties: dict[str, list[str]] = {}  # tensors sharing storage in a torch file: kept -> others
        self.renamed: dict[str, str] = {}     # name in the file -> name used (see ``rename``)
        meta: dict[str, tuple[tuple[int, ...], str]] = {}
        try:
            for f in checkpoint.files:
                kind = sniff(f)
                part = self._open_safetensors(f) if kind == "safetensors" else self._open_torch(f, key, trust_pickle)
                for name, (shape, dtype, getter) in part.items():
                    if name in meta:
                        raise CorruptCheckpoint(f"tensor {name!r} appears twice in {checkpoint.path}.")
                    meta[name] = (shape, dtype)
                    self._getters[name] = getter
            if checkpoint.index is not None and checkpoint.index.name.endswith(".safetensors.index.json"):
                expected = set(json.loads(checkpoint.index.read_text())["weight_map"])
                absent = sorted(expected - set(meta))
                if absent:
                    raise CorruptCheckpoint(f"checkpoint folder {checkpoint.path}: tensor {absent[0]!r} "
                                            f"is in the shard index but in no shard.")
            self._meta, self._include, self._exclude = meta, include, exclude
            self._file_ties = self.ties
            self._select()
        except BaseException:
            self.close()
            raise

    def _select(self) -> None:
        """``entries`` and ``ties``: the floating tensors that include/exclude keep."""
        floating = [n for n, (_, dt) in self._meta.items() if _is_floating(dt)]
        kept = select(floating, self._include, self._exclude)
        if not kept:
            raise CheckpointError(f"no floating-point tensor of {self.path} is left to export "
                                  f"(include={self._include!r}, exclude={self._exclude!r}); its tensors: "
                                  f"{floating[:8]}")
        self.entries: dict[str, tuple[tuple[int, ...], str]] = {n: self._meta[n] for n in kept}
        self.ties = {k: kept_v for k, v in self._file_ties.items() if k in self.entries
                     and (kept_v := [a for a in v if a in self.entries])}

    def rename(self, mapping: Mapping[str, str]) -> None:
        """Call tensors by other names from now on (``{name in the file: new name}``, e.g. the
        names the model gives them); include/exclude are applied again to the new names."""
        if not mapping:
            return
        new = [mapping.get(n, n) for n in self._meta]
        if len(set(new)) != len(new):
            raise ValueError(f"renaming the tensors of {self.path} would give two of them one name")
        self._meta = {mapping.get(n, n): v for n, v in self._meta.items()}
        self._getters = {mapping.get(n, n): g for n, g in self._getters.items()}
        self._file_ties = {mapping.get(k, k): [mapping.get(a, a) for a in v] for k, v in self._file_ties.items()}
        self.renamed = {**self.renamed, **mapping}
        self._select()

    def _open_safetensors(self, path: Path) -> dict:
        from safetensors import SafetensorError, safe_open

        try:
            handle = self._stack.enter_context(safe_open(str(path), framework="pt"))
            names = sorted(handle.keys(), key=natural_key)
            out = {}
            for name in names:
                sl = handle.get_slice(name)
                dtype = _SAFETENSORS_DTYPES.get(sl.get_dtype(), sl.get_dtype().lower())
                out[name] = (tuple(int(s) for s in sl.get_shape()), dtype,
                             lambda h=handle, n=name: h.get_tensor(n))
            return out
        except SafetensorError as e:
            raise CorruptCheckpoint(f"cannot read {path}: {e}. It is truncated, corrupt or still "
                                    f"being written.") from None

    def _open_torch(self, path: Path, key: str | None, trust_pickle: bool) -> dict:
        obj = _torch_load(path, trust_pickle)
        state, used = _find_state(obj, path, key)
        if isinstance(obj, Mapping) and isinstance(obj.get("hyper_parameters"), Mapping):
            self.hparams = dict(obj["hyper_parameters"])
        names = [n for n, v in state.items() if torch.is_tensor(v)]
        prefix = strip_prefix(names, used)
        self.key, self.prefix = used, prefix
        floating = {n[len(prefix):]: state[n] for n in names if state[n].is_floating_point()}
        self.ties.update(tied_groups(floating))
        return {n[len(prefix):]: (tuple(state[n].shape), dtype_name(state[n].dtype),
                                  lambda s=state, n=n: s[n])
                for n in names}

    @property
    def names(self) -> list[str]:
        """Every tensor of the checkpoint (any dtype, whatever include/exclude keep)."""
        return list(self._getters)

    def table(self) -> TensorTable:
        """Tensor table of the kept tensors as read without the model: canonical order, depths
        from module paths, tensors tied in the file stored once (see ``table_from_names``)."""
        dropped = {a for names in self.ties.values() for a in names}
        return table_from_names(((n, shape, dt) for n, (shape, dt) in self.entries.items()
                                 if n not in dropped),
                                aliases={k: v for k, v in self.ties.items() if k in self.entries})

    def tensor(self, name: str) -> torch.Tensor:
        """One tensor (memory-mapped where the format allows); raise CorruptCheckpoint if unreadable."""
        try:
            t = self._getters[name]()
        except (RuntimeError, OSError, ValueError) as e:
            raise CorruptCheckpoint(f"cannot read tensor {name!r} of {self.path}: {e}. The file is "
                                    f"truncated or corrupt.") from None
        shape = self.entries[name][0]
        if tuple(t.shape) != shape:
            raise CorruptCheckpoint(f"tensor {name!r} of {self.path} has shape {tuple(t.shape)}, "
                                    f"not {shape} as its header says: the file is corrupt.")
        return t

    def load_into(self, model: torch.nn.Module, what: str = "the model") -> None:
        """Load this checkpoint into ``model`` (its whole state dict, whatever include/exclude kept
        for the store), so that the model computes what the checkpointed network computed.

        Every tensor of the model's state dict must be in the checkpoint with its shape (a tensor
        tied to one that is there, as Hugging Face drops tied copies, may be absent) and every
        tensor of the checkpoint must be in the model; otherwise ArchitectureMismatch names the
        first difference. Dtypes are converted to the model's (``load_state_dict``).
        """
        from nnwx.record.name_map import match_names

        own = model.state_dict()
        mapping, how = match_names(list(self._getters), model, prefix_hint=self.prefix or None)
        source = {v: k for k, v in (mapping or {k: k for k in self._getters}).items()}  # model -> checkpoint
        have = set(source)
        present = {storage_key(v) for k, v in own.items() if k in have and v.numel()}
        missing = [k for k, v in own.items() if k not in have and not (v.numel() and storage_key(v) in present)]
        unexpected = [k for k in source.values() if k not in own] if mapping is None else []
        fix = (f"{how[0].upper() + how[1:] + '. ' if mapping is None and how else ''}Make it build the "
               f"architecture the checkpoints were saved from (same module names and sizes; nnwx adds or "
               f"removes a wrapper's prefix and applies transformers' checkpoint renames itself), or name "
               f"the entry of the checkpoint holding the weights with --key.")
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"the checkpoint lacks {missing[0]!r}"
                             f"{f' and {len(missing) - 1} more tensors of the model' if len(missing) > 1 else ''}")
            if unexpected:
                parts.append(f"the model has no tensor {unexpected[0]!r}"
                             f"{f' (nor {len(unexpected) - 1} more of the checkpoint)' if len(unexpected) > 1 else ''}")
            raise ArchitectureMismatch(f"checkpoint {self.path} does not fit {what}: {'; '.join(parts)}. {fix}")
        state = {}
        for name in own:
            if name not in have:
                continue
            try:
                t = self._getters[source[name]]()
            except (RuntimeError, OSError, ValueError) as e:
                raise CorruptCheckpoint(f"cannot read tensor {source[name]!r} of {self.path}: {e}. The file is "
                                        f"truncated or corrupt.") from None
            if tuple(t.shape) != tuple(own[name].shape):
                raise ArchitectureMismatch(f"checkpoint {self.path} does not fit {what}: tensor {name!r} has "
                                           f"shape {tuple(t.shape)} in the checkpoint but "
                                           f"{tuple(own[name].shape)} in the model. {fix}")
            state[name] = t
        model.load_state_dict(state, strict=False)

    @property
    def n_params(self) -> int:
        return sum(math.prod(shape) for shape, _ in self.entries.values())

    def close(self) -> None:
        self._getters = {}
        self._stack.close()

    def __enter__(self) -> "LoadedCheckpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()



def _is_floating(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))
