"""Fetch a real multilingual text corpus: the LibreOffice help in many languages.

Source: the Debian packages ``libreoffice-help-<lang>`` (suite bookworm; LibreOffice 7.4
help, MPL-2.0). Every package holds the same ~2,560 help pages, translated, as HTML files
``usr/share/libreoffice/help/<lang>/text/<module>/.../<page>.html``. The packages are
fetched with ``apt-get download`` into ``--cache-dir`` using a private apt lists folder
(``<cache-dir>/apt-lists``, filled by ``apt-get update`` with ``Dir::State::Lists``
pointed there, as ``scripts/fetch_downstream_corpus.py --apt-update`` does), so the
system's apt state is not touched. The .deb files are read with Python (``ar`` + tar), not
installed or unpacked to disk (``help_packages``).

Text extraction and the documents of each language: see ``help_pages`` (only the page body,
without navigation, code and hidden variants; paragraphs without letters or with tag-like
text, untranslated (equal to the English help) and duplicate paragraphs are dropped; pages
in a fixed pseudo-random order, the same in every language).

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
import json
import re
import sys
from pathlib import Path

from .downloads import SourceError, exit_status
from .files import sha256_file, write_if_changed, write_meta
from .help_packages import PACKAGE_PREFIX, deb_help_pages, deb_version, fetch_debs
from .help_pages import EXTRACTOR_VERSION, build_documents, extract_paragraphs, render_documents
from .paths import DATA_RAW_DIR

DEFAULT_CACHE_DIR = DATA_RAW_DIR / "multilingual"
REFERENCE_LANG = "en-us"  # untranslated paragraphs equal the English help
# 16 languages, 7 scripts (Latin, Cyrillic, Greek, Devanagari, Han, kana, Hangul), 0.5-6 MB each.
# bookworm has no Arabic or Hebrew help package.
DEFAULT_LANGUAGES = ("de", "fr", "es", "it", "pt", "nl", "pl", "fi", "tr", "vi",
                     "ru", "el", "hi", "ja", "ko", "zh-cn")


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


def run(args: argparse.Namespace) -> dict:
    """Fetch, extract and write every language of `args`; the meta.json written."""
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
    return exit_status(lambda: run(args))
