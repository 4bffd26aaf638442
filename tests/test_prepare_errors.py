"""Bad input to the data preparation scripts: one `error:` line naming the file (or option) and the fix, exit 2.

Every script's main() runs in this process on tiny inputs: a subprocess would import fairseq again (seconds).
"""

import gzip
import json
import re
from pathlib import Path

import pytest

from fairseq_switch.lab.corpora.prepare import demo_pairs as demo
from fairseq_switch.lab.corpora.prepare import downstream
from fairseq_switch.lab.corpora.prepare import multilingual_data as multi
from fairseq_switch.lab.corpora.prepare import pretraining as pretrain
from fairseq_switch.lab.corpora.prepare.documents import spm_pieces
from fairseq_switch.lab import project
from fairseq_switch.data import corpus, vocab
from fairseq_switch.data.pairs import read_pairs
from tests.helpers import fairseq_preprocess_in_process

ROOT = Path(__file__).resolve().parents[1]
MOBY = (ROOT / "data" / "moby_dick" / "moby_dick.txt").read_text(encoding="utf-8").splitlines()
BAD = "The pale Usher.\nSome years ago \xff\xfe never mind how long.\nCall me Ishmael.\n".encode("latin-1")
BAD_OFFSET = BAD.index(b"\xff")  # 31: the second line's 16th byte
FIX = ("convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8), or pass --bad-utf8 replace (bad bytes become U+FFFD) "
       "or --bad-utf8 skip (drop the lines holding them)")
TINY = ["--valid-words", "30", "--test-words", "30"]


def one_line_error(capsys, main, argv) -> str:
    """main(argv) exits 2 printing exactly one `error: ...` line and no traceback; that line."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    assert exc.value.code == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    lines = out.err.splitlines()
    assert len(lines) == 1, out.err
    return lines[0]


def bad_utf8_line(path: Path, offset: int = BAD_OFFSET, line: int = 2, value: int = 0xFF) -> str:
    return f"{path}: not UTF-8 at byte offset {offset} (line {line}: 0x{value:02x}); {FIX}"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A --pretrained folder for prepare_downstream_data.py: a tiny spm.model and a dict.txt."""
    d = tmp_path_factory.mktemp("pretrained")
    vocab.train_spm(MOBY[:20], d / "spm", 300, seed=1)
    (d / "dict.txt").write_text("")
    return d


@pytest.fixture
def preprocess_in_process(monkeypatch):
    """fairseq-preprocess in this process (a subprocess spends seconds importing fairseq again)."""
    monkeypatch.setattr(vocab, "run_fairseq_preprocess", fairseq_preprocess_in_process)


# ---------------------------------------------------------------------------------------------
# 1. invalid UTF-8 (or a binary file): the file, the byte offset and the fix; nothing written

