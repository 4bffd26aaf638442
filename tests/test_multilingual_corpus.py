"""Tests of fairseq_switch/lab/corpora/fetch_multilingual.py (scripts/fetch_multilingual_corpus.py) and the bundled
sample in data/multilingual/.

No network: the extraction runs on a hand-written help page and a tiny .deb built here;
the committed sample is checked as it is.
"""

import collections
import hashlib
import io
import json
import re
import tarfile
import unicodedata
from pathlib import Path

import pytest

from fairseq_switch.lab.corpora import downloads, help_packages, help_pages
from fairseq_switch.lab.corpora import fetch_multilingual as multilingual

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "multilingual"
MIN_BYTES, MAX_BYTES, MAX_TOTAL = 150_000, 250_000, 3_000_000


# ------------------------------------------------------------------ text extraction

# A help page in the shape of the packages' HTML (help3xsl output), cut down by hand.
PAGE = """<!DOCTYPE html>
<html lang="de" dir="ltr"><head><title>Erweitert</title>
<script type="text/javascript">var x = "<p>kein Text</p>";</script></head>
<body>
<header id="TopLeftHeader"><a class="logo" href="de/x.html"><p dir="auto">Hilfe für LibreOffice 7.4</p></a>
<div class="modules"><button type="button">Module</button><nav id="modules-nav"></nav></div></header>
<aside class="leftside"><div id="Index"><div class="index-label">Index</div>
<input id="search-bar" type="search" placeholder="In allen Modulen suchen"></div></aside>
<div id="DisplayArea" itemprop="softwareHelp">
<a name="advanced"></a><meta itemprop="keywords" content="Java, Einstellungen">
<h1 id="par_1" dir="auto">Erweitert</h1>
<p id="par_2" class="paragraph">Legt die <span class="emph">Java</span>-Einstellungen fest &amp; mehr.</p>
<div class="howtoget"><div><p class="howtogetheader">So greifen Sie auf diesen Befehl zu:</p></div>
<div class="howtogetbody"><div class="embedded"><p class="embedded">Wählen Sie <span class="switchinline"><span hidden="true" id="MACtext_1" class="MAC"><span class="emph">LibreOffice – Einstellungen</span></span><span hidden="true" id="defaulttext_1"><span class="emph">Extras – Optionen…</span></span></span><span class="emph"> – Erweitert</span>.</p></div></div></div>
<br>
<div class="note"><div class="noteicon"><img src="note.svg" alt="note"></div>
<div class="notetext"><p id="par_3">Cafe\u0301   Zeile<br>zwei.</p></div></div>
<span class="switch"><span hidden="true" id="WINtext_2" class="WIN"><p>Nur unter Windows.</p></span><span hidden="true" id="defaulttext_2"></span></span>
<div class="bascode"><pre dir="auto"><code class="language-visual-basic">Sub Main
  MsgBox "Hallo"
End Sub</code></pre></div>
<p class="code">SELECT feld FROM tabelle</p>
<table><tr><td><p class="tableheadintable">Taste</p></td><td><p class="tableheadintable">Wirkung</p></td></tr>
<tr><td><p>F1</p></td><td><p>Öffnet   die
Hilfe.</p></td></tr></table>
<ul><li><p class="listitem">durch Setzen von <span class="literal">JAVA_HOME</span>,</p></li></ul>
<p>123 %</p>
<p>Der Pfad &lt;instdir&gt;/presets wird durchsucht.</p>
<div class="relatedtopics"><p class="related"><span class="emph">Verwandte Themen</span></p>
<div class="relatedbody"><p><a href="de/x.html">Sicherheitswarnung</a></p></div></div>
</div>
<div id="SearchFrame"></div><div id="DonationFrame"></div>
<footer><div id="DEBUG" class="debug"><h3 class="bug">Help content debug info:</h3>
<p>This page is: /text/shared/optionen/java.xhp</p></div></footer>
</body></html>
"""  # noqa: E501 (help-page markup as the corpus has it, unwrapped)

