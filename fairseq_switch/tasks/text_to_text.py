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
"""

import logging
import os
from dataclasses import dataclass, field

from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import OmegaConf, open_dict

from .switch_task import SwitchTaskMixin

logger = logging.getLogger(__name__)

SOURCE, TARGET = "input", "target"


@dataclass
class TextToTextConfig(TranslationConfig):
    expert_dropout: float = field(
        default=0.4,
        metadata={"help": "dropout inside the experts when the model does not set --moe-expert-dropout "
                          "(paper fine-tuning: 0.4, with dropout 0.1 elsewhere)"},
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
        return super().build_model(cfg, from_checkpoint)
