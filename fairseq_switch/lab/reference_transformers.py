"""Train transformers' own T5 / SwitchTransformers on exactly what `fairseq-hydra-train --config-dir config
--config-name pretrain_tiny` trains this project's model on: the reference for "Switch minus dense" gaps.

    python scripts/reference_transformers.py --data data-bin/pretrain_full --experts 8 --seed 1 \\
        --max-update 500 --validate-interval 100 --out runs/ref/hf_e8_s1      # --experts 0: the dense twin

log.jsonl holds a row per validation and, for Switch, a row per update: its loss (train_update_loss) and its
routing under this project's names (moe_dropped, moe_dropped_i, moe_load_max_i, over real tokens; see
routing_metrics), which `reference_gap_report.py --routing` compares with the fairseq run's (common.log_interval=1).

Shared with the fairseq run, by construction:
- the config: config/<name>.yaml composed by Hydra as fairseq-hydra-train does, plus task.data,
  model.moe_expert_count and common.seed;
- the initial weights: this project's model is built under fairseq-train's seeding (numpy and torch seeded
  with common.seed before task.build_model) and converted with `convert.to_transformers`' tensor mapping
  (embedding rows rolled to T5's vocabulary order);
- the batches: the task's batch iterator with the arguments of fairseq's Trainer.get_train_iterator /
  get_valid_iterator, epochs advanced as fairseq_cli.train does; token ids rolled to T5's order;
- the recipe: fairseq's own optimizer and LR scheduler built from the config (Adam, inverse_sqrt with
  its warmup from warmup_init_lr, the first update at the schedule's update-0 rate as in fairseq's
  Trainer), torch seeded with seed + updates before each update (Trainer._set_seed), gradient of the
  mean token cross-entropy + alpha * sum over Switch layers of the balance loss (Switch Transformers,
  Eq. 4: this project's criterion sums CE over tokens, adds alpha * balance * sample_size and fairseq
  divides the gradient by sample_size), total-norm clipping at clip_norm.

What stays transformers' own (the differences this reference measures):
- capacity per sequence: transformers' router keeps the first `expert_capacity` tokens of each sequence per
  expert, this project's the first ceil(tokens / N * factor) of the whole batch (position by position across
  the batch, its layers see T x B). Each stack's routers get
  ceil(length / N * factor) (at least moe_min_capacity) before every forward, with the training factor in
  training and the eval factor in validation (--expert-capacity fixes one number instead, transformers' way);
- transformers routes padding tokens (they come after a sequence's real tokens, so they take no slot a real
  token wanted, but they enter its balance loss);
- the balance loss (--balance-loss transformers): Eq. 4 per sequence, averaged over the batch, over each
  stack's Switch layers concatenated, padding included; weighted by the stack's Switch-layer count so alpha
  weighs each layer as here (1 for the tiny models). --balance-loss batch computes this project's Eq. 4
  instead (per layer, over the batch's real tokens) from transformers' router logits;
- the router jitter noise is drawn in transformers' token order (same distribution, other draws), and
  transformers' router multiplies its fp32 input in place, so its experts also see the jittered tokens (here
  only the router's copy is jittered).
"""

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .project import PLUGIN_DIR, PROJECT_DIR, missing_bundled

USER_DIR = PLUGIN_DIR  # fairseq's --user-dir
CONFIG_DIR = PROJECT_DIR / "config"  # the checkout's Hydra configs, found from the current folder
BALANCE_CHOICES = ("transformers", "batch")


class UsageError(ValueError):
    """Bad input: printed as one `error:` line, exit status 2."""