# Checked by hand against PAGE: body only; no header/side bar/footer, no howto label, no
# MAC or WIN variant, no code, no related-topics links; cells and list items are paragraphs.
PAGE_PARAGRAPHS = [
    "Erweitert",
    "Legt die Java-Einstellungen fest & mehr.",
    "Wählen Sie Extras – Optionen… – Erweitert.",
    "Café Zeile zwei.",  # NFC (e + U+0301 -> é), <br> is a space, whitespace collapsed
    "Taste",
    "Wirkung",
    "F1",
    "Öffnet die Hilfe.",
    "durch Setzen von JAVA_HOME,",
]


def test_extract_paragraphs_hand_checked():
    dropped = collections.Counter()
    assert help_pages.extract_paragraphs(PAGE, dropped) == PAGE_PARAGRAPHS
    # "123 %" has no letter; the decoded "<instdir>" reads like a tag
    assert dropped == {"no_letters": 1, "markup_like": 1}
    assert all(unicodedata.is_normalized("NFC", p) for p in PAGE_PARAGRAPHS)


def test_extract_paragraphs_without_display_area_reads_the_body():
    html = ("<html><head><title>T</title></head><body><p>Hallo <b>Welt</b></p>"
            "<div>Zwei<span hidden id='WIN_1'> nie</span></div><p>&amp;amp; weg</p></body></html>")
    dropped = collections.Counter()
    assert help_pages.extract_paragraphs(html, dropped) == ["Hallo Welt", "Zwei"]
    assert dropped == {"markup_like": 1}  # "&amp; weg": an entity left after decoding


@pytest.mark.parametrize("text,reason", [
    ("Öffnet die Hilfe.", None), ("F1", None), ("A < B und C > D", None),
    ("12,5 %", "no_letters"), ("–", "no_letters"),
    ("Klicken Sie <b>hier</b>", "markup_like"), ("a &nbsp; b", "markup_like"),
    ("x &#160; y", "markup_like"),
])
def test_paragraph_drop_reason(text, reason):
    assert help_pages.paragraph_drop_reason(text) == reason


def test_build_documents_drops_untranslated_duplicates_and_empty_pages():
    pages = {"text/a.html": ["Titel A", "Gemeinsam", "OK"],
             "text/b.html": ["Titel B", "Gemeinsam"],
             "text/c.html": ["OK"]}
    # page order = SHA-1 of the path: b (1d92...), a (5e74...), c (6308...)
    assert sorted(pages, key=help_pages.page_order_key) == ["text/b.html", "text/a.html", "text/c.html"]
    docs, dropped = help_pages.build_documents(pages, reference={"OK"})
    assert docs == [("text/b.html", ["Titel B", "Gemeinsam"]), ("text/a.html", ["Titel A"])]
    assert dropped == {"untranslated": 2, "duplicate": 1, "empty_page": 1}
    # English itself (no reference): "OK" is kept once, in a; c is then empty
    docs, dropped = help_pages.build_documents(pages, reference=None)
    assert docs == [("text/b.html", ["Titel B", "Gemeinsam"]), ("text/a.html", ["Titel A", "OK"])]
    assert dropped == {"duplicate": 2, "empty_page": 1}


def test_render_documents_whole_documents_only():
    docs = [("a", ["x", "y"]), ("b", ["zz"])]
    assert help_pages.render_documents(docs) == (b"x\ny\n\nzz\n", 2)
    assert help_pages.render_documents(docs, 8) == (b"x\ny\n\nzz\n", 2)
    assert help_pages.render_documents(docs, 7) == (b"x\ny\n", 1)
    assert help_pages.render_documents(docs, 3) == (b"", 0)


def test_parse_languages():
    assert multilingual.parse_languages("de, FR,zh-CN,de") == ["de", "fr", "zh-cn"]
    with pytest.raises(Exception):
        multilingual.parse_languages("de,fr!")


# ------------------------------------------------------------------ .deb reading

