"""The vocabulary a checkpoint was trained with: a fingerprint of its dictionary in every save, compared
with the task's dictionary on every load, and embedding sizes checked before fairseq's load_state_dict
reports them as a shape mismatch."""

import hashlib
import logging
import os
from typing import TYPE_CHECKING, Any, Dict, Optional

import torch.nn as nn

from .names import RECORD_KEY

if TYPE_CHECKING:
    from fairseq.tasks import FairseqTask

logger = logging.getLogger(__name__)


def dictionary_record(dictionary: Any, source: str) -> dict:
    """What a checkpoint records of the dictionary it was trained with (a fairseq Dictionary, or its symbols):
    its symbols in order, hashed."""
    symbols = list(dictionary.symbols) if hasattr(dictionary, "symbols") else list(dictionary)
    digest = hashlib.sha256("\n".join(symbols).encode("utf-8")).hexdigest()[:16]
    return {"sha256": digest, "size": len(symbols), "source": source}


def check_dictionary(path: str, state: dict, expected: dict, allow_change: bool) -> None:
    """Refuse a checkpoint trained with another dictionary (same size or not); `expected` is
    `dictionary_record` of the task's dictionary."""
    saved = ((state.get("extra_state") or {}).get(RECORD_KEY) or {}).get("dictionary")
    if saved is None:
        logger.warning(f"{path} records no dictionary fingerprint (saved by an older version): only its vocabulary "
                       f"size was checked")
        return
    if saved["sha256"] == expected["sha256"]:
        return
    what = (f"{path} was trained with the dictionary of {saved['source']} ({saved['size']} symbols, "
            f"fingerprint {saved['sha256']}), but this task's dictionary, of {expected['source']} "
            f"({expected['size']} symbols, fingerprint {expected['sha256']}), is a different one")
    if allow_change:
        logger.warning(f"{what}; going on because of --allow-dictionary-change")
        return
    raise ValueError(
        f"{what}: token ids would mean other pieces and outputs would be garbage. Encode the data with the "
        f"checkpoint's own spm.model and dict.txt (scripts/prepare_downstream_data.py --pretrained <its data folder>), "
        f"or pass --allow-dictionary-change if the change is deliberate"
    )


def vocab_sizes(model: nn.Module) -> Dict[str, int]:
    """Rows of the embedding tables: the vocabulary the model was built for."""
    return {n: p.shape[0] for n, p in model.named_parameters() if n.endswith("embed_tokens.weight")}


def check_vocabulary(path: str, model_state: dict, sizes: Dict[str, int]) -> None:
    """fairseq would report a size mismatch deep inside load_state_dict; say what it means instead."""
    for name, rows in sizes.items():
        saved = model_state.get(name)
        if saved is not None and saved.shape[0] != rows:
            raise ValueError(
                f"{path} was trained with a vocabulary of {saved.shape[0]} symbols ({name}), but this task's "
                f"dictionary has {rows}: fine-tune on data encoded with the checkpoint's own SentencePiece model "
                f"and dict.txt (scripts/prepare_downstream_data.py --pretrained <its pretraining data folder, or the "
                f"folder scripts/convert_checkpoint.py wrote>)"
            )


def task_option(task: "FairseqTask", name: str, default: Any) -> Any:
    return getattr(getattr(task, "cfg", None), name, default)


def dictionary_of(task: "FairseqTask") -> Optional[dict]:
    d = getattr(task, "target_dictionary", None)
    if d is None:
        return None
    data = str(task_option(task, "data", "") or "").split(os.pathsep)[0]
    return dictionary_record(d, data or "the task's data")
