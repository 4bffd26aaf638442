#!/usr/bin/env python3
"""Fetch a real multilingual text corpus: the LibreOffice help in many languages.

Source: the Debian packages ``libreoffice-help-<lang>`` (suite bookworm; LibreOffice 7.4
help, MPL-2.0). Every package holds the same ~2,560 help pages, translated, as HTML files
``usr/share/libreoffice/help/<lang>/text/<module>/.../<page>.html``. The packages are
fetched with ``apt-get download`` into ``--cache-dir`` using a private apt lists folder
(``<cache-dir>/apt-lists``, filled by ``apt-get update`` with ``Dir::State::Lists``
pointed there, as ``scripts/fetch_downstream_corpus.py --apt-update`` does), so the
system's apt state is not touched. The .deb files are read with Python (``ar`` + tar), not
installed or unpacked to disk.

Text extraction (``extract_paragraphs``), per page:
  * only the page body (``<div id="DisplayArea">``) is read: the header, the module
    menu, the index/search side bars and the debug footer are navigation;
  * dropped subtrees: scripts/styles, code (``<pre>``, ``<code>``, classes ``bascode``,
    ``pycode``, ``smathcode``, ``code``, ``codeintable``), the "Related topics" link list,
    the "To access this command" label, icons, and the hidden per-platform/per-module
    variants of switch texts (``<span hidden id="MAC...">`` etc.; the ``default...``
    variant is kept, so a sentence reads once, as on a generic system);
  * one paragraph per block element (p, h1-h6, li, td, ...); inline markup is removed and
    entities decoded; text is NFC-normalized, control characters removed, whitespace
    collapsed;
  * a paragraph is dropped when it has no letter (``no_letters``: numbers, symbols) or
    still looks like markup (``markup_like``: a literal ``<tag>`` or ``&entity;`` in the
    text, e.g. help about HTML export; dropped so that the corpus holds no tag-like text).
Per language (``build_documents``): pages are taken in a fixed pseudo-random order (by the
SHA-1 of the page path, the same in every language, so any prefix mixes all modules and
the languages' prefixes hold almost the same pages); a paragraph equal to one of the
English (en-US) help is dropped (``untranslated``: strings without a translation fall back
to English, and product/function names are not language text), as is any paragraph already
kept for that language (``duplicate``: exact, e.g. the shared note blocks); a page left
without paragraphs is dropped (``empty_page``).

Output (``--out DIR``):
  * ``DIR/<lang>.txt`` per language (``<lang>`` as in the package name, e.g. ``de``,
    ``zh-cn``): UTF-8, one document per help page, one paragraph per line, documents
    separated by one blank line: the "paragraphs" format of
    ``scripts/prepare_pretraining_data.py`` (which skips ``meta.json`` in a folder);
  * ``DIR/meta.json``: per language the package, version, .deb file name and SHA-256,
    pages read, documents/paragraphs/bytes in the full extraction and in the written file,
    drop counts, and the settings.
With ``--sample-bytes N`` each file holds only the leading whole documents that fit in N
bytes (for the bundled sample ``data/multilingual/``).

Idempotent: downloaded .debs (``<cache-dir>/debs``) and the parsed pages
(``<cache-dir>/pages/<package>_<version>.json.gz``) are reused; files whose content is
unchanged are not rewritten. ``--apt-update`` refreshes the private apt lists first (a
cached .deb is still used; delete ``<cache-dir>/debs`` to fetch newer package versions).

Usage:
    python scripts/fetch_multilingual_corpus.py --out data-raw/multilingual/full
    python scripts/fetch_multilingual_corpus.py --out data/multilingual --sample-bytes 180000
    python scripts/fetch_multilingual_corpus.py --out DIR --languages de,fr,ja [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import io
import json
import lzma
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Shared with the downstream fetcher: the error type printed without traceback, the text
# normalization (NFC, control characters, whitespace), the private-lists `apt-get update`
# and the write-only-when-changed helper.
from fetch_downstream_corpus import (  # noqa: E402
    SourceError, apt_update_translations, normalize_text, write_if_changed, write_meta)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE_DIR = REPO_ROOT / "data-raw" / "multilingual"
PACKAGE_PREFIX = "libreoffice-help-"
REFERENCE_LANG = "en-us"  # untranslated paragraphs equal the English help
# 16 languages, 7 scripts (Latin, Cyrillic, Greek, Devanagari, Han, kana, Hangul), 0.5-6 MB each.
# bookworm has no Arabic or Hebrew help package.
DEFAULT_LANGUAGES = ("de", "fr", "es", "it", "pt", "nl", "pl", "fi", "tr", "vi",
                     "ru", "el", "hi", "ja", "ko", "zh-cn")
EXTRACTOR_VERSION = 1  # bump when extract_paragraphs changes: the page cache is keyed by it
HELP_PATH_RE = re.compile(r"^(?:\./)?usr/share/libreoffice/help/([^/]+)/(text/.+\.html)$")


# --------------------------------------------------------------------------- text extraction

VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
             "param", "source", "track", "wbr"}
# Subtrees that are navigation, code or not visible text.
SKIP_TAGS = {"head", "script", "style", "noscript", "header", "aside", "footer", "nav",
             "button", "select", "textarea", "pre", "code", "svg", "template", "object"}
SKIP_CLASSES = {"bascode", "pycode", "smathcode", "code", "codeintable", "relatedtopics",
                "howtogetheader", "noteicon", "debug", "bug"}
SKIP_IDS = {"SearchFrame", "DonationFrame", "DEBUG"}
# Elements that end one paragraph and start the next.
BLOCK_TAGS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "dl", "dt",
              "dd", "table", "thead", "tbody", "tr", "td", "th", "caption", "blockquote",
              "section", "article", "hr", "center", "body"}
CONTENT_ID = "DisplayArea"

_TAG_LIKE = re.compile(r"</?[A-Za-z][\w:.-]*(?:\s[^<>]*)?/?>")
_ENTITY_LIKE = re.compile(r"&(?:[A-Za-z][A-Za-z0-9]*|#[0-9]+|#[xX][0-9A-Fa-f]+);")


class _HelpPage(HTMLParser):
    """Collects the paragraphs of one help page (see ``extract_paragraphs``)."""

    def __init__(self, whole_body: bool):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, starts a skip, starts content)
        self.skip = 0      # open skipped elements around the current position
        self.content = 1 if whole_body else 0  # open content roots around it
        self.buf: list[str] = []
        self.paragraphs: list[str] = []

    def _flush(self) -> None:
        text = normalize_text("".join(self.buf))
        self.buf = []
        if text:
            self.paragraphs.append(text)

    @staticmethod
    def _skipped(tag: str, attrs: dict) -> bool:
        if tag in SKIP_TAGS or attrs.get("id") in SKIP_IDS:
            return True
        if set((attrs.get("class") or "").split()) & SKIP_CLASSES:
            return True
        # switch texts: one hidden span per platform/module, the "default..." one is generic
        return "hidden" in attrs and not (attrs.get("id") or "").startswith("default")

    def handle_starttag(self, tag, attr_list):
        attrs = dict(attr_list)
        if tag in BLOCK_TAGS:
            self._flush()
        elif tag == "br":  # a line break inside a paragraph separates words, not paragraphs
            self.buf.append(" ")
        if tag in VOID_TAGS:
            return
        skip = self._skipped(tag, attrs)
        content = attrs.get("id") == CONTENT_ID
        self.stack.append((tag, skip, content))
        self.skip += skip
        self.content += content

    def handle_startendtag(self, tag, attr_list):
        self.handle_starttag(tag, attr_list)
        if tag not in VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if tag in BLOCK_TAGS:
            self._flush()
        if not any(t == tag for t, _, _ in self.stack):
            return  # stray end tag
        while self.stack:  # also closes elements left open inside it
            t, skip, content = self.stack.pop()
            self.skip -= skip
            self.content -= content
            if t == tag:
                break

    def handle_data(self, data):
        if self.content and not self.skip:
            self.buf.append(data)

    def close(self):
        super().close()
        self._flush()


def paragraph_drop_reason(text: str) -> str | None:
    """Why a (normalized) paragraph is not language text, or None to keep it."""
    if not any(ch.isalpha() for ch in text):
        return "no_letters"
    if _TAG_LIKE.search(text) or _ENTITY_LIKE.search(text):
        return "markup_like"
    return None


def extract_paragraphs(html: str, dropped: collections.Counter | None = None) -> list[str]:
    """The text paragraphs of one LibreOffice help page (HTML), in page order.

    Reads ``<div id="DisplayArea">`` (the whole page when there is none); drops navigation,
    code and hidden variants, and paragraphs without letters or with tag-like text (counted
    in ``dropped`` by reason). Pure: no I/O.
    """
    parser = _HelpPage(whole_body=f'id="{CONTENT_ID}"' not in html)
    parser.feed(html)
    parser.close()
    kept = []
    for text in parser.paragraphs:
        reason = paragraph_drop_reason(text)
        if reason is None:
            kept.append(text)
        elif dropped is not None:
            dropped[reason] += 1
    return kept


def page_order_key(page: str) -> str:
    """Fixed pseudo-random page order, the same in every language (see the docstring)."""
    return hashlib.sha1(page.encode("utf-8")).hexdigest()


def build_documents(pages: dict[str, list[str]], reference: set[str] | None = None
                    ) -> tuple[list[tuple[str, list[str]]], collections.Counter]:
    """(page, paragraphs) documents of one language and the drop counts.

    ``pages`` maps page path -> extracted paragraphs; ``reference`` holds the English
    paragraphs (``untranslated`` drops; None for English itself). Exact duplicate
    paragraphs within the language are dropped after their first occurrence in page order.
    """
    dropped: collections.Counter = collections.Counter()
    seen: set[str] = set()
    docs = []
    for page in sorted(pages, key=lambda p: (page_order_key(p), p)):
        kept = []
        for text in pages[page]:
            if reference is not None and text in reference:
                dropped["untranslated"] += 1
            elif text in seen:
                dropped["duplicate"] += 1
            else:
                seen.add(text)
                kept.append(text)
        if kept:
            docs.append((page, kept))
        else:
            dropped["empty_page"] += 1
    return docs, dropped


def render_documents(docs: list[tuple[str, list[str]]], max_bytes: int | None = None
                     ) -> tuple[bytes, int]:
    """UTF-8 text (paragraph per line, blank line between documents) and the number of
    documents in it; with ``max_bytes``, only the leading whole documents that fit."""
    out: list[bytes] = []
    size = 0
    for _page, paragraphs in docs:
        block = ("\n".join(paragraphs) + "\n").encode("utf-8")
        extra = len(block) + (1 if out else 0)  # the blank line before it
        if max_bytes is not None and size + extra > max_bytes:
            break
        out.append(block)
        size += extra
    return b"\n".join(out), len(out)


# --------------------------------------------------------------------------- .deb files

def deb_members(path: Path) -> dict[str, bytes]:
    """The members of a .deb (an ``ar`` archive): name -> bytes."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise SourceError(f"{path} is not a .deb (ar) file; delete it and re-run to "
                          "download it again")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        members[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)  # members are 2-byte aligned
    return members


