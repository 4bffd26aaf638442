"""Tests of scripts/prepare_demo_data.py, fairseq_switch/lab/corpora/prepare/demo_pairs.py (the Moby-Dick
next-sentence demo data set).

The corpus (data/moby_dick/moby_dick.txt) is committed, so nothing here needs the network.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_switch.lab.corpora.prepare.demo_pairs import read_paragraphs, split_demo_pairs
from fairseq_switch.lab.corpora.prepare.sentences import build_pairs, make_pairs, split_sentences

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "prepare_demo_data.py"
TEXT = REPO / "data" / "moby_dick" / "moby_dick.txt"


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout)


# ------------------------------------------------------------------ splitting & pairing

PARAGRAPH = (
    'Call me Ishmael. Some years ago—never mind how long—I went to sea!  "Is it Mr. '
    'Starbuck?" asked he. "Aye," said I. Then J. Ross Browne arrived... what then? '
    'it was late.\n"Go!" (He left.) \'Tis done.'
)
EXPECTED_SENTENCES = [
    "Call me Ishmael.",
    "Some years ago—never mind how long—I went to sea!",
    '"Is it Mr. Starbuck?" asked he.',
    '"Aye," said I.',
    "Then J. Ross Browne arrived... what then? it was late.",
    '"Go!"',
    "(He left.)",
    "'Tis done.",
]


def test_split_sentences_exact():
    assert split_sentences(PARAGRAPH) == EXPECTED_SENTENCES


def test_split_sentences_edge_cases():
    assert split_sentences("") == []
    assert split_sentences("   ") == []
    assert split_sentences("No end mark") == ["No end mark"]
    assert split_sentences("One. two. Three.") == ["One. two.", "Three."]
    assert split_sentences("Capt. Ahab spoke. Done.") == ["Capt. Ahab spoke.", "Done."]


def test_make_pairs_exact():
    assert make_pairs(EXPECTED_SENTENCES[:4]) == [
        ("Call me Ishmael.", "Some years ago—never mind how long—I went to sea!"),
        ("Some years ago—never mind how long—I went to sea!", '"Is it Mr. Starbuck?" asked he.'),
        ('"Is it Mr. Starbuck?" asked he.', '"Aye," said I.'),
    ]
    assert make_pairs(["Only one."]) == []
    assert make_pairs([]) == []


def test_build_pairs_stays_within_paragraphs_and_dedups():
    paragraphs = ["A one. B two.", "C three.", "A one. B two. D four."]
    sentences, pairs, duplicates = build_pairs(paragraphs)
    assert sentences == [["A one.", "B two."], ["C three."], ["A one.", "B two.", "D four."]]
    # no pair crosses a paragraph boundary ("B two." -> "C three."), the repeat is removed
    assert pairs == [("A one.", "B two."), ("B two.", "D four.")]
    assert duplicates == 1


def test_split_pairs_deterministic_and_disjoint():
    pairs = [(f"s{i}", f"t{i}") for i in range(100)]
    a = split_demo_pairs(pairs, 10, 5, seed=3)
    b = split_demo_pairs(pairs, 10, 5, seed=3)
    assert a == b
    assert [len(a[s]) for s in ("train", "valid", "test")] == [85, 10, 5]
    assert sorted(a["train"] + a["valid"] + a["test"]) == sorted(pairs)
    assert split_demo_pairs(pairs, 10, 5, seed=4) != a
    capped = split_demo_pairs(pairs, 10, 5, seed=3, limit_train=7)
    assert capped["train"] == a["train"][:7] and capped["valid"] == a["valid"]
    with pytest.raises(SystemExit):
        split_demo_pairs(pairs[:10], 5, 5, seed=1)


def test_preparation_does_not_import_torch():
    code = ("import sys; from fairseq_switch.lab.corpora.prepare import demo_pairs as demo; "
            "demo.split_demo_pairs([('A.', 'B.')] * 3, 1, 1, seed=1); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bundled_text_is_real_moby_dick():
    lines = TEXT.read_text(encoding="utf-8").splitlines()
    assert len(lines) > 2000 and all(line.strip() == line and line for line in lines)
    text = "\n".join(lines)
    assert "Call me Ishmael." in text
    assert not any(line.startswith("CHAPTER ") for line in lines)


# ------------------------------------------------------------------ errors

def test_missing_text_file_error(tmp_path):
    missing = tmp_path / "nope.txt"
    proc = _run("--out", tmp_path / "out", "--text", missing)
    assert proc.returncode != 0
    assert "scripts/fetch_demo_corpus.py" in proc.stderr
    assert str(missing) in proc.stderr and "not found" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_empty_text_file_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    proc = _run("--out", tmp_path / "out", "--text", empty)
    assert proc.returncode != 0
    assert "is empty" in proc.stderr and "scripts/fetch_demo_corpus.py" in proc.stderr


# ------------------------------------------------------------------ end to end

ARGS = ["--vocab-size", 300, "--max-tokens-per-side", 48, "--valid", 40, "--test", 30,
        "--limit-pairs", 200]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "bin"
    proc = _run("--out", out, *ARGS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def _count(pattern, text):
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in output:\n{text}"
    return int(m.group(1))


def test_end_to_end_outputs(built):
    out, _ = built
    for name in ["dict.src.txt", "dict.tgt.txt", "spm.model", "spm.vocab", "demo_data.json"]:
        assert (out / name).is_file(), name
    for split in ("train", "valid", "test"):
        for lang in ("src", "tgt"):
            for ext in ("bin", "idx"):
                assert (out / f"{split}.src-tgt.{lang}.{ext}").stat().st_size > 0
            raw = (out / "raw" / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()
            assert len(raw) == {"train": 200, "valid": 40, "test": 30}[split]
            assert all(0 < len(line.split()) <= 48 for line in raw)
    # joined dictionary = the SentencePiece vocabulary after fairseq's 4 specials
    dict_lines = (out / "dict.src.txt").read_text(encoding="utf-8").splitlines()
    assert (out / "dict.tgt.txt").read_text(encoding="utf-8").splitlines() == dict_lines
    assert len(dict_lines) == 300 - 4


def test_end_to_end_reported_counts(built):
    out, proc = built
    stats = json.loads((out / "demo_data.json").read_text())["stats"]
    paragraphs = read_paragraphs(TEXT)
    sentences, pairs, duplicates = build_pairs(paragraphs)
    stdout = proc.stdout
    assert _count(r"paragraphs: (\d+)", stdout) == stats["paragraphs"] == len(paragraphs)
    assert _count(r"sentences: (\d+)", stdout) == stats["sentences"] == sum(map(len, sentences))
    assert _count(r"unique pairs: (\d+)", stdout) == stats["unique_pairs"] == len(pairs)
    assert stats["duplicates"] == duplicates
    dropped = _count(r"dropped (\d+) of \d+ pairs with a side over 48 pieces", stdout)
    assert dropped == stats["dropped"] > 0
    assert stats["dropped"] == (stats["dropped_source_only"] + stats["dropped_target_only"]
                                + stats["dropped_both"])
    assert stats["kept"] + stats["dropped"] == stats["unique_pairs"]
    assert _count(r"kept (\d+)", stdout) == stats["kept"]
    assert (stats["train"], stats["valid"], stats["test"]) == (200, 40, 30)
    assert "--limit-pairs 200: training pairs capped" in stdout
    for split in ("train", "valid", "test"):
        n = _count(rf"{split}\s*:\s+(\d+) pairs", stdout)
        assert n == stats[split]
        assert _count(rf"{split}\s*:\s+\d+ pairs,\s+(\d+) source", stdout) \
            == stats["tokens"][split]["src"] > 0
    assert stats["dict_size"] == 300


def test_end_to_end_fairseq_ids_match_sentencepiece(built):
    out, _ = built
    sentencepiece = pytest.importorskip("sentencepiece")
    from fairseq.data import Dictionary, data_utils

    dictionary = Dictionary.load(str(out / "dict.src.txt"))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(out / "spm.model"))
    assert len(dictionary) == sp.get_piece_size() == 300
    assert (dictionary.bos(), dictionary.pad(), dictionary.eos(), dictionary.unk()) == (
        sp.bos_id(), sp.pad_id(), sp.eos_id(), sp.unk_id())
    for split in ("train", "valid", "test"):
        for lang in ("src", "tgt"):
            ds = data_utils.load_indexed_dataset(str(out / f"{split}.src-tgt.{lang}"), dictionary)
            raw = (out / "raw" / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()
            assert len(ds) == len(raw)
            for i in range(len(ds)):
                ids = ds[i].tolist()
                assert ids[-1] == dictionary.eos()
                assert ids[:-1] == [sp.piece_to_id(p) for p in raw[i].split()]
                assert dictionary.unk() not in ids


def test_end_to_end_idempotent(built):
    out, _ = built
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    proc = _run("--out", out, *ARGS)
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout and "skipping" in proc.stdout
    assert "train=200" in proc.stdout
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    assert after == before
