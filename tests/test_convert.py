"""Checkpoint conversion transformers <-> fairseq-switch (T5 layout): exact equivalence on tiny random models.

Three transformers models are built once from configs (no hub access), with a SentencePiece model trained
here with T5's ids (pad 0, eos 1, unk 2, no bos) and 4 sentinels (tokenizer_config.json extra_ids):
- t5_relu:   T5 v1.0 (ReLU, tied head), 2 + 3 layers, saved as model.safetensors by save_pretrained;
- t5_gated:  T5 v1.1 (gated-GELU, untied head), 4 heads x d_kv 8 != d_model 16, saved as pytorch_model.bin;
- switch:    SwitchTransformers, 4 experts in every other layer (sparse step 2), sharded safetensors.
"""

import json
import logging
import shutil
from pathlib import Path
from typing import Optional

import pytest
import torch

from fairseq_switch.convert import fairseq_to_transformers, transformers_to_fairseq
from fairseq_switch.convert.mapping import hf_sparse_ids, moe_freq_for, num_sparse_for, t5_layout_sparse_ids
from fairseq_switch.convert.compare import fairseq_batch as fairseq_inputs
from fairseq_switch.convert.vocabulary import fairseq_symbols


ROOT = Path(__file__).resolve().parents[1]
EXTRA_IDS = 4
D_MODEL = 16
WORDS = "the whale ship sea captain sailed over deep water with men boats harpoon white ocean storm wind".split()


def _quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """This module runs on one torch thread (see conftest)."""


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    import random

    import sentencepiece as spm

    d = tmp_path_factory.mktemp("spm")
    rng = random.Random(0)
    sents = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(300)]
    spm.set_random_generator_seed(1)
    spm.SentencePieceTrainer.train(  # T5's conventions (fairseq_switch/data/vocab.py trains fairseq's)
        sentence_iterator=iter(sents), model_prefix=str(d / "sp"), model_type="unigram", vocab_size=40,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        hard_vocab_limit=False, character_coverage=1.0, minloglevel=2, num_threads=1)
    return d / "sp.model"


def _n_pieces(spm_model) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(spm_model)).get_piece_size()


def _make(kind, vocab_size, expert_capacity=64):
    from transformers import (SwitchTransformersConfig, SwitchTransformersForConditionalGeneration, T5Config,
                              T5ForConditionalGeneration)

    torch.manual_seed({"t5_relu": 0, "t5_gated": 1, "switch": 2}[kind])
    common = dict(vocab_size=vocab_size, d_model=D_MODEL, d_ff=32, dropout_rate=0.1, decoder_start_token_id=0)
    if kind == "t5_relu":
        return T5ForConditionalGeneration(T5Config(d_kv=4, num_layers=2, num_decoder_layers=3, num_heads=4,
                                                   feed_forward_proj="relu", **common))
    if kind == "t5_gated":
        m = T5ForConditionalGeneration(T5Config(d_kv=8, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
                                                tie_word_embeddings=False, **common))
        m.lm_head.weight = torch.nn.Parameter(torch.randn(vocab_size, D_MODEL))  # a head of its own
        return m
    return SwitchTransformersForConditionalGeneration(SwitchTransformersConfig(
        d_kv=8, num_layers=4, num_decoder_layers=4, num_heads=2, num_experts=4, num_sparse_encoder_layers=2,
        num_sparse_decoder_layers=2,
        expert_capacity=expert_capacity, router_jitter_noise=0.0, **common))


KINDS = ("t5_relu", "t5_gated", "switch")


@pytest.fixture(scope="module")
def hf(spm_model, tmp_path_factory):
    """kind -> (folder, model in eval mode, vocab size)."""
    out = {}
    V = _n_pieces(spm_model) + EXTRA_IDS + 5  # 5 unused rows, the last becomes fairseq's <s>
    for kind in KINDS:
        d = tmp_path_factory.mktemp(f"hf_{kind}")
        m = _make(kind, V).eval()
        if kind == "t5_gated":  # the old single-file .bin layout
            m.config.save_pretrained(d)
            torch.save({k: v.clone() for k, v in m.state_dict().items()}, d / "pytorch_model.bin")
        elif kind == "switch":
            m.save_pretrained(d, max_shard_size="40KB")
            assert (d / "model.safetensors.index.json").is_file()
        else:
            m.save_pretrained(d)
        shutil.copy(spm_model, d / "spiece.model")
        (d / "tokenizer_config.json").write_text(json.dumps({"extra_ids": EXTRA_IDS}))
        out[kind] = (d, m, V)
    return out