def deb_help_pages(path: Path, lang: str) -> dict[str, str]:
    """page path (``text/...html``) -> HTML of every help page of ``lang`` in a .deb."""
    members = deb_members(path)
    name = next((n for n in members if n.startswith("data.tar")), None)
    if name is None:
        raise SourceError(f"{path}: no data.tar member; delete it and re-run")
    if name.endswith(".zst"):  # Python's tarfile cannot read zstd (Ubuntu packages)
        if not shutil.which("dpkg-deb"):
            raise SourceError(f"{path} uses zstd compression: install dpkg (dpkg-deb) to read it")
        raw = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(path)], check=True,
                             capture_output=True).stdout
    else:
        raw = members[name]
    pages = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:*") as tf:
            for member in tf:
                m = HELP_PATH_RE.match(member.name)
                if member.isfile() and m and m.group(1).lower() == lang:
                    pages[m.group(2)] = tf.extractfile(member).read().decode("utf-8")
    except (tarfile.TarError, lzma.LZMAError, EOFError, UnicodeDecodeError) as err:
        # e.g. a download that was cut off
        raise SourceError(f"{path} is damaged ({err}); delete it and re-run") from None
    if not pages:
        raise SourceError(f"{path} holds no usr/share/libreoffice/help/{lang}/text/**/*.html pages")
    return pages


