"""What the vocabulary can write, and what data preparation says about it.

Byte fallback (the default of prepare_pretraining_data.py / prepare_multilingual_data.py): a character
the vocabulary lacks (£ € @ # + curly quotes, an emoji) becomes its UTF-8 byte pieces, which are in
dict.txt like any piece, and decodes back to itself. prepare_downstream_data.py records and prints the
<unk> rates and length percentiles of each split and warns about truncation and <unk>.

Every script's main() runs in this process on tiny inputs (a subprocess imports fairseq again: seconds).
"""

import collections
import io
import json
from pathlib import Path

import pytest

from fairseq_switch.lab.corpora.prepare import downstream
from fairseq_switch.lab.corpora.prepare import multilingual_data as multi
from fairseq_switch.lab.corpora.prepare import pretraining as pretrain
from fairseq_switch.data import pair_encoding, vocab
from tests.helpers import fairseq_preprocess_in_process

ROOT = Path(__file__).resolve().parents[1]
MOBY = (ROOT / "data" / "moby_dick" / "moby_dick.txt").read_text(encoding="utf-8").splitlines()[:40]
NEWS = "Shares rose £5 (€6) @BBC #markets +1.5, the “experts” said 🐳"
TINY = ["--valid-words", "30", "--test-words", "30", "--vocab-size", "460"]


def fairseq_ids(folder: Path, text: str):
    import sentencepiece as spm
    from fairseq.data import Dictionary

    sp = spm.SentencePieceProcessor(model_file=str(folder / "spm.model"))
    d = Dictionary.load(str(folder / "dict.txt"))
    return sp, d, [d.index(p) for p in sp.encode(text, out_type=str)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("moby40")
    (d / "moby.txt").write_text("\n".join(MOBY) + "\n", encoding="utf-8")
    return d / "moby.txt"


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    """One folder prepared as before byte fallback was the default, then re-run (older record, default):
    (folder, {run name: stdout, prepare.json})."""
    out = tmp_path_factory.mktemp("bf") / "bin"
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vocab, "run_fairseq_preprocess", fairseq_preprocess_in_process)
        capture = io.StringIO()
        mp.setattr("sys.stdout", capture)

        def run(name, *extra):
            capture.seek(0)
            capture.truncate()
            assert pretrain.main(["--out", str(out), *TINY, *extra, str(corpus)]) == 0
            runs[name] = capture.getvalue(), json.loads((out / "prepare.json").read_text())
            if name == "without":
                runs[name] += (fairseq_ids(out, NEWS),)

        run("without", "--no-byte-fallback")
        stamp = json.loads((out / "prepare.json").read_text())  # a folder from before <unk> was counted
        for k in ("unk", "unk_percent"):
            del stamp["encode"]["stats"][k]
        (out / "prepare.json").write_text(json.dumps(stamp))
        run("recount", "--no-byte-fallback")
        run("default")
    return out, runs


def test_byte_fallback_round_trips_news_characters(prepared):
    out, runs = prepared
    sp, d, ids = fairseq_ids(out, NEWS)
    assert d.unk() not in ids and sp.decode(ids) == NEWS
    for text in ("£", "€", "@", "#", "+", "“", "”", "🐳"):
        pieces = sp.encode(text, out_type=str)
        assert d.unk_word not in pieces and sp.decode([d.index(p) for p in pieces]) == text
    assert [sp.id_to_piece(i) for i in sp.encode("£")] == ["▁", "<0xC2>", "<0xA3>"]
    # the byte pieces are ids 104..359 in both, right after the sentinels; fairseq ids == SentencePiece ids
    lines = (out / "dict.txt").read_text(encoding="utf-8").splitlines()
    assert [line.split()[0] for line in lines[100:356]] == [f"<0x{b:02X}>" for b in range(256)]
    assert len(d) == sp.get_piece_size() == 460
    assert all(d[i] == sp.id_to_piece(i) for i in range(4, len(d)))
    # without byte fallback (the option), the same text has <unk>s
    without_sp, without_d, without_ids = runs["without"][2]
    assert without_d.unk() in without_ids and without_sp.decode(without_ids) != NEWS
    for text in ("£", "€", "@", "#", "+", "“", "”", "🐳"):
        assert without_d.unk() in [without_d.index(p) for p in without_sp.encode(text, out_type=str)], text


def test_changed_default_rebuilds_sentencepiece_and_old_records_are_recounted(prepared):
    _, runs = prepared
    log, stamp = runs["without"][:2]
    assert "byte_fallback" not in stamp["spm"]["key"]  # as folders prepared before the option had it
    assert "2/4 SentencePiece unigram, vocab 460, on" in log and "no byte fallback" in log
    log, stamp = runs["recount"]
    assert "2/4 SentencePiece: up to date" in log and "3/4 encoding: up to date" not in log
    assert set(stamp["encode"]["stats"]["unk"]) == {"train", "valid", "test"}
    log, stamp = runs["default"]
    assert "1/4 documents: up to date" in log and "2/4 SentencePiece unigram, vocab 460 (byte fallback), on" in log
    assert stamp["spm"]["key"]["byte_fallback"] is True
    stats = stamp["encode"]["stats"]
    assert stats["unk"] == {"train": 0, "valid": 0, "test": 0}
    assert stats["unk_percent"] == {"train": 0.0, "valid": 0.0, "test": 0.0}
    for s in ("train", "valid", "test"):
        assert f"[prepare]   {s:5s}: {stats['tokens'][s]:10,d} tokens, 0 <unk> (0.0000%)" in log.splitlines()
    assert "(100 sentinels, 256 byte pieces)" in log


