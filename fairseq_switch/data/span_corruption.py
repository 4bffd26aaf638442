"""T5 span corruption (Raffel et al. 2019, Sec. 3.1.4), as a fairseq dataset.

A fixed-length chunk of tokens is split into alternating non-noise / noise spans exactly as T5's
`random_spans_noise_mask` does. Each noise span is replaced in the input by one unique sentinel
(<extra_id_0>, <extra_id_1>, ... in order); the target lists each sentinel followed by the tokens it
replaced, then (by default) one final sentinel, then EOS:

    tokens  = a b c d e f g h          noise = . . X X . . . Y
    source  = a b <0> e f g <1> </s>
    target  = <0> c d <1> h <2> </s>    (<2> is the final sentinel)

T5's own code (seqio `span_corruption`) omits the final sentinel: with an input length of 512 its
raw chunk is 568 tokens and its target 114; with the final sentinel the target is 115.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from fairseq.data import FairseqDataset
from fairseq.data.language_pair_dataset import collate

from .sentinels import sentinel_indices


@dataclass(frozen=True)
class SpanLayout:
    """Token counts of one corrupted example; they depend only on the chunk length."""

    length: int  # raw tokens in the chunk
    num_noise_tokens: int
    num_noise_spans: int

    @property
    def num_nonnoise_tokens(self) -> int:
        return self.length - self.num_noise_tokens


def span_layout(length: int, noise_density: float, mean_noise_span_length: float) -> SpanLayout:
    """Noise token and span counts for a chunk of `length` tokens, rounded as in T5."""
    if length < 1:
        raise ValueError(f"cannot corrupt an empty chunk (length {length})")
    padded = max(length, 2)  # T5 pads length 1 up to 2 and truncates the mask afterwards
    num_noise = int(round(padded * noise_density))
    num_noise = min(max(num_noise, 1), padded - 1)
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    # For length 1 the only token is non-noise once the mask is truncated.
    if length == 1:
        return SpanLayout(1, 0, 0)
    return SpanLayout(length, num_noise, num_spans)


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths of a uniformly random split of num_items into num_segments non-empty segments."""
    first_in_segment = np.zeros(num_items, dtype=bool)
    first_in_segment[1:] = rng.permutation(num_items - 1) < num_segments - 1
    segment_id = np.cumsum(first_in_segment)
    return np.bincount(segment_id, minlength=num_segments)