def deb_version(path: Path) -> str:
    """Version from an apt download name ``<package>_<version, %-quoted>_<arch>.deb``."""
    return urllib.parse.unquote(path.name.split("_")[1])


# --------------------------------------------------------------------------- apt

def apt_options(cache_dir: Path) -> list[str]:
    """apt options that use the private lists and no on-disk binary caches."""
    return ["-o", f"Dir::State::Lists={cache_dir.resolve() / 'apt-lists'}",
            "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="]


def ensure_apt_lists(cache_dir: Path, force: bool) -> None:
    lists = cache_dir / "apt-lists"
    if force or not any(lists.glob("*_Packages*")):
        print(f"[apt] updating the private package lists in {lists}", flush=True)
        apt_update_translations(lists)  # needs root; the system's lists stay as they are


def available_help_languages(cache_dir: Path) -> list[str]:
    """Language suffixes of the libreoffice-help-* packages in the private lists."""
    proc = subprocess.run(["apt-cache", *apt_options(cache_dir), "pkgnames", PACKAGE_PREFIX],
                          capture_output=True, text=True)  # real packages only, not virtual names
    return sorted(n[len(PACKAGE_PREFIX):] for n in proc.stdout.split()
                  if n != PACKAGE_PREFIX + "common")


def cached_deb(deb_dir: Path, package: str) -> Path | None:
    found = sorted(deb_dir.glob(f"{package}_*.deb"))
    if len(found) > 1:
        raise SourceError(f"several cached versions of {package} in {deb_dir}: "
                          f"{', '.join(p.name for p in found)}; delete all but one")
    return found[0] if found else None