# -- fairseq side: config, model, task, batches -------------------------------------------------
def compose_config(data: str, experts: int, seed: int, config_name: str = "pretrain_tiny",
                   config_dir: str = str(CONFIG_DIR), overrides: Sequence[str] = ()) -> Any:
    """The resolved fairseq config fairseq-hydra-train runs for `config_dir/config_name.yaml` with these values
    (Hydra compose, fairseq's structured defaults, interpolations resolved as fairseq_cli.hydra_train does)."""
    import logging
    import warnings

    from fairseq.dataclass.initialize import add_defaults, hydra_init
    from fairseq.dataclass.utils import omegaconf_no_object_check
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from fairseq_switch.plugin import register

    register()  # add_defaults reads the plugin's task, model and criterion dataclasses
    if not os.path.isfile(os.path.join(config_dir, f"{config_name}.yaml")):
        raise UsageError(f"--config-name {config_name}: " + missing_bundled(Path(config_dir) / f"{config_name}.yaml",
                                                                            "--config-dir"))
    forced = [f"task.data={os.path.abspath(data)}", f"model.moe_expert_count={experts}", f"common.seed={seed}",
              f"common.user_dir={USER_DIR}", "common.tensorboard_logdir=null"]
    GlobalHydra.instance().clear()
    hydra_init(config_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.INFO)  # Hydra logs at DEBUG while composing
        try:
            # version_base 1.1, as fairseq-hydra-train runs (a newer base would stay set process-wide)
            with initialize_config_dir(config_dir=os.path.abspath(config_dir), version_base="1.1"):
                cfg = compose(config_name=config_name, overrides=forced + list(overrides))
        except Exception as e:  # Hydra's override grammar and missing-key errors
            raise UsageError(f"--config-name {config_name} with overrides {list(overrides)} does not compose: "
                             f"{str(e).splitlines()[0]} (a key the yaml does not set needs a leading +, e.g. "
                             f"+model.moe_jitter_eps=0)") from None
        finally:
            logging.disable(logging.NOTSET)
            GlobalHydra.instance().clear()
    add_defaults(cfg)
    with omegaconf_no_object_check():
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    OmegaConf.set_struct(cfg, True)
    return cfg


@dataclass
class FairseqSide:
    """This project's task, model and criterion, built as fairseq-train builds them."""

    cfg: Any
    task: Any
    model: Any
    criterion: Any
    _valid: Optional[List[Dict[str, Any]]] = field(default=None, repr=False)

    @property
    def pad(self) -> int:
        return self.task.target_dictionary.pad()

    def max_positions(self, with_tokens: bool) -> Any:
        from fairseq import utils

        extra = (self.cfg.dataset.max_tokens,) if with_tokens else ()
        return utils.resolve_max_positions(self.task.max_positions(), self.model.max_positions(), *extra)

    def train_iterator(self, epoch: int, load_dataset: bool = True) -> Any:
        """fairseq's Trainer.get_train_iterator (single process), argument for argument."""
        cfg = self.cfg
        if load_dataset:
            self.task.load_dataset(cfg.dataset.train_subset, epoch=epoch, combine=True, data_selector=None)
        return self.task.get_batch_iterator(
            dataset=self.task.dataset(cfg.dataset.train_subset),
            max_tokens=cfg.dataset.max_tokens,
            max_sentences=cfg.dataset.batch_size,
            max_positions=self.max_positions(with_tokens=True),
            ignore_invalid_inputs=True,
            required_batch_size_multiple=cfg.dataset.required_batch_size_multiple,
            seed=(cfg.common.seed + epoch) if cfg.dataset.update_ordered_indices_seed else cfg.common.seed,
            num_shards=1,
            shard_id=0,
            num_workers=cfg.dataset.num_workers,
            epoch=epoch,
            data_buffer_size=cfg.dataset.data_buffer_size,
            disable_iterator_cache=self.task.has_sharded_data("train"),
            skip_remainder_batch=cfg.optimization.skip_remainder_batch,
            grouped_shuffling=cfg.dataset.grouped_shuffling,
            update_epoch_batch_itr=cfg.dataset.update_epoch_batch_itr,
        )

    def train_batches(self, epoch_itr: Any = None) -> Iterator[Dict[str, Any]]:
        """Every training batch in fairseq_cli.train's order, epoch after epoch (update_freq 1), from
        `epoch_itr` (default: the first epoch's, which loads the train split)."""
        if epoch_itr is None:
            epoch_itr = self.train_iterator(epoch=1, load_dataset=True)
        while True:
            itr = epoch_itr.next_epoch_itr(fix_batches_to_gpus=self.cfg.distributed_training.fix_batches_to_gpus,
                                           shuffle=epoch_itr.next_epoch_idx > self.cfg.dataset.curriculum)
            yield from itr
            # fairseq_cli.train: the next epoch's iterator, the dataset reloaded only when sharded
            epoch_itr = self.train_iterator(epoch_itr.next_epoch_idx,
                                            load_dataset=self.task.has_sharded_data("train"))

    def valid_batches(self) -> List[Dict[str, Any]]:
        """The batches of fairseq's Trainer.get_valid_iterator on cfg.dataset.valid_subset (its first), kept."""
        if self._valid is None:
            cfg = self.cfg
            subset = cfg.dataset.valid_subset.split(",")[0]
            itr = self.task.get_batch_iterator(
                dataset=self.task.dataset(subset),
                max_tokens=cfg.dataset.max_tokens_valid,
                max_sentences=cfg.dataset.batch_size_valid,
                max_positions=self.max_positions(with_tokens=False),
                ignore_invalid_inputs=cfg.dataset.skip_invalid_size_inputs_valid_test,
                required_batch_size_multiple=cfg.dataset.required_batch_size_multiple,
                seed=cfg.common.seed,
                num_shards=1,
                shard_id=0,
                num_workers=cfg.dataset.num_workers,
                epoch=1,  # fairseq's fixed valid set
                data_buffer_size=cfg.dataset.data_buffer_size,
                disable_iterator_cache=False,
                skip_remainder_batch=False,
            )
            self._valid = list(itr.next_epoch_itr(shuffle=False, set_dataset_epoch=False))
        return self._valid

    def valid_neg_log_perplexity(self) -> float:
        """This project's model on the valid set, as fairseq validates (eval mode, its criterion): the
        `neg_log_perplexity` of the valid log, -(sum of token CE in nats) / target tokens."""
        import torch

        was = self.model.training
        self.model.eval()
        self.criterion.eval()
        nll, ntok = 0.0, 0
        try:
            with torch.no_grad():
                for sample in self.valid_batches():
                    _, _, log = self.criterion(self.model, sample)
                    nll += float(log["nll_loss"])
                    ntok += int(log["ntokens"])
        finally:
            self.model.train(was)
        return -nll / max(ntok, 1)


