"""Shared helpers: build a fairseq model from CLI-style args without data on disk."""

from pathlib import Path

import torch
from fairseq import options
from fairseq.data import Dictionary
from fairseq.tasks.translation import TranslationTask

import fairseq_switch
from fairseq_switch.plugin import register

# an earlier import of a light module of the package (logs, data.corpus, ...) left it unregistered
register()
USER_DIR = str(Path(fairseq_switch.__file__).parent)


def make_dictionary(num_words=60):
    d = Dictionary()
    for i in range(num_words):
        d.add_symbol(f"w{i}")
    return d


def build(arch="switch_tiny", extra=(), dictionary=None):
    d = dictionary or make_dictionary()
    parser = options.get_training_parser()
    argv = ["/nonexistent", "--user-dir", USER_DIR, "--arch", arch, "--task", "translation", "-s", "src", "-t", "tgt"]
    argv += ["--criterion", "switch_cross_entropy", *extra]
    args = options.parse_args_and_arch(parser, argv)
    task = TranslationTask(args, d, d)
    return args, task, task.build_model(args)


def random_batch(d, bsz=3, src_len=7, tgt_len=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(d.nspecial, len(d), (bsz, src_len), generator=g)
    src[0, :2] = d.pad()  # left-padded source, as fairseq batches it
    tgt = torch.randint(d.nspecial, len(d), (bsz, tgt_len), generator=g)
    tgt[-1, -1] = d.pad()
    prev = torch.cat([torch.full((bsz, 1), d.eos()), tgt[:, :-1]], 1)
    prev[tgt.eq(d.pad())] = d.pad()  # fairseq's collater pads both at the same positions
    lengths = src.ne(d.pad()).sum(1)
    return {
        "net_input": {"src_tokens": src, "src_lengths": lengths, "prev_output_tokens": prev},
        "target": tgt,
        "ntokens": int(tgt.ne(d.pad()).sum()),
    }


def fairseq_preprocess_in_process(args) -> str:
    """fairseq-preprocess `args` in this process (a subprocess spends seconds importing fairseq again); its log.

    Tests put it in place of fairseq_switch.data.vocab.run_fairseq_preprocess with monkeypatch."""
    import logging

    from fairseq_cli import preprocess

    parsed = options.get_preprocessing_parser().parse_args(args)
    loggers = [logging.getLogger(), logging.getLogger("fairseq_cli.preprocess")]
    before = [list(lg.handlers) for lg in loggers]
    try:
        preprocess.main(parsed)
    finally:  # preprocess.main adds a FileHandler for <destdir>/preprocess.log at every call
        for lg, kept in zip(loggers, before):
            for h in [h for h in lg.handlers if h not in kept]:
                lg.removeHandler(h)
                h.close()
    return (Path(parsed.destdir) / "preprocess.log").read_text()