def _tar_xz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _ar(members: dict[str, bytes]) -> bytes:
    out = [b"!<arch>\n"]
    for name, data in members.items():
        header = (name.encode().ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6)
                  + b"100644".ljust(8) + str(len(data)).encode().ljust(10) + b"`\n")
        out += [header, data, b"\n" if len(data) % 2 else b""]
    return b"".join(out)


def test_deb_help_pages_and_version(tmp_path):
    page = "<html><body><div id='DisplayArea'><p>你好，世界。</p></div></body></html>"
    deb = tmp_path / "libreoffice-help-zh-cn_4%3a7.4.7-1+deb12u14_all.deb"
    deb.write_bytes(_ar({
        "debian-binary": b"2.0\n",
        "control.tar.xz": _tar_xz({"./control": b"Package: libreoffice-help-zh-cn\n"}),
        "data.tar.xz": _tar_xz({
            "./usr/share/libreoffice/help/zh-CN/text/shared/main.html": page.encode(),
            "./usr/share/libreoffice/help/zh-CN/contents.js": b"var x;",
            "./usr/share/doc/libreoffice-help-zh-cn/copyright": b"MPL-2.0",
        }),
    }))
    pages = help_packages.deb_help_pages(deb, "zh-cn")
    assert pages == {"text/shared/main.html": page}
    assert help_pages.extract_paragraphs(pages["text/shared/main.html"]) == ["你好，世界。"]
    assert help_packages.deb_version(deb) == "4:7.4.7-1+deb12u14"
    with pytest.raises(downloads.SourceError, match="no usr/share/libreoffice/help/ja"):
        help_packages.deb_help_pages(deb, "ja")
    # a download cut off in the middle is reported with the fix, not a traceback
    cut = tmp_path / "libreoffice-help-zh-cn_1_all.deb"
    cut.write_bytes(deb.read_bytes()[:-200])
    with pytest.raises(downloads.SourceError, match="damaged.*delete it"):
        help_packages.deb_help_pages(cut, "zh-cn")
    notdeb = tmp_path / "x_1_all.deb"
    notdeb.write_bytes(b"<html>404</html>")
    with pytest.raises(downloads.SourceError, match="not a .deb"):
        help_packages.deb_help_pages(notdeb, "zh-cn")


# ------------------------------------------------------------------ bundled sample

META = json.loads((DATA / "meta.json").read_text(encoding="utf-8"))
LANGS = sorted(META["languages"])


def _text(lang: str) -> str:
    return (DATA / f"{lang}.txt").read_bytes().decode("utf-8")  # strict: valid UTF-8


def test_sample_languages_and_sizes():
    files = sorted(p.stem for p in DATA.glob("*.txt"))
    assert files == LANGS
    assert len(LANGS) >= 10
    assert {"de", "ja", "ru", "zh-cn", "ko"} <= set(LANGS)
    sizes = {lang: (DATA / f"{lang}.txt").stat().st_size for lang in LANGS}
    for lang, size in sizes.items():
        assert MIN_BYTES <= size <= MAX_BYTES, (lang, size)
        assert size <= META["settings"]["sample_bytes"]
    assert sum(sizes.values()) <= MAX_TOTAL


@pytest.mark.parametrize("lang", LANGS)
def test_sample_file_format(lang):
    text = _text(lang)
    assert unicodedata.is_normalized("NFC", text)
    # documents = blocks of non-empty lines separated by exactly one blank line
    assert text.endswith("\n") and not text.startswith("\n") and "\n\n\n" not in text
    docs = text[:-1].split("\n\n")
    lines = [line for doc in docs for line in doc.split("\n")]
    assert all(line and line == " ".join(line.split()) for line in lines)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u200b\ufeff]", text)
    # no markup left
    assert not re.search(r"</?[A-Za-z][\w:.-]*(?:\s[^<>]*)?/?>", text)
    assert not re.search(r"&(?:[A-Za-z][A-Za-z0-9]*|#[0-9]+|#[xX][0-9A-Fa-f]+);", text)
    assert "&amp;" not in text
    # exact duplicate paragraphs were dropped; every paragraph has a letter
    assert len(set(lines)) == len(lines)
    assert all(any(ch.isalpha() for ch in line) for line in lines)