def build_fairseq(cfg: Any) -> FairseqSide:
    """Task, model and criterion under fairseq-train's seeding (fairseq_cli.train.main): numpy and torch seeded
    with common.seed, then setup_task, build_model, build_criterion, then the valid split."""
    import numpy as np
    from fairseq import tasks, utils

    np.random.seed(cfg.common.seed)
    utils.set_torch_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    for subset in cfg.dataset.valid_subset.split(","):
        task.load_dataset(subset, combine=False, epoch=1)
    return FairseqSide(cfg, task, model, criterion)


# -- transformers side --------------------------------------------------------------------------
def to_transformers(side: FairseqSide, expert_capacity: Optional[int] = None) -> Any:
    """transformers' T5ForConditionalGeneration (dense) or SwitchTransformersForConditionalGeneration holding
    the fairseq model's current weights, mapped by the checkpoint converter (in memory)."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    from fairseq_switch.convert.mapping import EMBED_FS, hf_config, spec_from_fairseq_cfg
    from fairseq_switch.convert.to_transformers import DEFAULT_EXPERT_CAPACITY, TensorMapper

    where = "the fairseq model"
    spec = spec_from_fairseq_cfg(side.cfg.model, where)
    state = side.model.state_dict()
    spec.vocab_size = int(state[EMBED_FS[0]].shape[0])
    config = hf_config(spec, expert_capacity or DEFAULT_EXPERT_CAPACITY)
    config.pop("architectures")
    model_type = config.pop("model_type")
    hf_cfg = AutoConfig.for_model(model_type, **config)
    if spec.switch:
        hf_cfg.router_z_loss_coef = float(side.cfg.criterion.router_z_loss_weight)
        hf_cfg.router_aux_loss_coef = float(side.cfg.criterion.moe_loss_weight)
    model = AutoModelForSeq2SeqLM.from_config(hf_cfg)
    tensors = TensorMapper(spec, where).file_tensors({"model": state}, is_main=True)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"conversion mismatch: missing {sorted(set(missing) - tied)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")
    shared = model.get_input_embeddings().weight
    for name in tied & set(missing):  # tied to `shared`: the same tensor, so already loaded
        if model.get_parameter(name).data_ptr() != shared.data_ptr():
            raise RuntimeError(f"transformers did not tie {name} to shared.weight")
    model.train()
    return model


def switch_routers(model: Any) -> Dict[str, List[Any]]:
    """transformers' Top-1 routers of each stack, in layer order."""
    out: Dict[str, List[Any]] = {"encoder": [], "decoder": []}
    for side in out:
        for name, module in getattr(model, side).named_modules():
            if type(module).__name__ == "SwitchTransformersTop1Router":
                out[side].append(module)
    return out


