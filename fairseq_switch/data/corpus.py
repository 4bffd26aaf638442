"""Read raw text corpora as documents: plain text or jsonl, optionally gzipped.

Formats (`doc_format`):
  - "lines": one document per non-empty line;
  - "paragraphs": documents separated by blank lines (a document's lines are joined);
  - "jsonl": one JSON object per line, the document in a field (default "text", as in C4 dumps);
  - "auto": jsonl for *.jsonl / *.json / *.jsonl.gz / *.json.gz, otherwise "paragraphs" if the
    file has a blank line between two text lines, else "lines".
Whitespace inside a document is collapsed to single spaces.

Every text file the data preparation scripts read goes through `read_lines`, so that a file that is
not UTF-8, or named .gz but not gzip, stops them with one line naming the file and the fix
(`fail`), and `bad_utf8` ("error", "replace" or "skip") is one policy for all of them.
This module imports only the standard library, so data preparation runs without torch or fairseq.
"""

import codecs
import gzip
import io
import json
import os
import re
import sys
import zlib
from contextlib import closing
from pathlib import Path
from typing import Dict, Iterator, List, NoReturn, Optional, Sequence, Tuple

TEXT_SUFFIXES = (".txt", ".text", ".jsonl", ".json", ".txt.gz", ".jsonl.gz", ".json.gz")
DOC_FORMATS = ("auto", "lines", "paragraphs", "jsonl")
BAD_UTF8 = ("error", "replace", "skip")
GZIP_MAGIC = b"\x1f\x8b"
# surrogateescape decodes each byte that is not UTF-8 to one of these: one match = one bad byte
_BAD_BYTE = re.compile("[\udc80-\udcff]")


class CorpusError(ValueError):
    """Bad input to data preparation; the message names the file (or option) and the fix."""


def fail(*messages: str) -> NoReturn:
    """Print each message as one `error: ...` line and exit with status 2 (bad input, as argparse does)."""
    for message in messages:
        print("error: " + " ".join(message.split()), file=sys.stderr)
    raise SystemExit(2)


def check_output_folder(path: os.PathLike, option: str = "--out") -> None:
    """Refuse an output folder that is a file (or lies under one), before anything is read or written."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                which = f"{option} {path} is a file" if p == path else f"{option} {path}: {p} is a file"
                raise CorpusError(f"{which}, not a folder: give a folder for the outputs (the file was left "
                                  f"untouched)")
            return


class BadUtf8Counts:
    """What --bad-utf8 replace/skip changed, per file: kept in prepare.json and printed."""

    def __init__(self, policy: str):
        self.policy = policy
        self.files: Dict[str, int] = {}  # file -> bytes replaced (replace) or lines skipped (skip)

    def add(self, path: Path, n: int) -> None:
        self.files[str(path)] = self.files.get(str(path), 0) + n

    def as_dict(self) -> dict:
        what = "replaced_bytes" if self.policy == "replace" else "skipped_lines"
        return {"policy": self.policy, what: sum(self.files.values()), "files": dict(self.files)}


def describe_bad_utf8(counts: dict) -> str:
    """One line from `BadUtf8Counts.as_dict()`, e.g. '--bad-utf8 replace: 3 bytes replaced by U+FFFD (a.txt: 3)'."""
    if counts["policy"] == "replace":
        total, what = counts["replaced_bytes"], "byte(s) that are not UTF-8 replaced by U+FFFD"
    else:
        total, what = counts["skipped_lines"], "line(s) holding bytes that are not UTF-8 skipped"
    files = ", ".join(f"{f}: {n}" for f, n in counts["files"].items())
    return f"--bad-utf8 {counts['policy']}: {total} {what}" + (f" ({files})" if files else "")


def _open_binary(path: Path) -> io.BufferedIOBase:
    """The file's bytes, decompressed when it is named .gz (after checking that it is gzip)."""
    if not path.name.endswith(".gz"):
        return open(path, "rb")
    with open(path, "rb") as f:
        head = f.read(2)
    if head and head != GZIP_MAGIC:
        raise CorpusError(f"{path}: not gzip data, although the name ends in .gz; if it is plain text, rename "
                          f"it without .gz, else decompress it and give the text file")
    return gzip.open(path, "rb")


