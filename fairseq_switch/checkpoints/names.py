"""Names in a save: experts by global id, the files of one save (main file, rank shards, manifest), and the
optimizer's parameter order (expert parallelism: Fedus, Zoph & Shazeer 2021, Sec. 5).

On disk experts are named by their global id (`...fc1.experts.5.fc2.weight`); a rank's model holds its
experts under local ids 0..E/W-1, so names are shifted by the rank's first expert on the way in and out.
"""

import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch.nn as nn

from ..distributed import plan_layout
from ..modules.switch_layer import SwitchFFN

FORMAT_VERSION = 1
META_KEY = "expert_parallel"
RECORD_KEY = "fairseq_switch"  # in extra_state: {"save_id", "parent", "dictionary"} of every save this plugin writes
MANIFEST_SUFFIX = ".manifest.json"
_EXPERT = re.compile(r"^(.+)\.experts\.(\d+)\.(.+)$")


def split_expert_name(name: str) -> Optional[Tuple[str, int, str]]:
    """'encoder.layers.1.fc1.experts.3.fc2.weight' -> ('encoder.layers.1.fc1', 3, 'fc2.weight')."""
    m = _EXPERT.match(name)
    return None if m is None else (m.group(1), int(m.group(2)), m.group(3))


def shift_expert_id(name: str, offset: int) -> str:
    """Local <-> global expert names: add `offset` to the expert id (other names unchanged)."""
    parts = split_expert_name(name)
    if parts is None or offset == 0:
        return name
    layer, e, rest = parts
    return f"{layer}.experts.{e + offset}.{rest}"


def shard_path(main_path: str, rank: int) -> str:
    """The file of rank `rank` (>= 1) next to the main file `main_path`."""
    if not main_path.endswith(".pt"):
        raise ValueError(f"checkpoint paths must end in .pt, got {main_path}")
    return f"{main_path[:-3]}-experts-rank{rank}.pt"


def shard_suffix(rank: int) -> str:
    return f"-experts-rank{rank}"


def files_of(num_experts: int, world_size: int) -> int:
    """Files per save: one per rank holding distinct experts."""
    return min(num_experts, world_size)


def experts_in_file(num_experts: int, world_size: int, file_rank: int) -> List[int]:
    return plan_layout(num_experts, world_size, file_rank).local_expert_ids


def switch_layers_of(model: nn.Module) -> List[str]:
    return [name for name, m in model.named_modules() if isinstance(m, SwitchFFN)]


def model_param_names(model: nn.Module, criterion: Optional[nn.Module] = None) -> List[str]:
    """Global names of the parameters fairseq's optimizer holds, in its order (Trainer._build_optimizer:
    trainable model parameters, then the criterion's)."""
    ffns = [m for m in model.modules() if isinstance(m, SwitchFFN)]
    first = ffns[0].layout.first_local_expert if ffns else 0
    names = [shift_expert_id(n, first) for n, p in model.named_parameters() if p.requires_grad]
    if criterion is not None:
        names += [f"criterion.{n}" for n, p in criterion.named_parameters() if p.requires_grad]
    return names


def derive_param_order(saved_names: Sequence[str], expert_ids: Sequence[int]) -> List[str]:
    """The optimizer order of a model holding `expert_ids`, from a saved order (rank 0's, which always
    includes expert 0 of each layer): a layer's experts are one contiguous block, expert by expert."""
    template: Dict[str, List[str]] = {}
    for n in saved_names:
        parts = split_expert_name(n)
        if parts is not None and parts[1] == 0:
            template.setdefault(parts[0], []).append(parts[2])
    out, done = [], set()
    for n in saved_names:
        parts = split_expert_name(n)
        if parts is None:
            out.append(n)
        elif parts[0] not in done:
            done.add(parts[0])
            out += [f"{parts[0]}.experts.{e}.{rest}" for e in expert_ids for rest in template[parts[0]]]
    return out


_SHARD_FILE = re.compile(r"^(.+)-experts-rank(\d+)\.pt$")
# the names fairseq-train saves under (a converted or resharded checkpoint.pt is not one of a run's saves)
SAVE_FILE = re.compile(r"^checkpoint(_last|_best|\d+|_\d+_\d+|\.best_.+?)\.pt$")


def manifest_path(main_path: str) -> str:
    return main_path[:-3] + MANIFEST_SUFFIX


def main_of(path: str) -> str:
    """checkpoint_last-experts-rank1.pt -> checkpoint_last.pt (a main file: itself)."""
    m = _SHARD_FILE.match(path)
    return path if m is None else m.group(1) + ".pt"