class RouterRecorder:
    """Forward hooks on transformers' routers: what each call returned while `active`, per stack in layer order
    (expert_index [B, L, E] one-hot with capacity drops zeroed, router_logits [B, L, E])."""

    def __init__(self, model: Any):
        self.calls: Dict[str, List[Tuple[Any, Any]]] = {"encoder": [], "decoder": []}
        self.active = False
        self._handles = [r.register_forward_hook(self._hook(stack))
                         for stack, routers in switch_routers(model).items() for r in routers]

    def _hook(self, stack: str) -> Any:
        def record(module: Any, args: Any, out: Any) -> None:
            if self.active:
                self.calls[stack].append((out[0].detach(), out[2].detach()))
        return record

    def pop(self) -> Dict[str, List[Tuple[Any, Any]]]:
        calls, self.calls = self.calls, {"encoder": [], "decoder": []}
        return calls

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def routing_counts(expert_index: Any, router_logits: Any, valid: Any) -> Tuple[int, int, Any]:
    """(real tokens, real tokens dropped, [E] tokens choosing each expert before drops) of one transformers
    router call, over the real tokens only (`valid` [B, L] True there): a token is dropped when its argmax
    expert was already full in its sequence (Sec. 2.2), i.e. its capacity-masked one-hot row is all zero."""
    import torch

    v = valid.bool()
    E = router_logits.shape[-1]
    chosen = router_logits.argmax(-1)[v]
    kept = expert_index.sum(-1).gt(0)[v]
    counts = torch.bincount(chosen, minlength=E).double()
    return int(v.sum()), int((~kept).sum()), counts


def routing_metrics(calls: Dict[str, List[Tuple[Any, Any]]], valid: Dict[str, Any]) -> Dict[str, float]:
    """This project's per-update routing metrics (criterions/switch_cross_entropy.py) from transformers'
    router calls: moe_dropped (real tokens dropped / real tokens, pooled over layers), and per Switch layer i
    (encoder layers first, then decoder, as this project numbers them) moe_dropped_i and moe_load_max_i
    (busiest expert's tokens / mean tokens per expert, before drops), and moe_counts_i (tokens per expert)."""
    out: Dict[str, float] = {}
    n_all = d_all = 0
    i = 0
    for stack in ("encoder", "decoder"):
        for expert_index, logits in calls.get(stack, []):
            n, d, counts = routing_counts(expert_index, logits, valid[stack])
            n_all, d_all = n_all + n, d_all + d
            out[f"moe_dropped_{i}"] = round(d / max(n, 1), 4)
            out[f"moe_load_max_{i}"] = round(float(counts.max() / counts.mean().clamp(min=1e-9)), 3)
            out[f"moe_counts_{i}"] = [int(c) for c in counts]  # to replay other capacity rules on this routing
            i += 1
    if i:
        out["moe_dropped"] = round(d_all / max(n_all, 1), 4)
    return out


def _sequence_capacity(cfg: Any, plan: Any, length: int) -> int:
    """The plugin's capacity (routing.expert_capacity) for one sequence of `length` tokens under `plan`."""
    from fairseq_switch.modules import routing

    slots = getattr(plan, "per_sequence", None)  # routing's per-sequence mode, where this routing.py has it
    if slots:
        return routing.expert_capacity(length, cfg.num_experts, None, cfg.min_capacity,
                                       routing.SequenceCapacity(slots, 1))
    return routing.expert_capacity(length, cfg.num_experts, plan.capacity_factor, cfg.min_capacity)


def set_capacity(model: Any, model_cfg: Any, src_len: int, tgt_len: int, training: bool,
                 fixed: Optional[int] = None) -> Tuple[int, int]:
    """Give each stack's routers their per-sequence capacity; returns (encoder, decoder) capacity.

    The plugin's own rule (routing.route_plan and expert_capacity), applied to one sequence's tokens."""
    routers = switch_routers(model)
    if not routers["encoder"] and not routers["decoder"]:
        return 0, 0
    if fixed:
        caps = (fixed, fixed)
    else:
        from fairseq_switch.modules.routing import RouterConfig, RoutingMode, route_plan

        cfg = RouterConfig.from_args(model_cfg)
        plan = route_plan(cfg, RoutingMode.of(training))
        caps = tuple(_sequence_capacity(cfg, plan, L) for L in (src_len, tgt_len))
    for side, cap in zip(("encoder", "decoder"), caps):
        for r in routers[side]:
            r.expert_capacity = cap
    return caps


