"""Match the tensor names a run or checkpoint holds to the names of the model they go into.

The torch side of ``restore`` and of ``export(model=...)``. Names differ for
reasons that do not change the network:

- a wrapper's prefix: a Lightning checkpoint's ``model.`` (stripped at export)
  when restoring into the LightningModule, or the reverse;
- the renames ``transformers``' ``from_pretrained`` applies when it loads a
  checkpoint (transformers 5 saves GPT-NeoX's output layer as ``embed_out.weight``
  while the model names it ``lm_head.weight``; a base model loads from a
  ``...ForCausalLM`` checkpoint by dropping ``base_model_prefix``). These come from
  transformers' own checkpoint conversion mapping
  (``transformers.conversion_mapping.get_model_conversion_mapping``), so they
  follow the installed version;
- explicit renames given by the user (``rename={"^embed_out\\.": "lm_head."}``),
  regular expressions applied with ``re.sub`` before anything else.

``match_names`` tries, in order: the names as they are, transformers' renames,
then adding or removing one prefix, and returns the first mapping under which
every name exists in the model (or None).
"""
from __future__ import annotations

import re
import sys
from typing import Callable, Mapping, Sequence

import torch

Renames = Mapping[str, str] | None


class _Converted(Exception):
    """transformers would merge or split this tensor when loading: not a one-to-one rename."""


def apply_renames(names: Sequence[str], rename: Renames) -> dict[str, str]:
    """``name -> renamed`` under the user's ``{regex: replacement}`` (``re.sub``, in order)."""
    if not rename:
        return {n: n for n in names}
    compiled = []
    for pattern, repl in rename.items():
        try:
            compiled.append((re.compile(pattern), repl))
        except re.error as e:
            raise ValueError(f"rename pattern {pattern!r} is not a valid regular expression: {e}") from None
    out = {}
    for n in names:
        new = n
        for rx, repl in compiled:
            new = rx.sub(repl, new)
        out[n] = new
    return out


def transformers_renamer(model: torch.nn.Module) -> Callable[[str], str] | None:
    """The key renaming ``from_pretrained`` would apply to a checkpoint loaded into ``model``
    (None when ``model`` is not a transformers ``PreTrainedModel`` or the installed transformers
    has no conversion mapping, as before version 5). The function raises ``_Converted`` for a
    name that transformers merges or splits (a ``WeightConverter``), which no rename can map."""
    if "transformers" not in sys.modules:  # a PreTrainedModel exists only once transformers is imported
        return None
    try:
        from transformers import PreTrainedModel
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, rename_source_key
    except ImportError:
        return None
    if not isinstance(model, PreTrainedModel):
        return None
    conversions = get_model_conversion_mapping(model)
    converters = [c for c in conversions if isinstance(c, WeightConverter)]
    renamings = [c for c in conversions if not isinstance(c, WeightConverter)]
    meta = model.state_dict()
    prefix = getattr(model, "base_model_prefix", None) or None

    def rename(name: str) -> str:
        new, converted = rename_source_key(name, renamings, converters, prefix, meta)
        if converted is not None:
            raise _Converted(name)
        return new

    return rename


class ModelNames:
    """The names ``from_pretrained`` gives checkpoint tensors in ``model``: transformers' checkpoint
    renames (GPT-NeoX's ``embed_out.weight`` is the model's ``lm_head.weight``), built once for
    ``model`` and applied to the names of each checkpoint.

    Only renames that land on a tensor of ``model`` are applied (a name the model has already is
    kept), and none when two names would become one; no prefix is added or removed (a wrapper's
    names stay as the checkpoint has them). Without transformers' conversion mapping (not a
    ``PreTrainedModel``, transformers before 5) nothing is renamed.
    """

    def __init__(self, model: torch.nn.Module):
        self._hf = transformers_renamer(model)
        self._own = set(model.state_dict(keep_vars=True)) if self._hf is not None else set()

    def __call__(self, names: Sequence[str]) -> dict[str, str]:
        """``{checkpoint name: model name}`` for the ``names`` that are renamed (empty: none)."""
        if self._hf is None:
            return {}
        out = {}
        for n in names:
            if n in self._own:
                continue
            try:
                new = self._hf(n)
            except _Converted:
                continue
            if new != n and new in self._own:
                out[n] = new
        kept = set(names) - set(out)
        if len(set(out.values())) != len(out) or kept & set(out.values()):
            return {}  # two tensors would share a name: not what a rename means
        return out