@pytest.mark.parametrize("lang", LANGS)
def test_meta_matches_files(lang):
    data = (DATA / f"{lang}.txt").read_bytes()
    text = data.decode("utf-8")
    m = META["languages"][lang]
    assert m["package"] == f"libreoffice-help-{lang}" and m["file"] == f"{lang}.txt"
    assert m["version"] and m["deb"].startswith(f"libreoffice-help-{lang}_")
    assert re.fullmatch(r"[0-9a-f]{64}", m["deb_sha256"])
    assert m["sha256"] == hashlib.sha256(data).hexdigest()
    assert m["bytes"] == len(data) and m["characters"] == len(text)
    assert m["documents"] == len(text[:-1].split("\n\n"))
    assert m["paragraphs"] == sum(1 for line in text.split("\n") if line)
    full = m["full"]
    assert full["bytes"] >= m["bytes"] and full["documents"] >= m["documents"]
    assert full["paragraphs"] >= m["paragraphs"] and m["pages"] >= full["documents"]
    assert set(m["dropped_paragraphs"]) <= {"duplicate", "markup_like", "no_letters",
                                            "untranslated"}


def test_readme_documents_source_and_command():
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    assert "MPL-2.0" in readme
    assert (f"python scripts/fetch_multilingual_corpus.py --out data/multilingual "
            f"--sample-bytes {META['settings']['sample_bytes']}") in readme
    for lang in LANGS:
        assert f"`{lang}.txt`" in readme
        assert META["languages"][lang]["version"] in readme


# Common words: each occurs >= 20 times in its language and 5x less in every other file.
MARKERS = {
    "de": ("und", "der", "sie"), "fr": ("les", "dans", "pour"), "es": ("el", "los", "las"),
    "it": ("della", "per", "il"), "pt": ("uma", "os", "em"), "nl": ("het", "een", "van"),
    "pl": ("lub", "jest", "aby"), "fi": ("ja", "tai", "jos"), "tr": ("bir", "için", "veya"),
    "vi": ("các", "trong", "một"),
}
SCRIPTS = {  # letters of the language's script / all letters
    "ru": (r"[\u0400-\u04ff]", 0.6), "el": (r"[\u0370-\u03ff\u1f00-\u1fff]", 0.6),
    "hi": (r"[\u0900-\u097f]", 0.6), "ko": (r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]", 0.6),
    "zh-cn": (r"[\u3400-\u4dbf\u4e00-\u9fff]", 0.6),
    "ja": (r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]", 0.6),
}


@pytest.fixture(scope="module")
def word_counts():
    return {lang: collections.Counter(re.findall(r"\w+", _text(lang).lower())) for lang in LANGS}


@pytest.mark.parametrize("lang", sorted(set(MARKERS) & set(LANGS)))
def test_latin_languages_differ(lang, word_counts):
    for word in MARKERS[lang]:
        own = word_counts[lang][word]
        assert own >= 20, (lang, word, own)
        for other in LANGS:
            if other != lang:
                assert word_counts[other][word] * 5 <= own, (lang, word, other)


@pytest.mark.parametrize("lang", sorted(set(SCRIPTS) & set(LANGS)))
def test_scripts(lang):
    text = _text(lang)
    letters = sum(ch.isalpha() for ch in text)
    pattern, share = SCRIPTS[lang]
    assert len(re.findall(pattern, text)) >= share * letters, lang
    kana = len(re.findall(r"[\u3040-\u30ff]", text))
    if lang == "ja":
        assert kana >= 0.2 * letters  # Japanese, not Chinese
    elif lang == "zh-cn":
        assert kana <= 0.001 * letters


def test_languages_are_not_copies():
    heads = {lang: _text(lang)[:2000] for lang in LANGS}
    assert len(set(heads.values())) == len(LANGS)