def hf_inputs(sample: Dict[str, Any], pad: int, vocab_size: int) -> Dict[str, Any]:
    """fairseq batch -> transformers inputs. fairseq id f is T5 id (f - 1) mod V (convert/mapping.py); the
    decoder starts from T5's <pad> where fairseq puts </s>, as this project's T5 layout does."""
    import torch

    src = sample["net_input"]["src_tokens"]
    prev = sample["net_input"]["prev_output_tokens"].clone()
    target = sample["target"]
    prev[:, 0] = pad
    labels = torch.remainder(target - 1, vocab_size).masked_fill(target.eq(pad), -100)
    return {
        "input_ids": torch.remainder(src - 1, vocab_size),
        "attention_mask": src.ne(pad).long(),
        "decoder_input_ids": torch.remainder(prev - 1, vocab_size),
        "labels": labels,
    }


def batch_router_losses(logits: Sequence[Any], valid: Any) -> Tuple[Any, Any]:
    """This project's router losses from transformers' router logits: per layer, over the batch's real tokens,
    balance N * sum_i f_i P_i (Switch Transformers, Eq. 4-6) and z-loss mean logsumexp^2 (ST-MoE, Eq. 5); summed
    over layers. `valid`: [B, L] bool, True at real tokens."""
    import torch

    balance = z = torch.zeros(())
    v = valid.reshape(-1)
    n = max(int(v.sum()), 1)
    for lg in logits:
        lg = lg.float().reshape(-1, lg.shape[-1])[v]
        E = lg.shape[-1]
        probs = torch.softmax(lg, dim=-1)
        f = torch.bincount(probs.argmax(-1), minlength=E).float() / n
        balance = balance + E * (f * probs.sum(0) / n).sum()
        z = z + torch.logsumexp(lg, dim=-1).pow(2).sum() / n
    return balance, z


@dataclass
class StepLoss:
    loss: Any  # what is differentiated: mean CE + alpha * balance + beta * z
    ce_sum: float  # nats, summed over target tokens
    ntokens: int
    balance: float  # sum over Switch layers (1.0 per layer when balanced)


def hf_loss(model: Any, inputs: Dict[str, Any], ntokens: int, alpha: float, beta: float,
            balance_mode: str = "transformers", dec_valid: Any = None) -> StepLoss:
    """Forward `inputs` through the transformers model; the training objective of this project's criterion."""
    import torch
    import torch.nn.functional as F

    routers = switch_routers(model)
    switch = bool(routers["encoder"] or routers["decoder"])
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                decoder_input_ids=inputs["decoder_input_ids"], use_cache=False,
                **({"output_router_logits": True} if switch else {}))
    logits = out.logits
    labels = inputs["labels"]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100,
                         reduction="sum")
    loss = ce / max(ntokens, 1)
    balance = torch.zeros(())
    if switch:
        if balance_mode == "batch":
            enc_valid = inputs["attention_mask"].bool()
            eb, ez = batch_router_losses(out.encoder_router_logits or (), enc_valid)
            db, dz = batch_router_losses(out.decoder_router_logits or (), dec_valid)
            balance, z = eb + db, ez + dz
        else:
            # transformers' losses, per stack over its Switch layers concatenated: times the stack's
            # layer count so that alpha weighs each layer as Eq. 4 summed over layers does
            balance = z = torch.zeros(())
            for side, aux, zl in (("encoder", out.encoder_aux_loss, out.encoder_z_loss),
                                  ("decoder", out.decoder_aux_loss, out.decoder_z_loss)):
                k = len(routers[side])
                if k and torch.is_tensor(aux):  # (transformers skips stacks whose every layer is sparse)
                    balance, z = balance + k * aux, z + k * zl
        loss = loss + alpha * balance + beta * z
    return StepLoss(loss, float(ce.detach()), int(ntokens), float(balance.detach()))


