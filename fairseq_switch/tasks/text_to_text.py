"""`text_to_text`: fine-tune on (input, target) text pairs (paper Sec. 4.1, SPEC §6).

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
fairseq-generate does, and logs ROUGE-1/2/L, exact match or accuracy next to the loss. With
`--best-checkpoint-metric rouge2 --maximize-best-checkpoint-metric` fairseq keeps the best
checkpoint by it and logs the peak as `best_rouge2` (the paper reports peak validation scores).
"""

import json
import logging
import os
from argparse import Namespace
from contextlib import contextmanager
from dataclasses import dataclass, field

from fairseq import utils
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import OmegaConf, open_dict

from .. import evaluation
from ..modules.switch_layer import SwitchFFN
from .switch_task import SwitchTaskMixin

logger = logging.getLogger(__name__)

SOURCE, TARGET = "input", "target"
EVAL_METRICS = {"none": (), "rouge": ("rouge1", "rouge2", "rougeL"), "em": ("em",), "acc": ("acc",)}


@dataclass
class TextToTextConfig(TranslationConfig):
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
    eval_generate_args: str = field(
        default='{"beam": 1, "max_len_a": 0, "max_len_b": 128}',
        metadata={"help": "generation settings for --eval-metric, as JSON (fairseq-generate's option names)"},
    )


@register_task("text_to_text", dataclass=TextToTextConfig)
class TextToTextTask(SwitchTaskMixin, TranslationTask):
    """(input, target) pairs as fairseq's language pair input -> target, one shared dictionary."""

    cfg: TextToTextConfig

    @classmethod
    def setup_task(cls, cfg: TextToTextConfig, **kwargs):
        cfg.source_lang = cfg.source_lang or SOURCE
        cfg.target_lang = cfg.target_lang or TARGET
        folder = (cfg.data or "").split(os.pathsep)[0]
        for lang in (cfg.source_lang, cfg.target_lang):
            path = os.path.join(folder, f"dict.{lang}.txt")
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"text_to_text: no dictionary at {path}. Prepare the pairs with "
                    f"`python scripts/prepare_downstream_data.py --pretrained <pretraining data folder> --out "
                    f"{folder or '<out>'} <pairs>`"
                )
        task = super().setup_task(cfg, **kwargs)
        if task.src_dict != task.tgt_dict:
            raise ValueError(
                f"text_to_text: dict.{cfg.source_lang}.txt and dict.{cfg.target_lang}.txt in {folder} differ; "
                f"input and target must share the pretraining dictionary (prepare_downstream_data.py writes both)"
            )
        return task

    def build_model(self, cfg, from_checkpoint=False):
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

    def valid_step(self, sample, model, criterion):
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        names = EVAL_METRICS[str(self.cfg.eval_metric)]
        if names:
            hyps, refs = self._generate(model, sample)
            scores = evaluation.compute_metrics(hyps, refs, [str(self.cfg.eval_metric)])
            logging_output["_t2t_n"] = len(hyps)
            for name in names:  # sums, so that batches and ranks add up
                logging_output[f"_t2t_{name}"] = scores[name] * len(hyps)
        return loss, sample_size, logging_output

    def _generate(self, model, sample):
        def text(tokens, unk):
            # "sentencepiece" joins the pieces back into text; a reference <unk> never matches
            return self.tgt_dict.string(tokens.int().cpu(), "sentencepiece", unk_string=unk)

        with _generating(model):
            out = self.inference_step(self.sequence_generator, [model], sample, prefix_tokens=None)
        hyps = [text(o[0]["tokens"], "<unk>") for o in out]
        refs = [text(utils.strip_pad(t, self.tgt_dict.pad()), "<unk-in-reference>") for t in sample["target"]]
        return hyps, refs

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        n = sum(log.get("_t2t_n", 0) for log in logging_outputs)
        if not n:
            return
        metrics.log_scalar_sum("_t2t_n", n)
        for name in EVAL_METRICS[str(self.cfg.eval_metric)]:
            metrics.log_scalar_sum(f"_t2t_{name}", sum(log.get(f"_t2t_{name}", 0) for log in logging_outputs))
            metrics.log_derived(name, lambda m, name=name: round(m[f"_t2t_{name}"].sum / m["_t2t_n"].sum, 2))


@contextmanager
def _generating(model):
    """Route every token while generating during validation, as fairseq-generate does."""
    ffns = [m for m in model.modules() if isinstance(m, SwitchFFN)]
    before = [f.generating for f in ffns]
    for f in ffns:
        f.generating = True
    try:
        yield
    finally:
        for f, b in zip(ffns, before):
            f.generating = b
