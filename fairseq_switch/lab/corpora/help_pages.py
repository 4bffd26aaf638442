"""The text of LibreOffice help pages: HTML -> paragraphs -> one language's documents.

Text extraction (``extract_paragraphs``), per page:
  * only the page body (``<div id="DisplayArea">``) is read: the header, the module
    menu, the index/search side bars and the debug footer are navigation;
  * dropped subtrees: scripts/styles, code (``<pre>``, ``<code>``, classes ``bascode``,
    ``pycode``, ``smathcode``, ``code``, ``codeintable``), the "Related topics" link list,
    the "To access this command" label, icons, and the hidden per-platform/per-module
    variants of switch texts (``<span hidden id="MAC...">`` etc.; the ``default...``
    variant is kept, so a sentence reads once, as on a generic system);
  * one paragraph per block element (p, h1-h6, li, td, ...); inline markup is removed and
    entities decoded; text is NFC-normalized, control characters removed, whitespace
    collapsed;
  * a paragraph is dropped when it has no letter (``no_letters``: numbers, symbols) or
    still looks like markup (``markup_like``: a literal ``<tag>`` or ``&entity;`` in the
    text, e.g. help about HTML export; dropped so that the corpus holds no tag-like text).
Per language (``build_documents``): pages are taken in a fixed pseudo-random order (by the
SHA-1 of the page path, the same in every language, so any prefix mixes all modules and
the languages' prefixes hold almost the same pages); a paragraph equal to one of the
English (en-US) help is dropped (``untranslated``: strings without a translation fall back
to English, and product/function names are not language text), as is any paragraph already
kept for that language (``duplicate``: exact, e.g. the shared note blocks); a page left
without paragraphs is dropped (``empty_page``).
All pure: no I/O.
"""

from __future__ import annotations

import collections
import hashlib
import re
from html.parser import HTMLParser

from .text import normalize_text

EXTRACTOR_VERSION = 1  # bump when extract_paragraphs changes: the page cache is keyed by it

VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
             "param", "source", "track", "wbr"}
# Subtrees that are navigation, code or not visible text.
SKIP_TAGS = {"head", "script", "style", "noscript", "header", "aside", "footer", "nav",
             "button", "select", "textarea", "pre", "code", "svg", "template", "object"}
SKIP_CLASSES = {"bascode", "pycode", "smathcode", "code", "codeintable", "relatedtopics",
                "howtogetheader", "noteicon", "debug", "bug"}
SKIP_IDS = {"SearchFrame", "DonationFrame", "DEBUG"}
# Elements that end one paragraph and start the next.
BLOCK_TAGS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "dl", "dt",
              "dd", "table", "thead", "tbody", "tr", "td", "th", "caption", "blockquote",
              "section", "article", "hr", "center", "body"}
CONTENT_ID = "DisplayArea"

_TAG_LIKE = re.compile(r"</?[A-Za-z][\w:.-]*(?:\s[^<>]*)?/?>")
_ENTITY_LIKE = re.compile(r"&(?:[A-Za-z][A-Za-z0-9]*|#[0-9]+|#[xX][0-9A-Fa-f]+);")