def hf_valid_neg_log_perplexity(model: Any, side: FairseqSide, fixed_capacity: Optional[int] = None) -> float:
    """The transformers model on fairseq's valid batches, eval mode: -(sum of token CE in nats) / target tokens."""
    import torch

    was = model.training
    model.eval()
    V = model.config.vocab_size
    ce, ntok = 0.0, 0
    try:
        with torch.no_grad():
            for sample in side.valid_batches():
                inputs = hf_inputs(sample, side.pad, V)
                set_capacity(model, side.cfg.model, inputs["input_ids"].shape[1], inputs["labels"].shape[1],
                             training=False, fixed=fixed_capacity)
                step = hf_loss(model, inputs, sample["ntokens"], 0.0, 0.0)
                ce += step.ce_sum
                ntok += step.ntokens
    finally:
        model.train(was)
    return -ce / max(ntok, 1)


# -- training ------------------------------------------------------------------------------------
class Recipe:
    """fairseq's optimizer and LR scheduler from the config, over the transformers model's parameters, run as
    fairseq's Trainer runs them (clip the total norm, step, then the schedule's rate for the next update)."""

    def __init__(self, cfg: Any, model: Any):
        from fairseq import optim
        from fairseq.optim import lr_scheduler

        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = optim.build_optimizer(cfg.optimizer, params)
        self.scheduler = lr_scheduler.build_lr_scheduler(cfg.lr_scheduler, self.optimizer)
        self.clip_norm = float(cfg.optimization.clip_norm)
        self.scheduler.step_update(0)  # the rate of the first update (Trainer.lr_step at load_checkpoint)

    def lr(self) -> float:
        return float(self.optimizer.get_lr())

    def step(self, loss: Any, num_updates: int) -> float:
        """Backward, clip, step; `num_updates` counts this update. Returns the gradient norm before clipping."""
        self.optimizer.zero_grad()
        loss.backward()
        norm = float(self.optimizer.clip_grad_norm(self.clip_norm))
        self.optimizer.step()
        self.scheduler.step_update(num_updates)
        return norm


@dataclass
class RunOptions:
    data: str
    experts: int
    seed: int
    max_update: int
    validate_interval: int
    out: str
    config_name: str = "pretrain_tiny"
    config_dir: str = str(CONFIG_DIR)
    overrides: Tuple[str, ...] = ()
    expert_capacity: Optional[int] = None
    balance_loss: str = "transformers"
    log: Any = print


def check_options(o: RunOptions, overwrite: bool = False) -> None:
    """Bad input as UsageError, before anything is built."""
    folders = [f for f in o.data.split(os.pathsep) if f]  # fairseq's task.data: folders joined by ':'
    for folder in folders or [o.data]:
        if not os.path.isdir(folder):
            raise UsageError(f"--data {folder} is not a folder: point it at a prepared data-bin folder "
                             f"(python scripts/prepare_pretraining_data.py --out {folder} TEXT...)")
    if not os.path.isfile(os.path.join(folders[0], "dict.txt")):
        raise UsageError(f"--data {folders[0]} has no dict.txt: prepare it with "
                         f"python scripts/prepare_pretraining_data.py --out {folders[0]} TEXT...")
    if o.experts < 0:
        raise UsageError(f"--experts {o.experts}: give 0 for the dense twin (t5_tiny) or the number of experts "
                         f"per Switch layer (>= 1, e.g. 8)")
    if o.max_update < 0 or o.validate_interval < 1:
        raise UsageError(f"--max-update {o.max_update} / --validate-interval {o.validate_interval}: need "
                         f"--max-update >= 0 and --validate-interval >= 1")
    if o.expert_capacity is not None and o.expert_capacity < 1:
        raise UsageError(f"--expert-capacity {o.expert_capacity}: give tokens per expert per sequence (>= 1), or "
                         f"leave it out for the capacity factors of the config")
    if o.balance_loss not in BALANCE_CHOICES:
        raise UsageError(f"--balance-loss {o.balance_loss}: choose one of {', '.join(BALANCE_CHOICES)}")
    if os.path.exists(o.out) and not os.path.isdir(o.out):
        raise UsageError(f"--out {o.out} is a file: give a folder (it is created)")
    if os.path.exists(os.path.join(o.out, "log.jsonl")) and not overwrite:
        raise UsageError(f"--out {o.out} already holds log.jsonl: pass --overwrite or choose another folder")


def write_log(path: str, rows: List[Dict[str, Any]]) -> None:
    from fairseq_switch.file_io import save_text

    save_text("".join(json.dumps(r) + "\n" for r in rows), path)


