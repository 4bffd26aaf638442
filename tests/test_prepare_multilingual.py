"""scripts/prepare_multilingual_data.py (fairseq_switch/lab/corpora/prepare/multilingual_data.py): one shared
SentencePiece vocabulary, per-language binarized splits.

End to end on a small slice of the bundled data/multilingual (de, ja, ru: ~12,000 characters each),
plus the temperature-sampling arithmetic and the input errors.
"""

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_switch.lab.corpora.prepare.languages import find_languages, select_languages
from fairseq_switch.lab.corpora.prepare.mixture import piece_quotas, sample_pieces, sampling_shares
from fairseq_switch.data.corpus import CorpusError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "prepare_multilingual_data.py"
BUNDLED = ROOT / "data" / "multilingual"
SLICE_CHARS = 12_000
LANGS = ["ru", "ja", "de"]  # --languages order (not alphabetical) is kept
OPTIONS = ["--vocab-size", "956", "--valid-chars", "2000", "--test-chars", "2000", "--spm-sentences", "30",
           "--workers", "1"]


def run(out, *inputs, extra=()):
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), *extra, *map(str, inputs)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


def leading_documents(lang: str, chars: int) -> str:
    """The first documents of data/multilingual/<lang>.txt, about `chars` characters, in its format."""
    docs = (BUNDLED / f"{lang}.txt").read_text(encoding="utf-8").split("\n\n")
    kept, n = [], 0
    for doc in docs:
        if n >= chars:
            break
        kept.append(doc.strip("\n"))
        n += len(doc)
    return "\n\n".join(kept) + "\n"


@pytest.fixture(scope="module")
def slice_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ml_slice")
    for lang in LANGS + ["fr"]:  # fr is in the folder but not selected
        (d / f"{lang}.txt").write_text(leading_documents(lang, SLICE_CHARS), encoding="utf-8")
    (d / "meta.json").write_text("{}")
    (d / "README.md").write_text("# not a language\n")
    return d


