"""The technical-documentation corpus: which Debian packages, which files, and how each becomes text.

Eighteen documentation packages of Debian's main archive (DFSG-free licences, listed per source
below) give 187 MB of English technical prose: manuals, tutorials, references and a
dictionary. None of it is used elsewhere in this project, and none of it is benchmark data (a
document carrying a benchmark canary string is dropped and counted).

Each source names its package, the files taken (shell patterns on the path inside the package,
where `*` also crosses `/`), the format, and the licence as its Debian copyright file states it.
Formats:
- `rst`: reStructuredText, AsciiDoc or plain text (Sphinx `_sources`, kernel `.rst`): heading
  underlines and `..` directive/comment lines are dropped, the rest kept;
- `pod`: Perl's POD: command paragraphs keep their text, formatting codes (`C<...>`) their content;
- `html`: text outside scripts, styles and navigation (header, footer, sidebars, breadcrumbs);
- `dict`: a dictd database (`.dict.dz` + `.index`): entries in index order, grouped by
  `DICT_ENTRIES_PER_DOC` into documents.
Every document is one line: NFC, whitespace collapsed (`normalize_text`).
"""

from __future__ import annotations

import fnmatch
import gzip
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator

from .text import normalize_text

DICT_ENTRIES_PER_DOC = 100
MIN_DOC_WORDS = 20  # shorter documents (index stubs, empty pages) are dropped

# Benchmark data carries a canary asking not to be trained on (BIG-bench style); such documents are dropped.
CANARY = re.compile(r"canary GUID|BENCHMARK DATA SHOULD NEVER APPEAR|canary string", re.IGNORECASE)


@dataclass(frozen=True)
class Source:
    """One Debian package and the files of it that become documents."""

    name: str  # output file <name>.txt
    package: str
    title: str
    fmt: str  # rst | pod | html | dict
    include: tuple[str, ...]
    licence: str
    exclude: tuple[str, ...] = ()