def run(o: RunOptions) -> List[Dict[str, Any]]:
    """Train and validate; writes <out>/log.jsonl after every validation. Returns its rows."""
    import torch
    from fairseq import utils

    cfg = compose_config(o.data, o.experts, o.seed, o.config_name, o.config_dir, o.overrides)
    if list(cfg.optimization.update_freq) != [1]:
        raise UsageError(f"optimization.update_freq {list(cfg.optimization.update_freq)}: the reference makes one "
                         f"update per batch; override optimization.update_freq=[1] (and run fairseq likewise)")
    side = build_fairseq(cfg)
    hf = to_transformers(side, o.expert_capacity)
    if o.balance_loss == "transformers":
        for stack in ("encoder", "decoder"):
            step = getattr(hf.config, f"{stack}_sparse_step", 0)
            if switch_routers(hf)[stack] and step <= 1:  # transformers skips the loss of all-sparse stacks
                raise UsageError(f"every {stack} layer is a Switch layer (model.moe_freq 1), for which transformers "
                                 f"computes no balance loss; pass --balance-loss batch")
    epoch_itr = side.train_iterator(epoch=1)  # loads the train split now: a missing one fails before training
    recipe = Recipe(cfg, hf)
    recorder = RouterRecorder(hf)
    alpha = float(cfg.criterion.moe_loss_weight)
    beta = float(cfg.criterion.router_z_loss_weight)
    V = hf.config.vocab_size
    os.makedirs(o.out, exist_ok=True)
    log_path = os.path.join(o.out, "log.jsonl")
    kind = f"{type(hf).__name__}, {o.experts} experts" if o.experts else f"{type(hf).__name__} (dense twin)"
    o.log(f"[ref] {kind}, {sum(p.numel() for p in hf.parameters()):,} parameters; config {o.config_name}, "
          f"seed {o.seed}, data {o.data}")

    start = time.time()
    rows: List[Dict[str, Any]] = []

    def validate(update: int, train: Optional[Dict[str, Any]], extra: Dict[str, Any]) -> None:
        nlp = hf_valid_neg_log_perplexity(hf, side, o.expert_capacity)
        row = {"update": update, "valid_neg_log_perplexity": round(nlp, 6),
               "train_loss": None if train is None else round(train["ce"] / max(train["ntok"], 1), 6),
               "wall": round(time.time() - start, 2), **extra}
        if train is not None and train["steps"]:
            if o.experts:
                row["train_balance"] = round(train["balance"] / train["steps"], 6)
            row["lr"] = train["lr"]
        rows.append(row)
        write_log(log_path, rows)
        tl = "-" if row["train_loss"] is None else f"{row['train_loss']:.4f}"
        o.log(f"[ref] update {update}/{o.max_update}  train_loss {tl}  valid_neg_log_perplexity {nlp:.4f}  "
              f"wall {row['wall']:.0f}s")

    # update 0: both implementations on the valid set, from the same weights
    ours = side.valid_neg_log_perplexity()
    o.log(f"[ref] update 0: this project's model, valid_neg_log_perplexity {ours:.4f}")
    validate(0, None, {"fairseq_valid_neg_log_perplexity": round(ours, 6)})
    interval = {"ce": 0.0, "ntok": 0, "balance": 0.0, "steps": 0, "lr": recipe.lr()}
    train_seconds = 0.0
    batches = side.train_batches(epoch_itr)
    hf.train()
    for update in range(1, o.max_update + 1):
        t0 = time.time()
        sample = next(batches)
        utils.set_torch_seed(o.seed + update - 1)  # fairseq's Trainer._set_seed: seed + updates so far
        inputs = hf_inputs(sample, side.pad, V)
        set_capacity(hf, cfg.model, inputs["input_ids"].shape[1], inputs["labels"].shape[1], training=True,
                     fixed=o.expert_capacity)
        dec_valid = sample["net_input"]["prev_output_tokens"].ne(side.pad)
        recorder.active = True
        try:
            step = hf_loss(hf, inputs, sample["ntokens"], alpha, beta, o.balance_loss, dec_valid)
        finally:
            recorder.active = False
        routed = routing_metrics(recorder.pop(), {"encoder": inputs["attention_mask"].bool(), "decoder": dec_valid})
        lr = recipe.lr()
        recipe.step(step.loss, update)
        train_seconds += time.time() - t0
        if not math.isfinite(step.ce_sum):
            raise RuntimeError(f"non-finite training loss at update {update}")
        interval["ce"] += step.ce_sum
        interval["ntok"] += step.ntokens
        interval["balance"] += step.balance
        interval["steps"] += 1
        interval["lr"] = lr
        if routed:  # per update, next to its loss, under this project's names
            rows.append({"update": update, "train_update_loss": round(step.ce_sum / max(step.ntokens, 1), 6),
                         **routed})
            if update % 25 == 0:
                o.log(f"[ref] update {update}  " + "  ".join(f"{k} {v}" for k, v in sorted(routed.items())
                                                             if not k.startswith("moe_counts")))
        if update % o.validate_interval == 0 or update == o.max_update:
            validate(update, interval, {})
            interval = {"ce": 0.0, "ntok": 0, "balance": 0.0, "steps": 0, "lr": recipe.lr()}
    final = {"final": True, "update": o.max_update, "valid_neg_log_perplexity": rows[-1]["valid_neg_log_perplexity"],
             "wall": round(time.time() - start, 2),
             "seconds_per_update": round(train_seconds / o.max_update, 4) if o.max_update else None,
             "experts": o.experts, "seed": o.seed, "config": o.config_name, "model": type(hf).__name__,
             "balance_loss": o.balance_loss, "expert_capacity": o.expert_capacity or "per-sequence factor",
             "threads": torch.get_num_threads()}
    rows.append(final)
    write_log(log_path, rows)
    o.log(f"[ref] done: {log_path} ({final['seconds_per_update']} s/update)")
    return rows