@pytest.fixture(scope="module")
def prepared(slice_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ml_out") / "bin"
    res = run(out, slice_dir, extra=OPTIONS + ["--languages", ",".join(LANGS)])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out, res.stdout


def file_states(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# end to end

def test_layout_counts_and_shares(prepared):
    out, log = prepared
    for name in ("spm.model", "spm.vocab", "dict.txt", "prepare.json"):
        assert (out / name).is_file(), name
    for lang in LANGS:
        for s in ("train", "valid", "test"):
            for ext in ("bin", "idx"):
                assert (out / lang / f"{s}.{ext}").stat().st_size > 0
        assert (out / lang / "dict.txt").read_text() == (out / "dict.txt").read_text()
    assert not (out / "fr").exists() and not (out / "meta").exists() and not (out / "README").exists()

    stamp = json.loads((out / "prepare.json").read_text())
    assert {"split", "spm", "encode", "binarize", "options", "languages"} <= set(stamp)
    assert stamp["options"]["languages"] == LANGS and stamp["options"]["alpha"] == 0.3
    summary = stamp["languages"]
    assert list(summary) == LANGS
    chars = {lang: summary[lang]["train"]["characters"] for lang in LANGS}
    expected = sampling_shares(chars, 0.3)
    shares = {lang: summary[lang]["spm_sampling"]["share"] for lang in LANGS}
    assert sum(shares.values()) == pytest.approx(1, abs=1e-5)
    assert shares == pytest.approx(expected, abs=1e-6)
    assert sum(summary[lang]["spm_sampling"]["pieces"] for lang in LANGS) == 30
    for lang in LANGS:
        for s in ("train", "valid", "test"):
            st = summary[lang][s]
            assert st["documents"] > 0 and st["characters"] > 0 and st["tokens"] > 0
            assert st["unk_percent"] is not None
        assert summary[lang]["train"]["unk_percent"] == 0  # every training piece was in the sample
        assert summary[lang]["valid"]["characters"] >= 2000 and summary[lang]["test"]["characters"] >= 2000
        # the progress output names every language with its shares and token counts
        assert f"{summary[lang]['spm_sampling']['share']:.1%}" in log
        assert "/".join(format(summary[lang][s]["tokens"], ",d") for s in ("train", "valid", "test")) in log


def test_sentinels_are_ids_4_to_103_in_spm_and_dictionary(prepared):
    out, _ = prepared
    import sentencepiece as spm
    from fairseq.data import Dictionary

    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    d = Dictionary.load(str(out / "dict.txt"))
    assert len(d) == sp.get_piece_size() == 956
    for i in range(100):
        assert sp.piece_to_id(f"<extra_id_{i}>") == 4 + i == d.index(f"<extra_id_{i}>")
    for i in (104, 359, 360, 955):
        assert d[i] == sp.id_to_piece(i)


def test_every_language_loads_with_fairseq_and_decodes_to_its_text(prepared, slice_dir):
    out, _ = prepared
    import sentencepiece as spm
    from fairseq.data import Dictionary, data_utils

    from fairseq_switch.data.corpus import read_documents

    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    summary = json.loads((out / "prepare.json").read_text())["languages"]

    def normalized(text):  # SentencePiece's NFKC and whitespace handling, as decode gives it back
        return sp.normalize(text).replace("\u2581", " ").strip()

    for lang in LANGS:
        originals = list(read_documents(slice_dir / f"{lang}.txt"))
        d = Dictionary.load(str(out / lang / "dict.txt"))
        split_docs = []
        for s in ("train", "valid", "test"):
            docs = (out / "raw" / lang / f"{s}.txt").read_text(encoding="utf-8").splitlines()
            split_docs += docs
            ds = data_utils.load_indexed_dataset(str(out / lang / s), d, dataset_impl=None)
            assert ds is not None and len(ds) == len(docs) == summary[lang][s]["documents"]
            assert sum(len(ds[i]) - 1 for i in range(len(ds))) == summary[lang][s]["tokens"]
            round_trips = 0
            for i, doc in enumerate(docs):
                ids = ds[i].tolist()
                assert ids[-1] == d.eos()
                assert ids[:-1] == sp.encode(doc), (lang, s, i)
                if d.unk() not in ids:
                    assert sp.decode(ids[:-1]) == normalized(doc), (lang, s, i)
                    round_trips += 1
            if s == "train":
                assert round_trips == len(docs)
        # the splits are exactly the input's documents, whole
        assert sorted(split_docs) == sorted(originals)


def test_second_run_is_up_to_date_and_changes_nothing(prepared, slice_dir):
    out, _ = prepared
    before = file_states(out)
    res = run(out, slice_dir, extra=OPTIONS + ["--languages", ",".join(LANGS)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("up to date") == 4, res.stdout
    assert "fairseq-preprocess" not in res.stdout
    assert file_states(out) == before


# ---------------------------------------------------------------------------------------------
# errors: non-zero exit, one clear message naming the language, no traceback

def assert_clean_error(res, *needles):
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    for needle in needles:
        assert needle in res.stderr, res.stderr


def test_unknown_language_lists_the_available_ones(slice_dir, tmp_path):
    res = run(tmp_path / "out", slice_dir, extra=["--languages", "de,xx"])
    assert_clean_error(res, "unknown language 'xx' in --languages", "de, fr, ja, ru")


def test_empty_and_too_small_languages_are_named(slice_dir, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "de.txt").write_text(leading_documents("de", 8000), encoding="utf-8")
    (corpus / "xx.txt").write_text("\n  \n\n")
    (corpus / "yy.txt").write_text("Ein kurzes Dokument.\n\nNoch eines.\n\nUnd ein drittes.\n")
    res = run(tmp_path / "out", corpus, extra=["--valid-chars", "500", "--test-chars", "500"])
    assert_clean_error(res, "language 'xx' has no text", "leave 'xx' out with --languages",
                       "language 'yy' is too small", "lower --valid-chars/--test-chars")
    assert "'de'" not in res.stderr
    assert not (tmp_path / "out" / "raw" / "de").exists()  # nothing written before every language passed
    # de alone: 8,000 characters, but 10,000 + 10,000 held out by default
    res = run(tmp_path / "out2", corpus, extra=["--languages", "de"])
    assert_clean_error(res, "language 'de' is too small")
    res = run(tmp_path / "out3", tmp_path / "missing")
    assert_clean_error(res, "missing: no such file or folder")


# ---------------------------------------------------------------------------------------------
# units

def test_sampling_shares_hand_computed():
    # 100^0.3 = 3.98107, 10000^0.3 = 15.84893
    shares = sampling_shares({"small": 100, "large": 10_000}, 0.3)
    assert shares == pytest.approx({"small": 3.98107 / 19.83000, "large": 15.84893 / 19.83000}, abs=1e-5)
    assert shares["small"] == pytest.approx(0.20076, abs=1e-5)
    shares = sampling_shares({"small": 100, "large": 10_000}, 1.0)  # proportional
    assert shares == pytest.approx({"small": 100 / 10_100, "large": 10_000 / 10_100})
    uniform = sampling_shares({"a": 7, "b": 70_000, "c": 3}, 0.0)
    assert uniform == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    for alpha in (0.0, 0.3, 0.7, 1.0):
        assert sum(sampling_shares({"a": 5, "b": 50, "c": 123_456}, alpha).values()) == pytest.approx(1)
    with pytest.raises(ValueError):
        sampling_shares({"a": 0, "b": 5}, 0.3)


def test_piece_quotas_and_repetition():
    shares = sampling_shares({"small": 100, "large": 10_000}, 0.3)
    assert piece_quotas(shares, 10) == {"small": 2, "large": 8}
    assert piece_quotas(shares, 1000) == {"small": 201, "large": 799}
    assert piece_quotas({"a": 0.001, "b": 0.999}, 10) == {"a": 1, "b": 10}  # every language is seen
    import random

    sample = sample_pieces(["p", "q", "r"], 8, random.Random(1))
    assert len(sample) == 8 and all(sample.count(x) >= 2 for x in "pqr")
    sample = sample_pieces(list("abcdef"), 3, random.Random(1))  # fewer than it has: no repeats
    assert len(sample) == len(set(sample)) == 3


def test_find_languages_from_files_and_subfolders(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "de.txt").write_text("Hallo.\n")
    with gzip.open(flat / "zh-cn.txt.gz", "wt", encoding="utf-8") as f:
        f.write("你好。\n")
    (flat / "ja.jsonl").write_text(json.dumps({"text": "こんにちは"}) + "\n")
    (flat / "meta.json").write_text("{}")
    (flat / "README.md").write_text("# corpus\n")
    nested = tmp_path / "nested"
    for lang, names in {"fr": ["a.txt", "b.txt"], "ru": ["x.jsonl"]}.items():
        (nested / lang).mkdir(parents=True)
        for name in names:
            (nested / lang / name).write_text("texte\n")
    found = find_languages([flat, nested])
    assert list(found) == ["de", "fr", "ja", "ru", "zh-cn"]
    assert [p.name for p in found["fr"]] == ["a.txt", "b.txt"]
    assert found["zh-cn"] == [flat / "zh-cn.txt.gz"]
    assert list(find_languages([flat / "de.txt"])) == ["de"]
    assert list(find_languages([BUNDLED])) == sorted(p.name[:-4] for p in BUNDLED.glob("*.txt"))
    (nested / "el").mkdir()
    with pytest.raises(CorpusError, match="language 'el'.*no text files"):
        find_languages([nested])
    assert select_languages(found, " ru, de ,ru") == ["ru", "de"]
    with pytest.raises(SystemExit, match="unknown languages 'xx', 'yy'.*de, fr, ja, ru, zh-cn"):
        select_languages(found, "xx,de,yy")
