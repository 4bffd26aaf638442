"""Several languages' span-corruption examples as one dataset (Fedus et al. 2021, Sec. 4.3).

Training samples languages as mT5 does: language l gets a share p_l = n_l^alpha / sum_k n_k^alpha
of each epoch (n_l: its training examples, i.e. its tokens over the fixed example length; alpha 0.3),
so small languages are seen more often than their size alone would give. An epoch holds as many
examples as all languages together; a language's examples are drawn as fresh permutations (every
example once before any repeats), and the epoch's plan is a function of (seed, epoch) only, so a
resumed run sees the same batches. Validation and test keep every example of every language, in
order. Each batch carries `lang`, the language index of each row.
"""

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from fairseq.data import FairseqDataset

logger = logging.getLogger(__name__)


def sampling_probs(sizes: Sequence[float], alpha: float) -> np.ndarray:
    """p_l proportional to size_l ** alpha (alpha 1: proportional to size; 0: uniform)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    if len(sizes) == 0 or (sizes <= 0).any():
        raise ValueError(f"every language needs data to be sampled, got sizes {sizes.tolist()}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"--language-alpha must be in [0, 1], got {alpha}; mT5 uses 0.3")
    w = sizes ** alpha
    return w / w.sum()


def epoch_plan(sizes: Sequence[int], probs: np.ndarray, seed: int, epoch: int) -> List[np.ndarray]:
    """For each language, the indices of its examples in this epoch (round(p_l * total), at least 1)."""
    total = int(np.sum(sizes))
    plan = []
    for lang, (n, p) in enumerate(zip(sizes, probs)):
        count = max(1, int(round(p * total)))
        rng = np.random.default_rng([seed, epoch, lang])
        reps = -(-count // n)
        plan.append(np.concatenate([rng.permutation(n) for _ in range(reps)])[:count].astype(np.int64))
    return plan


def draws(indices: np.ndarray, size: int) -> np.ndarray:
    """Which copy of its example each entry of a language's plan is: 0 in the first round, 1 in the second..."""
    return (np.arange(len(indices)) // max(size, 1)).astype(np.int64)


class MultilingualDataset(FairseqDataset):
    """Languages' datasets (same collater) under one index; `sample=True` draws the training mixture."""

    def __init__(self, datasets: Sequence[FairseqDataset], names: Sequence[str], sample: bool, alpha: float = 0.3,
                 seed: int = 1, epoch: int = 1):
        self.datasets = list(datasets)
        self.names = list(names)
        self.sample = sample
        self.seed = seed
        self.lang_sizes = [len(d) for d in self.datasets]
        self.probs = sampling_probs(self.lang_sizes, alpha) if sample else None
        self.epoch = None
        self.set_epoch(epoch)

    def _build(self, epoch: int) -> None:
        if self.sample:
            per_lang = epoch_plan(self.lang_sizes, self.probs, self.seed, epoch)
        else:
            per_lang = [np.arange(n, dtype=np.int64) for n in self.lang_sizes]
        self.lang = np.concatenate([np.full(len(ix), i, dtype=np.int64) for i, ix in enumerate(per_lang)])
        self.index = np.concatenate(per_lang)
        # an upsampled language repeats examples: each copy gets its own span noise
        self.draw = np.concatenate([draws(ix, n) for ix, n in zip(per_lang, self.lang_sizes)])
        self._sizes = np.concatenate([np.asarray(d.sizes)[ix] for d, ix in zip(self.datasets, per_lang)])
        self._num_tokens = np.concatenate([d.num_tokens_vec(ix) for d, ix in zip(self.datasets, per_lang)])

    def counts(self) -> dict:
        return {n: int((self.lang == i).sum()) for i, n in enumerate(self.names)}

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        return not self.sample  # the training mixture is drawn anew each epoch

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        for d in self.datasets:
            d.set_epoch(epoch)  # span corruption draws its noise per epoch
        if epoch != self.epoch:
            self.epoch = epoch
            self._build(epoch)
            if self.sample:
                logger.info(f"multilingual epoch {epoch}: examples per language {self.counts()}")

    def __getitem__(self, i: int) -> Dict[str, Any]:
        ds, j, k = self.datasets[self.lang[i]], int(self.index[i]), int(self.draw[i])
        item = ds.example(j, k) if k and hasattr(ds, "example") else ds[j]
        item["id"] = i  # this dataset's index, so the batch can say each row's language
        return item

    def __len__(self):
        return len(self.index)

    def collater(
        self, samples: List[Dict[str, Any]], pad_to_length: Optional[Dict[str, int]] = None
    ) -> Dict[str, Any]:
        batch = self.datasets[0].collater(samples, pad_to_length=pad_to_length)
        if batch:
            batch["lang"] = torch.from_numpy(self.lang[batch["id"].numpy()])
        return batch

    def num_tokens(self, index: int) -> int:
        return int(self._num_tokens[index])

    def num_tokens_vec(self, indices: np.ndarray) -> np.ndarray:
        return self._num_tokens[indices]

    def size(self, index: int) -> Union[int, Tuple[int, ...]]:
        return tuple(self._sizes[index]) if self._sizes.ndim > 1 else self._sizes[index]

    @property
    def sizes(self) -> np.ndarray:
        return self._sizes

    def ordered_indices(self) -> np.ndarray:
        if self.sample:
            order = np.random.default_rng([self.seed, self.epoch, len(self.names)]).permutation(len(self))
        else:
            order = np.arange(len(self), dtype=np.int64)
        sizes = self._sizes if self._sizes.ndim > 1 else self._sizes[:, None]
        for col in reversed(range(sizes.shape[1])):  # group by length without undoing the shuffle
            order = order[np.argsort(sizes[order, col], kind="mergesort")]
        return order

    @property
    def supports_prefetch(self) -> bool:
        return False
