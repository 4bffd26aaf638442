"""`switch_distillation`: distil a frozen (Switch) teacher into a student (Fedus et al. 2021, Sec. 4.2).

loss = (1 - w) * CE(student, ground truth) + w * T^2 * CE(student / T, softmax(teacher / T))

w = 0.25 is the paper's 0.75/0.25 mix; T = 1 is the paper (T^2 keeps the soft term's gradient
scale when T > 1, as in Hinton et al.). With --teacher-topk k the teacher's distribution is its
k largest logits, renormalised; with --teacher-cache-dir those are stored per example and read
back instead of running the teacher again. w = 0 loads no teacher: plain switch_cross_entropy,
the "no distillation" row of Table 6. Works with any task whose batches carry net_input and
target (span_corruption for Tables 6-7, text_to_text for Table 8). The student's own Switch
auxiliary losses, if it has experts, are added as in switch_cross_entropy.

Student initialisation from the teacher is a task option (--student-init-from, see
tasks/switch_task.py and models/student_init.py): the task does it when it builds the model, before
fairseq restores a checkpoint, so a resumed run keeps its trained weights.
"""

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Dict, List, Optional, Tuple

import torch
from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.logging import metrics

from ..data.teacher_cache import TeacherCache, example_key
from ..models.teacher import load_teacher, teacher_logits
from .switch_cross_entropy import SwitchCrossEntropyConfig, SwitchCrossEntropyCriterion, log_total


@dataclass
class SwitchDistillationConfig(SwitchCrossEntropyConfig):
    teacher_path: Optional[str] = field(
        default=None,
        metadata={"help": "the teacher checkpoint (a fairseq-switch .pt; an expert-parallel save is read with its "
                          "-experts-rank files); it is frozen, in eval mode, and drops no token"},
    )
    distill_weight: float = field(
        default=0.25,
        metadata={"help": "w: weight of the cross-entropy with the teacher's probabilities; the ground truth gets "
                          "1 - w (paper: 0.25). 0 = no distillation (no teacher is loaded)"},
    )
    distill_temperature: float = field(
        default=1.0, metadata={"help": "T: softmax temperature of teacher and student in the soft term (paper: 1)"}
    )
    teacher_topk: int = field(
        default=0,
        metadata={"help": "keep the teacher's k most probable tokens per position (renormalised); 0 = the full "
                          "distribution. Needed for --teacher-cache-dir"},
    )
    teacher_cache_dir: Optional[str] = field(
        default=None,
        metadata={"help": "store the teacher's top-k logits per example here (SQLite, keyed by content) and "
                          "reuse them whenever the same example comes again: later epochs, reruns, the other "
                          "runs of a sweep. Tied to one teacher and k"},
    )


def soft_cross_entropy(student_logits: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0,
                       teacher_logits: Optional[torch.Tensor] = None, topk_logits: Optional[torch.Tensor] = None,
                       topk_index: Optional[torch.Tensor] = None) -> torch.Tensor:
    """T^2 * sum over unmasked positions of -sum_v q(v) log p_student(v | T), in nats.

    q = softmax(teacher / T) over the vocabulary, or over the top-k entries given by
    (topk_logits, topk_index) [..., k]. student_logits: [..., V]; mask: [...], True where counted.
    """
    lp = utils.log_softmax(student_logits.float() / temperature, dim=-1)
    if teacher_logits is not None:
        q = torch.softmax(teacher_logits.float() / temperature, dim=-1)
        per_pos = -(q * lp).sum(-1)
    else:
        q = torch.softmax(topk_logits.float() / temperature, dim=-1)
        per_pos = -(q * lp.gather(-1, topk_index)).sum(-1)
    return per_pos.masked_fill(~mask, 0.0).sum() * temperature ** 2


def mix(gt_loss: torch.Tensor, kd_loss: torch.Tensor, weight: float) -> torch.Tensor:
    """The paper's mix (Sec. 4.2): (1 - w) ground truth + w teacher."""
    return (1.0 - weight) * gt_loss + weight * kd_loss


