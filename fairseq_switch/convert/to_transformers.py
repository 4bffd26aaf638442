"""fairseq-switch checkpoint (T5 layout) -> transformers folder.

Output folder: config.json (T5ForConditionalGeneration without experts, else
SwitchTransformersForConditionalGeneration), generation_config.json, model.safetensors or shards
model-0000i-of-0000n.safetensors + model.safetensors.index.json, and spiece.model +
tokenizer_config.json when a T5 SentencePiece model is given or lies next to the checkpoint.

The fairseq save is read one file at a time (memory-mapped): checkpoint.pt, then each
checkpoint-experts-rank{r}.pt of an expert-parallel save (their experts carry global ids). Each
fairseq file becomes one safetensors shard, or several under --max-shard-size.
"""

import json
import os
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch

from .. import file_io as io
from .mapping import (DEFAULT_EXPERT_CAPACITY, EMBED_FS, LM_HEAD_HF, OUTPUT_FS, TRANSFORMERS_CONFIG, ModelSpec,
                      hf_config, spec_from_fairseq_cfg, tensor_pairs)
from .vocabulary import spm_pieces, to_t5_rows

SHARED_HF = "shared.weight"


def _load(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with io.fairseq_checkpoint_types():  # the types fairseq checkpoints hold, allowed by name
            try:
                state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            except RuntimeError as e:  # files from torch's legacy (non-zip) format cannot be memory-mapped
                if "mmap" not in str(e):
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a readable fairseq checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a fairseq checkpoint (no 'model' state)")
    return state


def _model_cfg(state: dict, path: str):
    cfg = state.get("cfg")
    if cfg is not None and cfg.get("model") is not None:
        return cfg["model"]
    if state.get("args") is not None:  # checkpoints from before fairseq's hydra configs
        return state["args"]
    raise ValueError(f"{path} has no model configuration (cfg.model)")


def _files(main_path: str, state: dict, spec: ModelSpec) -> Tuple[List[str], Optional[str]]:
    """The files of this save, main first, and its save id (None for a plain checkpoint)."""
    from ..checkpoints import META_KEY, files_of, shard_path

    meta = state.get(META_KEY)
    if meta is None:
        return [main_path], None
    n, w = meta["num_experts"], meta["world_size"]
    if n != spec.num_experts:
        raise ValueError(f"{main_path}: its expert-parallel metadata says {n} experts, its cfg --moe-expert-count "
                         f"{spec.num_experts}")
    files = [main_path] + [shard_path(main_path, r) for r in range(1, files_of(n, w) if n else 1)]
    for p in files[1:]:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p} is missing: {main_path} was saved by {w} expert-parallel ranks and its "
                                    f"experts are split over {len(files)} files; copy them together")
    return files, meta["save_id"]


class TensorMapper:
    """fairseq-switch tensors -> transformers tensors of one model spec (also used in memory by the
    transformers reference trainer)."""

    def __init__(self, spec: ModelSpec, where: str):
        self.spec, self.where = spec, where
        self.by_fs = {p.fairseq: p for p in tensor_pairs(spec)}

    def file_tensors(self, state: dict, is_main: bool) -> Dict[str, torch.Tensor]:
        """transformers name -> tensor for one fairseq file (embedding rows rolled back to T5's order)."""
        out: Dict[str, torch.Tensor] = {}
        model = state["model"]
        for name, t in model.items():
            if name in EMBED_FS or name == OUTPUT_FS:
                continue
            pair = self.by_fs.get(name)
            if pair is None:
                raise ValueError(f"{self.where}: tensor {name} has no transformers counterpart (is the checkpoint's "
                                 f"cfg that of its weights?)")
            if tuple(t.shape) != pair.shape:
                raise ValueError(f"{self.where}: tensor {name} has shape {list(t.shape)}, its cfg implies "
                                 f"{list(pair.shape)}")
            out[pair.hf] = t
        if is_main:
            if EMBED_FS[0] not in model:
                raise ValueError(f"{self.where}: tensor {EMBED_FS[0]} is missing")
            out[SHARED_HF] = to_t5_rows(model[EMBED_FS[0]])
            if self.spec.untied:
                if OUTPUT_FS not in model:
                    raise ValueError(f"{self.where}: tensor {OUTPUT_FS} is missing (the cfg has --untied-lm-head)")
                out[LM_HEAD_HF] = to_t5_rows(model[OUTPUT_FS])
        return out

    def expected(self) -> List[str]:
        return [SHARED_HF] + ([LM_HEAD_HF] if self.spec.untied else []) + [p.hf for p in tensor_pairs(self.spec)]


def _groups(names_bytes: List[Tuple[str, int]], cap: Optional[int]) -> List[List[str]]:
    """Split one fairseq file's tensors into shards of at most `cap` bytes (a larger tensor gets its own)."""
    if not cap:
        return [[n for n, _ in names_bytes]]
    groups, cur, size = [], [], 0
    for n, b in names_bytes:
        if cur and size + b > cap:
            groups.append(cur)
            cur, size = [], 0
        cur.append(n)
        size += b
    if cur:
        groups.append(cur)
    return groups


