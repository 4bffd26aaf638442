"""The technical-documentation corpus: each format's text against hand-written expectations, and the
fetch command end to end on a small .deb built here (no network)."""

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from fairseq_switch.lab.corpora import fetch_technical as technical
from fairseq_switch.lab.corpora import technical_sources as ts

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian)")


def test_rst_text_drops_underlines_and_directives():
    text = ("Title\n=====\n\n.. SPDX-License-Identifier: GPL-2.0\n\n.. _label:\n\nSome *text* here.\n"
            "----\n.. note::\n\n   Indented note body.\n")
    assert ts.rst_text(text) == "Title Some *text* here. Indented note body."


def test_pod_text_keeps_command_text_and_code_contents():
    pod = ("=pod\n\n=head1 NAME\n\nperlfoo - B<bold> C<< $x->y >> I<L<perlop>>\n\n"
           "=over 4\n\n=item * one\n\n=back\n\n=cut\n")
    assert ts.pod_text(pod) == "NAME perlfoo - bold $x->y perlop * one"


def test_html_text_skips_navigation_scripts_and_nested_skipped_blocks():
    page = """<html class="sidebar-visible"><head><title>T</title><style>p{}</style></head><body>
    <div id="hd"><div class="nav">Home | Index</div></div>
    <nav><a>next</a></nav>
    <div class="document"><h1>Heading<a class="headerlink">¶</a></h1><p>First &amp; second.</p>
    <div class="sphinxsidebar"><div>inner</div><div>more</div></div><p>Third<br>line.</p>
    <script>var x = 1;</script></div><footer>© 2023</footer></body></html>"""
    assert ts.html_text(page) == "Heading First & second. Third line."


def _dictd(folder: Path, entries):
    """A dictd database: (headword, text) entries; a headword may point at an earlier entry's text."""
    data, index, spans = b"", [], {}
    for head, text in entries:
        if text not in spans:
            spans[text] = (len(data), len(text.encode()))
            data += text.encode()
        off, n = spans[text]
        index.append(f"{head}\t{_b64(off)}\t{_b64(n)}")
    (folder / "x.dict.dz").write_bytes(gzip.compress(data))
    (folder / "x.index").write_text("\n".join(index) + "\n")
    return folder / "x.dict.dz"


def _b64(n):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = ""
    while True:
        out = alphabet[n % 64] + out
        n //= 64
        if not n:
            return out


def test_dict_documents_groups_entries_and_skips_the_database_header(tmp_path, monkeypatch):
    monkeypatch.setattr(ts, "DICT_ENTRIES_PER_DOC", 2)
    path = _dictd(tmp_path, [("00-database-info", "about the database\n"),
                             ("apple", "Apple \\Ap\"ple\\, n. A fruit.\n"),
                             ("apples", "Apple \\Ap\"ple\\, n. A fruit.\n"), ("bee", "Bee, n. An insect.\n"),
                             ("cat", "Cat,\n   n. An animal.\n")])
    assert ts._b64("BAA") == 4096
    assert list(ts.dict_documents(path)) == [
        ("apple", 'Apple \\Ap"ple\\, n. A fruit. Bee, n. An insect.'),  # "apples" is the same entry, read once
        ("cat", "Cat, n. An animal."),
    ]


def test_select_files_applies_include_and_exclude_patterns(tmp_path):
    for rel in ("doc/a.rst.gz", "doc/sub/b.rst.gz", "doc/translations/zh/c.rst.gz", "doc/d.yaml.gz"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    src = ts.Source("x", "pkg", "X", "rst", ("doc/*.rst.gz",), "MIT", ("*/translations/*",))
    assert [p.relative_to(tmp_path).as_posix() for p in ts.select_files(tmp_path, src)] == \
        ["doc/a.rst.gz", "doc/sub/b.rst.gz"]


def _deb(folder: Path, files: dict) -> Path:
    """A minimal git-doc .deb holding `files` (path inside the package -> text)."""
    root = folder / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: git-doc\nVersion: 1:2.39.5-test\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: test\n")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    deb = folder / "git-doc_2.39.5-test_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)], check=True,
                   capture_output=True)
    shutil.rmtree(root)
    return deb


@needs_dpkg
def test_fetch_end_to_end_on_a_local_deb(tmp_path, capsys):
    long_doc = "git-commit(1)\n=============\n\n" + " ".join(["Record changes to the repository."] * 10)
    debs = tmp_path / "debs"
    debs.mkdir()
    _deb(debs, {"usr/share/doc/git-doc/git-commit.txt": long_doc,
                "usr/share/doc/git-doc/copy.txt": long_doc,  # an exact duplicate
                "usr/share/doc/git-doc/short.txt": "Too short.",
                "usr/share/doc/git-doc/bench.txt": long_doc + " canary GUID 1234",
                "usr/share/doc/git-doc/other.html": "<p>not selected</p>"})
    out, sample = tmp_path / "full", tmp_path / "sample"
    argv = ["--sources", "git", "--deb-dir", str(debs), "--out-dir", str(out), "--sample-dir", str(sample),
            "--no-prepare", "--workers", "1"]
    assert technical.main(argv) == 0
    lines = (out / "git.txt").read_text().splitlines()
    assert lines == ["git-commit(1) " + " ".join(["Record changes to the repository."] * 10)]
    meta = json.loads((out / "meta.json").read_text())["sources"]["git"]
    assert meta["dropped"] == {"short": 1, "duplicate": 1, "canary": 1}
    assert meta["version"] == "1:2.39.5-test" and meta["licence"] == "GPL-2.0-only"
    assert "| `git.txt` | `git-doc` (1:2.39.5-test) |" in (out / "README.md").read_text()
    assert (sample / "git.txt").read_text() == (out / "git.txt").read_text()
    assert "dropped 1 short, 1 duplicate, 1 canary" in capsys.readouterr().out
    mtime = (out / "git.txt").stat().st_mtime_ns
    assert technical.main(argv) == 0  # a second run rewrites nothing
    assert (out / "git.txt").stat().st_mtime_ns == mtime and "unchanged" in capsys.readouterr().out


def test_fetch_errors_name_the_bad_value(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        technical.main(["--sources", "git,nope", "--no-prepare"])
    assert e.value.code == 2 and "unknown source(s) nope" in capsys.readouterr().err
    assert technical.main(["--sources", "git", "--deb-dir", str(tmp_path), "--out-dir", str(tmp_path / "o"),
                           "--sample-dir", str(tmp_path / "s"), "--no-prepare"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "git-doc_*.deb" in err and len(err.splitlines()) == 1
    (tmp_path / "file").write_text("x")
    assert technical.main(["--sources", "git", "--out-dir", str(tmp_path / "file"), "--no-prepare"]) == 1
    assert "is a file" in capsys.readouterr().err


def test_sample_round_robin_shares_the_budget_between_sources():
    docs = {"a": [ts_doc("a", 40), ts_doc("a", 40), ts_doc("a", 40)], "b": [ts_doc("b", 300), ts_doc("b", 30)]}
    picked = technical.sample_round_robin(docs, 200)
    # share 100 bytes: b's 301-byte document is skipped; then a, b, a, a fit in 200 (41 + 31 + 41 + 41)
    assert [d.n_bytes for d in picked["a"]] == [41, 41, 41] and [d.n_bytes for d in picked["b"]] == [31]
    assert technical.sample_round_robin(docs, 100)["a"] == docs["a"][:1]  # 41 + 31 + 41 > 100


def ts_doc(name, n):
    return technical.Doc(name, "x" * n)