# -- command line --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reference_transformers.py",
        description="Train transformers' T5 / SwitchTransformers on the batches, initial weights and recipe of "
                    "this project's fairseq-hydra-train --config-name pretrain_tiny run; log valid "
                    "neg_log_perplexity to <out>/log.jsonl.")
    p.add_argument("--data", required=True, help="prepared span-corruption data folder (dict.txt, train/valid "
                                                 "splits), the config's task.data")
    p.add_argument("--experts", type=int, default=8,
                   help="experts per Switch layer (model.moe_expert_count); 0 trains the dense twin with T5")
    p.add_argument("--seed", type=int, default=1, help="common.seed: initial weights, batch order and noise")
    p.add_argument("--max-update", type=int, default=500,
                   help="updates to train (the fairseq run's optimization.max_update; inverse_sqrt does not depend "
                        "on it)")
    p.add_argument("--validate-interval", type=int, default=100, help="validate every this many updates "
                                                                      "(and after the last)")
    p.add_argument("--out", required=True, help="output folder for log.jsonl (created)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing <out>/log.jsonl")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (torch.set_num_threads)")
    p.add_argument("--config-name", default="pretrain_tiny", help="Hydra config of the fairseq run")
    p.add_argument("--config-dir", default=str(CONFIG_DIR), help="folder of the Hydra configs")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Hydra override of the fairseq config, e.g. model.moe_capacity_factor=2.0 "
                        "(repeatable; apply the same ones to the fairseq run)")
    p.add_argument("--expert-capacity", type=int, default=None,
                   help="transformers' fixed expert_capacity (tokens per expert per sequence, both stacks, train "
                        "and eval); default: ceil(length / experts * capacity factor) per stack and mode")
    p.add_argument("--balance-loss", choices=BALANCE_CHOICES, default="transformers",
                   help="transformers: its per-sequence balance loss; batch: this project's Eq. 4 per layer over "
                        "the batch's real tokens, from transformers' router logits")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    o = RunOptions(data=args.data, experts=args.experts, seed=args.seed, max_update=args.max_update,
                   validate_interval=args.validate_interval, out=args.out, config_name=args.config_name,
                   config_dir=args.config_dir, overrides=tuple(args.override), expert_capacity=args.expert_capacity,
                   balance_loss=args.balance_loss, log=lambda s: print(s, flush=True))
    try:
        if args.threads < 1:
            raise UsageError(f"--threads {args.threads}: give 1 or more")
        check_options(o, overwrite=args.overwrite)
        import torch

        torch.set_num_threads(args.threads)
        run(o)
    except (UsageError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        from fairseq_switch.cli_errors import raised_by_plugin

        if not raised_by_plugin(e.__traceback__):
            raise
        # the task's, model's and converter's own checks of the config: they name the value and the fix
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
