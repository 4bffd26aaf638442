"""A converted model next to its transformers source: one batch in both layouts, and the logits compared
in T5's vocabulary order (the tests and `lab/bench/convert_base.py`)."""

from typing import Sequence, Tuple

import torch


def t5_batch(lengths: Sequence[int], tgt_len: int, vocab_size: int,
             seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random T5 ids as transformers takes them: sources of `lengths` right-padded to the longest, each
    ending with eos, their attention mask, and decoder inputs starting with T5's start symbol 0."""
    g = torch.Generator().manual_seed(seed)
    src = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(src)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(3, vocab_size, (n,), generator=g)
        src[i, n - 1] = 1
        mask[i, :n] = 1
    dec = torch.randint(3, vocab_size, (len(lengths), tgt_len), generator=g)
    dec[:, 0] = 0
    return src, mask, dec


def fairseq_batch(src: torch.Tensor, mask: torch.Tensor, dec: torch.Tensor,
                  vocab_size: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same batch in fairseq's layout: left-padded source, lengths, decoder input starting with </s>
    (which the T5 layout reads as T5's start). fairseq id f is T5 id f - 1 mod V (vocabulary.py)."""
    fsrc = torch.full_like(src, 1)  # fairseq's <pad>
    for i in range(src.size(0)):
        toks = (src[i][mask[i].bool()] + 1) % vocab_size
        fsrc[i, src.size(1) - len(toks):] = toks
    prev = (dec + 1) % vocab_size
    prev[:, 0] = 2
    return fsrc, mask.sum(1), prev


def fairseq_logits(model: torch.nn.Module, src: torch.Tensor, mask: torch.Tensor, dec: torch.Tensor,
                   vocab_size: int) -> Tuple[torch.Tensor, int]:
    """A fairseq-switch model's teacher-forced logits on a transformers batch, in T5's vocabulary order, and
    the tokens its Switch layers dropped."""
    with torch.no_grad():
        logits, extra = model(*fairseq_batch(src, mask, dec, vocab_size))
    dropped = sum(int(r.stats.num_dropped) for r in extra.get("moe_routing", []) if r is not None)
    return torch.roll(logits, -1, dims=-1), dropped
