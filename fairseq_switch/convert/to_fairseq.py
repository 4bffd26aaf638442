"""transformers T5 / SwitchTransformers folder -> fairseq-switch checkpoint (T5 layout).

Output folder:
    checkpoint.pt                      a fairseq checkpoint (cfg from fairseq's own parser, model, no
                                       optimizer state) that fairseq-train --finetune-from-model / --restore-file
                                       and fairseq-generate load
    checkpoint-experts-rank{r}.pt      with --world-size W > 1: the expert-sharded save of `checkpoints/`
    dict.txt, spm.model                the vocabulary (fairseq ids; see vocabulary.py); dict.input.txt and
                                       dict.target.txt are copies of dict.txt, so the folder is the checkpoint's
                                       text_to_text data folder (its cfg.task.data) for loading and generation
    conversion.json                    what was converted and how

Each output file is built from lazily read tensors, saved atomically and freed before the next, shards
first and checkpoint.pt last, so peak memory is about the largest output file.
"""

import logging
import os
import shlex
import uuid
import warnings
from typing import Callable, Dict, List, NamedTuple, Optional

import torch

from .. import file_io as io
from .hf_folder import HFFolder
from .mapping import (EMBED_FS, EMBED_HF, IGNORED_HF, LM_HEAD_HF, OUTPUT_FS, TRANSFORMERS_CONFIG, ModelSpec,
                      fairseq_flags, spec_from_hf_config, switch_layer_names, tensor_pairs)
from .vocabulary import BUILTIN_SYMBOLS, dict_text, fairseq_symbols, spm_pieces, to_fairseq_rows

MAIN = "checkpoint.pt"
CRITERION = "switch_cross_entropy"
DICTIONARIES = ("dict.txt", "dict.input.txt", "dict.target.txt")  # dict.txt, and text_to_text's names


