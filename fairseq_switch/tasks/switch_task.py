"""What every task that trains Switch models adds to fairseq's FairseqTask."""

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch.nn as nn
from fairseq.dataclass import ChoiceEnum, FairseqDataclass

from ..models.student_init import FFN_INIT_CHOICES, init_student_from
from ..models.switch_host import routing_mode
from .config_checks import check_max_tokens, check_model_cfg, check_precision


@dataclass
class StudentInitConfig(FairseqDataclass):
    """Distillation's student init (Fedus et al. 2021, Sec. 4.2): the task's, as the task builds the model."""

    student_init_from: Optional[str] = field(
        default=None,
        metadata={
            "help": "distillation (Sec. 4.2): when training starts, copy every weight of this (teacher) checkpoint "
            "whose name and shape match: embeddings, attention, norms, dense FFNs; experts and routers are not "
            "copied. A resumed run keeps its own weights; fairseq-generate ignores the option"
        },
    )
    student_ffn_init: ChoiceEnum(list(FFN_INIT_CHOICES)) = field(
        default="random",
        metadata={"help": "with --student-init-from, a dense FFN where the teacher has a Switch FFN starts: random "
                          "(paper), from one expert (--student-ffn-expert) or the mean of the experts"},
    )
    student_ffn_expert: int = field(
        default=0, metadata={"help": "which expert --student-ffn-init expert copies"}
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
        student: StudentInitConfig = self.cfg
        # before fairseq restores checkpoint_last (a resumed run keeps its weights); never when a
        # trained model is rebuilt from its checkpoint (fairseq-generate, teachers)
        if student.student_init_from and not from_checkpoint:
            init_student_from(model, student.student_init_from, self.target_dictionary,
                              str(student.student_ffn_init), int(student.student_ffn_expert))
        return model

    def get_batch_iterator(self, dataset: Any, max_tokens: Optional[int] = None, *args: Any, **kwargs: Any) -> Any:
        checked = self.__dict__.setdefault("_max_tokens_checked", set())
        if (id(dataset), max_tokens) not in checked:  # once per dataset: fairseq asks again every epoch
            split = next((k for k, v in getattr(self, "datasets", {}).items() if v is dataset), "given")
            check_max_tokens(dataset, max_tokens, split, self.whole_examples, self.max_tokens_hint)
            checked.add((id(dataset), max_tokens))
        return super().get_batch_iterator(dataset, max_tokens, *args, **kwargs)
