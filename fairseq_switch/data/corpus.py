"""Read raw text corpora as documents: plain text or jsonl, optionally gzipped.

Formats (`doc_format`):
  - "lines": one document per non-empty line;
  - "paragraphs": documents separated by blank lines (a document's lines are joined);
  - "jsonl": one JSON object per line, the document in a field (default "text", as in C4 dumps);
  - "auto": jsonl for *.jsonl / *.json / *.jsonl.gz / *.json.gz, otherwise "paragraphs" if the
    file has a blank line between two text lines, else "lines".
Whitespace inside a document is collapsed to single spaces.
"""

import gzip
import io
import json
import os
from pathlib import Path
from typing import Iterator, List, Sequence

TEXT_SUFFIXES = (".txt", ".text", ".jsonl", ".json", ".txt.gz", ".jsonl.gz", ".json.gz")
DOC_FORMATS = ("auto", "lines", "paragraphs", "jsonl")


class CorpusError(ValueError):
    pass


def corpus_files(inputs: Sequence[os.PathLike]) -> List[Path]:
    """The input files, with folders expanded to their text files (sorted), with clear errors."""
    files: List[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            # meta.json: the provenance record the fetch scripts write next to the text, not a corpus
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.name.endswith(TEXT_SUFFIXES) and p.name != "meta.json")
            if not found:
                raise CorpusError(f"{path}: folder holds no text files ({', '.join(TEXT_SUFFIXES)})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise CorpusError(f"{path}: no such file or folder")
    return files


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _resolve_format(path: Path, doc_format: str) -> str:
    if doc_format not in DOC_FORMATS:
        raise CorpusError(f"unknown document format {doc_format!r}; choose one of {', '.join(DOC_FORMATS)}")
    if doc_format != "auto":
        return doc_format
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    with _open_text(path) as f:
        seen_text, seen_blank = False, False
        for line in f:
            if line.strip():
                if seen_text and seen_blank:
                    return "paragraphs"
                seen_text = True
            elif seen_text:
                seen_blank = True
    return "lines"


def _normalize(text: str) -> str:
    return " ".join(text.split())


def read_documents(path: os.PathLike, doc_format: str = "auto", json_field: str = "text") -> Iterator[str]:
    """Yield the non-empty documents of one file."""
    path = Path(path)
    fmt = _resolve_format(path, doc_format)
    with _open_text(path) as f:
        if fmt == "lines":
            for line in f:
                doc = _normalize(line)
                if doc:
                    yield doc
        elif fmt == "paragraphs":
            block: List[str] = []
            for line in f:
                if line.strip():
                    block.append(line)
                elif block:
                    yield _normalize(" ".join(block))
                    block = []
            if block:
                yield _normalize(" ".join(block))
        else:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CorpusError(f"{path}:{lineno}: not valid JSON ({e.msg}); use --doc-format lines "
                                      f"for plain text") from None
                if not isinstance(record, dict) or json_field not in record:
                    raise CorpusError(f"{path}:{lineno}: no {json_field!r} field; pass --json-field NAME")
                doc = _normalize(str(record[json_field]))
                if doc:
                    yield doc
