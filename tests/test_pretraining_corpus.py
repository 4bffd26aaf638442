"""Tests of fairseq_switch/lab/corpora/fetch_pretraining*.py (scripts/fetch_pretraining_corpus.py) and the committed
sample it produced.

Nothing here needs the network: the pure text functions are tested on hand-written
snippets and the committed files under data/pretrain_sample/ are checked as they are.
"""

import re
from pathlib import Path

import pytest

from fairseq_switch.lab.corpora import fetch_pretraining as pretraining
from fairseq_switch.lab.corpora import pretraining_sources as sources
from fairseq_switch.lab.corpora.text import normalize_paragraph

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO / "data" / "pretrain_sample"
SAMPLE_TEXTS = ["sotu.txt", "brown.txt"]
MAX_FILE_BYTES = 1_000_000     # each sample file (built with --sample-mb 0.9)
MAX_TOTAL_BYTES = 2_000_000    # whole sample folder, README included

# A left-over Brown tag: word/tag with a common Brown tag (optionally -tl/-hl/-nc, $, *).
# ("and/or" or "1/2" are genuine text and must not match.)
BROWN_TAGS = ("at|nn|nns|np|nps|jj|jjr|jjs|in|vb|vbd|vbg|vbn|vbz|cc|cd|cs|rb|rbr|dt|dti|dts|"
              "pps|ppss|ppo|pp\\$|md|to|be|bez|bed|bedz|ben|hv|hvd|hvz|wdt|wps|nr|ql|od|abn|ap|nil")
TAG_ARTEFACT = re.compile(rf"\S/(?:{BROWN_TAGS})(?:[-+*$][\w$*+-]*)?(?=\s|$)")


# ------------------------------------------------------------------ Brown tag removal

BROWN_SNIPPET = (
    "\n\n\t``/`` Only/rb a/at relative/jj handful/nn of/in such/jj reports/nns was/bedz "
    "received/vbn ''/'' ,/, the/at jury/nn said/vbd ,/, ``/`` considering/in the/at "
    "election/nn ''/'' ./.\n\n\n\tHe/pps doesn't/doz* like/vb 1/2/cd of/in it/ppo (/( "
    "see/vb Washington/np ,/, D.C./np ./. )/) ;/. why/wrb ?/. John/np 's/$ car/nn ,/, "
    "and/or/cc the/at ca/md n't/* !/. Ivan/np Allen/np Jr./np ./. Fine/jj-hl :/:\n"
)
BROWN_EXPECTED = (
    '"Only a relative handful of such reports was received", the jury said, "considering '
    "the election\". He doesn't like 1/2 of it (see Washington, D.C.); why? John's car, "
    "and/or the can't! Ivan Allen Jr. Fine:"
)


def test_brown_tag_removal_and_detokenization():
    assert sources.brown_document(BROWN_SNIPPET) == BROWN_EXPECTED


def test_strip_tag_uses_last_slash():
    assert sources.strip_tag("1/2/cd") == "1/2"
    assert sources.strip_tag("Atlanta's/np$") == "Atlanta's"
    assert sources.strip_tag("//in") == "/"
    with pytest.raises(ValueError):
        sources.strip_tag("untagged")


def test_detokenize_spacing_rules():
    assert sources.detokenize(["(", "a", ")", "b", ";", "c", ":", "d", "?"]) == "(a) b; c: d?"
    assert sources.detokenize(["``", "Hi", "''", ",", "he", "said", "."]) == '"Hi", he said.'
    assert sources.detokenize(["etc.", ".", "Next"]) == "etc. Next"


def test_tag_artefact_pattern():
    assert TAG_ARTEFACT.search("the/at jury")
    assert TAG_ARTEFACT.search("Fulton/np-tl County")
    assert not TAG_ARTEFACT.search("and/or 1/2 of it, 7070/7074 model over/under")


# ------------------------------------------------------------------ sampling helpers

def _docs(sizes, genres=None):
    return [sources.Doc(f"d{i}", "x" * (n - 1), {"genre": (genres or "a" * len(sizes))[i]})
            for i, n in enumerate(sizes)]


def test_sample_every_kth_picks_smallest_step():
    docs = _docs([10] * 10)
    sub, k = pretraining.sample_every_kth(docs, 40)
    assert k == 3 and [d.id for d in sub] == ["d0", "d3", "d6", "d9"]


def test_sample_round_robin_covers_genres():
    docs = _docs([10] * 6, genres="aaabbc")
    sub = pretraining.sample_round_robin(docs, 40)
    assert [d.id for d in sub] == ["d0", "d1", "d3", "d5"]


# ------------------------------------------------------------------ committed sample

@pytest.mark.parametrize("name", SAMPLE_TEXTS)
def test_committed_sample_file(name):
    path = SAMPLE_DIR / name
    assert path.exists(), f"{path} missing; run scripts/fetch_pretraining_corpus.py"
    data = path.read_bytes()
    assert len(data) <= MAX_FILE_BYTES
    text = data.decode("utf-8")
    assert text.endswith("\n") and "\r" not in text
    lines = text[:-1].split("\n")
    assert len(lines) >= 10
    for i, line in enumerate(lines):
        assert line, f"{name}: empty line {i + 1}"
        # one document per line: normalized, no runs of whitespace, reasonably long
        assert line == normalize_paragraph(line), f"{name}:{i + 1} not normalized"
        assert len(line.split()) >= 200, f"{name}:{i + 1} too short for a whole document"
    assert len(set(lines)) == len(lines), f"{name}: duplicate documents"
    hits = TAG_ARTEFACT.findall(text)
    assert not hits, f"{name}: POS-tag artefacts {hits[:5]}"
    assert "``" not in text and "''" not in text


def test_committed_sample_total_size_and_readme():
    readme = SAMPLE_DIR / "README.md"
    assert readme.exists()
    total = sum(p.stat().st_size for p in SAMPLE_DIR.iterdir() if p.is_file())
    assert total <= MAX_TOTAL_BYTES
    body = readme.read_text("utf-8")
    for needle in (sources.SOTU_PACKAGE, sources.SOTU_VERSION, sources.BROWN_PACKAGE, sources.BROWN_VERSION,
                   "public domain", "MIT", "data/moby_dick/moby_dick.txt",
                   "scripts/fetch_pretraining_corpus.py"):
        assert needle in body, needle


def test_folder_expansion_skips_the_fetch_scripts_meta_json(tmp_path):
    from fairseq_switch.data.corpus import corpus_files

    (tmp_path / "de.txt").write_text("Hallo Welt.\n")
    (tmp_path / "meta.json").write_text('{"de": {"bytes": 12}}\n')
    (tmp_path / "more.jsonl").write_text('{"text": "x"}\n')
    assert corpus_files([tmp_path]) == [tmp_path / "de.txt", tmp_path / "more.jsonl"]