def load_fairseq(ckpt: Path, data: Optional[Path] = None, **overrides):
    """The checkpoint as fairseq loads it, with its own flags (and its own folder as data unless `data`)."""
    from fairseq import checkpoint_utils

    if data:
        overrides["data"] = str(data)
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)], arg_overrides=overrides or None)
    return models[0].eval(), task


@pytest.fixture(scope="module")
def fs(hf, tmp_path_factory):
    """kind -> (output folder, fairseq model with the conversion's default flags, task)."""
    out = {}
    for kind in KINDS:
        d = tmp_path_factory.mktemp(f"fs_{kind}")
        transformers_to_fairseq(str(hf[kind][0]), str(d), log=_quiet)
        model, task = load_fairseq(d / "checkpoint.pt")  # no data folder: the conversion's is its own
        out[kind] = (d, model, task)
    return out


def batch(V, seed=0):
    """T5 ids: two sources (the second shorter: padded), decoder inputs starting with T5's start symbol 0."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, V, (2, 9), generator=g)
    src[:, -1] = 1
    mask = torch.ones_like(src)
    src[1, 6:] = 0  # right padding for transformers
    src[1, 5] = 1
    mask[1, 6:] = 0
    dec = torch.randint(3, V, (2, 6), generator=g)
    dec[:, 0] = 0
    return src, mask, dec


# -- units -----------------------------------------------------------------------------------
def test_sparse_layer_rules_follow_transformers():
    assert hf_sparse_ids(4, 2) == [1, 3] and hf_sparse_ids(4, 4) == [0, 1, 2, 3] and hf_sparse_ids(12, 3) == [1, 5, 9]
    assert hf_sparse_ids(4, 0) == [1]  # transformers' quirk: 0 sparse layers still builds layer 1 as sparse
    assert hf_sparse_ids(1, 0) == [0]
    assert t5_layout_sparse_ids(6, 2) == [1, 3, 5] and t5_layout_sparse_ids(3, 1) == [0, 1, 2]
    assert moe_freq_for([1, 3], [1, 3], 4, 4) == 2 and moe_freq_for([1, 5, 9], [1, 5, 9], 12, 12) == 4
    assert moe_freq_for([1, 3], [0, 1, 2, 3], 4, 4) is None  # different steps in encoder and decoder
    assert num_sparse_for(12, [1, 5, 9]) == 3 and num_sparse_for(4, [1, 3]) == 2 and num_sparse_for(4, [2]) is None


def test_dictionary_order_and_unused_row(spm_model, fs, hf):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    n, V = sp.get_piece_size(), hf["t5_relu"][2]
    lines = (fs["t5_relu"][0] / "dict.txt").read_text().splitlines()
    assert len(lines) == V - 4
    syms = [line.rsplit(" ", 1)[0] for line in lines]
    assert syms[: n - 3] == [sp.id_to_piece(i) for i in range(3, n)]  # fairseq id f = T5 id f - 1
    assert syms[n - 3: n - 3 + EXTRA_IDS] == ["<extra_id_3>", "<extra_id_2>", "<extra_id_1>", "<extra_id_0>"]
    assert syms[n - 3 + EXTRA_IDS:] == ["madeupword0000", "madeupword0001", "madeupword0002", "madeupword0003"]
    task = fs["t5_relu"][2]
    d = task.source_dictionary
    assert len(d) == V and d.index("<extra_id_0>") == n + EXTRA_IDS - 1 + 1 and d.index(sp.id_to_piece(5)) == 6
    assert (fs["t5_relu"][0] / "spm.model").read_bytes() == spm_model.read_bytes()
    with pytest.raises(ValueError, match=r"vocab_size 10 leaves no unused row for fairseq's <s>.*needs V > 10"):
        fairseq_symbols(["p"] * 6, 4, 10)
    assert len(fairseq_symbols([f"p{i}" for i in range(6)], 4, 11)) == 7


# -- equivalence -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_encoder_and_logits_match_transformers(kind, hf, fs):
    _, hm, V = hf[kind]
    model = fs[kind][1]
    src, mask, dec = batch(V)
    fsrc, lengths, prev = fairseq_inputs(src, mask, dec, V)
    with torch.no_grad():
        ho = hm(input_ids=src, attention_mask=mask, decoder_input_ids=dec)
        enc = model.encoder(fsrc, src_lengths=lengths)
        logits, _ = model.decoder(prev, encoder_out=enc)
    x = enc["encoder_out"][0].transpose(0, 1)
    for i in range(2):
        n = int(lengths[i])
        torch.testing.assert_close(x[i, -n:], ho.encoder_last_hidden_state[i, :n], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.roll(logits, -1, dims=-1), ho.logits, atol=1e-5, rtol=0)
    if kind == "switch":  # the comparison covers routing: tokens went to several experts, none was dropped
        for ffn in model.switch_ffns:
            stats = ffn.last_routing.stats
            assert int((stats.expert_counts > 0).sum()) >= 2 and int(stats.num_dropped) == 0


@pytest.mark.parametrize("kind", ["t5_gated", "switch"])
def test_incremental_decoding_equals_full_forward(kind, hf, fs):
    V, model = hf[kind][2], fs[kind][1]
    src, mask, dec = batch(V, seed=1)
    fsrc, lengths, prev = fairseq_inputs(src, mask, dec, V)
    with torch.no_grad():
        enc = model.encoder(fsrc, src_lengths=lengths)
        full, _ = model.decoder(prev, encoder_out=enc)
        state, steps = {}, []
        for t in range(prev.size(1)):
            out, _ = model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)
            steps.append(out[:, -1])
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_generation_matches_transformers(kind, hf, fs):
    from fairseq.sequence_generator import SequenceGenerator

    _, hm, V = hf[kind]
    model, task = fs[kind][1], fs[kind][2]
    src, mask, _ = batch(V, seed=2)
    fsrc, lengths, _ = fairseq_inputs(src, mask, torch.zeros(2, 1, dtype=torch.long), V)
    gen = SequenceGenerator([model], task.target_dictionary, beam_size=1, max_len_a=0, max_len_b=8, min_len=1)
    with torch.no_grad():
        hyps = gen.generate([model], {"net_input": {"src_tokens": fsrc, "src_lengths": lengths}})
    for i in range(2):
        fs_t5 = ((hyps[i][0]["tokens"] - 1) % V).tolist()  # back to T5 ids; ends with eos (1)
        n = int(lengths[i])
        # fairseq never picks <pad>, T5's 0; min_len=1 forbids eos first
        out = hm.generate(input_ids=src[i: i + 1, :n], max_new_tokens=len(fs_t5), do_sample=False, num_beams=1,
                          suppress_tokens=[0], min_new_tokens=1, use_cache=False)
        hf_toks = out[0, 1:].tolist()  # after the decoder start symbol
        assert hf_toks[: len(fs_t5) - 1] == fs_t5[:-1], (kind, i)
        if 1 in hf_toks[: len(fs_t5)]:  # transformers stopped too: at the same eos
            assert hf_toks[: len(fs_t5)] == fs_t5


def _states_equal(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_is_bit_exact_and_transformers_loads_it(kind, hf, fs, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    _, hm, V = hf[kind]
    d = fs[kind][0]
    back = tmp_path / "hf"
    fairseq_to_transformers(str(d / "checkpoint.pt"), str(back), log=_quiet)
    cfg = json.loads((back / "config.json").read_text())
    assert cfg["model_type"] == ("switch_transformers" if kind == "switch" else "t5")
    assert (back / "spiece.model").read_bytes() == (hf[kind][0] / "spiece.model").read_bytes()
    assert json.loads((back / "tokenizer_config.json").read_text())["extra_ids"] == EXTRA_IDS
    source = json.loads((hf[kind][0] / "config.json").read_text())
    assert {k: (source.get(k), cfg.get(k)) for k in set(source) | set(cfg) if source.get(k) != cfg.get(k)} == {}
    m2 = AutoModelForSeq2SeqLM.from_pretrained(str(back)).eval()
    _states_equal({k: v for k, v in hm.state_dict().items()}, dict(m2.state_dict()))
    src, mask, dec = batch(V, seed=3)
    with torch.no_grad():
        assert torch.equal(hm(input_ids=src, attention_mask=mask, decoder_input_ids=dec).logits,
                           m2(input_ids=src, attention_mask=mask, decoder_input_ids=dec).logits)
    again = tmp_path / "fs"
    transformers_to_fairseq(str(back), str(again), log=_quiet)
    a = torch.load(d / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(again / "checkpoint.pt", weights_only=True)["model"]
    _states_equal(a, b)
    assert (again / "dict.txt").read_text() == (d / "dict.txt").read_text()


def test_sharded_pytorch_bin_reads_like_safetensors(hf, fs, tmp_path):
    d = tmp_path / "bin_shards"
    d.mkdir()
    for name in ("config.json", "spiece.model", "tokenizer_config.json"):
        shutil.copy(hf["t5_relu"][0] / name, d / name)
    state = {k: v.clone() for k, v in hf["t5_relu"][1].state_dict().items() if k != "lm_head.weight"}
    names = sorted(state)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:]), 1):
        fn = f"pytorch_model-0000{i}-of-00002.bin"
        torch.save({n: state[n] for n in part}, d / fn)
        weight_map.update({n: fn for n in part})
    (d / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    transformers_to_fairseq(str(d), str(tmp_path / "out"), log=_quiet)
    _states_equal(torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)["model"],
                  torch.load(fs["t5_relu"][0] / "checkpoint.pt", weights_only=True)["model"])


def test_expert_parallel_write_equals_plain_after_resharding(hf, fs, tmp_path):
    from fairseq_switch.checkpoints import META_KEY, SavedCheckpoint
    from fairseq_switch.distributed import plan_layout

    plain = torch.load(fs["switch"][0] / "checkpoint.pt", weights_only=True)
    out = tmp_path / "ep2"
    transformers_to_fairseq(str(hf["switch"][0]), str(out), world_size=2, log=_quiet)
    assert sorted(p.name for p in out.glob("checkpoint*.pt")) == ["checkpoint-experts-rank1.pt", "checkpoint.pt"]
    main = torch.load(out / "checkpoint.pt", weights_only=True)
    shard = torch.load(out / "checkpoint-experts-rank1.pt", weights_only=True)
    meta = main[META_KEY]
    assert (meta["world_size"], meta["num_experts"]) == (2, 4) and shard[META_KEY]["save_id"] == meta["save_id"]
    assert meta["switch_layers"] == [f"{s}.layers.{i}.fc1" for s in ("encoder", "decoder") for i in (1, 3)]
    assert {k.split(".experts.")[1].split(".")[0] for k in shard["model"]} == {"2", "3"}  # global ids
    assert not any(".experts.2." in k or ".experts.3." in k for k in main["model"])
    saved = SavedCheckpoint(str(out / "checkpoint.pt"), main)
    _states_equal(saved.state_for(plan_layout(4, 1, 0), optimizer=False)["model"], plain["model"])
    # and back to transformers from the sharded save: the same tensors as from the plain one
    a, b = tmp_path / "hf_plain", tmp_path / "hf_ep"
    fairseq_to_transformers(str(fs["switch"][0] / "checkpoint.pt"), str(a), log=_quiet)
    fairseq_to_transformers(str(out / "checkpoint.pt"), str(b), log=_quiet)
    from safetensors.torch import load_file

    idx = json.loads((b / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(idx.values())) == 2  # one shard per fairseq file
    tb = {}
    for f in set(idx.values()):
        tb.update(load_file(b / f))
    _states_equal(load_file(a / "model.safetensors"), tb)


def _binarize_pairs(conv: Path, out: Path):
    """text_to_text data encoded with the converted spm.model and dict.txt, binarized by fairseq's own preprocess
    in this process (what scripts/prepare_downstream_data.py --pretrained <conv> does, minus two interpreters)."""
    import sentencepiece as spm
    from fairseq import options
    from fairseq_cli import preprocess

    sp = spm.SentencePieceProcessor(model_file=str(conv / "spm.model"))
    raw = out / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 16), ("valid", 4), ("test", 4)):
        pairs = [(" ".join(WORDS[i % 7: i % 7 + 5]), WORDS[i % 9]) for i in range(n)]
        for lang, k in (("input", 0), ("target", 1)):
            (raw / f"{split}.{lang}").write_text("".join(" ".join(sp.encode(p[k], out_type=str)) + "\n" for p in pairs))
    args = options.get_preprocessing_parser().parse_args([
        "--source-lang", "input", "--target-lang", "target", "--srcdict", str(conv / "dict.txt"),
        "--tgtdict", str(conv / "dict.txt"), "--trainpref", str(raw / "train"), "--validpref", str(raw / "valid"),
        "--testpref", str(raw / "test"), "--destdir", str(out), "--workers", "1"])
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        preprocess.main(args)
    finally:  # preprocess.main logs to <destdir>/preprocess.log through a handler on the root logger
        for h in root.handlers[len(before):]:
            root.removeHandler(h)
            h.close()


def _restore_in_process(data: Path, ckpt: Path, flags, save_dir: Path):
    """fairseq-train --restore-file CKPT up to its first update, in this process: fairseq's Trainer and
    checkpoint_utils.load_checkpoint, as fairseq_cli.train.main calls them."""
    from fairseq import checkpoint_utils, options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.logging import metrics
    from fairseq.trainer import Trainer

    from tests.helpers import USER_DIR

    argv = [str(data), "--user-dir", USER_DIR, "--task", "text_to_text", "--arch", "switch_transformer", *flags,
            "--criterion", "switch_cross_entropy", "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "2048",
            "--restore-file", str(ckpt), "--save-dir", str(save_dir), "--cpu", "--num-workers", "0"]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    model, criterion = task.build_model(cfg.model), task.build_criterion(cfg.criterion)
    trainer = Trainer(cfg, task, model, criterion)
    _, epoch_itr = checkpoint_utils.load_checkpoint(cfg.checkpoint, trainer)
    saved = torch.load(ckpt, weights_only=True)["model"]  # rank 0's file: shared weights and experts 0, 1
    state = trainer.get_model().state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items() if k in state and ".experts." not in k)
    assert (epoch_itr.epoch, trainer.get_num_updates()) == (1, 0)
    with metrics.aggregate(new_root=True):  # keep this step's meters out of the process-wide ones
        trainer.train_step([next(epoch_itr.next_epoch_itr(shuffle=False))])
    assert trainer.get_num_updates() == 1


def test_fairseq_train_finetunes_and_generates_a_converted_switch_model(hf, tmp_path, monkeypatch):
    """An expert-sharded conversion: fairseq-train --finetune-from-model, then fairseq-generate on the result;
    and a plain --restore-file (no optimizer state in a conversion: fairseq starts a fresh one)."""
    from tests.test_text_to_text import BIN, fairseq_train, run

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the subprocesses' tiny matmuls, as in one_thread
    conv = tmp_path / "conv"
    transformers_to_fairseq(str(hf["switch"][0]), str(conv), world_size=2, log=_quiet)
    flags = json.loads((conv / "conversion.json").read_text())["fairseq_flags"]
    data = tmp_path / "bin"
    _binarize_pairs(conv, data)
    model_flags = ["--arch", "switch_transformer", *flags]
    fairseq_train(data, tmp_path / "ft", "text_to_text", 2,
                  [*model_flags, "--finetune-from-model", conv / "checkpoint.pt"])
    gen = run([BIN / "fairseq-generate", data, "--user-dir", ROOT / "fairseq_switch", "--task", "text_to_text",
               "--path", tmp_path / "ft" / "checkpoint_last.pt", "--gen-subset", "test", "--beam", "1",
               "--max-len-b", "5", "--batch-size", "4", "--cpu"])
    assert sum(line.startswith("H-") for line in gen.stdout.splitlines()) == 4
    # a checkpoint fairseq-train wrote (optimizer state and all) converts back to transformers
    from transformers import AutoModelForSeq2SeqLM

    fairseq_to_transformers(str(tmp_path / "ft" / "checkpoint_last.pt"), str(tmp_path / "hf_ft"),
                            spm_model=str(conv / "spm.model"), log=_quiet)
    tuned = AutoModelForSeq2SeqLM.from_pretrained(str(tmp_path / "hf_ft")).eval()
    model, _ = load_fairseq(tmp_path / "ft" / "checkpoint_last.pt", data)
    V = hf["switch"][2]
    src, mask, dec = batch(V, seed=4)
    fsrc, lengths, prev = fairseq_inputs(src, mask, dec, V)
    with torch.no_grad():
        logits, _ = model(fsrc, lengths, prev)
        ref = tuned(input_ids=src, attention_mask=mask, decoder_input_ids=dec).logits
    torch.testing.assert_close(torch.roll(logits, -1, dims=-1), ref, atol=1e-5, rtol=0)
    _restore_in_process(data, conv / "checkpoint.pt", flags, tmp_path / "rs")


# -- bad input -------------------------------------------------------------------------------
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _config(d: Path, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def _expect(folder, out, pattern, written=False):
    with pytest.raises((ValueError, FileNotFoundError), match=pattern) as e:
        transformers_to_fairseq(str(folder), str(out), log=_quiet)
    assert "\n" not in str(e.value)
    assert (Path(out) / "checkpoint.pt").exists() == written


def test_bad_transformers_folders_fail_with_one_clear_line(hf, tmp_path):
    relu, switch = hf["t5_relu"][0], hf["switch"][0]
    out = tmp_path / "out"
    d = _copy(relu, tmp_path / "noconfig")
    (d / "config.json").unlink()
    _expect(d, out, r"noconfig is not a transformers T5/Switch folder: it has no config.json")
    d = _copy(relu, tmp_path / "bert")
    _config(d, model_type="bert")
    _expect(d, out, r"model_type 'bert'; only T5 \('t5'\) and SwitchTransformers")
    d = _copy(relu, tmp_path / "silu")
    _config(d, feed_forward_proj="gated-silu")
    _expect(d, out, r"feed_forward_proj 'gated-silu' is not supported; T5 models with 'relu'")
    d = _copy(switch, tmp_path / "bias")
    _config(d, router_bias=True)
    _expect(d, out, r"router_bias true is not supported")
    d = _copy(switch, tmp_path / "steps")
    _config(d, num_sparse_decoder_layers=4)
    _expect(d, out, r"encoder layers \[1, 3\] and decoder layers \[0, 1, 2, 3\].*same --moe-freq step")
    d = _copy(relu, tmp_path / "noweights")
    (d / "model.safetensors").unlink()
    _expect(d, out, r"noweights has no weights: expected model.safetensors")
    d = _copy(relu, tmp_path / "corrupt")
    blob = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    _expect(d, out, r"weight file .*corrupt/model.safetensors is corrupt")
    d = _copy(switch, tmp_path / "noshard")
    sorted(d.glob("model-0*.safetensors"))[1].unlink()
    _expect(d, out, r"index.json names the shard model-0000\d-of-0000\d.safetensors, which is missing")
    d = _copy(relu, tmp_path / "notensor")
    from safetensors.torch import load_file, save_file

    t = load_file(d / "model.safetensors")
    del t["decoder.block.2.layer.1.EncDecAttention.k.weight"]
    save_file(t, d / "model.safetensors", metadata={"format": "pt"})
    _expect(d, out, r"tensor decoder.block.2.layer.1.EncDecAttention.k.weight is missing")
    d = _copy(relu, tmp_path / "fullvocab")
    (d / "tokenizer_config.json").write_text(json.dumps({"extra_ids": 9}))  # sentinels reach the last row
    _expect(d, out, r"leaves no unused row for fairseq's <s>")
    d = _copy(relu, tmp_path / "nospm")
    (d / "spiece.model").unlink()
    _expect(d, out, r"has no spiece.model .*pass its path with --spm-model")
    transformers_to_fairseq(str(d), str(out), spm_model=str(relu / "spiece.model"), log=_quiet)  # the fix works
    _expect(relu, out, r"checkpoint.pt already exists; pass --overwrite", written=True)


def test_bad_fairseq_checkpoints_fail_with_one_clear_line(hf, fs, tmp_path):
    out = tmp_path / "out"
    state = torch.load(fs["t5_relu"][0] / "checkpoint.pt", weights_only=True)
    state["cfg"]["model"].layout = "fairseq"
    torch.save(state, tmp_path / "fairseq_layout.pt")
    with pytest.raises(ValueError, match=r"is a fairseq-layout model \(--layout fairseq\): only --layout t5"):
        fairseq_to_transformers(str(tmp_path / "fairseq_layout.pt"), str(out), log=_quiet)
    ep = tmp_path / "ep"
    transformers_to_fairseq(str(hf["switch"][0]), str(ep), world_size=2, log=_quiet)
    (ep / "checkpoint-experts-rank1.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"checkpoint-experts-rank1.pt is missing: .* saved by 2"):
        fairseq_to_transformers(str(ep / "checkpoint.pt"), str(out), log=_quiet)
    with pytest.raises(FileNotFoundError, match=r"nothing.pt does not exist"):
        fairseq_to_transformers(str(tmp_path / "nothing.pt"), str(out), log=_quiet)
    assert not (out / "config.json").exists()


def test_cli_reports_errors_in_one_line_and_exit_2(hf, tmp_path, capsys):
    from fairseq_switch.convert import cli

    assert cli.main(["to-fairseq", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convert_checkpoint: error: ") and err.count("\n") == 1 and "missing is not a folder" in err
    assert cli.main(["to-fairseq", str(hf["t5_relu"][0]), str(tmp_path / "out")]) == 0
    assert "[convert] done:" in capsys.readouterr().out
    assert cli.main(["to-transformers", str(tmp_path / "out" / "checkpoint.pt"), str(tmp_path / "hf"),
                     "--max-shard-size", "20KB"]) == 0
    assert len(json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())["weight_map"]) > 1
