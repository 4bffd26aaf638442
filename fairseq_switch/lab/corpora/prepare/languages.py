"""The languages of a multilingual corpus: which files hold which language, and their documents.

A folder holding <lang>.txt (or <lang>.txt.gz, <lang>.jsonl, ...) files gives one language per file; a
folder holding one subfolder per language gives one language per subfolder (all its text files); a file
is one language (named after the file). meta.json and README.md are not languages. Errors name the
language and the fix.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fairseq_switch.data import corpus
from .documents import split_documents

NOT_LANGUAGES = {"meta.json", "README.md"}
# longest first, so that "de.txt.gz" is language "de", not "de.txt"
LANGUAGE_SUFFIXES = sorted(corpus.TEXT_SUFFIXES, key=len, reverse=True)


def language_name(path: Path) -> str:
    """The language a file holds: its name without the text suffix."""
    for suffix in LANGUAGE_SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[:-len(suffix)]
    return path.stem


def find_languages(inputs: list[Path]) -> dict[str, list[Path]]:
    """{language: its files} from folders of <lang>.<suffix> files / <lang>/ subfolders, or files."""
    languages: dict[str, list[Path]] = {}
    for item in inputs:
        path = Path(item)
        found: dict[str, list[Path]] = {}
        if path.is_dir():
            for entry in sorted(path.iterdir()):
                if entry.name.startswith(".") or entry.name in NOT_LANGUAGES:
                    continue
                if entry.is_dir():
                    try:
                        found[entry.name] = corpus.corpus_files([entry])
                    except corpus.CorpusError as e:
                        raise corpus.CorpusError(f"language {entry.name!r}: {e}") from None
                elif entry.is_file() and entry.name.endswith(corpus.TEXT_SUFFIXES):
                    found.setdefault(language_name(entry), []).append(entry)
            if not found:
                raise corpus.CorpusError(
                    f"{path}: no languages found: expected <lang>.txt files (or {', '.join(corpus.TEXT_SUFFIXES[1:])}) "
                    f"or one subfolder per language")
        elif path.is_file():
            found[language_name(path)] = [path]
        else:
            raise corpus.CorpusError(f"{path}: no such file or folder")
        for lang, files in found.items():
            languages.setdefault(lang, []).extend(files)
    return dict(sorted(languages.items()))


def select_languages(available: dict[str, list[Path]], wanted: str) -> list[str]:
    """The --languages asked for, in their order (all found, sorted, when none); exits for unknown ones."""
    if not wanted.strip():
        return list(available)
    chosen = list(dict.fromkeys(w.strip() for w in wanted.split(",") if w.strip()))
    unknown = [w for w in chosen if w not in available]
    if unknown:
        raise SystemExit(f"error: unknown language{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))} in --languages; the inputs hold: "
                         f"{', '.join(available)}")
    return chosen


def read_language(lang: str, files: list[Path], args: argparse.Namespace,
                  utf8_counts: corpus.BadUtf8Counts | None = None) -> tuple[list[str] | None, str | None]:
    """(documents, None) or (None, an error message naming the language and the fix)."""
    docs = []
    try:
        for f in files:
            docs.extend(corpus.read_documents(f, args.doc_format, args.json_field, args.bad_utf8, utf8_counts))
    except corpus.CorpusError as e:
        return None, f"language {lang!r}: {e}"
    where = ", ".join(str(f) for f in files[:3]) + (" ..." if len(files) > 3 else "")
    if not docs:
        return None, (f"language {lang!r} has no text: every document in {where} is empty; fix the "
                      f"file(s) (or --doc-format/--json-field) or leave {lang!r} out with --languages")
    return docs, None


def split_language(lang: str, docs: list[str], args: argparse.Namespace) -> tuple[dict | None, str | None]:
    """(its train/valid/test documents, None) or (None, an error message naming the language and the fix)."""
    splits = split_documents(docs, args.valid_chars, args.test_chars, args.seed, size=len)
    if splits["train"]:
        return splits, None
    chars = sum(map(len, docs))
    if len(docs) < 3:
        need = "at least 3 documents are needed (whole documents are held out for valid and test)"
    else:
        need = "lower --valid-chars/--test-chars"
    return None, (f"language {lang!r} is too small: its {len(docs)} document(s) ({chars:,d} characters) "
                  f"leave no training documents after holding out --valid-chars {args.valid_chars} and "
                  f"--test-chars {args.test_chars}; {need}, add text, or leave {lang!r} out with --languages")