def random_spans_noise_mask(
    length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask of `length` tokens, True = noise (T5 `random_spans_noise_mask`).

    The chunk always starts with a non-noise span and ends with a noise span; the noise and
    non-noise token counts are each split into `num_noise_spans` random non-empty spans.
    """
    padded = max(length, 2)
    layout = span_layout(padded, noise_density, mean_noise_span_length)
    noise_lengths = _random_segmentation(layout.num_noise_tokens, layout.num_noise_spans, rng)
    nonnoise_lengths = _random_segmentation(layout.num_nonnoise_tokens, layout.num_noise_spans, rng)
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
    span_starts = np.cumsum(interleaved)[:-1]
    start_indicator = np.zeros(padded, dtype=np.int64)
    start_indicator[span_starts] = 1
    span_num = np.cumsum(start_indicator)
    return (span_num % 2 == 1)[:length]


def corrupt_spans(
    tokens: Sequence[int], noise_mask: np.ndarray, sentinels: Sequence[int], eos: int, final_sentinel: bool = True
) -> Tuple[List[int], List[int]]:
    """(source, target) token lists for `tokens` under `noise_mask` (see the module docstring)."""
    if len(tokens) != len(noise_mask):
        raise ValueError(f"{len(tokens)} tokens but a noise mask of length {len(noise_mask)}")
    source: List[int] = []
    target: List[int] = []
    span = -1
    previous_noise = False
    for token, noise in zip(tokens, noise_mask):
        if noise:
            if not previous_noise:
                span += 1
                if span >= len(sentinels):
                    raise ValueError(f"{span + 1} noise spans but only {len(sentinels)} sentinels")
                source.append(sentinels[span])
                target.append(sentinels[span])
            target.append(int(token))
        else:
            source.append(int(token))
        previous_noise = bool(noise)
    if final_sentinel:
        if span + 1 >= len(sentinels):
            raise ValueError(f"{span + 2} sentinels needed (with the final one) but only {len(sentinels)}")
        target.append(sentinels[span + 1])
    source.append(eos)
    target.append(eos)
    return source, target


def example_lengths(
    length: int, noise_density: float, mean_noise_span_length: float, final_sentinel: bool = True
) -> Tuple[int, int]:
    """(source, target) lengths, EOS included, of a corrupted chunk of `length` tokens."""
    layout = span_layout(length, noise_density, mean_noise_span_length)
    source = layout.num_nonnoise_tokens + layout.num_noise_spans + 1
    target = layout.num_noise_tokens + layout.num_noise_spans + int(final_sentinel) + 1
    return source, target


def raw_length_for_input(input_length: int, noise_density: float, mean_noise_span_length: float) -> int:
    """Largest raw chunk whose corrupted input (EOS included) fits `input_length` (T5 `random_spans_helper`).

    T5's numbers: input 512, density 0.15, mean span 3 -> raw chunk 568.
    """
    if input_length < 2:
        raise ValueError(f"input length must be >= 2 (one token and EOS), got {input_length}")
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise density must be in (0, 1), got {noise_density}")
    if mean_noise_span_length < 1.0:
        raise ValueError(f"mean noise span length must be >= 1, got {mean_noise_span_length}")
    def fits(length: int) -> bool:
        return example_lengths(length, noise_density, mean_noise_span_length)[0] <= input_length

    # the corrupted input grows with the chunk (never shrinks): bisect between a length that fits and one that
    # does not, rather than step through them all (--input-length 1000000 took seconds)
    low, high = 1, 2
    while fits(high):
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def max_input_length(sentinels: int, noise_density: float, mean_noise_span_length: float,
                     final_sentinel: bool) -> int:
    """The largest --input-length whose raw chunk needs at most `sentinels` sentinel tokens (0 if none does)."""
    def needed(length: int) -> int:
        return num_sentinels_needed(length, noise_density, mean_noise_span_length, final_sentinel)

    if needed(2) > sentinels:
        return 0
    low, high = 2, 4  # the longest raw chunk that fits: the count grows with the chunk
    while needed(high) <= sentinels:
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if needed(mid) <= sentinels else (low, mid)
    # every input shorter than the next chunk's corrupts at most `low` raw tokens
    return example_lengths(low + 1, noise_density, mean_noise_span_length, final_sentinel)[0] - 1


def num_sentinels_needed(length: int, noise_density: float, mean_noise_span_length: float, final_sentinel: bool) -> int:
    return span_layout(length, noise_density, mean_noise_span_length).num_noise_spans + int(final_sentinel)


class SpanCorruptionDataset(FairseqDataset):
    """Span-corrupted (source, target) pairs from a dataset of fixed-length token chunks.

    `chunks` yields 1-D LongTensors (e.g. a fairseq TokenBlockDataset over concatenated
    documents) and `chunk_sizes` their lengths. The noise mask of example `i` in epoch `e` is
    drawn from a generator seeded with (seed, e, i), so resuming reproduces every batch.
    """

    def __init__(
        self,
        chunks: Any,
        chunk_sizes: Sequence[int],
        dictionary: Any,
        noise_density: float = 0.15,
        mean_noise_span_length: float = 3.0,
        final_sentinel: bool = True,
        seed: int = 1,
        shuffle: bool = True,
    ):
        self.chunks = chunks
        self.dictionary = dictionary
        self.noise_density = noise_density
        self.mean_noise_span_length = mean_noise_span_length
        self.final_sentinel = final_sentinel
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 1
        chunk_sizes = np.asarray(chunk_sizes, dtype=np.int64)
        if len(chunk_sizes) != len(chunks):
            raise ValueError(f"{len(chunks)} chunks but {len(chunk_sizes)} sizes")
        if len(chunk_sizes) and chunk_sizes.min() < 1:
            raise ValueError("empty chunk in the span-corruption dataset")
        longest = int(chunk_sizes.max()) if len(chunk_sizes) else 1
        needed = num_sentinels_needed(longest, noise_density, mean_noise_span_length, final_sentinel)
        self.sentinels = sentinel_indices(dictionary, needed)
        lengths = {int(n): example_lengths(int(n), noise_density, mean_noise_span_length, final_sentinel)
                   for n in np.unique(chunk_sizes)}
        self.src_sizes = np.array([lengths[int(n)][0] for n in chunk_sizes], dtype=np.int64)
        self.tgt_sizes = np.array([lengths[int(n)][1] for n in chunk_sizes], dtype=np.int64)

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        return True  # batches depend on sizes only; the noise is drawn per epoch in __getitem__

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.epoch = epoch

    def noise_mask(self, index: int, length: int, draw: int = 0) -> np.ndarray:
        key = [self.seed, self.epoch, index] + ([draw] if draw else [])
        rng = np.random.default_rng(key)
        return random_spans_noise_mask(length, self.noise_density, self.mean_noise_span_length, rng)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self.example(index)

    def example(self, index: int, draw: int = 0) -> Dict[str, Any]:
        """Example `index`; `draw` > 0 corrupts it anew (its k-th copy in an epoch that repeats examples)."""
        tokens = self.chunks[index]
        mask = self.noise_mask(index, len(tokens), draw)
        source, target = corrupt_spans(
            tokens.tolist(), mask, self.sentinels, self.dictionary.eos(), self.final_sentinel
        )
        return {"id": index, "source": torch.tensor(source), "target": torch.tensor(target)}

    def __len__(self):
        return len(self.src_sizes)

    def collater(
        self, samples: List[Dict[str, Any]], pad_to_length: Optional[Dict[str, int]] = None
    ) -> Dict[str, Any]:
        return collate(
            samples,
            self.dictionary.pad(),
            self.dictionary.eos(),
            left_pad_source=False,
            left_pad_target=False,
            input_feeding=True,
            pad_to_length=pad_to_length,
        )

    def num_tokens(self, index: int) -> int:
        return max(self.src_sizes[index], self.tgt_sizes[index])

    def num_tokens_vec(self, indices: np.ndarray) -> np.ndarray:
        return np.maximum(self.src_sizes[indices], self.tgt_sizes[indices])

    def size(self, index: int) -> Tuple[int, int]:
        return (self.src_sizes[index], self.tgt_sizes[index])

    @property
    def sizes(self) -> np.ndarray:
        return np.vstack((self.src_sizes, self.tgt_sizes)).T

    def ordered_indices(self) -> np.ndarray:
        if self.shuffle:
            indices = np.random.default_rng([self.seed, self.epoch]).permutation(len(self))
        else:
            indices = np.arange(len(self), dtype=np.int64)
        # Group by length (only the last chunk of a split is shorter) without undoing the shuffle.
        indices = indices[np.argsort(self.tgt_sizes[indices], kind="mergesort")]
        return indices[np.argsort(self.src_sizes[indices], kind="mergesort")]

    @property
    def supports_prefetch(self) -> bool:
        return getattr(self.chunks, "supports_prefetch", False)

    def prefetch(self, indices: Sequence[int]) -> None:
        self.chunks.prefetch(indices)
