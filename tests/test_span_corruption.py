"""T5 span corruption (Raffel et al. 2019, Sec. 3.1.4): noise masks, sentinel layout, lengths and reconstruction."""

import numpy as np
import pytest
import torch
from fairseq.data import Dictionary

from fairseq_switch.data.sentinels import sentinel_indices, sentinel_symbols
from fairseq_switch.data.span_corruption import (
    SpanCorruptionDataset,
    corrupt_spans,
    example_lengths,
    random_spans_noise_mask,
    raw_length_for_input,
    span_layout,
)


def spans_of(mask):
    """(start, end) of each run of True."""
    runs, start = [], None
    for i, m in enumerate(list(mask) + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    return runs


def reconstruct(source, target, sentinels, eos):
    """Put each target span back at its sentinel in the source."""
    sentinel_set = set(sentinels)
    spans, current = {}, None
    for tok in target[:-1]:
        if tok in sentinel_set:
            current = tok
            spans[current] = []
        else:
            spans[current].append(tok)
    out = []
    for tok in source[:-1]:
        out.extend(spans[tok] if tok in sentinel_set else [tok])
    assert source[-1] == eos and target[-1] == eos
    return out


def make_dict(num_sentinels=100, words=50):
    d = Dictionary()
    for s in sentinel_symbols(num_sentinels):
        d.add_symbol(s)
    for i in range(words):
        d.add_symbol(f"w{i}")
    return d


def test_hand_checked_example():
    # tokens a..h = 10..17, noise on c d and h
    tokens = [10, 11, 12, 13, 14, 15, 16, 17]
    mask = np.array([0, 0, 1, 1, 0, 0, 0, 1], dtype=bool)
    s0, s1, s2 = 100, 101, 102
    source, target = corrupt_spans(tokens, mask, [s0, s1, s2], eos=2, final_sentinel=True)
    assert source == [10, 11, s0, 14, 15, 16, s1, 2]
    assert target == [s0, 12, 13, s1, 17, s2, 2]
    source, target = corrupt_spans(tokens, mask, [s0, s1, s2], eos=2, final_sentinel=False)
    assert target == [s0, 12, 13, s1, 17, 2]


def test_t5_lengths():
    # T5: inputs 512, density 0.15, mean span 3 -> raw chunk 568, target 114 (115 with the final sentinel)
    assert raw_length_for_input(512, 0.15, 3.0) == 568
    assert example_lengths(568, 0.15, 3.0, final_sentinel=False) == (512, 114)
    assert example_lengths(568, 0.15, 3.0, final_sentinel=True) == (512, 115)
    layout = span_layout(568, 0.15, 3.0)
    assert (layout.num_noise_tokens, layout.num_noise_spans) == (85, 28)  # round(85.2), round(85/3)


@pytest.mark.parametrize("length", [2, 3, 7, 20, 141, 568])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_counts_and_layout(length, seed):
    mask = random_spans_noise_mask(length, 0.15, 3.0, np.random.default_rng(seed))
    layout = span_layout(length, 0.15, 3.0)
    assert mask.shape == (length,)
    assert mask.sum() == layout.num_noise_tokens == min(max(round(length * 0.15), 1), length - 1)
    runs = spans_of(mask)
    assert len(runs) == layout.num_noise_spans
    assert not mask[0] and mask[-1]  # starts with a non-noise span, ends with a noise span
    # non-noise spans between noise spans are non-empty (the runs are maximal)
    assert all(b[0] > a[1] for a, b in zip(runs, runs[1:]))


def test_mean_span_length_and_density_over_many_chunks():
    rng = np.random.default_rng(0)
    masks = [random_spans_noise_mask(568, 0.15, 3.0, rng) for _ in range(200)]
    noise = sum(m.sum() for m in masks)
    spans = sum(len(spans_of(m)) for m in masks)
    assert noise / (568 * 200) == pytest.approx(85 / 568)
    assert noise / spans == pytest.approx(85 / 28)
    # span lengths vary (random segmentation), they are not all equal to the mean
    lengths = {e - s for m in masks[:20] for s, e in spans_of(m)}
    assert len(lengths) > 3


def test_length_one_chunk_is_not_corrupted():
    mask = random_spans_noise_mask(1, 0.15, 3.0, np.random.default_rng(0))
    assert mask.tolist() == [False]
    assert example_lengths(1, 0.15, 3.0, True) == (2, 2)
    assert corrupt_spans([7], mask, [100], eos=2) == ([7, 2], [100, 2])


def test_dataset_items_reconstruct_sentinel_order_and_determinism():
    d = make_dict()
    rng = np.random.default_rng(5)
    chunks = [torch.tensor(rng.integers(104, len(d), size=n)) for n in [141] * 6 + [40]]
    ds = SpanCorruptionDataset(chunks, [len(c) for c in chunks], d, seed=3)
    sentinels = sentinel_indices(d, 100)
    for i in range(len(ds)):
        item = ds[i]
        src, tgt = item["source"].tolist(), item["target"].tolist()
        assert (len(src), len(tgt)) == tuple(ds.size(i))
        used = [t for t in tgt if t in set(sentinels)]
        assert used == sentinels[: len(used)]  # <extra_id_0>, <extra_id_1>, ... in order, final one last
        assert [t for t in src if t in set(sentinels)] == used[:-1]
        assert reconstruct(src, tgt, sentinels, d.eos()) == chunks[i].tolist()
    assert ds.size(0) == (128, 30)  # 141 raw tokens: 21 noise in 7 spans; 7 + 1 sentinels, EOS
    # same seed, epoch and index -> same example; another epoch -> another mask
    again = SpanCorruptionDataset(chunks, [len(c) for c in chunks], d, seed=3)
    assert torch.equal(again[2]["source"], ds[2]["source"])
    again.set_epoch(2)
    assert not torch.equal(again[2]["source"], ds[2]["source"])
    batch = ds.collater([ds[i] for i in range(len(ds))])
    assert batch["net_input"]["src_tokens"].shape == (7, 128)
    assert batch["net_input"]["prev_output_tokens"][:, 0].eq(d.eos()).all()


def test_dictionary_without_sentinels_gets_clear_error():
    d = make_dict(num_sentinels=5)
    chunks = [torch.arange(104, 245) % len(d)]
    with pytest.raises(ValueError, match=r"lacks sentinel tokens.*8 are needed.*first missing <extra_id_5>.*"
                                         r"prepare_pretraining_data\.py"):
        SpanCorruptionDataset(chunks, [141], d)


def test_bad_lengths_rejected():
    with pytest.raises(ValueError, match="noise density"):
        raw_length_for_input(128, 1.5, 3.0)
    with pytest.raises(ValueError, match="input length"):
        raw_length_for_input(1, 0.15, 3.0)
    with pytest.raises(ValueError, match="sentinels"):
        corrupt_spans([1, 2, 3, 4], np.array([0, 1, 0, 1], bool), [100], eos=2)