def test_encode_file_counts_unk_pieces(char_spm, tmp_path):
    sp, _ = char_spm
    text = tmp_path / "t.txt"
    text.write_text("ab £c\nd€€ e\n", encoding="utf-8")  # pieces ▁ a b ▁ £ c | ▁ d €€ ▁ e: 11, 2 unknown
    counts = collections.Counter()
    assert vocab.encode_file(sp, text, tmp_path / "t.pieces", 1, counts) == (11, 2)
    assert (tmp_path / "t.pieces").read_text(encoding="utf-8") == "▁ a b ▁ £ c\n▁ d €€ ▁ e\n"
    assert counts["▁"] == 4 and vocab.unk_percent(2, 11) == 18.1818


def test_vocab_size_too_small_for_byte_fallback(tmp_path, capsys):
    for main in (pretrain.main, multi.main):
        with pytest.raises(SystemExit) as exc:
            main(["--out", str(tmp_path / "o"), "--vocab-size", "300"])
        assert exc.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1].endswith(
            "error: --vocab-size 300 is too small (4 specials + 100 sentinels + 256 byte pieces + pieces); use "
            "--vocab-size 456 or more, or --no-byte-fallback (then >= 200; characters the vocabulary lacks become "
            "<unk>)")
    # above the minimum, but not enough for the text's characters as well: what it needs, in one line
    wide = tmp_path / "wide.txt"
    cjk = "".join(chr(0x4E00 + i) for i in range(120))
    wide.write_text("".join(f"{line} {cjk}\n" for line in MOBY if line), encoding="utf-8")
    out = tmp_path / "wide"
    with pytest.raises(SystemExit) as exc:
        pretrain.main(["--out", str(out), *TINY[:4], "--vocab-size", "456", str(wide)])
    assert exc.value.code == 2
    chars = len(set((out / "raw" / "train.txt").read_text(encoding="utf-8").replace("\n", "").replace(" ", "▁")))
    assert capsys.readouterr().err == (
        f"error: --vocab-size 456 is too small for the training text: 4 specials + 100 sentinels + 256 byte pieces "
        f"and its {chars} distinct characters need {360 + chars}; use --vocab-size {360 + chars} or more (or "
        f"--no-byte-fallback, which frees 256)\n")


# ---------------------------------------------------------------------------------------------
# prepare_downstream_data.py: lengths, truncation and <unk>, hand-computed on a character vocabulary

@pytest.fixture(scope="module")
def char_spm(tmp_path_factory):
    """A --pretrained folder whose SentencePiece model has one piece per character of "abcdefghij" (and
    ▁), without byte fallback: every text's pieces can be counted by hand, and £ € are <unk>."""
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("charvocab")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["abcdefghij", "j i h g f e d c b a"]),
                                   model_prefix=str(d / "spm"), model_type="char", vocab_size=15,
                                   character_coverage=1.0, bos_id=0, pad_id=1, eos_id=2, unk_id=3, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(d / "spm.model"))
    vocab.write_fairseq_dict(sp, collections.Counter(), d / "dict.txt")
    return sp, d


def write_pairs(folder: Path, split: str, pairs) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps({"input": i, "target": t}) + "\n" for i, t in pairs),
                                           encoding="utf-8")


