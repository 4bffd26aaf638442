"""What every task that trains Switch models adds to fairseq's FairseqTask."""

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch.nn as nn
from fairseq.dataclass import FairseqDataclass

from ..models.student_init import init_student_from
from ..models.switch_host import routing_mode
from .config_checks import check_max_tokens, check_model_cfg, check_precision


@dataclass
class CheckpointChecksConfig(FairseqDataclass):
    """Options of every plugin task for what loading a checkpoint checks (fairseq_switch/checkpoints/)."""

    no_resume_fallback: bool = field(
        default=False,
        metadata={"help": "when checkpoint_last's save is broken (interrupted or corrupt), stop with an error "
                          "naming the newest complete save instead of resuming from it"},
    )
    allow_dictionary_change: bool = field(
        default=False,
        metadata={"help": "load a checkpoint trained with another dictionary (its recorded fingerprint differs "
                          "from this task's dictionary): only for deliberate vocabulary changes"},
    )


class SwitchTaskMixin:
    """Put before the fairseq task class: `class MyTask(SwitchTaskMixin, FairseqTask)`."""

    def train_step(
        self,
        sample: Dict[str, Any],
        model: nn.Module,
        criterion: Any,
        optimizer: Any,
        update_num: int,
        ignore_grad: bool = False,
        **kwargs: Any,
    ) -> Tuple[Any, Any, Dict[str, Any]]:
        # fairseq marks a dummy batch (this rank ran out of data) only through ignore_grad: its tokens
        # take no capacity slot and stay out of the aux-loss statistics; the exchanges still happen
        with routing_mode(model, "dummy") if ignore_grad else nullcontext():
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad, **kwargs)

    # --max-tokens must hold every example (True) or the shortest (fairseq drops longer ones from training)
    whole_examples = False
    max_tokens_hint = ""  # what else shortens an example, for the --max-tokens error

    def build_model(self, cfg: Any, from_checkpoint: bool = False) -> nn.Module:
        if not from_checkpoint:  # a new model from the user's options (a saved one was checked when trained)
            check_model_cfg(cfg)
            check_precision(cfg)
        model = super().build_model(cfg, from_checkpoint)
        path = getattr(cfg, "student_init_from", None)
        # before fairseq restores checkpoint_last (a resumed run keeps its weights); never when a
        # trained model is rebuilt from its checkpoint (fairseq-generate, teachers)
        if path and not from_checkpoint:
            init_student_from(model, path, self.target_dictionary, str(getattr(cfg, "student_ffn_init", "random")),
                              int(getattr(cfg, "student_ffn_expert", 0) or 0))
        return model

    def get_batch_iterator(self, dataset: Any, max_tokens: Optional[int] = None, *args: Any, **kwargs: Any) -> Any:
        checked = self.__dict__.setdefault("_max_tokens_checked", set())
        if (id(dataset), max_tokens) not in checked:  # once per dataset: fairseq asks again every epoch
            split = next((k for k, v in getattr(self, "datasets", {}).items() if v is dataset), "given")
            check_max_tokens(dataset, max_tokens, split, self.whole_examples, self.max_tokens_hint)
            checked.add((id(dataset), max_tokens))
        return super().get_batch_iterator(dataset, max_tokens, *args, **kwargs)