SOURCES: tuple[Source, ...] = (
    Source("linux", "linux-doc-6.1", "Linux kernel documentation (6.1)", "rst",
           ("usr/share/doc/linux-doc-6.1/Documentation/*.rst.gz",
            "usr/share/doc/linux-doc-6.1/Documentation/*.txt.gz"),
           "GPL-2.0-only (the kernel's licence; some files are dual-licensed with CC-BY-4.0 or GFDL-1.1+, "
           "as their SPDX lines say)",
           ("*/Documentation/translations/*",)),
    Source("python", "python3.11-doc", "Python 3.11 documentation", "rst",
           ("usr/share/doc/python3.11/html/_sources/*.rst.txt",),
           "PSF-2.0 (Python Software Foundation License; code examples 0BSD)"),
    Source("perl", "perl-doc", "Perl 5.36 core documentation (perlfunc, perlop, perlre, ...)", "pod",
           ("usr/share/perl/5.36.0/pod/*.pod",), "Artistic-1.0-Perl or GPL-1.0-or-later"),
    Source("gcide", "dict-gcide", "GNU Collaborative International Dictionary of English 0.48 "
           "(Webster's Revised Unabridged Dictionary of 1913 with WordNet additions)", "dict",
           ("usr/share/dictd/gcide.dict.dz",), "GPL-3.0-or-later"),
    Source("sqlalchemy", "python-sqlalchemy-doc", "SQLAlchemy 1.4 documentation", "rst",
           ("usr/share/doc/python-sqlalchemy-doc/rst/*.rst",), "MIT"),
    Source("git", "git-doc", "Git 2.39 manual pages and guides (AsciiDoc)", "rst",
           ("usr/share/doc/git-doc/*.txt",), "GPL-2.0-only"),
    Source("cmake", "cmake-doc", "CMake 3.25 documentation", "rst",
           ("usr/share/doc/cmake-data/html/_sources/*.rst.txt",), "BSD-3-Clause"),
    Source("sphinx", "sphinx-doc", "Sphinx 5.3 documentation", "rst",
           ("usr/share/doc/sphinx-doc/html/_sources/*.rst.txt",), "BSD-2-Clause"),
    Source("django", "python-django-doc", "Django 3.2 documentation", "html",
           ("usr/share/doc/python-django-doc/html/*.html",), "BSD-3-Clause",
           ("*/genindex*.html", "*/py-modindex.html", "*/search.html", "*/_modules/*")),
    Source("postgresql", "postgresql-doc-15", "PostgreSQL 15 manual", "html",
           ("usr/share/doc/postgresql-doc-15/html/*.html",), "PostgreSQL (a permissive BSD-style licence)",
           ("*/bookindex.html",)),
    Source("nodejs", "nodejs-doc", "Node.js 18 API documentation", "html",
           ("usr/share/doc/nodejs/api/*.html",), "MIT", ("*/all.html",)),
    Source("rust", "rust-doc", "The Rust books (The Book, Reference, Nomicon, Rust by Example, Edition "
           "Guide, Cargo, rustc, rustdoc, Embedded, Unstable)", "html",
           tuple(f"usr/share/doc/rust-doc/html/{book}/*.html" for book in (
               "book", "reference", "nomicon", "rust-by-example", "edition-guide", "cargo", "rustc",
               "rustdoc", "embedded-book", "unstable-book")),
           "MIT or Apache-2.0", ("*/print.html", "*/toc.html", "*/404.html")),
    Source("scipy", "python-scipy-doc", "SciPy 1.10 documentation", "html",
           ("usr/share/doc/python-scipy-doc/html/*.html",), "BSD-3-Clause",
           ("*/genindex*.html", "*/py-modindex.html", "*/search.html", "*/_modules/*")),
    Source("sympy", "python-sympy-doc", "SymPy 1.11 documentation", "html",
           ("usr/share/doc/python-sympy-doc/html/*.html",), "BSD-3-Clause",
           ("*/genindex*.html", "*/py-modindex.html", "*/search.html", "*/_modules/*")),
    Source("pandas", "python-pandas-doc", "pandas 1.5 documentation", "html",
           ("usr/share/doc/python-pandas-doc/html/*.html",), "BSD-3-Clause",
           ("*/genindex*.html", "*/py-modindex.html", "*/search.html", "*/_modules/*")),
    Source("ghc", "ghc-doc", "GHC 9.0 User's Guide and the Haddock documentation of its libraries", "html",
           ("usr/share/doc/ghc-doc/html/users_guide/*.html", "usr/share/doc/ghc-doc/html/libraries/*.html"),
           "BSD-3-Clause (GHC and its boot libraries)",
           ("*/src/*", "*/doc-index*.html", "*/index.html", "*/search.html", "*/genindex.html")),
    Source("erlang", "erlang-doc", "Erlang/OTP 25 documentation (guides and reference manuals)", "html",
           ("usr/share/doc/erlang-doc/*.html",), "Apache-2.0", ("*/index.html", "*/release_notes.html")),
    Source("openjdk", "openjdk-17-doc", "OpenJDK 17 API documentation (Javadoc) and specifications", "html",
           ("usr/share/doc/openjdk-17-doc/*.html", "usr/share/doc/openjdk-17-jre-headless/*.html"),
           "GPL-2.0-only with the Classpath exception",
           ("*/class-use/*", "*-tree.html", "*/index-files/*", "*/allclasses*", "*/allpackages*",
            "*/deprecated-list.html", "*/serialized-form.html", "*/package-use.html", "*/constant-values.html",
            "*/index.html", "*/help-doc.html", "*/new-list.html", "*/search.html")),
)


def select_files(root: Path, source: Source) -> list[Path]:
    """The source's files under an extracted package, sorted by path."""
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if any(fnmatch.fnmatchcase(rel, pat) for pat in source.include) and \
                not any(fnmatch.fnmatchcase(rel, pat) for pat in source.exclude):
            out.append(path)
    return out


def read_bytes(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix in (".gz", ".dz"):
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------- formats

_UNDERLINE = re.compile(r"^\s*([=\-~^*#+`'\".:_])\1{2,}\s*$")
_DIRECTIVE = re.compile(r"^\s*\.\.(\s|$)")  # rst comments, directives, targets, SPDX lines


def rst_text(text: str) -> str:
    """reStructuredText / AsciiDoc / plain text -> one line (underlines and directive lines dropped)."""
    keep = [ln for ln in text.splitlines() if not _UNDERLINE.match(ln) and not _DIRECTIVE.match(ln)]
    return normalize_text("\n".join(keep))


_POD_CODE = re.compile(r"[A-Z]<<+\s+(.*?)\s+>>+|[A-Z]<([^<>]*)>", re.DOTALL)
_POD_COMMAND = re.compile(r"^=(head\d|item)\s*", re.MULTILINE)
_POD_SKIP = re.compile(r"^=(pod|cut|over|back|begin|end|for|encoding)\b.*$", re.MULTILINE)


def pod_text(text: str) -> str:
    """Perl POD -> one line: headings and items keep their text, formatting codes their content."""
    text = _POD_SKIP.sub("", _POD_COMMAND.sub("", text))
    for _ in range(4):  # nested codes, innermost first
        new = _POD_CODE.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), text)
        if new == text:
            break
        text = new
    return normalize_text(text)


