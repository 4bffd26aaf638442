"""`text_to_text`: fine-tune on (input, target) text pairs (Fedus et al. 2021, Sec. 4.1).

fairseq's translation task does the work: its language-pair datasets, batching and sequence
generator. The data folder is what `scripts/prepare_downstream_data.py` writes: the pairs
binarized with the *pretraining* SentencePiece model and dictionary (a fine-tuned model must see
the vocabulary it was pretrained with), as the language pair input -> target:

    dict.input.txt  dict.target.txt  (copies of the pretraining dict.txt)
    {train,valid,test}.input-target.{input,target}.{bin,idx}
    spm.model       (for detokenizing generations: scripts/score_generations.py --spm-model)

Fine-tuning regularization follows the paper: dropout 0.1 (the t5_*/switch_* architectures'
default) and 0.4 inside the experts, which this task applies unless --moe-expert-dropout is given.

Validation by generation (`--eval-metric rouge|em|acc`): every validation also decodes the valid
set (greedy by default, `--eval-generate-args`) with no token dropped by capacity, as
fairseq-generate does, and logs ROUGE-1/2/L, exact match or accuracy next to the loss, scored by
evaluation.evaluate exactly as scripts/score_generations.py scores fairseq-generate output (an <unk>
is deleted, never a word); with rouge also `repetitive`, the percentage of outputs that repeat one
piece 4 or more times in a row (degenerate decoding). With
`--best-checkpoint-metric rouge2 --maximize-best-checkpoint-metric` fairseq keeps the best
checkpoint by it and logs the peak as `best_rouge2` (the paper reports peak validation scores).

Mixtures (`--mixture bbc,spam`): --data holds one prepared folder per task, all made with the same
pretraining vocabulary. Training reads their concatenation, so over an epoch each task contributes
in proportion to its token count (the paper's GLUE/SuperGLUE mixing, Sec. 4.1). Validation with
--eval-metric logs each task's score (`bbc_acc`, `spam_acc`) and their mean (`acc`), the
GLUE-style average, which --best-checkpoint-metric can select on.
"""

import bisect
import json
import logging
import os
from argparse import Namespace
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from fairseq import utils
from fairseq.data import ConcatDataset, LanguagePairDataset, data_utils
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import OmegaConf, open_dict

from .. import evaluation
from ..models.switch_host import routing_mode
from ..checkpoints.options import CheckpointChecksConfig
from .switch_task import StudentInitConfig, SwitchTaskMixin

logger = logging.getLogger(__name__)

SOURCE, TARGET = "input", "target"
# what --eval-metric logs; with rouge also "repetitive", the share of outputs that repeat a piece 4+ times in
# a row ("distinct" is not: unlike a share of outputs, a count of distinct ones does not add up over batches)
EVAL_METRICS = {"none": (), "rouge": ("rouge1", "rouge2", "rougeL", "repetitive"), "em": ("em",), "acc": ("acc",)}


@dataclass
class TextToTextConfig(TranslationConfig, CheckpointChecksConfig, StudentInitConfig):
    expert_dropout: float = field(
        default=0.4,
        metadata={"help": "dropout inside the experts when the model does not set --moe-expert-dropout "
                          "(paper fine-tuning: 0.4, with dropout 0.1 elsewhere)"},
    )
    eval_metric: ChoiceEnum(list(EVAL_METRICS)) = field(
        default="none",
        metadata={"help": "also generate on the valid set at each validation and log: rouge (ROUGE-1/2/L F), em "
                          "(SQuAD-normalized exact match) or acc (label accuracy); none: loss only"},
    )
    mixture: str = field(
        default="",
        metadata={"help": "comma-separated task folders under --data to train on together (sampled in proportion "
                          "to their tokens) and validate per task; empty: --data is one task's folder"},
    )
    eval_generate_args: str = field(
        default='{"beam": 1, "max_len_a": 0, "max_len_b": 128}',
        metadata={"help": "generation settings for --eval-metric, as JSON (fairseq-generate's option names)"},
    )