def test_downstream_records_lengths_unk_and_warns(char_spm, tmp_path, capsys, monkeypatch):
    _, pretrained = char_spm
    monkeypatch.setattr(vocab, "run_fairseq_preprocess", fairseq_preprocess_in_process)
    pairs = tmp_path / "pairs"
    # train: inputs of 1..10 characters = 2..11 pieces (▁ first) = 3..12 tokens with </s>; targets "b" (3 tokens)
    # and twice "b£" (4 tokens, one <unk>); plus one empty pair, which is counted but not measured
    train = [("abcdefghij"[:n], "b£" if n in (3, 8) else "b") for n in range(1, 11)]
    write_pairs(pairs, "train", train + [("", "x")])
    write_pairs(pairs, "valid", [("abc", "c"), ("ab", "d")])  # inputs 5 and 4 tokens, targets 3
    argv = ["--pretrained", str(pretrained), "--out", str(tmp_path / "out"), "--max-input-tokens", "8", str(pairs)]
    assert downstream.main(argv) == 0
    first = capsys.readouterr().out
    record = json.loads((tmp_path / "out" / "prepare.json").read_text())
    # sorted train input lengths 3..12: p50 = 5th = 7, p90 = 9th = 11, p99 = 10th = 12; over 8: 9..12
    assert record["lengths"] == {
        "train": {"input": {"p50": 7, "p90": 11, "p99": 12, "max": 12, "count": 10, "over_limit": 4,
                            "over_limit_percent": 40.0},
                  "target": {"p50": 3, "p90": 4, "p99": 4, "max": 4, "count": 10, "over_limit": 0,
                             "over_limit_percent": 0.0}},
        "valid": {"input": {"p50": 4, "p90": 5, "p99": 5, "max": 5, "count": 2, "over_limit": 0,
                            "over_limit_percent": 0.0},
                  "target": {"p50": 3, "p90": 3, "p99": 3, "max": 3, "count": 2, "over_limit": 0,
                             "over_limit_percent": 0.0}}}
    # kept input tokens: 3+4+5+6+7 + 5*8 (cut) = 65; target tokens 8*3 + 2*4 = 32, of them 2 <unk> = 6.25%
    train = record["counts"]["train"]
    assert (train["input_tokens"], train["input_unk"], train["target_tokens"], train["target_unk"]) == (65, 0, 32, 2)
    assert (train["input_truncated"], train["empty"]) == (4, 1)
    assert record["unk_percent"] == {"train": {"input": 0.0, "target": 6.25}, "valid": {"input": 0.0, "target": 0.0}}
    assert record["unknown_characters"] == {"£": 2} and record["byte_fallback"] is False
    spm_path = pretrained / "spm.model"
    expected = [
        "[prepare]   tokens (incl. </s>)     p50    p90    p99    max       over limit    <unk>",
        "[prepare]   train input               7     11     12     12        40.0% > 8   0.000%",
        "[prepare]   train target              3      4      4      4       0.0% > 128   6.250%",
        "[prepare]   valid input               4      5      5      5         0.0% > 8   0.000%",
        "[prepare]   valid target              3      3      3      3       0.0% > 128   0.000%",
        "[prepare] warning: 4 of 10 train inputs (40.0%) are longer than --max-input-tokens 8 and were truncated "
        "(p90 of train: 11 tokens); raise --max-input-tokens to keep more of each input",
        f"[prepare] warning: 6.250% of the train target tokens are <unk> (more than 0.1%; characters the vocabulary "
        f"lacks: £): {spm_path} has no byte fallback, so they become <unk> and a reference holding one can never be "
        f"matched; prepare the pretraining data again with scripts/prepare_pretraining_data.py (byte fallback is its "
        f"default), pretrain on it, and prepare this data again",
    ]
    lines = first.splitlines()
    start = lines.index(expected[0])
    assert lines[start:start + len(expected)] == expected
    # an up-to-date run prints the same report
    assert downstream.main(argv) == 0
    again = capsys.readouterr().out
    assert "up to date" in again and again.splitlines()[-len(expected):] == expected


def test_downstream_below_the_thresholds_does_not_warn(prepared, tmp_path, capsys, monkeypatch):
    out, _ = prepared  # byte fallback: £ € and the emoji are bytes, not <unk>
    monkeypatch.setattr(vocab, "run_fairseq_preprocess", fairseq_preprocess_in_process)
    pairs = tmp_path / "pairs"
    write_pairs(pairs, "train", [(f"{MOBY[2]} {NEWS}", NEWS)] * 3)
    write_pairs(pairs, "valid", [(NEWS, "€ 🐳")])
    assert downstream.main(["--pretrained", str(out), "--out", str(tmp_path / "o"), str(pairs)]) == 0
    log = capsys.readouterr().out
    record = json.loads((tmp_path / "o" / "prepare.json").read_text())
    assert record["byte_fallback"] is True and record["unknown_characters"] == {}
    assert all(v == 0.0 for sides in record["unk_percent"].values() for v in sides.values())
    assert "warning" not in log


def test_nearest_rank_percentiles_and_warning_thresholds():
    assert [pair_encoding.nearest_rank(list(range(1, 11)), p) for p in (50, 90, 99, 100)] == [5, 9, 10, 10]
    assert pair_encoding.nearest_rank([7], 1) == 7 and pair_encoding.nearest_rank([], 50) == 0
    at = {"train": {"input": pair_encoding.length_stats([1] * 9 + [9], 8),
                    "target": pair_encoding.length_stats([1], 8)}}
    assert at["train"]["input"]["over_limit_percent"] == 10.0
    assert pair_encoding.truncation_warnings(at, {"input": 8, "target": 8}, "truncate") == []  # 10% is not more
    assert pair_encoding.unk_warning({"train": {"input": 0.1, "target": 0.0}}, {}, False, "spm.model") is None
    drop = {s: {"input": pair_encoding.length_stats([1, 9], 8), "target": pair_encoding.length_stats([1], 8)}
            for s in ("train", "valid")}
    assert pair_encoding.truncation_warnings(drop, {"input": 8, "target": 8}, "drop") == [
        "warning: 1 of 2 train inputs (50.0%), 1 of 2 valid inputs (50.0%) are longer than "
        "--max-input-tokens 8 and were left out (--overlong drop) (p90 of train: 9 tokens); raise "
        "--max-input-tokens to keep more of each input"]