_SKIP_TAGS = {"script", "style", "head", "nav", "header", "footer", "noscript", "svg", "button"}
# Navigation of the Sphinx, pydata-sphinx, DocBook, mdBook and Django themes, by class token or id.
_SKIP_CLASSES = {"sphinxsidebar", "sphinxsidebarwrapper", "related", "navheader", "navfooter", "sidebar", "breadcrumb",
                 "breadcrumbs", "headerlink", "footer", "toc", "nav", "nav-chapters", "nav-wrapper", "menu-bar",
                 "mobile-nav-chapters", "searchbar", "search", "prev-next-area", "navbar", "sidebar-drawer",
                 "toc-drawer", "mobile-header", "related-pages", "bottom-of-page", "visually-hidden", "skip-nav"}
_SKIP_CLASS_PREFIXES = ("bd-sidebar", "bd-header", "bd-footer", "bd-toc", "navbar")
_SKIP_IDS = {"hd", "ft", "global-nav", "sidebar", "menu-bar", "searchbar-outer", "search", "breadcrumbs", "footer",
             "header"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_BLOCK = {"p", "div", "li", "dd", "dt", "pre", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "table",
          "blockquote", "br"}


class _Text(HTMLParser):
    """Visible text of a documentation page, without navigation."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_tag: str | None = None
        self.skip_depth = 0

    def _skipped(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        if tag in _SKIP_TAGS:
            return True
        a = dict(attrs)
        classes = (a.get("class") or "").lower().split()
        return (a.get("role") == "navigation" or a.get("id") in _SKIP_IDS
                or any(c in _SKIP_CLASSES or c.startswith(_SKIP_CLASS_PREFIXES) for c in classes))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            if tag == "br" and not self.skip_tag:
                self.parts.append("\n")
            return
        if self.skip_tag:
            if tag == self.skip_tag:
                self.skip_depth += 1
        elif self._skipped(tag, attrs):
            self.skip_tag, self.skip_depth = tag, 1
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self.skip_tag:
            if tag == self.skip_tag:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skip_tag = None
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip_tag:
            self.parts.append(data)


def html_text(text: str) -> str:
    """HTML page -> one line of its visible text without scripts, styles and navigation."""
    parser = _Text()
    parser.feed(text)
    parser.close()
    return normalize_text("".join(parser.parts))


def _b64(s: str) -> int:
    """dictd's base64 numbers (alphabet A-Za-z0-9+/, most significant digit first)."""
    n = 0
    for ch in s:
        n = n * 64 + _B64.index(ch)
    return n


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def dict_documents(dict_path: Path) -> Iterator[tuple[str, str]]:
    """(id, text) per group of DICT_ENTRIES_PER_DOC entries of a dictd database, in index order.

    The `.index` beside the `.dict.dz` gives each entry's offset and length; the database's own
    `00-database-*` entries are skipped, and an entry listed under several headwords is read once."""
    data = gzip.decompress(dict_path.read_bytes())
    index = dict_path.with_name(dict_path.name.replace(".dict.dz", ".index"))
    seen: set[tuple[int, int]] = set()
    group: list[str] = []
    first = ""
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or fields[0].startswith("00-database") or fields[0].startswith("00database"):
            continue
        span = (_b64(fields[1]), _b64(fields[2]))
        if span in seen:
            continue
        seen.add(span)
        entry = data[span[0]:span[0] + span[1]].decode("utf-8", errors="replace")
        first = first or fields[0]
        group.append(entry)
        if len(group) == DICT_ENTRIES_PER_DOC:
            yield f"{first}", normalize_text("\n".join(group))
            group, first = [], ""
    if group:
        yield first, normalize_text("\n".join(group))


FORMATS = {"rst": rst_text, "pod": pod_text, "html": html_text}


def file_document(path: Path, fmt: str) -> str:
    """One file's document text (format `rst`, `pod` or `html`)."""
    return FORMATS[fmt](read_bytes(path))
