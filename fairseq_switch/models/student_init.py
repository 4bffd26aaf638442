"""Initialise a (dense) student from a Switch teacher's non-expert weights (Fedus et al. 2021, Sec. 4.2, Table 6).

Every student tensor whose name and shape match a teacher tensor is copied: embeddings, attention,
layer norms, dense FFNs. Experts and routers are never copied as such. Where the teacher has a
Switch FFN and the student a dense one (`X.fc1.experts.{e}.fc{1,2}.*` vs `X.fc{1,2}.*`), the
student's FFN is, per `--student-ffn-init`: left random (the paper), copied from one expert, or
the mean of all experts.
"""

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Tuple

import torch
import torch.nn as nn

from .teacher import check_teacher_vocabulary, read_checkpoint

logger = logging.getLogger(__name__)

FFN_INIT_CHOICES = ("random", "expert", "mean")
_DENSE_FFN = re.compile(r"^(?P<host>.*)\.fc(?P<k>[12])\.(?P<p>weight|bias)$")
_EXPERT = re.compile(r"\.experts\.(\d+)\.")


@dataclass
class InitReport:
    copied: List[str] = field(default_factory=list)  # student names taken as they are
    ffn: Dict[str, str] = field(default_factory=dict)  # student FFN name -> where it came from
    not_copied: Dict[str, str] = field(default_factory=dict)  # student name -> why
    unused: List[str] = field(default_factory=list)  # teacher names no student tensor took

    def summary(self) -> str:
        def collapse(names: Iterable[str]) -> str:
            # one entry per module kind: layer/expert numbers starred, weight and bias together
            modules = {re.sub(r"\.(weight|bias)$", "", n) for n in names}
            c = Counter(re.sub(r"\.(layers|experts)\.\d+\.", r".\1.*.", m) for m in modules)
            return ", ".join(f"{k}" + (f" x{v}" if v > 1 else "") for k, v in sorted(c.items())) or "-"

        whys = Counter(self.not_copied.values())
        return (
            f"copied {len(self.copied)} tensors: {collapse(self.copied)}\n"
            f"dense FFNs from the experts ({len(self.ffn)}): {collapse(self.ffn)}"
            + (f" <- {sorted(set(self.ffn.values()))[0]}" if self.ffn else "") + "\n"
            f"not copied ({len(self.not_copied)}): {collapse(self.not_copied)}"
            + (f" [{'; '.join(f'{w}: {n}' for w, n in whys.items())}]" if whys else "") + "\n"
            f"teacher tensors not used ({len(self.unused)}): {collapse(self.unused)}"
        )


def _expert_ids(teacher: Dict[str, torch.Tensor], host: str) -> List[int]:
    ids = {int(m.group(1)) for n in teacher if n.startswith(host + ".fc1.experts.") for m in [_EXPERT.search(n)] if m}
    return sorted(ids)


def plan_student_init(student: Dict[str, torch.Tensor], teacher: Dict[str, torch.Tensor],
                      ffn_init: str = "random", ffn_expert: int = 0) -> Tuple[Dict[str, torch.Tensor], InitReport]:
    """(new values by student name, report). Pure: reads both state dicts, changes neither."""
    if ffn_init not in FFN_INIT_CHOICES:
        raise ValueError(f"--student-ffn-init {ffn_init!r}: choose one of {', '.join(FFN_INIT_CHOICES)}")
    values: Dict[str, torch.Tensor] = {}
    report = InitReport()
    used = set()
    mismatched = []
    for name, mine in student.items():
        if ".experts." in name or ".router." in name:
            report.not_copied[name] = "student expert/router: kept random"
            continue
        theirs = teacher.get(name)
        if theirs is not None:
            if theirs.shape != mine.shape:
                mismatched.append(f"{name} {tuple(theirs.shape)} vs {tuple(mine.shape)}")
                continue
            values[name] = theirs
            report.copied.append(name)
            used.add(name)
            continue
        m = _DENSE_FFN.match(name)
        experts = _expert_ids(teacher, m.group("host")) if m else []
        if not experts:
            report.not_copied[name] = "not in the teacher: kept random"
            continue
        if ffn_init == "random":
            report.not_copied[name] = "dense FFN in a Switch position: random (--student-ffn-init random)"
            continue
        if ffn_init == "expert" and ffn_expert not in experts:
            raise ValueError(f"--student-ffn-expert {ffn_expert}: the teacher's Switch layers have experts "
                             f"{experts[0]}..{experts[-1]}")
        chosen = [ffn_expert] if ffn_init == "expert" else experts
        src = [f"{m.group('host')}.fc1.experts.{e}.fc{m.group('k')}.{m.group('p')}" for e in chosen]
        stack = torch.stack([teacher[s].float() for s in src])
        if stack.shape[1:] != mine.shape:
            mismatched.append(f"{name} {tuple(stack.shape[1:])} (expert) vs {tuple(mine.shape)}")
            continue
        values[name] = stack.mean(0).to(mine.dtype)
        report.ffn[name] = f"expert {ffn_expert}" if ffn_init == "expert" else f"mean of {len(experts)} experts"
        used.update(src)
    if mismatched:
        raise ValueError(
            f"the student does not have the teacher's non-expert shapes ({len(mismatched)} tensors differ, e.g. "
            f"{'; '.join(mismatched[:3])}): use the teacher's dense twin as the student (switch_tiny -> t5_tiny, same "
            f"--encoder-embed-dim/--encoder-ffn-embed-dim/layers), or drop --student-init-from"
        )
    report.unused = [n for n in teacher if n not in used and torch.is_tensor(teacher[n])]
    return values, report


def init_student_from(model: nn.Module, path: str, dictionary: Any, ffn_init: str = "random",
                      ffn_expert: int = 0) -> InitReport:
    """Copy the teacher checkpoint's matching weights into `model` in place, and log what was copied."""
    state = read_checkpoint(path, "--student-init-from")
    check_teacher_vocabulary(path, state, dictionary, flag="--student-init-from")
    values, report = plan_student_init(model.state_dict(), state["model"], ffn_init, ffn_expert)
    with torch.no_grad():
        params = model.state_dict(keep_vars=True)  # every name, tied aliases included
        for name, v in values.items():
            params[name].copy_(v)
    logger.info(f"student initialised from {path}:\n{report.summary()}")
    return report
