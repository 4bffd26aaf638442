"""The vocabulary on both sides: fairseq's dictionary rows against T5's ids and SentencePiece model.

fairseq's Dictionary puts <s>=0, <pad>=1, </s>=2, <unk>=3 first; T5 has pad=0, eos=1,
unk=2, SentencePiece pieces 3..n_spm-1, then the sentinels (<extra_id_j> at n_spm+extra-1-j) and unused
rows up to vocab_size-1. fairseq row f is T5 row (f-1) mod V: pad, eos and unk land on fairseq's
<pad>, </s>, <unk>, and fairseq's <s> takes T5's last row, which must be unused.
"""

from typing import TYPE_CHECKING, List, Sequence, Tuple

import torch

from ..data.vocab import BUILTIN_SYMBOLS

if TYPE_CHECKING:
    import sentencepiece as spm

T5_PAD, T5_EOS, T5_UNK = 0, 1, 2


def to_fairseq_rows(t: torch.Tensor) -> torch.Tensor:
    """T5 rows -> fairseq rows: fairseq row f is T5 row (f - 1) mod V."""
    return torch.roll(t, 1, dims=0)


def to_t5_rows(t: torch.Tensor) -> torch.Tensor:
    return torch.roll(t, -1, dims=0)


def check_t5_spm(sp: "spm.SentencePieceProcessor", where: str) -> None:
    """The SentencePiece model must use T5's ids for pad, eos and unk (and have no bos)."""
    got = (sp.pad_id(), sp.eos_id(), sp.unk_id())
    if got != (T5_PAD, T5_EOS, T5_UNK) or sp.bos_id() >= 0:
        raise ValueError(f"{where} is not a T5 SentencePiece model: pad/eos/unk/bos ids are {got + (sp.bos_id(),)}, "
                         f"T5 uses 0/1/2 and no bos")


def fairseq_symbols(pieces: Sequence[str], extra_ids: int, vocab_size: int) -> List[str]:
    """fairseq symbols 4..V-1 (dict.txt, in order) for T5 pieces `pieces` (ids 0..n_spm-1), `extra_ids`
    sentinels and vocab_size rows."""
    n_spm = len(pieces)
    if vocab_size - 1 < n_spm + extra_ids:
        raise ValueError(
            f"vocab_size {vocab_size} leaves no unused row for fairseq's <s>: the SentencePiece model has {n_spm} "
            f"pieces and {extra_ids} sentinels follow them, so T5's last row {vocab_size - 1} is in use (fairseq row "
            f"0 takes T5 row V-1; the vocabulary needs V > {n_spm + extra_ids})")
    syms = list(pieces[3:])
    syms += [f"<extra_id_{extra_ids - 1 - j}>" for j in range(extra_ids)]  # T5 id n_spm + j
    syms += [f"madeupword{k:04d}" for k in range(vocab_size - 1 - n_spm - extra_ids)]
    seen, dup = set(BUILTIN_SYMBOLS), []
    for s in syms:
        if s in seen:
            dup.append(s)
        seen.add(s)
    bad = [s for s in syms if not s or any(c.isspace() for c in s)]
    if dup or bad:
        raise ValueError(f"the vocabulary cannot be written as a fairseq dict.txt: "
                         f"{'duplicate symbols ' + repr(dup[:5]) if dup else ''}"
                         f"{' symbols with whitespace ' + repr(bad[:5]) if bad else ''}")
    assert len(syms) == vocab_size - len(BUILTIN_SYMBOLS)
    return syms


def dict_text(symbols: Sequence[str]) -> str:
    return "".join(f"{s} 0\n" for s in symbols)


def spm_pieces(spm_path: str) -> Tuple[List[str], object]:
    import sentencepiece as spm

    try:
        sp = spm.SentencePieceProcessor(model_file=spm_path)
    except Exception as e:
        raise ValueError(f"{spm_path} is not a SentencePiece model ({e})") from None
    check_t5_spm(sp, spm_path)
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())], sp