def first_bad_utf8(path: os.PathLike) -> Tuple[int, int, int]:
    """(byte offset, line number, byte value) of the first byte that is not UTF-8, or (-1, -1, -1).

    For a .gz file the offset counts decompressed bytes."""
    path = Path(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 1
    with _open_binary(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            held = decoder.buffer  # an unfinished character from the previous block
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                bad = offset - len(held) + e.start
                return bad, lines + (held + block)[:e.start].count(b"\n"), e.object[e.start]
            offset += len(block)
            lines += block.count(b"\n")
        held = decoder.buffer
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as e:
            return offset - len(held) + e.start, lines, e.object[e.start]
    return -1, -1, -1


def _utf8_error(path: Path) -> CorpusError:
    offset, line, value = first_bad_utf8(path)
    where = "byte offset" + (" (decompressed)" if path.name.endswith(".gz") else "")
    with open(path, "rb") as f:
        gzipped = f.read(2) == GZIP_MAGIC and not path.name.endswith(".gz")
    fix = ("it is gzip-compressed: name it .gz" if gzipped else
           "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8), or pass --bad-utf8 replace (bad bytes "
           "become U+FFFD) or --bad-utf8 skip (drop the lines holding them)")
    return CorpusError(f"{path}: not UTF-8 at {where} {offset} (line {line}: 0x{value:02x}); {fix}")


def read_lines(path: os.PathLike, bad_utf8: str = "error", counts: Optional[BadUtf8Counts] = None) -> Iterator[str]:
    """The file's lines (with their newline), gzip-decompressed when named .gz.

    Bytes that are not UTF-8 stop with a CorpusError naming the file and the offset (bad_utf8="error"),
    become U+FFFD ("replace") or drop their line ("skip"); `counts` records the changes."""
    path = Path(path)
    if bad_utf8 not in BAD_UTF8:
        raise CorpusError(f"unknown --bad-utf8 {bad_utf8!r}; choose one of {', '.join(BAD_UTF8)}")
    errors = "strict" if bad_utf8 == "error" else "surrogateescape"
    try:
        with io.TextIOWrapper(_open_binary(path), encoding="utf-8", errors=errors) as f:
            for line in f:
                if bad_utf8 != "error" and _BAD_BYTE.search(line):
                    skip = bad_utf8 == "skip"
                    line, n = ("", 1) if skip else _BAD_BYTE.subn("\ufffd", line)
                    if counts is not None:
                        counts.add(path, n)
                    if skip:
                        continue
                yield line
    except UnicodeDecodeError:
        raise _utf8_error(path) from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise CorpusError(f"{path}: damaged gzip data ({e}); fetch or compress the file again") from None


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


def _resolve_format(path: Path, doc_format: str, bad_utf8: str) -> str:
    if doc_format not in DOC_FORMATS:
        raise CorpusError(f"unknown document format {doc_format!r}; choose one of {', '.join(DOC_FORMATS)}")
    if doc_format != "auto":
        return doc_format
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    with closing(read_lines(path, bad_utf8)) as lines:  # uncounted: read_documents reads the file again
        seen_text, seen_blank = False, False
        for line in lines:
            if line.strip():
                if seen_text and seen_blank:
                    return "paragraphs"
                seen_text = True
            elif seen_text:
                seen_blank = True
    return "lines"


def _normalize(text: str) -> str:
    return " ".join(text.split())


def json_text(value: object, where: str, field: str, fix: str, labels: bool = False) -> str:
    """A jsonl field's text: a string (with `labels`, also a number, e.g. a class label, or a list of
    strings, whose first is kept); anything else would be trained on as its Python repr ('None',
    "{'a': 1}"), so it stops with `where` (file:line) and `fix`."""
    if labels and isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = value[0]  # e.g. several reference answers: keep the first
    if isinstance(value, str) or (labels and isinstance(value, (int, float)) and not isinstance(value, bool)):
        return str(value)
    kinds = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", dict: "an object",
             list: "a list"}
    raise CorpusError(f"{where}: field {field!r} is {kinds.get(type(value), type(value).__name__)} "
                      f"({json.dumps(value)[:60]}), not text; fix that line or remove it, or name the text "
                      f"field with {fix}")


def read_documents(path: os.PathLike, doc_format: str = "auto", json_field: str = "text",
                   bad_utf8: str = "error", counts: Optional[BadUtf8Counts] = None) -> Iterator[str]:
    """Yield the non-empty documents of one file (bad_utf8, counts: as `read_lines`)."""
    path = Path(path)
    fmt = _resolve_format(path, doc_format, bad_utf8)
    with closing(read_lines(path, bad_utf8, counts)) as lines:
        if fmt == "lines":
            for line in lines:
                doc = _normalize(line)
                if doc:
                    yield doc
        elif fmt == "paragraphs":
            block: List[str] = []
            for line in lines:
                if line.strip():
                    block.append(line)
                elif block:
                    yield _normalize(" ".join(block))
                    block = []
            if block:
                yield _normalize(" ".join(block))
        else:
            for lineno, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CorpusError(f"{path}:{lineno}: not valid JSON ({e.msg}); use --doc-format lines "
                                      f"for plain text") from None
                if not isinstance(record, dict) or json_field not in record:
                    raise CorpusError(f"{path}:{lineno}: no {json_field!r} field; pass --json-field NAME")
                doc = _normalize(json_text(record[json_field], f"{path}:{lineno}", json_field, "--json-field NAME"))
                if doc:
                    yield doc