def _user_dir() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fairseq_cfg(spec: ModelSpec, data: str, extra: List[str]) -> dict:
    """The cfg fairseq-train would store for this model, built by fairseq's own parser."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    from ..plugin import register

    register()  # the parser needs the plugin's task, arch and criterion (fairseq skips an imported user dir)
    argv = [data, "--user-dir", _user_dir(), "--task", "text_to_text", "--arch", "switch_transformer",
            "--criterion", CRITERION, *fairseq_flags(spec), *extra]
    # hydra warns about its own deprecated API and logs at DEBUG while fairseq composes the config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.INFO)
        try:
            args = options.parse_args_and_arch(options.get_training_parser(), argv)
            cfg = convert_namespace_to_omegaconf(args)
        except SystemExit:  # argparse already printed why
            raise ValueError(f"fairseq rejected the model flags {' '.join(argv[1:])}") from None
        finally:
            logging.disable(logging.NOTSET)
    # as Trainer.state_dict stores it: a plain container (cfg.model is an argparse.Namespace for this model)
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def _checkpoint(cfg: dict, model: Dict[str, torch.Tensor], source: str, hf_config: dict, record: dict) -> dict:
    """What fairseq's Trainer.state_dict saves, for a model that has not been trained here (`record`: the
    plugin's save record, keyed as checkpoints/ reads it; `hf_config`: the source config.json, which
    to-transformers writes back)."""
    return {
        "args": None,
        "cfg": cfg,
        "model": model,
        "criterion": None,
        "optimizer_history": [{"criterion_name": "SwitchCrossEntropyCriterion", "optimizer_name": None,
                               "lr_scheduler_state": {}, "num_updates": 0}],
        "task_state": {},
        # train_iterator: --restore-file (without --reset-dataloader) resumes at epoch 1, step 0
        "extra_state": {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "shuffle": True, "version": 2},
                        "previous_training_time": 0.0, "converted_from": source, TRANSFORMERS_CONFIG: hf_config,
                        **record},
        "last_optimizer_state": None,
    }


class _Reader:
    """Reads transformers tensors by fairseq name, checking shapes."""

    def __init__(self, folder: HFFolder, spec: ModelSpec):
        self.folder, self.spec = folder, spec
        self.pairs = tensor_pairs(spec)
        self.embed_hf = next((n for n in EMBED_HF if folder.has(n)), None)

    def check(self) -> None:
        """Every tensor present with the shape the config implies, before anything is written."""
        f, spec = self.folder, self.spec
        if self.embed_hf is None:
            raise ValueError(f"tensor shared.weight (the embedding; or encoder.embed_tokens.weight) is missing "
                             f"from the weights in {f.folder}")
        want = [(self.embed_hf, (spec.vocab_size, spec.d_model))] + [(p.hf, p.shape) for p in self.pairs]
        if spec.untied and f.has(LM_HEAD_HF):
            want.append((LM_HEAD_HF, (spec.vocab_size, spec.d_model)))
        for name, shape in want:
            if not f.has(name):
                raise ValueError(f"tensor {name} is missing from the weights in {f.folder}")
            got = f.shape(name)
            if tuple(got) != tuple(shape):
                raise ValueError(f"tensor {name} in {f.folder} has shape {list(got)}, config.json implies "
                                 f"{list(shape)}")
        known = {n for n, _ in want} | set(EMBED_HF) | {LM_HEAD_HF} | set(IGNORED_HF)
        unused = [n for n in f.names() if n not in known]
        if unused:
            raise ValueError(f"{f.folder} holds tensors this config does not use, e.g. {unused[0]} ({len(unused)} in "
                             f"all): config.json does not describe these weights")
        for other in EMBED_HF:
            # transformers 5 unties a SwitchTransformers model's encoder/decoder input embeddings from `shared`
            # when tie_word_embeddings is false; the T5 layout has one input embedding
            if other != self.embed_hf and f.has(other) and not torch.equal(f.get(other), f.get(self.embed_hf)):
                raise ValueError(f"{f.folder}: {other} differs from {self.embed_hf}; fairseq-switch's T5 layout shares "
                                 f"one input embedding between encoder and decoder, as the released T5 and Switch "
                                 f"checkpoints do")
        if not spec.untied and f.has(LM_HEAD_HF):
            # transformers keeps an lm_head that differs from the embedding untied, yet still rescales the decoder
            # output (tie_word_embeddings true): fairseq's T5 layout has no such model
            if not torch.equal(f.get(LM_HEAD_HF), f.get(self.embed_hf)):
                raise ValueError(f"{f.folder}: lm_head.weight differs from the embedding although config.json ties "
                                 f"them (tie_word_embeddings true); set tie_word_embeddings false if the head is "
                                 f"separate (T5 v1.1)")
        f.release()

    def shared(self) -> Dict[str, torch.Tensor]:
        """Embeddings and the output head, in fairseq's row order."""
        emb = to_fairseq_rows(self.folder.get(self.embed_hf))
        out = {name: emb for name in EMBED_FS}  # one tensor: torch.save stores it once, as fairseq does
        if self.spec.untied:
            head = self.folder.get(LM_HEAD_HF) if self.folder.has(LM_HEAD_HF) else None
            out[OUTPUT_FS] = to_fairseq_rows(head) if head is not None else emb.clone()
        else:
            out[OUTPUT_FS] = emb
        return out

    def tensors(self, keep: Callable[[object], bool]) -> Dict[str, torch.Tensor]:
        return {p.fairseq: self.folder.get(p.hf) for p in self.pairs if keep(p)}


def _vocabulary(folder: HFFolder, spec: ModelSpec, spm_model: Optional[str]):
    spm_path = folder.spm_path(spm_model)
    pieces, _ = spm_pieces(spm_path)
    extra = folder.extra_ids()
    symbols = fairseq_symbols(pieces, extra, spec.vocab_size)
    return spm_path, symbols, {"size": spec.vocab_size, "spm_pieces": len(pieces), "extra_ids": extra,
                               "unused_rows": spec.vocab_size - len(pieces) - extra}


class _Target(NamedTuple):
    """A conversion's source, read and checked, and the files it writes."""

    folder: HFFolder
    spec: ModelSpec
    out: str
    world_size: int
    outputs: List[str]  # checkpoint.pt, then its expert shards


def _read_source(src: str, out: str, world_size: int, overwrite: bool) -> _Target:
    """Step 1: the source's config, and the files the conversion would write (refusing to replace them)."""
    from ..checkpoints import files_of, shard_path
    from ..distributed import check_expert_count

    folder = HFFolder(src)
    spec = spec_from_hf_config(folder.config, os.path.join(src, "config.json"))
    if world_size < 1:
        raise ValueError(f"--world-size must be >= 1, got {world_size}")
    if spec.switch and world_size > 1:
        check_expert_count(spec.num_experts, world_size)
    n_files = files_of(spec.num_experts, world_size) if spec.switch else 1
    main = os.path.join(out, MAIN)
    outputs = [main] + [shard_path(main, r) for r in range(1, n_files)]
    existing = [p for p in outputs if os.path.exists(p)]
    if existing and not overwrite:
        raise ValueError(f"{existing[0]} already exists; pass --overwrite to replace the conversion in {out}")
    return _Target(folder, spec, out, world_size, outputs)