class _HelpPage(HTMLParser):
    """Collects the paragraphs of one help page (see ``extract_paragraphs``)."""

    def __init__(self, whole_body: bool):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, starts a skip, starts content)
        self.skip = 0      # open skipped elements around the current position
        self.content = 1 if whole_body else 0  # open content roots around it
        self.buf: list[str] = []
        self.paragraphs: list[str] = []

    def _flush(self) -> None:
        text = normalize_text("".join(self.buf))
        self.buf = []
        if text:
            self.paragraphs.append(text)

    @staticmethod
    def _skipped(tag: str, attrs: dict) -> bool:
        if tag in SKIP_TAGS or attrs.get("id") in SKIP_IDS:
            return True
        if set((attrs.get("class") or "").split()) & SKIP_CLASSES:
            return True
        # switch texts: one hidden span per platform/module, the "default..." one is generic
        return "hidden" in attrs and not (attrs.get("id") or "").startswith("default")

    def handle_starttag(self, tag: str, attr_list: list[tuple[str, str | None]]) -> None:
        attrs = dict(attr_list)
        if tag in BLOCK_TAGS:
            self._flush()
        elif tag == "br":  # a line break inside a paragraph separates words, not paragraphs
            self.buf.append(" ")
        if tag in VOID_TAGS:
            return
        skip = self._skipped(tag, attrs)
        content = attrs.get("id") == CONTENT_ID
        self.stack.append((tag, skip, content))
        self.skip += skip
        self.content += content

    def handle_startendtag(self, tag: str, attr_list: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attr_list)
        if tag not in VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in BLOCK_TAGS:
            self._flush()
        if not any(t == tag for t, _, _ in self.stack):
            return  # stray end tag
        while self.stack:  # also closes elements left open inside it
            t, skip, content = self.stack.pop()
            self.skip -= skip
            self.content -= content
            if t == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.content and not self.skip:
            self.buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def paragraph_drop_reason(text: str) -> str | None:
    """Why a (normalized) paragraph is not language text, or None to keep it."""
    if not any(ch.isalpha() for ch in text):
        return "no_letters"
    if _TAG_LIKE.search(text) or _ENTITY_LIKE.search(text):
        return "markup_like"
    return None


def extract_paragraphs(html: str, dropped: collections.Counter | None = None) -> list[str]:
    """The text paragraphs of one LibreOffice help page (HTML), in page order.

    Reads ``<div id="DisplayArea">`` (the whole page when there is none); drops navigation,
    code and hidden variants, and paragraphs without letters or with tag-like text (counted
    in ``dropped`` by reason). Pure: no I/O.
    """
    parser = _HelpPage(whole_body=f'id="{CONTENT_ID}"' not in html)
    parser.feed(html)
    parser.close()
    kept = []
    for text in parser.paragraphs:
        reason = paragraph_drop_reason(text)
        if reason is None:
            kept.append(text)
        elif dropped is not None:
            dropped[reason] += 1
    return kept


def page_order_key(page: str) -> str:
    """Fixed pseudo-random page order, the same in every language (see the docstring)."""
    return hashlib.sha1(page.encode("utf-8")).hexdigest()


def build_documents(pages: dict[str, list[str]], reference: set[str] | None = None
                    ) -> tuple[list[tuple[str, list[str]]], collections.Counter]:
    """(page, paragraphs) documents of one language and the drop counts.

    ``pages`` maps page path -> extracted paragraphs; ``reference`` holds the English
    paragraphs (``untranslated`` drops; None for English itself). Exact duplicate
    paragraphs within the language are dropped after their first occurrence in page order.
    """
    dropped: collections.Counter = collections.Counter()
    seen: set[str] = set()
    docs = []
    for page in sorted(pages, key=lambda p: (page_order_key(p), p)):
        kept = []
        for text in pages[page]:
            if reference is not None and text in reference:
                dropped["untranslated"] += 1
            elif text in seen:
                dropped["duplicate"] += 1
            else:
                seen.add(text)
                kept.append(text)
        if kept:
            docs.append((page, kept))
        else:
            dropped["empty_page"] += 1
    return docs, dropped


def render_documents(docs: list[tuple[str, list[str]]], max_bytes: int | None = None
                     ) -> tuple[bytes, int]:
    """UTF-8 text (paragraph per line, blank line between documents) and the number of
    documents in it; with ``max_bytes``, only the leading whole documents that fit."""
    out: list[bytes] = []
    size = 0
    for _page, paragraphs in docs:
        block = ("\n".join(paragraphs) + "\n").encode("utf-8")
        extra = len(block) + (1 if out else 0)  # the blank line before it
        if max_bytes is not None and size + extra > max_bytes:
            break
        out.append(block)
        size += extra
    return b"\n".join(out), len(out)

