"""`multilingual_span_corruption`: span corruption over many languages (Fedus et al. 2021, Sec. 4.3).

The data folder is what `scripts/prepare_multilingual_data.py` writes: one shared `dict.txt`
(SentencePiece pieces + sentinels) and one folder per language with its binarized splits:

    dict.txt  spm.model  de/{train,valid,test}.{bin,idx}  ja/...  ...

Training mixes the languages by (examples)^alpha (mT5's alpha = 0.3, data/multilingual.py).
Validation logs, next to the overall loss, each language's negative log perplexity
(`valid_de_neg_log_perplexity`, ...), in the JSON log and tensorboard, for
scripts/multilingual_report.py (Fig. 7 and 8).
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

import torch
from fairseq import utils
from fairseq.logging import metrics
from fairseq.tasks import register_task

from ..data.language_mixture import MultilingualDataset, sampling_probs
from .span_corruption import SpanCorruptionConfig, SpanCorruptionTask

logger = logging.getLogger(__name__)

NLL, NTOK = "lang_nll:", "lang_ntok:"


@dataclass
class MultilingualSpanCorruptionConfig(SpanCorruptionConfig):
    languages: str = field(
        default="",
        metadata={"help": "comma-separated language folders under --data to train and validate on; "
                          "empty: every folder there that holds a train split"},
    )
    language_alpha: float = field(
        default=0.3,
        metadata={"help": "sample language l with probability proportional to (its examples)^alpha: 1 = by size, "
                          "0 = uniform; mT5 uses 0.3"},
    )


def available_languages(root: str) -> List[str]:
    if not os.path.isdir(root):
        return []
    return sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "train.idx")))


def select_rows(sample: dict, rows: torch.Tensor, pad: int) -> dict:
    """The batch restricted to some of its rows (every per-row tensor indexed, counts recomputed)."""
    B = sample["target"].size(0)

    def pick(v: Any) -> Any:
        return v.index_select(0, rows) if torch.is_tensor(v) and v.dim() and v.size(0) == B else v

    out = {k: ({kk: pick(vv) for kk, vv in v.items()} if k == "net_input" else pick(v)) for k, v in sample.items()}
    out["ntokens"] = int(out["target"].ne(pad).sum())
    out["nsentences"] = int(rows.numel())
    return out


def _add(a: Any, b: Any) -> Any:
    return b if a is None else a + b


@register_task("multilingual_span_corruption", dataclass=MultilingualSpanCorruptionConfig)
class MultilingualSpanCorruptionTask(SpanCorruptionTask):
    cfg: MultilingualSpanCorruptionConfig
    prepare_script = "scripts/prepare_multilingual_data.py"

    def __init__(self, cfg: MultilingualSpanCorruptionConfig, dictionary: Any):
        super().__init__(cfg, dictionary)
        root = utils.split_paths(cfg.data)[0]
        found = available_languages(root)
        self.languages = [x.strip() for x in cfg.languages.split(",") if x.strip()] if cfg.languages else found
        if not self.languages:
            raise FileNotFoundError(
                f"multilingual_span_corruption: no language folders with a train split under {root}; prepare the "
                f"data with `python scripts/prepare_multilingual_data.py --out {root} <text per language>`"
            )
        missing = [x for x in self.languages if x not in found]
        if missing:
            raise FileNotFoundError(
                f"multilingual_span_corruption: no data for language(s) {', '.join(missing)} under {root} "
                f"(no {os.path.join(root, missing[0], 'train.idx')}); languages there: {', '.join(found) or 'none'}. "
                f"Fix --languages or prepare them with scripts/prepare_multilingual_data.py"
            )
        if len(set(self.languages)) != len(self.languages):
            raise ValueError(f"--languages lists a language twice: {cfg.languages}")
        sampling_probs([1] * len(self.languages), cfg.language_alpha)  # checks alpha now

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs: Any) -> None:
        paths = utils.split_paths(self.cfg.data)
        root = paths[(epoch - 1) % len(paths)]
        datasets = []
        for lang in self.languages:
            path = os.path.join(root, lang, split)
            if not os.path.isfile(path + ".idx"):
                raise FileNotFoundError(
                    f"multilingual_span_corruption: language {lang!r} has no {split} split ({path}.bin/.idx); "
                    f"prepare it with scripts/prepare_multilingual_data.py or drop it from --languages"
                )
            if os.path.getsize(path + ".bin") == 0:
                raise ValueError(f"multilingual_span_corruption: language {lang!r}: its {split} split is empty "
                                 f"({path}.bin holds no tokens); give it text or drop it from --languages")
            try:
                datasets.append(self.span_corruption_dataset(path, f"{split} [{lang}]", combine))
            except ValueError as e:
                raise ValueError(f"multilingual_span_corruption: language {lang!r}: {e}") from None
        train = split == "train"  # fairseq's default train subset; every other split is read whole
        ds = MultilingualDataset(datasets, self.languages, sample=train, alpha=self.cfg.language_alpha,
                                 seed=self.cfg.seed, epoch=epoch)
        if train:
            shares = ", ".join(f"{n} {p:.3f}" for n, p in zip(self.languages, ds.probs))
            logger.info(f"multilingual {split}: {len(ds)} examples per epoch, sampled with alpha "
                        f"{self.cfg.language_alpha}: {shares}")
        self.datasets[split] = ds

    def valid_step(
        self, sample: Dict[str, Any], model: torch.nn.Module, criterion: Any
    ) -> Tuple[Any, Any, Dict[str, Any]]:
        """The criterion on each language's rows: the batch's logs plus each language's nll and tokens."""
        if "lang" not in sample:
            return super().valid_step(sample, model, criterion)
        total_loss, total_size, merged = 0.0, 0, {}
        for lang in torch.unique(sample["lang"]).tolist():
            rows = (sample["lang"] == lang).nonzero(as_tuple=True)[0]
            sub = select_rows(sample, rows, self.dictionary.pad())
            loss, size, log = super().valid_step(sub, model, criterion)
            total_loss, total_size = total_loss + loss, total_size + size
            for k, v in log.items():
                merged[k] = _add(merged.get(k), v)
            name = self.languages[lang]
            merged[NLL + name] = log["nll_loss"]
            merged[NTOK + name] = log["ntokens"]
        return total_loss, total_size, merged

    def reduce_metrics(self, logging_outputs: List[Dict[str, Any]], criterion: Any) -> None:
        super().reduce_metrics(logging_outputs, criterion)
        totals: Dict[str, List[float]] = {}
        for log in logging_outputs:
            for k, v in log.items():
                if k.startswith(NLL):
                    name = k[len(NLL):]
                    t = totals.setdefault(name, [0.0, 0.0])
                    t[0] += float(v)
                    t[1] += float(log.get(NTOK + name, 0))
        for name, (nll, ntok) in totals.items():
            if ntok > 0:  # the paper's quality measure (Sec. 3), per language (nats per target token)
                metrics.log_scalar(f"{name}_neg_log_perplexity", -nll / ntok, ntok, round=4)