def _log_source(src: str, t: _Target, log: Callable[[str], None]) -> None:
    spec = t.spec
    kind = (f"SwitchTransformers, {spec.num_experts} experts at encoder layers {spec.sparse_ids('encoder')} and "
            f"decoder layers {spec.sparse_ids('decoder')} (--moe-freq {spec.moe_freq})" if spec.switch else "T5")
    log(f"[convert] {src}: {kind}; d_model {spec.d_model}, d_kv {spec.d_kv}, d_ff {spec.d_ff}, {spec.heads} heads, "
        f"{spec.encoder_layers}+{spec.decoder_layers} layers, vocab {spec.vocab_size}, "
        f"{'gated ' if spec.gated else ''}{spec.activation}, {'untied' if spec.untied else 'tied'} head")
    if t.world_size > 1 and not spec.switch:
        log("[convert] a dense model has no experts to shard: one checkpoint.pt for any --world-size")
    if spec.untied and not t.folder.has(LM_HEAD_HF):
        log("[convert] the head is untied but the weights hold no lm_head.weight: it starts as a copy of the embedding")


def _capacity_flags(spec: ModelSpec, capacity_factor: Optional[float], eval_capacity_factor: Optional[float],
                    capacity_per_sequence: Optional[int]) -> List[str]:
    """The capacity options given on the command line, as fairseq flags."""
    extra = []
    if capacity_factor is not None:
        extra += ["--moe-capacity-factor", repr(float(capacity_factor))]
    if eval_capacity_factor is not None:
        extra += ["--moe-eval-capacity-factor", repr(float(eval_capacity_factor))]
    if capacity_per_sequence is not None and spec.switch:
        extra += ["--moe-capacity-per-sequence", str(int(capacity_per_sequence))]
    return extra


def _write_vocabulary(out: str, symbols: List[str], spm_path: str) -> None:
    for name in DICTIONARIES:
        io.save_text(dict_text(symbols), os.path.join(out, name))
    io.copy_file(spm_path, os.path.join(out, "spm.model"))


def _conversion_record(src: str, t: _Target, vocab: dict, extra: List[str], model_cfg: object) -> dict:
    """What conversion.json records: the source, the flags, the files and how every tensor was mapped."""
    spec = t.spec
    get = (lambda k: getattr(model_cfg, k)) if not isinstance(model_cfg, dict) else model_cfg.get
    record = {
        "direction": "transformers -> fairseq",
        "source": os.path.abspath(src),
        "model_type": t.folder.model_type,
        "spec": spec.as_dict(),
        "fairseq_flags": fairseq_flags(spec) + extra,
        "world_size": t.world_size,
        "files": [os.path.basename(p) for p in t.outputs],
        "vocabulary": vocab,
        "mapping": {
            "rows": "fairseq row f = T5 row (f - 1) mod vocab_size (torch.roll(t5, 1, 0)); back: torch.roll(fs, -1, 0)",
            "specials": "fairseq <s> = T5 row vocab_size-1 (unused), <pad> = T5 pad 0 (also the decoder start), "
                        "</s> = T5 eos 1, <unk> = T5 unk 2",
            "dict.txt": "fairseq ids 4..: SentencePiece pieces 3..n-1, <extra_id_{extra-1}>..<extra_id_0>, "
                        "madeupword####",
            "tensors": {p.hf: p.fairseq for p in tensor_pairs(spec) if p.expert is None},
            "experts": "{side}.block.{i}.layer.{k}.mlp.experts.expert_{e}.{wi,wo} -> "
                       "{side}.layers.{i}.fc1.experts.{e}.{fc1,fc2}",
        },
    }
    if spec.switch:
        per_seq = get("moe_capacity_per_sequence")
        record["expert_capacity"] = {
            "transformers_expert_capacity": spec.expert_capacity,
            "moe_capacity_per_sequence": per_seq,
            "eval_and_generation": f"each expert keeps its first {per_seq} tokens of each sequence, as transformers "
                                   f"does" if per_seq else "per batch, from --moe-eval-capacity-factor",
            "training": "per batch: ceil(tokens / experts * --moe-capacity-factor)",
            "moe_capacity_factor": get("moe_capacity_factor"),
            "moe_eval_capacity_factor": get("moe_eval_capacity_factor"),
        }
    record[TRANSFORMERS_CONFIG] = t.folder.config
    return record


