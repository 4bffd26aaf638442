"""A toy binarized corpus for fairseq-train: random documents over a sentinel dictionary.

The tests' expert-parallel harness and the device check's dry run train on it (no data preparation,
no SentencePiece).
"""

import os
from pathlib import Path

import torch

from fairseq_switch.data.sentinels import sentinel_symbols

NUM_WORDS = 50


def write_dictionary(folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    words = sentinel_symbols() + [f"w{i}" for i in range(NUM_WORDS)]
    Path(folder, "dict.txt").write_text("".join(f"{w} 1\n" for w in words))


def write_corpus(folder: str, num_docs: int = 200, seed: int = 0) -> None:
    """A binarized `train` split of random documents over the dictionary's words, for fairseq-train."""
    from fairseq.data import Dictionary, indexed_dataset

    write_dictionary(folder)
    d = Dictionary.load(os.path.join(folder, "dict.txt"))
    first = d.index("w0")
    g = torch.Generator().manual_seed(seed)
    builder = indexed_dataset.make_builder(os.path.join(folder, "train.bin"), impl="mmap", vocab_size=len(d))
    for _ in range(num_docs):
        n = int(torch.randint(20, 80, (1,), generator=g))
        doc = torch.randint(first, first + NUM_WORDS, (n,), generator=g)
        builder.add_item(torch.cat([doc, torch.tensor([d.eos()])]).to(torch.int32))
    builder.finalize(os.path.join(folder, "train.idx"))