@register_task("text_to_text", dataclass=TextToTextConfig)
class TextToTextTask(SwitchTaskMixin, TranslationTask):
    """(input, target) pairs as fairseq's language pair input -> target, one shared dictionary."""

    cfg: TextToTextConfig

    @classmethod
    def setup_task(cls, cfg: TextToTextConfig, **kwargs: Any) -> "TextToTextTask":
        cfg.source_lang = cfg.source_lang or SOURCE
        cfg.target_lang = cfg.target_lang or TARGET
        root = (cfg.data or "").split(os.pathsep)[0]
        folders = [os.path.join(root, name) for name in mixture_names(cfg)] or [root]
        dicts = []
        for folder in folders:
            for lang in (cfg.source_lang, cfg.target_lang):
                path = os.path.join(folder, f"dict.{lang}.txt")
                if not os.path.isfile(path):
                    raise FileNotFoundError(
                        f"text_to_text: no dictionary at {path}. Prepare the pairs with "
                        f"`python scripts/prepare_downstream_data.py --pretrained <pretraining data folder> --out "
                        f"{folder or '<out>'} <pairs>`"
                    )
                dicts.append((path, cls.load_dictionary(path)))
        for path, d in dicts[1:]:
            if d != dicts[0][1]:
                raise ValueError(
                    f"text_to_text: {path} differs from {dicts[0][0]}; inputs and targets of every task must share "
                    f"the pretraining dictionary (prepare each with the same prepare_downstream_data.py --pretrained)"
                )
        d = dicts[0][1]
        logger.info(f"text_to_text: dictionary {len(d)} symbols" + (f"; mixture of {len(folders)} tasks: "
                    f"{', '.join(mixture_names(cfg))}" if mixture_names(cfg) else ""))
        return cls(cfg, d, d)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs: Any) -> None:
        names = mixture_names(self.cfg)
        if not names:
            return super().load_dataset(split, epoch, combine, **kwargs)
        root = self.cfg.data.split(os.pathsep)[0]
        src, tgt = [], []
        for name in names:
            prefix = os.path.join(root, name, f"{split}.{self.cfg.source_lang}-{self.cfg.target_lang}.")
            for lang, d, out in (
                (self.cfg.source_lang, self.src_dict, src),
                (self.cfg.target_lang, self.tgt_dict, tgt),
            ):
                ds = data_utils.load_indexed_dataset(prefix + lang, d, self.cfg.dataset_impl)
                if ds is None:
                    raise FileNotFoundError(f"text_to_text: mixture task {name!r} has no {split} split ({prefix}{lang}"
                                            f".bin); prepare it with scripts/prepare_downstream_data.py")
                out.append(ds)
            logger.info(f"text_to_text: {split} {name}: {len(src[-1])} examples")
        # one dataset of all tasks: an epoch visits every example once, so tasks mix by their token counts
        src_all, tgt_all = ConcatDataset(src), ConcatDataset(tgt)
        self.datasets[split] = MixtureDataset(
            src_all, src_all.sizes, self.src_dict, tgt_all, tgt_all.sizes, self.tgt_dict,
            left_pad_source=self.cfg.left_pad_source, left_pad_target=self.cfg.left_pad_target,
            shuffle=(split != "test"), pad_to_multiple=self.cfg.required_seq_len_multiple,
            offsets=[0] + list(src_all.cumulative_sizes[:-1]),
        )

    def build_model(self, cfg: Any, from_checkpoint: bool = False) -> torch.nn.Module:
        if getattr(cfg, "moe_expert_count", 0) and getattr(cfg, "moe_expert_dropout", None) is None:
            if OmegaConf.is_config(cfg):
                with open_dict(cfg):
                    cfg.moe_expert_dropout = self.cfg.expert_dropout
            else:
                cfg.moe_expert_dropout = self.cfg.expert_dropout
        model = super().build_model(cfg, from_checkpoint)
        if self.cfg.eval_metric != "none":
            gen_args = json.loads(self.cfg.eval_generate_args or "{}")
            self.sequence_generator = self.build_generator([model], Namespace(**gen_args))
        return model

    def valid_step(
        self, sample: Dict[str, Any], model: torch.nn.Module, criterion: Any
    ) -> Tuple[Any, Any, Dict[str, Any]]:
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        if EVAL_METRICS[str(self.cfg.eval_metric)]:
            # route as fairseq-generate does (every token, unless --moe-gen-drop)
            with routing_mode(model, "generate"):
                out = self.inference_step(self.sequence_generator, [model], sample, prefix_tokens=None)
            logging_output.update(self.generation_logs(sample, out))
        return loss, sample_size, logging_output

    def generation_logs(self, sample: Dict[str, Any], out: List[List[Dict[str, Any]]]) -> dict:
        """The --eval-metric scores of the best hypotheses in `out` (inference_step's) against the batch's
        targets, as sums over examples (so that batches and ranks add up) for reduce_metrics.

        Scored by evaluation.evaluate from the H- and T- lines fairseq-generate prints for the same tokens
        (raw pieces, <unk> escaped in the reference), detokenized with the data's spm.model: the numbers
        scripts/score_generations.py --spm-model gives."""
        metric, names = str(self.cfg.eval_metric), EVAL_METRICS[str(self.cfg.eval_metric)]
        hyps = [self.tgt_dict.string(o[0]["tokens"].int().cpu()) for o in out]
        refs = [self.tgt_dict.string(utils.strip_pad(t, self.tgt_dict.pad()).int().cpu(), escape_unk=True)
                for t in sample["target"]]
        groups = {"": list(range(len(hyps)))}
        if "task_ids" in sample:  # a mixture: score each task apart
            groups = {}
            task_names = mixture_names(self.cfg)
            for i, t in enumerate(sample["task_ids"].tolist()):
                groups.setdefault(task_names[t] + "_", []).append(i)
        logs = {}
        for task, rows in groups.items():
            scores = evaluation.evaluate([hyps[i] for i in rows], [refs[i] for i in rows], [metric],
                                         self.spm_model, pieces=True)
            logs[f"_t2t_{task}n"] = len(rows)
            for name in names:
                logs[f"_t2t_{task}{name}"] = scores[name] * len(rows)
        return logs

    @property
    def spm_model(self) -> Optional[str]:
        """The data's spm.model (prepare_downstream_data.py copies the pretraining one), or None."""
        root = (self.cfg.data or "").split(os.pathsep)[0]
        path = os.path.join(root, *mixture_names(self.cfg)[:1], "spm.model")
        return path if os.path.isfile(path) else None

    def reduce_metrics(self, logging_outputs: List[Dict[str, Any]], criterion: Any) -> None:
        super().reduce_metrics(logging_outputs, criterion)

        def total(key: str) -> Any:
            return sum(log.get(key, 0) for log in logging_outputs)

        names = EVAL_METRICS[str(self.cfg.eval_metric)]
        tasks = [t + "_" for t in mixture_names(self.cfg)] or [""]
        present = [t for t in tasks if total(f"_t2t_{t}n")]
        for t in present:
            metrics.log_scalar_sum(f"_t2t_{t}n", total(f"_t2t_{t}n"))
            for name in names:
                metrics.log_scalar_sum(f"_t2t_{t}{name}", total(f"_t2t_{t}{name}"))
                metrics.log_derived(f"{t}{name}", lambda m, k=f"_t2t_{t}{name}", n=f"_t2t_{t}n": round(
                    m[k].sum / m[n].sum, 2))
        if present and present != [""]:
            for name in names:  # GLUE-style: the mean of the task scores, not the pooled score
                metrics.log_derived(name, lambda m, name=name: round(sum(
                    m[f"_t2t_{t}{name}"].sum / m[f"_t2t_{t}n"].sum for t in present) / len(present), 2))


class MixtureDataset(LanguagePairDataset):
    """fairseq's language-pair dataset over concatenated tasks; batches carry each example's task index."""

    def __init__(self, *args: Any, offsets: List[int], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.offsets = offsets  # index of each task's first example

    def collater(
        self, samples: List[Dict[str, Any]], pad_to_length: Optional[Dict[str, int]] = None
    ) -> Dict[str, Any]:
        batch = super().collater(samples, pad_to_length)
        if batch:  # after fairseq's reordering by length, so read the task from the batch's ids
            batch["task_ids"] = torch.tensor([bisect.bisect_right(self.offsets, i) - 1 for i in batch["id"].tolist()])
        return batch


def mixture_names(cfg: Any) -> list:
    return [n.strip() for n in (getattr(cfg, "mixture", "") or "").split(",") if n.strip()]