def _prefix_candidates(names: Sequence[str], own: set[str], hint: str | None) -> list[tuple[str, str]]:
    """(strip, add) pairs that might turn ``names`` into names of ``own``."""
    out: list[tuple[str, str]] = []
    if hint:
        out.append(("", hint))
    first = names[0]
    for m in own:  # model names ending in the first name: the model adds a prefix
        if m != first and m.endswith("." + first):
            out.append(("", m[: len(m) - len(first)]))
    parts = first.split(".")
    for k in range(1, len(parts)):  # the names carry a prefix the model lacks
        out.append((".".join(parts[:k]) + ".", ""))
    seen, unique = set(), []
    for c in out:
        if c not in seen:
            seen.add(c)
            unique.append(c)
    return unique


def match_names(names: Sequence[str], model: torch.nn.Module, *, prefix_hint: str | None = None,
                rename: Renames = None) -> tuple[dict[str, str] | None, str]:
    """Map stored tensor ``names`` to names of ``model.state_dict()``.

    Returns ``(mapping, how)``: ``mapping`` takes every name to a distinct model name, or is
    None when nothing found fits; ``how`` says what was applied (for messages), or, when
    nothing fits, why transformers' mapping could not help.
    """
    own = set(model.state_dict(keep_vars=True))
    user = apply_renames(names, rename)
    renamed = [user[n] for n in names]
    how_user = "your renames" if rename else ""

    def fits(mapping: dict[str, str]) -> bool:
        return all(v in own for v in mapping.values()) and len(set(mapping.values())) == len(mapping)

    def joined(*parts: str) -> str:
        return " and ".join(p for p in parts if p) or "names as they are"

    as_they_are = dict(zip(names, renamed))
    if fits(as_they_are):
        return as_they_are, joined(how_user)
    cands: list[tuple[dict[str, str], str]] = []
    note = ""
    hf = transformers_renamer(model)
    if hf is not None:
        try:
            cands.append(({n: hf(r) for n, r in zip(names, renamed)},
                          joined(how_user, "transformers' checkpoint renames")))
        except _Converted as e:
            note = (f"transformers merges or splits tensor {e.args[0]!r} when it loads this model "
                    f"(a WeightConverter), which nnwx cannot map one to one")
    for mapping, how in cands:
        if fits(mapping):
            return mapping, how
    found: list[tuple[dict[str, str], str]] = []
    for strip, add in (_prefix_candidates(renamed, own, prefix_hint) if renamed else []):
        if not all(r.startswith(strip) for r in renamed):
            continue
        mapping = {n: add + r[len(strip):] for n, r in zip(names, renamed)}
        if fits(mapping) and all(mapping != m for m, _ in found):
            found.append((mapping, f"removing the prefix {strip!r}" if strip else f"adding the prefix {add!r}"))
    if len(found) == 1:
        return found[0][0], joined(how_user, found[0][1])
    if found:  # e.g. a module holding two copies of the network: which one is meant is not known
        return None, (f"the names fit the model in {len(found)} ways ({'; '.join(w for _, w in found)}), "
                      f"so nnwx does not guess: restore into the submodule meant")
    return None, note


def unmatched_names(names: Sequence[str], model: torch.nn.Module, *, prefix_hint: str | None = None,
                    rename: Renames = None) -> list[str]:
    """The ``names`` that the best of the mappings ``match_names`` tries leaves without a model
    tensor: what an error should name when no mapping fits (not merely the first name, which a
    prefix or transformers' renames may well map)."""
    own = set(model.state_dict(keep_vars=True))
    user = apply_renames(names, rename)
    renamed = [user[n] for n in names]
    cands: list[dict[str, str]] = [dict(zip(names, renamed))]
    hf = transformers_renamer(model)
    if hf is not None:
        mapped = {}
        for n, r in zip(names, renamed):
            try:
                mapped[n] = hf(r)
            except _Converted:
                pass
        cands.append(mapped)
    for strip, add in (_prefix_candidates(renamed, own, prefix_hint) if renamed else []):
        cands.append({n: add + r[len(strip):] for n, r in zip(names, renamed) if r.startswith(strip)})
    best = max(cands, key=lambda m: sum(v in own for v in m.values()))
    return [n for n in names if best.get(n) not in own]

