"""Debian package descriptions: long description -> one-line synopsis (summarization, bundled).

Read from apt's English description list ``<mirror>_dists_<suite>_main_i18n_Translation-en[.lz4|.gz|.xz]``
(or a ``Packages`` file whose ``Description:`` fields carry the long text). In each stanza the first
line of ``Description(-en):`` is the synopsis (the target) and the indented continuation lines are the
long description (the input; a line `` .`` is a paragraph break, paragraphs are joined with one space).
The drop rules are in `extract_debian_pairs` and the docstring of `fairseq_switch.lab.corpora.downstream.build`.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import lzma
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Iterator

from ..downloads import SourceError, apt_update_translations, given_file
from ..text import normalize_text, word_count
from .extraction import Dedup, Extraction

DEBIAN_SUITE = "bookworm"
SYSTEM_APT_LISTS = Path("/var/lib/apt/lists")


def parse_deb822(text: str) -> Iterator[dict[str, str]]:
    """Stanzas of a Debian control-style file (Packages, Translation-en) as dicts.

    Keys are the field names as written; a value keeps its continuation lines (``\\n`` plus
    the line with its leading space), so a multi-line field reads back as in the file.
    """
    fields: dict[str, str] = {}
    last = None
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, None
        elif line[0] in " \t":
            if last is not None:
                fields[last] += "\n" + line
        elif ":" in line:
            name, value = line.split(":", 1)
            last = name.strip()
            fields[last] = value.strip()
    if fields:
        yield fields


def debian_description(value: str) -> tuple[str, list[str]]:
    """Split a ``Description`` value into (synopsis, long-description paragraphs).

    Continuation lines are one leading space plus text; `` .`` is an empty line (a
    paragraph break); lines with more indentation are verbatim text, which is joined like
    the rest once whitespace is normalized.
    """
    lines = value.split("\n")
    synopsis = normalize_text(lines[0])
    paragraphs: list[list[str]] = [[]]
    for line in lines[1:]:
        body = line[1:] if line[:1] in (" ", "\t") else line
        if body.strip() == ".":
            paragraphs.append([])
        else:
            paragraphs[-1].append(body)
    texts = [normalize_text(" ".join(p)) for p in paragraphs]
    return synopsis, [t for t in texts if t]


def extract_debian_pairs(stanzas: Iterable[dict[str, str]], min_words: int = 25,
                         max_words: int = 80) -> Extraction:
    """Long description -> synopsis pairs (see the module docstring for the drop rules)."""
    ex = Extraction()
    dedup = Dedup(ex)
    near_keys: set[str] = set()
    for st in stanzas:
        desc = st.get("Description-en", st.get("Description"))
        if desc is None:
            continue  # not a package stanza
        ex.read += 1
        synopsis, paragraphs = debian_description(desc)
        if not synopsis:
            ex.drop("no_synopsis")
            continue
        if not paragraphs:
            ex.drop("empty")
            continue
        text = " ".join(paragraphs)
        n = word_count(text)
        if n < min_words:
            ex.drop("too_short")
            continue
        if n > max_words:
            ex.drop("too_long")
            continue
        if text in dedup.seen:
            ex.drop("duplicate")
            continue
        package = st.get("Package", f"stanza-{ex.read}")
        keys = near_duplicate_keys(package, paragraphs, synopsis)
        if any(k in near_keys for k in keys):
            ex.drop("near_duplicate")
            continue
        near_keys.update(keys)
        dedup.add({"id": package, "input": text, "target": synopsis})
    return ex


NEAR_DUP_PREFIX_WORDS = 10
_WORD = re.compile(r"\w+")


def near_duplicate_keys(package: str, paragraphs: list[str], synopsis: str) -> tuple[str, ...]:
    """Keys under which two Debian descriptions count as near duplicates (any shared key).

    ``p:`` the first paragraph; ``w:`` the first ``NEAR_DUP_PREFIX_WORDS`` words; ``s:`` the
    "skeleton": the words of the description minus those in the synopsis and the package
    name (template families such as ``tesseract-ocr-<lang>`` or ``linux-headers-<version>``
    differ only in such words). All case-folded.
    """
    text = " ".join(paragraphs).casefold()
    own = set(_WORD.findall(synopsis.casefold())) | set(_WORD.findall(package.casefold()))
    skeleton = " ".join(w for w in _WORD.findall(text) if w not in own)
    return ("p:" + paragraphs[0].casefold(),
            "w:" + " ".join(text.split()[:NEAR_DUP_PREFIX_WORDS]),
            "s:" + skeleton)


def read_compressed(path: Path) -> bytes:
    """Bytes of an apt list, decompressing .lz4 (lz4 CLI, python-lz4 or apt-helper), .gz, .xz, .bz2."""
    suffix = path.suffix
    if suffix == ".gz":
        return gzip.decompress(path.read_bytes())
    if suffix in (".xz", ".lzma"):
        return lzma.decompress(path.read_bytes())
    if suffix == ".bz2":
        return bz2.decompress(path.read_bytes())
    if suffix != ".lz4":
        return path.read_bytes()
    if shutil.which("lz4"):
        proc = subprocess.run(["lz4", "-dc", str(path)], capture_output=True)
        if proc.returncode == 0:
            return proc.stdout
    try:
        import lz4.frame  # type: ignore

        return lz4.frame.decompress(path.read_bytes())
    except ImportError:
        pass
    helper = Path("/usr/lib/apt/apt-helper")
    if helper.exists():
        proc = subprocess.run([str(helper), "cat-file", str(path)], capture_output=True)
        if proc.returncode == 0:
            return proc.stdout
    raise SourceError(f"cannot decompress {path}: install the `lz4` command (apt-get install lz4) "
                      "or the python `lz4` module")


def _apt_list_candidates(dirs: list[Path], suite: str, kind: str) -> list[Path]:
    pattern = (f"*_dists_{suite}_main_i18n_Translation-en*" if kind == "translation"
               else f"*_dists_{suite}_main_binary-*_Packages*")
    found: list[Path] = []
    for d in dirs:
        if d.is_dir():
            found += sorted(p for p in d.glob(pattern) if p.is_file() and p.stat().st_size > 0)
    return found


def locate_debian_file(args: argparse.Namespace) -> Path:
    if args.debian_file:
        return given_file(args.debian_file, "--debian-file")
    private = Path(args.cache_dir) / "apt-lists"
    if args.apt_update:
        apt_update_translations(private)
    dirs = [private, SYSTEM_APT_LISTS]
    found = _apt_list_candidates(dirs, args.debian_suite, "translation")
    if found:
        return found[0]
    packages = _apt_list_candidates([SYSTEM_APT_LISTS], args.debian_suite, "packages")
    why = (f"apt has {packages[0].name}, but a Packages list carries only the one-line synopsis "
           "when apt fetches the descriptions separately, and this apt fetches none "
           "(Acquire::Languages \"none\", as in Docker images); "
           if packages else f"no apt list for the Debian suite '{args.debian_suite}' was found "
           f"in {SYSTEM_APT_LISTS}; ")
    raise SourceError(
        f"no English description list (*_dists_{args.debian_suite}_main_i18n_Translation-en*) "
        f"in {private} or {SYSTEM_APT_LISTS}.\n  {why}"
        "the long descriptions are in Translation-en.\n  Fix: re-run with --apt-update (as root: "
        f"downloads it with apt-get into {private}, the system's apt state is untouched), or "
        "pass --debian-file PATH to a Translation-en[.lz4|.gz|.xz] or Packages file with long "
        "descriptions (e.g. from a Debian mirror's dists/bookworm/main/i18n/).")


def release_info(list_file: Path) -> dict:
    """Origin/Suite/Version/Date of the InRelease file next to an apt list, when present."""
    m = re.match(r"(.*_dists_[^_]+)_", list_file.name)
    info: dict[str, str] = {}
    if m:
        release = list_file.parent / f"{m.group(1)}_InRelease"
        if release.is_file():
            for line in release.read_text(errors="replace").splitlines():
                if line.startswith(("MD5Sum:", "SHA256:", "-----BEGIN PGP SIGNATURE")):
                    break  # the header fields come before the checksum lists
                key, _, value = line.partition(":")
                if key in ("Origin", "Suite", "Version", "Codename", "Date") and key not in info:
                    info[key] = value.strip()
    return info


def load_debian(args: argparse.Namespace) -> tuple[Extraction, dict]:
    path = locate_debian_file(args)
    print(f"[read] {path}", flush=True)
    raw = read_compressed(path)
    text = raw.decode("utf-8", errors="replace")
    ex = extract_debian_pairs(parse_deb822(text), args.min_words, args.max_words)
    if ex.read and ex.dropped["empty"] == ex.read:
        raise SourceError(f"{path} has no long descriptions (a Packages list from a machine with "
                          "Acquire::Languages \"none\"?); use Translation-en, see --apt-update")
    m = re.search(r"_(dists_.+?)(?:\.(?:lz4|gz|xz|bz2|lzma))?$", path.name)
    source = {"source": "Debian archive: English package descriptions (Translation-en)",
              # the archive path (dists/<suite>/main/i18n/Translation-en), not the mirror's name
              "file": m.group(1).replace("_", "/") if m else path.name,
              "sha256_uncompressed": hashlib.sha256(raw).hexdigest(),
              "release": release_info(path)}
    return ex, source