def fetch_debs(packages: list[str], cache_dir: Path, apt_update: bool) -> dict[str, Path]:
    """package -> .deb path; downloads (``apt-get download``) only what is not cached."""
    deb_dir = cache_dir / "debs"
    deb_dir.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if cached_deb(deb_dir, p) is None]
    if missing or apt_update:
        if not shutil.which("apt-get"):
            raise SourceError("`apt-get` not found: this script needs a Debian/Ubuntu machine, or "
                              f"put the libreoffice-help-<lang>_*.deb files into {deb_dir}")
        ensure_apt_lists(cache_dir, apt_update)
    if missing:
        # check the names first: apt's own message for a missing one is obscure ("has no
        # candidate" for a name that is only referenced, e.g. libreoffice-help-ar)
        available = available_help_languages(cache_dir)
        unknown = [p for p in missing if p[len(PACKAGE_PREFIX):] not in available]
        if unknown:
            raise SourceError(
                f"not in the apt lists of {cache_dir / 'apt-lists'}: {', '.join(unknown)}.\n  "
                f"Available languages: {', '.join(available) or 'none (the lists are empty)'}.\n  "
                "Fix: pick --languages from those; re-run with --apt-update if the lists are old; "
                "the suites searched are those of /etc/apt/sources.list(.d).")
        print(f"[apt] apt-get download {' '.join(missing)}", flush=True)
        proc = subprocess.run(["apt-get", *apt_options(cache_dir), "download", *missing],
                              cwd=deb_dir, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SourceError(
                f"`apt-get download` failed (exit {proc.returncode}):\n"
                f"{proc.stderr.strip()[-2000:]}"
                f"\n  Check the mirror in /etc/apt/sources.list.d/ and `apt-cache "
                f"{' '.join(apt_options(cache_dir))} policy {missing[0]}`; a 404 means the "
                "lists are stale: re-run with --apt-update.")
    else:
        print(f"[apt] all {len(packages)} packages cached in {deb_dir}", flush=True)
    return {p: cached_deb(deb_dir, p) for p in packages}


# --------------------------------------------------------------------------- pipeline

def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_pages(deb: Path, lang: str, cache_dir: Path) -> dict:
    """Extracted paragraphs of every page of one package, cached per .deb and extractor."""
    cache = cache_dir / "pages" / (deb.stem + ".json.gz")
    sha = sha256_file(deb)
    if cache.is_file():
        with gzip.open(cache, "rt", encoding="utf-8") as f:
            cached = json.load(f)
        if cached.get("extractor") == EXTRACTOR_VERSION and cached.get("deb_sha256") == sha:
            return cached
    print(f"[extract] {deb.name}", flush=True)
    dropped: collections.Counter = collections.Counter()
    html = deb_help_pages(deb, lang)
    pages = {page: extract_paragraphs(text, dropped) for page, text in sorted(html.items())}
    record = {"extractor": EXTRACTOR_VERSION, "deb_sha256": sha, "pages": pages,
              "dropped": dict(sorted(dropped.items()))}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        json.dump(record, f, ensure_ascii=False)
    tmp.replace(cache)
    return record


def parse_languages(value: str) -> list[str]:
    langs = [v.strip().lower() for v in value.split(",") if v.strip()]
    bad = [v for v in langs if not re.fullmatch(r"[a-z]{2,3}(?:-[a-z0-9]+)?", v)]
    if bad or not langs:
        raise argparse.ArgumentTypeError(f"bad language code(s) {bad}: use e.g. de,fr,zh-cn")
    return list(dict.fromkeys(langs))


def run(args) -> dict:
    cache_dir, out = Path(args.cache_dir), Path(args.out)
    langs = args.languages
    packages = [PACKAGE_PREFIX + lang for lang in dict.fromkeys([REFERENCE_LANG, *langs])]
    debs = fetch_debs(packages, cache_dir, args.apt_update)

    ref_record = load_pages(debs[PACKAGE_PREFIX + REFERENCE_LANG], REFERENCE_LANG, cache_dir)
    reference = {t for paragraphs in ref_record["pages"].values() for t in paragraphs}
    meta = {
        "source": "LibreOffice help, Debian packages libreoffice-help-<lang> (apt-get download)",
        "licence": "MPL-2.0 (LibreOffice help content; see each package's "
                   "usr/share/doc/<package>/copyright)",
        "format": "<lang>.txt: UTF-8 NFC, one document per help page, one paragraph per "
                  "line, documents separated by one blank line",
        "settings": {"sample_bytes": args.sample_bytes, "extractor": EXTRACTOR_VERSION,
                     "reference_language": REFERENCE_LANG,
                     "page_order": "sha1 of the page path"},
        "reference": {"package": PACKAGE_PREFIX + REFERENCE_LANG,
                      "version": deb_version(debs[PACKAGE_PREFIX + REFERENCE_LANG]),
                      "deb": debs[PACKAGE_PREFIX + REFERENCE_LANG].name,
                      "deb_sha256": ref_record["deb_sha256"]},
        "languages": {},
    }
    out.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        package = PACKAGE_PREFIX + lang
        record = load_pages(debs[package], lang, cache_dir)
        docs, dropped = build_documents(record["pages"],
                                        None if lang == REFERENCE_LANG else reference)
        dropped.update(record["dropped"])
        full, n_full = render_documents(docs)
        data, n_docs = render_documents(docs, args.sample_bytes)
        if not data:
            raise SourceError(f"{lang}: no document fits in --sample-bytes {args.sample_bytes}")
        path = out / f"{lang}.txt"
        changed = write_if_changed(path, data)
        paragraphs = sum(len(p) for _, p in docs[:n_docs])
        meta["languages"][lang] = {
            "package": package, "version": deb_version(debs[package]),
            "deb": debs[package].name, "deb_sha256": record["deb_sha256"],
            "file": path.name, "sha256": hashlib.sha256(data).hexdigest(),
            "pages": len(record["pages"]),
            "full": {"documents": n_full, "paragraphs": sum(len(p) for _, p in docs),
                     "bytes": len(full)},
            "documents": n_docs, "paragraphs": paragraphs, "bytes": len(data),
            "characters": len(data.decode("utf-8")),
            "dropped_paragraphs": dict(sorted((k, v) for k, v in dropped.items()
                                              if k != "empty_page")),
            "dropped_pages": dropped["empty_page"],
        }
        print(f"[{lang}] {len(record['pages'])} pages -> {n_full} documents, {len(full):,} bytes; "
              f"wrote {n_docs} documents, {paragraphs} paragraphs, {len(data):,} bytes -> {path}"
              f"{'' if changed else ' (unchanged)'}", flush=True)
    write_meta(out / "meta.json", meta)
    return meta


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring for the extraction rules.")
    p.add_argument("--out", required=True, help="output folder: <lang>.txt files + meta.json")
    p.add_argument("--languages", type=parse_languages, default=list(DEFAULT_LANGUAGES),
                   help="comma-separated package language codes "
                        f"(default {','.join(DEFAULT_LANGUAGES)})")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR),
                   help="downloads, apt lists and parsed pages (default data-raw/multilingual)")
    p.add_argument("--sample-bytes", type=int,
                   help="per language, write only the leading whole documents that fit in "
                        "this many bytes")
    p.add_argument("--apt-update", action="store_true",
                   help="refresh the private apt lists (<cache-dir>/apt-lists) before downloading")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.sample_bytes is not None and args.sample_bytes <= 0:
        print("error: --sample-bytes must be positive", file=sys.stderr)
        return 2
    try:
        run(args)
    except SourceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