@register_criterion("switch_distillation", dataclass=SwitchDistillationConfig)
class SwitchDistillationCriterion(SwitchCrossEntropyCriterion):
    def __init__(self, task: Any, sentence_avg: bool, label_smoothing: float, ignore_prefix_size: int = 0,
                 report_accuracy: bool = False, moe_loss_weight: float = 0.01, router_z_loss_weight: float = 0.0,
                 teacher_path: Optional[str] = None, distill_weight: float = 0.25, distill_temperature: float = 1.0,
                 teacher_topk: int = 0, teacher_cache_dir: Optional[str] = None):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy,
                         moe_loss_weight, router_z_loss_weight)
        if not 0.0 <= distill_weight <= 1.0:
            raise ValueError(f"--distill-weight must be in [0, 1], got {distill_weight}; the paper uses 0.25")
        if not distill_temperature > 0:
            raise ValueError(f"--distill-temperature must be > 0, got {distill_temperature}; the paper uses 1")
        V = len(task.target_dictionary)
        if not 0 <= teacher_topk <= V:
            raise ValueError(f"--teacher-topk must be in [0, {V}] (the vocabulary size), got {teacher_topk}")
        if distill_weight > 0 and not teacher_path:
            raise ValueError("--distill-weight > 0 needs --teacher-path (the Switch checkpoint to distil); "
                             "use --distill-weight 0 to train without a teacher")
        if ignore_prefix_size:
            raise ValueError("--ignore-prefix-size is not supported by switch_distillation")
        self.distill_weight = distill_weight
        self.temperature = distill_temperature
        self.topk = teacher_topk
        # kept out of the module tree: not trained, not saved in the student's checkpoints, not wrapped in DDP
        self._teacher: List = []
        self._cache: Optional[TeacherCache] = None
        if distill_weight > 0:
            self._teacher.append(load_teacher(teacher_path, task))
            if teacher_cache_dir:
                self._cache = TeacherCache(teacher_cache_dir, teacher_path, teacher_topk)
        elif teacher_cache_dir:
            raise ValueError("--teacher-cache-dir without a teacher (--distill-weight 0): drop it")

    @property
    def teacher(self) -> Optional[torch.nn.Module]:
        return self._teacher[0] if self._teacher else None

    def main_loss(
        self, model: Any, net_output: Tuple[torch.Tensor, Dict[str, Any]], sample: Dict[str, Any], reduce: bool = True
    ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, Any]]:
        gt, nll = self.compute_loss(model, net_output, sample, reduce=reduce)
        if self.teacher is None:
            return gt, nll, {}
        mask = sample["target"].ne(self.padding_idx)
        student = net_output[0]
        extra: Dict[str, float] = {"gt_loss": gt.data}
        if self._cache is not None:
            vals, idx, hits = self._cached_topk(sample, mask, student)
            kd = soft_cross_entropy(student, mask, self.temperature, topk_logits=vals, topk_index=idx)
            extra["teacher_cache_hits"], extra["teacher_cache_lookups"] = hits, mask.size(0)
        else:
            t = teacher_logits(self.teacher, sample["net_input"], student)
            if self.topk:
                vals, idx = t.float().topk(self.topk, dim=-1)
                kd = soft_cross_entropy(student, mask, self.temperature, topk_logits=vals, topk_index=idx)
            else:
                kd = soft_cross_entropy(student, mask, self.temperature, teacher_logits=t)
        extra["kd_loss"] = kd.data
        return mix(gt, kd.to(gt.dtype), self.distill_weight), nll, extra

    def fill_cache(self, sample: Dict[str, Any], like: torch.Tensor) -> int:
        """Make sure the cache holds the teacher's outputs for this batch (scripts/precompute_teacher.py);
        returns how many examples were already there. `like`: a float tensor on the teacher's device."""
        if self._cache is None:
            raise ValueError("fill_cache needs --teacher-cache-dir (and --teacher-topk)")
        return self._cached_topk(sample, sample["target"].ne(self.padding_idx), like)[2]

    def _cached_topk(
        self, sample: Dict[str, Any], mask: torch.Tensor, student: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, int]:
        """Top-k teacher logits [B, T, k] for the batch: from the cache, the teacher run on the misses only."""
        net = sample["net_input"]
        src, prev = net["src_tokens"], net["prev_output_tokens"]
        B, T = mask.shape
        keys = [example_key(src[b][src[b].ne(self.padding_idx)], prev[b][mask[b]]) for b in range(B)]
        got = self._cache.get(keys)
        miss = [b for b in range(B) if got[b] is None]
        if miss:
            rows = torch.tensor(miss, device=src.device)
            sub = {k: (v.index_select(0, rows) if torch.is_tensor(v) and v.dim() and v.size(0) == B else v)
                   for k, v in net.items()}
            vals, idx = teacher_logits(self.teacher, sub, student).float().topk(self.topk, dim=-1)
            new = []
            for j, b in enumerate(miss):
                got[b] = (vals[j][mask[b]].cpu(), idx[j][mask[b]].cpu())
                new.append((keys[b], *got[b]))
            self._cache.put(new)
        out_v = torch.zeros(B, T, self.topk, device=student.device)
        out_i = torch.zeros(B, T, self.topk, dtype=torch.long, device=student.device)
        for b in range(B):
            out_v[b][mask[b]] = got[b][0].to(student.device)
            out_i[b][mask[b]] = got[b][1].to(student.device)
        return out_v, out_i, B - len(miss)

    @classmethod
    def reduce_metrics(cls, logging_outputs: List[Dict]) -> None:
        super().reduce_metrics(logging_outputs)
        total = partial(log_total, logging_outputs)
        ntokens = total("ntokens")
        logged_kd = ntokens > 0 and any("kd_loss" in log for log in logging_outputs)
        for key in ("gt_loss", "kd_loss") if logged_kd else ():  # per target token, in bits like fairseq's loss
            metrics.log_scalar(key, float(total(key)) / ntokens / math.log(2), ntokens, round=3)
        lookups = total("teacher_cache_lookups")
        if lookups:
            metrics.log_scalar("teacher_cache_hit", float(total("teacher_cache_hits")) / lookups, lookups, round=3)
