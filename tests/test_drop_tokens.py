"""lab/reports/drop_tokens.py: the token classes its routing breakdown uses."""

import torch
from fairseq.data import Dictionary

from fairseq_switch.lab.reports.drop_tokens import CLASSES, token_classes


def test_token_classes_start_sentinel_eos_other():
    d = Dictionary()
    s0, s1, word = d.add_symbol("<extra_id_0>"), d.add_symbol("<extra_id_1>"), d.add_symbol("word")
    # time-major [T, B]: two sequences
    toks = torch.tensor([[d.eos(), d.eos()], [s0, word], [word, s1], [d.eos(), d.pad()]])
    dec = token_classes(toks, d, decoder=True)
    names = [[CLASSES[int(c)] for c in row] for row in dec]
    assert names == [["start", "start"], ["sentinel", "other"], ["other", "sentinel"], ["eos", "other"]]
    enc = token_classes(toks, d, decoder=False)
    assert CLASSES[int(enc[0, 0])] == "eos"  # the encoder has no start position