def _parse_size(s: Union[None, int, str]) -> Optional[int]:
    if s is None or s == "" or s == 0:
        return None
    if isinstance(s, int):
        return s
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}
    t = str(s).strip().upper()
    for u in sorted(units, key=len, reverse=True):
        if t.endswith(u):
            try:
                return int(float(t[: -len(u)]) * units[u])
            except ValueError:
                break
    try:
        return int(t)
    except ValueError:
        raise ValueError(f"--max-shard-size {s!r} is not a size (e.g. 2GB, 500MB)") from None


def _known_extra_ids(folders: List[str]) -> Optional[int]:
    """Sentinels in the first fairseq dictionary found: next to the checkpoint or the SentencePiece model, or
    in the training data folder (text_to_text's dict.input.txt)."""
    for folder in folders:
        for name in ("dict.txt", "dict.input.txt"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    return sum(1 for line in f if line.startswith("<extra_id_"))
    return None


def _known_capacity(ckpt_dir: str) -> Optional[int]:
    """The expert_capacity in conversion.json, for conversions whose cfg has no --moe-capacity-per-sequence."""
    path = os.path.join(ckpt_dir, "conversion.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("expert_capacity", {}).get("transformers_expert_capacity")
    except (OSError, ValueError, AttributeError):
        return None


class _Source:
    """The checkpoint being converted: its main file's state, its model spec and the files of its save."""

    def __init__(self, ckpt: str):
        self.path = ckpt
        self.dir = os.path.dirname(os.path.abspath(ckpt))
        self.main: Optional[dict] = _load(ckpt)
        self.spec = spec_from_fairseq_cfg(_model_cfg(self.main, ckpt), ckpt)
        if EMBED_FS[0] not in self.main["model"]:
            raise ValueError(f"{ckpt}: tensor {EMBED_FS[0]} is missing")
        self.spec.vocab_size = int(self.main["model"][EMBED_FS[0]].shape[0])
        self.files, self.save_id = _files(ckpt, self.main, self.spec)

    def file_state(self, i: int, release: bool = False) -> dict:
        """File i's state; `release` hands the main file's over, so its tensors go with its shard."""
        if i > 0:
            return _load(self.files[i])
        state = self.main
        if release:
            self.main = None
        return state


def _target_config(src: _Source, expert_capacity: Optional[int], log: Callable[[str], None]) -> dict:
    """Step 1: the transformers config.json (a converted checkpoint's source config, read back, where it fits)."""
    spec = src.spec
    source = (src.main.get("extra_state") or {}).get(TRANSFORMERS_CONFIG)
    if expert_capacity is None and spec.switch:
        expert_capacity = spec.expert_capacity or (source or {}).get("expert_capacity") or _known_capacity(src.dir)
        if expert_capacity is None:
            expert_capacity = DEFAULT_EXPERT_CAPACITY
            log(f"[convert] expert_capacity {expert_capacity} (transformers' default; set it with --expert-capacity: "
                f"transformers drops a sequence's tokens past that many per expert)")
    return hf_config(spec, expert_capacity, source)


def _tokenizer(src: _Source, spm_model: Optional[str], extra_ids: Optional[int],
               log: Callable[[str], None]) -> Tuple[Optional[str], Optional[int]]:
    """The T5 SentencePiece model to write (given, next to the checkpoint, or in its training data) and its
    sentinel count; (None, ..) when there is none."""
    if spm_model and not os.path.isfile(spm_model):
        raise FileNotFoundError(f"--spm-model {spm_model} does not exist")
    cfg = src.main.get("cfg") or {}
    data = ((cfg.get("task") or {}).get("data") or "").split(os.pathsep)[0]
    spm_path = spm_model
    if not spm_path:  # next to the checkpoint (a conversion's folder), else the data it was trained on
        found = [p for p in (os.path.join(src.dir, "spm.model"), data and os.path.join(data, "spm.model"))
                 if p and os.path.isfile(p)]
        spm_path = found[0] if found else None
    folders = [src.dir] + ([os.path.dirname(os.path.abspath(spm_path))] if spm_path else []) + ([data] if data else [])
    n_extra = extra_ids if extra_ids is not None else _known_extra_ids(folders)
    if spm_path:
        try:
            pieces, _ = spm_pieces(spm_path)  # refuses a SentencePiece model with fairseq's ids
        except ValueError as e:
            if spm_model:
                raise
            log(f"[convert] {e}: no tokenizer written (pass --spm-model with the model's T5 SentencePiece model)")
            spm_path = None
    if spm_path:
        n_extra = 100 if n_extra is None else n_extra
        vocab_size = src.spec.vocab_size
        if len(pieces) + n_extra > vocab_size - 1:
            raise ValueError(f"{spm_path} has {len(pieces)} pieces; with {n_extra} sentinels they do not fit the "
                             f"model's vocabulary of {vocab_size} rows (T5 row {vocab_size - 1} is "
                             f"fairseq's <s>); pass --extra-ids")
    return spm_path, n_extra


def _plan_shards(src: _Source, mapper: TensorMapper, cap: Optional[int]) -> List[List[List[str]]]:
    """Step 2: which mapped tensors go in which shard, per fairseq file (shapes only; memory-mapped loads read no
    tensor data)."""
    from ..checkpoints import META_KEY

    plan: List[List[List[str]]] = []
    for i, path in enumerate(src.files):
        state = src.file_state(i)
        if i > 0:
            got = state.get(META_KEY, {}).get("save_id")
            if got != src.save_id:
                raise ValueError(f"{path} belongs to a different save than {src.path} (save ids {got} vs "
                                 f"{src.save_id}): the save was interrupted or files from two saves were mixed")
        named = mapper.file_tensors(state, i == 0)
        plan.append(_groups([(n, t.numel() * t.element_size()) for n, t in named.items()], cap))
        state = named = None
    return plan


def _write_weights(src: _Source, mapper: TensorMapper, plan: List[List[List[str]]], out: str,
                   log: Callable[[str], None]) -> List[str]:
    """Step 3: map each fairseq file's tensors and write its shards (and the index); returns the shard names."""
    seen: Dict[str, str] = {}
    total = sum(len(g) for g in plan)
    shard_names = []
    k = 0
    for i, path in enumerate(src.files):
        state = src.file_state(i, release=True)
        named = mapper.file_tensors(state, i == 0)
        for group in plan[i]:
            k += 1
            fn = "model.safetensors" if total == 1 else f"model-{k:05d}-of-{total:05d}.safetensors"
            for n in group:
                if n in seen:
                    raise ValueError(f"tensor {n} appears in {seen[n]} and {path}")
                seen[n] = fn
            io.save_safetensors({n: named[n] for n in group}, os.path.join(out, fn))
            shard_names.append(fn)
            log(f"[convert] wrote {os.path.join(out, fn)} from {os.path.basename(path)} ({len(group)} tensors, "
                f"{os.path.getsize(os.path.join(out, fn)) / 2**20:.1f} MiB)")
        state = named = None
    missing = [n for n in mapper.expected() if n not in seen]
    if missing:
        raise ValueError(f"tensor {missing[0]} is missing from {src.path} and its shards ({len(missing)} missing)")
    if total > 1:
        sizes = 0
        for fn in set(seen.values()):
            sizes += os.path.getsize(os.path.join(out, fn))
        io.save_json({"metadata": {"total_size": sizes}, "weight_map": dict(sorted(seen.items()))},
                     os.path.join(out, "model.safetensors.index.json"))
    return shard_names


def _write_configs(out: str, config: dict, spm_path: Optional[str], n_extra: Optional[int],
                   log: Callable[[str], None]) -> None:
    """Step 4: the tokenizer, generation_config.json and, last, config.json (a folder with it is complete)."""
    if spm_path:
        io.copy_file(spm_path, os.path.join(out, "spiece.model"))
        io.save_json({"tokenizer_class": "T5Tokenizer", "extra_ids": n_extra, "eos_token": "</s>", "pad_token": "<pad>",
                      "unk_token": "<unk>", "model_max_length": 512}, os.path.join(out, "tokenizer_config.json"))
    else:
        log("[convert] no T5 SentencePiece model found next to the checkpoint or in its data folder: spiece.model "
            "not written (pass --spm-model)")
    io.save_json({"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0},
                 os.path.join(out, "generation_config.json"))
    io.save_json(config, os.path.join(out, "config.json"))


def _remove_stale_weights(out: str, shard_names: List[str]) -> None:
    """Weights of an earlier conversion into this folder would shadow or confuse the new ones."""
    stale = [f for f in os.listdir(out) if f.startswith("model") and f not in shard_names
             and (f.endswith(".safetensors") or (len(shard_names) == 1 and f == "model.safetensors.index.json"))]
    for f in stale:
        os.unlink(os.path.join(out, f))


def fairseq_to_transformers(ckpt: str, out: str, spm_model: Optional[str] = None,
                            expert_capacity: Optional[int] = None, max_shard_size: Union[None, int, str] = None,
                            extra_ids: Optional[int] = None,
                            overwrite: bool = False, log: Callable[[str], None] = print) -> dict:
    """Convert the fairseq-switch checkpoint `ckpt` (T5 layout; plain or expert-parallel) into a transformers
    folder `out`; returns {'config': ..., 'files': [...]}."""
    cap = _parse_size(max_shard_size)
    if os.path.exists(os.path.join(out, "config.json")) and not overwrite:
        raise ValueError(f"{os.path.join(out, 'config.json')} already exists; pass --overwrite to replace {out}")
    src = _Source(ckpt)
    config = _target_config(src, expert_capacity, log)
    spm_path, n_extra = _tokenizer(src, spm_model, extra_ids, log)
    mapper = TensorMapper(src.spec, ckpt)
    plan = _plan_shards(src, mapper, cap)
    os.makedirs(out, exist_ok=True)
    shard_names = _write_weights(src, mapper, plan, out, log)
    _write_configs(out, config, spm_path, n_extra, log)
    if overwrite:
        _remove_stale_weights(out, shard_names)
    log(f"[convert] done: {out} ({config['model_type']}, {len(shard_names)} weight file(s))")
    return {"config": config, "files": shard_names}