def _write_checkpoints(src: str, t: _Target, reader: _Reader, cfg: dict, symbols: List[str], overwrite: bool,
                       log: Callable[[str], None]) -> None:
    """Map the tensors to fairseq names and write them: shards first, checkpoint.pt last, then the manifest."""
    from ..checkpoints import (META_KEY, RECORD_KEY, _meta, dictionary_record, experts_in_file, rank_file,
                               shard_path, write_manifest)

    spec, main = t.spec, t.outputs[0]
    save_id = uuid.uuid4().hex
    layers = switch_layer_names(spec)
    sharded = spec.switch and t.world_size > 1
    for r in reversed(range(len(t.outputs))):
        wanted = set(experts_in_file(spec.num_experts, t.world_size, r)) if sharded else None
        if r == 0:
            model = reader.shared()
            model.update(reader.tensors(lambda p: p.expert is None or wanted is None or p.expert in wanted))
            saved_by = {"save_id": save_id, "dictionary": dictionary_record(list(BUILTIN_SYMBOLS) + list(symbols),
                                                                            os.path.abspath(t.out))}
            state = _checkpoint(cfg, model, os.path.abspath(src), t.folder.config, {RECORD_KEY: saved_by})
        else:
            state = {"model": reader.tensors(lambda p: p.expert in wanted)}
        if sharded:  # experts under their global ids, as checkpoints.save_checkpoint writes them
            state = rank_file(state, _meta(spec.num_experts, t.world_size, r, layers, save_id, None), None)
            assert META_KEY in state
        io.save_torch(state, t.outputs[r])
        n = sum(x.numel() for x in {id(x): x for x in state["model"].values()}.values())
        log(f"[convert] wrote {t.outputs[r]} ({len(state['model'])} tensors, {n:,} parameters, "
            f"{os.path.getsize(t.outputs[r]) / 2**20:.1f} MiB)")
        state = model = None
        t.folder.release()
    write_manifest(main, {"save_id": save_id, "num_updates": 0, "epoch": 1}, t.outputs)
    if overwrite:  # shards of an earlier conversion with more ranks would only confuse
        r = len(t.outputs)
        while os.path.exists(shard_path(main, r)):
            os.unlink(shard_path(main, r))
            r += 1


def transformers_to_fairseq(src: str, out: str, world_size: int = 1, spm_model: Optional[str] = None,
                            capacity_factor: Optional[float] = None, eval_capacity_factor: Optional[float] = None,
                            capacity_per_sequence: Optional[int] = None,
                            overwrite: bool = False, log: Callable[[str], None] = print) -> dict:
    """Convert the transformers folder `src` into a fairseq-switch checkpoint folder `out`; returns the record
    written to conversion.json. Outside training the model keeps transformers' `expert_capacity` slots per
    expert per sequence (`capacity_per_sequence` sets another; 0: the per-batch eval factor instead)."""
    t = _read_source(src, out, world_size, overwrite)
    spm_path, symbols, vocab = _vocabulary(t.folder, t.spec, spm_model)
    reader = _Reader(t.folder, t.spec)
    reader.check()
    _log_source(src, t, log)
    extra = _capacity_flags(t.spec, capacity_factor, eval_capacity_factor, capacity_per_sequence)
    cfg = fairseq_cfg(t.spec, os.path.abspath(out), extra)
    os.makedirs(out, exist_ok=True)
    _write_vocabulary(out, symbols, spm_path)  # the vocabulary first: a folder with a checkpoint.pt is complete
    record = _conversion_record(src, t, vocab, extra, cfg["model"])
    io.save_json(record, os.path.join(out, "conversion.json"))
    _write_checkpoints(src, t, reader, cfg, symbols, overwrite, log)
    log(f"[convert] done: {out} (dict.txt {len(symbols) + len(BUILTIN_SYMBOLS)} symbols, spm.model, conversion.json)")
    log(f"[convert] generate with: SwitchTransformerModel.from_pretrained({out!r}).sample([...])")
    log(f"[convert] fine-tune with: fairseq-train <data> --user-dir {_user_dir()} --task text_to_text "
        f"--arch switch_transformer --finetune-from-model {t.outputs[0]} {shlex.join(record['fairseq_flags'])} ...")
    return record