def test_invalid_utf8_pretraining_names_file_and_offset_and_keeps_previous_record(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(BAD)
    out = tmp_path / "out"
    out.mkdir()
    record = json.dumps({"split": {"key": {"earlier": 1}, "stats": {"documents": 3}}})
    (out / "prepare.json").write_text(record)
    assert one_line_error(capsys, pretrain.main, ["--out", out, *TINY, bad]) == "error: " + bad_utf8_line(bad)
    assert (out / "prepare.json").read_text() == record  # an earlier run's record is not invalidated
    assert not (out / "raw" / "train.txt").exists()


@pytest.mark.parametrize("script", ["multilingual", "downstream", "demo"])
def test_invalid_utf8_other_scripts(script, tmp_path, capsys, pretrained):
    out = tmp_path / "out"
    if script == "multilingual":
        bad = tmp_path / "xx.txt"
        bad.write_bytes(BAD)
        argv, prefix, main = ["--out", out, bad], "language 'xx': ", multi.main
    elif script == "downstream":
        bad = tmp_path / "train.jsonl"
        pairs = b'{"input": "a b", "target": "c"}\n{"input": "d \xc3(", "target": "e"}\n'  # \xc3( is not UTF-8
        bad.write_bytes(pairs)
        (tmp_path / "valid.jsonl").write_text('{"input": "a", "target": "b"}\n')
        argv, prefix, main = ["--pretrained", pretrained, "--out", out, tmp_path], "", downstream.main
    else:
        bad = tmp_path / "bad.txt"
        bad.write_bytes(BAD)
        argv, prefix, main = ["--out", out, "--text", bad], "", demo.main
    expected = bad_utf8_line(bad, pairs.index(b"\xc3"), 2, 0xC3) if script == "downstream" else bad_utf8_line(bad)
    assert one_line_error(capsys, main, argv) == f"error: {prefix}{expected}"
    assert not (out / "prepare.json").exists() and not (out / "demo_data.json").exists()


def test_gzip_named_txt_is_called_gzip(tmp_path, capsys):
    packed = tmp_path / "corpus.txt"
    packed.write_bytes(gzip.compress(b"Call me Ishmael.\n"))
    assert one_line_error(capsys, pretrain.main, ["--out", tmp_path / "out", packed]) == (
        f"error: {packed}: not UTF-8 at byte offset 1 (line 1: 0x8b); it is gzip-compressed: name it .gz")


# ---------------------------------------------------------------------------------------------
# 2. a .gz file that is not gzip

def test_gz_that_is_not_gzip(tmp_path, capsys, pretrained):
    fix = ("not gzip data, although the name ends in .gz; if it is plain text, rename it without .gz, else "
           "decompress it and give the text file")
    fake = tmp_path / "c4.json.gz"
    fake.write_text('{"text": "Call me Ishmael."}\n')
    assert one_line_error(capsys, pretrain.main, ["--out", tmp_path / "out", fake]) == f"error: {fake}: {fix}"
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "train.tsv.gz").write_text("input\ttarget\na\tb\n")
    (pairs / "valid.tsv").write_text("input\ttarget\na\tb\n")
    assert one_line_error(capsys, downstream.main, ["--pretrained", pretrained, "--out", tmp_path / "o2", pairs]) == (
        f"error: {pairs / 'train.tsv.gz'}: {fix}")


def test_damaged_gzip_is_named(tmp_path):
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(gzip.compress(b"Call me Ishmael.\n" * 50)[:-12])
    with pytest.raises(corpus.CorpusError, match=re.escape(f"{cut}: damaged gzip data (")):
        list(corpus.read_lines(cut))


# ---------------------------------------------------------------------------------------------
# 3. --vocab-size larger than the text allows: the largest size that works

