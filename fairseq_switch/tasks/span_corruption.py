"""`span_corruption`: T5-style pretraining task (Raffel et al. 2019, Sec. 3.1.4) on a binarized monolingual corpus.

The data folder holds `dict.txt` (with the sentinels <extra_id_0>.. ) and `{train,valid,test}.bin/.idx`
with one document per line, as written by `scripts/prepare_pretraining_data.py`. Documents are
concatenated (without separators, as in T5) and cut into chunks of the raw length that corrupts to
`--input-length` tokens; each chunk becomes one (source, target) example.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch
from fairseq import utils
from fairseq.data import Dictionary, StripTokenDataset, TokenBlockDataset, data_utils
from fairseq.data.indexed_dataset import get_available_dataset_impl
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING

from .. import probe as zero_shot
from ..data.sentinels import NUM_SENTINELS, count_sentinels, sentinel_indices
from ..checkpoints.options import CheckpointChecksConfig
from .switch_task import StudentInitConfig, SwitchTaskMixin
from ..data.span_corruption import (
    SpanCorruptionDataset,
    example_lengths,
    max_input_length,
    num_sentinels_needed,
    raw_length_for_input,
)

logger = logging.getLogger(__name__)


@dataclass
class SpanCorruptionConfig(zero_shot.ProbeConfig, CheckpointChecksConfig, StudentInitConfig):
    data: str = field(
        default=MISSING,
        metadata={"help": "folder with dict.txt and binarized splits (scripts/prepare_pretraining_data.py); "
                          "several folders separated by ':' are used one per epoch"},
    )
    input_length: int = field(
        default=512,
        metadata={"help": "tokens per corrupted input, sentinels and EOS included (T5: 512). The raw "
                          "chunk is the longest that fits, as in T5's random_spans_helper (568 for 512)"},
    )
    noise_density: float = field(default=0.15, metadata={"help": "fraction of raw tokens that are corrupted"})
    mean_noise_span_length: float = field(default=3.0, metadata={"help": "mean length of a corrupted span"})
    final_sentinel: bool = field(
        default=True,
        metadata={"help": "end the target with one more sentinel before EOS (T5 paper's format). "
                          "Set false for T5's code (target 114 tokens for input 512 instead of 115)"},
    )
    seed: int = II("common.seed")
    dataset_impl: Optional[ChoiceEnum(get_available_dataset_impl())] = II("dataset.dataset_impl")


def check_input_length(cfg: SpanCorruptionConfig, dictionary: Dictionary, raw_length: int, needed: int) -> None:
    """Each corrupted span takes one sentinel: a long --input-length needs more than the dictionary has (prepared
    data holds 100), and no dictionary edit helps then; name the longest input length that works."""
    have = count_sentinels(dictionary)
    if needed <= have or not (have or needed > NUM_SENTINELS):
        return  # enough, or none at all and the fix is to prepare the data (sentinel_indices says so)
    limit = have or NUM_SENTINELS
    longest = max_input_length(limit, cfg.noise_density, cfg.mean_noise_span_length, cfg.final_sentinel)
    fix = f"use --input-length {longest} or less" if longest >= 2 else "lower --noise-density"
    holds = f"the dictionary holds {have}" if have else f"prepared data holds {NUM_SENTINELS}"
    final = ", and the final one" if cfg.final_sentinel else ""
    raise ValueError(
        f"--input-length {cfg.input_length} needs {needed} sentinel tokens (one per noise span of its raw chunk of "
        f"{raw_length} tokens at --noise-density {cfg.noise_density} and --mean-noise-span-length "
        f"{cfg.mean_noise_span_length}{final}), but {holds} (<extra_id_0>..<extra_id_{limit - 1}>): {fix}, the "
        f"longest whose spans {limit} sentinels can mark"
    )


@register_task("span_corruption", dataclass=SpanCorruptionConfig)
class SpanCorruptionTask(SwitchTaskMixin, FairseqTask):
    cfg: SpanCorruptionConfig
    prepare_script = "scripts/prepare_pretraining_data.py"  # named in errors: what makes the data folder
    whole_examples = True  # all of one length (but a split's last chunk): dropping them would leave nothing
    max_tokens_hint = ", or a smaller --input-length"

    def __init__(self, cfg: SpanCorruptionConfig, dictionary: Dictionary):
        super().__init__(cfg)
        self.dictionary = dictionary
        self._probe_due = False
        self.probe = None
        self.raw_length = raw_length_for_input(cfg.input_length, cfg.noise_density, cfg.mean_noise_span_length)
        self.example_lengths = example_lengths(
            self.raw_length, cfg.noise_density, cfg.mean_noise_span_length, cfg.final_sentinel
        )
        needed = num_sentinels_needed(
            self.raw_length, cfg.noise_density, cfg.mean_noise_span_length, cfg.final_sentinel
        )
        check_input_length(cfg, dictionary, self.raw_length, needed)
        sentinel_indices(dictionary, needed)  # fail now, with the fix, if the dictionary lacks them
        if cfg.probe:  # built now: a bad --probe fails before training starts
            spm = os.path.join(utils.split_paths(cfg.data)[0], "spm.model")
            self.probe = zero_shot.Probe(cfg, dictionary, spm, self.example_lengths[0], cfg.seed)

    @classmethod
    def setup_task(cls, cfg: SpanCorruptionConfig, **kwargs: Any) -> "SpanCorruptionTask":
        paths = utils.split_paths(cfg.data)
        if not paths:
            raise ValueError("span_corruption: task.data is empty; point it at a prepared data folder")
        dict_path = os.path.join(paths[0], "dict.txt")
        if not os.path.isfile(dict_path):
            raise FileNotFoundError(
                f"span_corruption: no dictionary at {dict_path}. Prepare the data with "
                f"`python {cls.prepare_script} --out {paths[0]} TEXT...`"
            )
        dictionary = Dictionary.load(dict_path)
        task = cls(cfg, dictionary)
        logger.info(
            f"span_corruption: dictionary {len(dictionary)} symbols; raw chunk {task.raw_length} tokens -> "
            f"input {task.example_lengths[0]}, target {task.example_lengths[1]} (noise density "
            f"{cfg.noise_density}, mean span {cfg.mean_noise_span_length})"
        )
        return task

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs: Any) -> None:
        paths = utils.split_paths(self.cfg.data)
        path = os.path.join(paths[(epoch - 1) % len(paths)], split)
        self.datasets[split] = self.span_corruption_dataset(path, split, combine)

    def span_corruption_dataset(self, path: str, split: str, combine: bool = False) -> SpanCorruptionDataset:
        """The corrupted examples of the binarized documents at `path` (.bin/.idx)."""
        docs = data_utils.load_indexed_dataset(path, self.dictionary, self.cfg.dataset_impl, combine=combine)
        if docs is None:
            raise FileNotFoundError(
                f"span_corruption: split {split!r} not found ({path}.bin/.idx). Prepare it with "
                f"scripts/prepare_pretraining_data.py, or pick an existing split (dataset.valid_subset)."
            )
        if len(docs) == 0 or docs.sizes.sum() == 0:
            raise ValueError(f"span_corruption: split {split!r} at {path} holds no tokens")
        eos = self.dictionary.eos()
        if docs[0][-1].item() != eos:
            raise ValueError(
                f"span_corruption: documents in {path} do not end with </s>; binarize with "
                f"fairseq-preprocess (which appends it) or scripts/prepare_pretraining_data.py"
            )
        # T5 concatenates documents without separators: drop each document's trailing </s>.
        docs = StripTokenDataset(docs, eos)
        sizes = docs.sizes - 1
        chunks = TokenBlockDataset(
            docs, sizes, self.raw_length, pad=self.dictionary.pad(), eos=eos, break_mode="none"
        )
        dataset = SpanCorruptionDataset(
            chunks,
            chunks.sizes,
            self.dictionary,
            noise_density=self.cfg.noise_density,
            mean_noise_span_length=self.cfg.mean_noise_span_length,
            final_sentinel=self.cfg.final_sentinel,
            seed=self.cfg.seed,
        )
        logger.info(f"span_corruption: {split}: {len(docs)} documents, {int(sizes.sum())} tokens, "
                    f"{len(chunks)} examples" + ("" if path.endswith(split) else f" ({path})"))
        return dataset

    def begin_valid_epoch(self, epoch: int, model: torch.nn.Module) -> None:
        super().begin_valid_epoch(epoch, model)
        self._probe_due = bool(self.cfg.probe)  # once per validation, not once per valid subset

    def post_validate(self, model: torch.nn.Module, stats: Dict[str, Any], agg: Any) -> None:
        """Zero-shot probe (--probe): its metrics join the validation stats (JSON log, tensorboard),
        its per-point rows go to <probe_dir>/probe/<task>.jsonl. Every rank scores the same points, so
        an expert-parallel model's all-to-alls line up; only the first rank writes."""
        if not self._probe_due or self.probe is None:
            return
        self._probe_due = False
        results = self.probe.run(model)
        stats.update(zero_shot.stats(results))
        if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
            for r in results:
                zero_shot.write_rows(os.path.join(self.cfg.probe_dir, "probe", f"{r.name}.jsonl"),
                                     [r.row(update=int(stats.get("num_updates", 0)))])

    @property
    def source_dictionary(self) -> Dictionary:
        return self.dictionary

    @property
    def target_dictionary(self) -> Dictionary:
        return self.dictionary

    def max_positions(self) -> Tuple[int, int]:
        return self.example_lengths