def test_vocab_size_too_large_gives_the_largest_that_works(tmp_path, capsys):
    text = tmp_path / "moby.txt"
    text.write_text("\n".join(MOBY[:40]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    line = one_line_error(capsys, pretrain.main, ["--out", out, *TINY, "--vocab-size", "8000", text])
    largest = int(re.search(r"at most (\d+) pieces", line).group(1))
    assert line == (f"error: --vocab-size 8000 is more than the training text allows: SentencePiece can make at most "
                    f"{largest} pieces from it; use --vocab-size {largest} or less, or add text")
    # the documents step stays done for the re-run, and the size offered does train on the same text
    assert "split" in json.loads((out / "prepare.json").read_text()) and not (out / "spm.model").exists()
    train_docs = (out / "raw" / "train.txt").read_text(encoding="utf-8").splitlines()
    vocab.train_spm(spm_pieces(train_docs, 2_000_000, 1), tmp_path / "check", largest, seed=1,
                    user_defined_symbols=[f"<extra_id_{i}>" for i in range(100)], byte_fallback=True)


def test_vocab_size_below_the_scripts_minimum_says_add_text(tmp_path):
    with pytest.raises(vocab.VocabSizeError) as exc:
        vocab.train_spm(["a b c", "b c d"], tmp_path / "spm", 300, seed=1, min_vocab_size=200)
    assert str(exc.value) == (f"--vocab-size 300 is more than the training text allows: SentencePiece can make at most "
                              f"{exc.value.largest} pieces from it; that is below the minimum 200: add text")


# ---------------------------------------------------------------------------------------------
# 4. --out is a file

@pytest.mark.parametrize("script", ["pretraining", "multilingual", "downstream", "demo"])
def test_out_is_a_file(script, tmp_path, capsys, pretrained):
    taken = tmp_path / "notes.txt"
    taken.write_text("keep me\n")
    main, extra = {"pretraining": (pretrain.main, []), "multilingual": (multi.main, []),
                   "downstream": (downstream.main, ["--pretrained", pretrained, "--train", taken, "--valid", taken]),
                   "demo": (demo.main, [])}[script]
    assert one_line_error(capsys, main, ["--out", taken, *extra]) == (
        f"error: --out {taken} is a file, not a folder: give a folder for the outputs (the file was left untouched)")
    assert taken.read_text() == "keep me\n"
    if script == "pretraining":
        below = taken / "bin"
        assert one_line_error(capsys, main, ["--out", below]) == (
            f"error: --out {below}: {taken} is a file, not a folder: give a folder for the outputs (the file was "
            f"left untouched)")


@pytest.mark.parametrize("script", ["pretraining", "multilingual"])
def test_bundled_sample_outside_a_checkout_names_what_to_give(script, tmp_path, capsys, monkeypatch):
    """The bundled defaults are found from the current folder (an installed package has no checkout)."""
    if project.PROJECT_DIR.is_absolute():
        pytest.skip("FAIRSEQ_SWITCH_HOME is set: the defaults point at that checkout")
    monkeypatch.chdir(tmp_path)
    main, default = {"pretraining": (pretrain.main, "data/pretrain_sample"),
                     "multilingual": (multi.main, "data/multilingual")}[script]
    line = one_line_error(capsys, main, ["--out", tmp_path / "out"])
    assert line.startswith(f"error: {default} not found in {tmp_path} ") and line.endswith("or give the input files")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# --bad-utf8 replace / skip: counted in prepare.json and printed; the data is produced

def bad_corpus(folder: Path, name: str) -> Path:
    """40 Moby-Dick paragraphs, two bytes that are not UTF-8 in the 3rd and one in the 7th."""
    lines = [p.encode("utf-8") for p in MOBY[:40]]
    lines[2] = lines[2][:10] + b"\xff\xfe" + lines[2][10:]
    lines[6] = b"\x80" + lines[6]
    path = folder / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_bad_utf8_replace_counts_and_trains(tmp_path, capsys, preprocess_in_process):
    text = bad_corpus(tmp_path, "moby.txt")
    out = tmp_path / "out"
    assert pretrain.main(["--out", str(out), *TINY, "--vocab-size", "456", "--bad-utf8", "replace", str(text)]) == 0
    counts = json.loads((out / "prepare.json").read_text())["split"]["stats"]["bad_utf8"]
    assert counts == {"policy": "replace", "replaced_bytes": 3, "files": {str(text): 3}}
    assert (f"--bad-utf8 replace: 3 byte(s) that are not UTF-8 replaced by U+FFFD ({text}: 3)"
            in capsys.readouterr().out)
    raw = "".join((out / "raw" / f"{s}.txt").read_text(encoding="utf-8") for s in ("train", "valid", "test"))
    assert raw.count("\ufffd") == 3
    assert (out / "train.bin").stat().st_size > 0 and (out / "train.idx").is_file()


def test_bad_utf8_skip_counts_and_trains(tmp_path, capsys, preprocess_in_process):
    folder = tmp_path / "corpus"
    folder.mkdir()
    text = bad_corpus(folder, "en.txt")
    out = tmp_path / "out"
    argv = ["--out", out, "--valid-chars", "300", "--test-chars", "300", "--vocab-size", "456", "--workers", "1",
            "--bad-utf8", "skip", folder]
    assert multi.main([str(a) for a in argv]) == 0
    counts = json.loads((out / "prepare.json").read_text())["split"]["stats"]["bad_utf8"]
    assert counts == {"policy": "skip", "skipped_lines": 2, "files": {str(text): 2}}
    assert (f"--bad-utf8 skip: 2 line(s) holding bytes that are not UTF-8 skipped ({text}: 2)"
            in capsys.readouterr().out)
    raw = "".join((out / "raw" / "en" / f"{s}.txt").read_text(encoding="utf-8") for s in ("train", "valid", "test"))
    assert len(raw.splitlines()) == 38 and MOBY[2] not in raw and MOBY[0] in raw
    assert (out / "en" / "train.bin").stat().st_size > 0


def test_read_pairs_skip_and_replace(tmp_path):
    tsv = tmp_path / "p.tsv"
    tsv.write_bytes(b"input\ttarget\na\tb\nc \xff\td\ne\tf\n")
    skipped = corpus.BadUtf8Counts("skip")
    assert list(read_pairs(tsv, bad_utf8="skip", counts=skipped)) == [("a", "b"), ("e", "f")]
    assert skipped.as_dict() == {"policy": "skip", "skipped_lines": 1, "files": {str(tsv): 1}}
    assert list(read_pairs(tsv, bad_utf8="replace"))[1] == ("c \ufffd", "d")
