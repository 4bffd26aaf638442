"""Fetch and prepare the technical-documentation corpus (187 MB of text, 53M SentencePiece tokens).

The sources are Debian documentation packages (see `technical_sources.SOURCES` for the packages,
files and licences). One command does everything:

    fairseq-switch-fetch technical        # = python scripts/fetch_technical_corpus.py

1. `apt-get download` each package into `<out-dir>/debs/` (kept: a second run downloads nothing;
   `--deb-dir` takes .deb files from elsewhere), and unpack it with `dpkg-deb -x`;
2. turn its files into documents (one line each), dropping documents under 20 words, exact
   duplicates and anything marked as benchmark data, and write `<out-dir>/<source>.txt` and
   `<out-dir>/README.md` (packages, versions, licences, counts, checksums);
3. write the committed sample `data/technical_sample/` (every source round-robin, `--sample-mb`);
4. prepare `data-bin/technical` for `span_corruption` (SentencePiece, binarization); its
   `prepare.json` records the token counts. `--no-prepare` stops after step 3.

Files are written whole (tmp + rename) and only when changed, so a killed run is re-run as is.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .downloads import SourceError, exit_status
from .files import sha256_file, write_if_changed, write_meta
from .paths import DATA_DIR, DATA_RAW_DIR, PROJECT_DIR, display_path
from .pretraining_sources import Doc, render, stats
from .technical_sources import CANARY, MIN_DOC_WORDS, SOURCES, Source, dict_documents, file_document, select_files

DEFAULT_OUT_DIR = DATA_RAW_DIR / "technical"
DEFAULT_SAMPLE_DIR = DATA_DIR / "technical_sample"
DEFAULT_PREPARED = PROJECT_DIR / "data-bin" / "technical"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                    help="full corpus and the downloaded .deb files (default: data-raw/technical, not committed)")
    ap.add_argument("--sample-dir", type=Path, default=DEFAULT_SAMPLE_DIR,
                    help="committed sample (default: data/technical_sample)")
    ap.add_argument("--sample-mb", type=float, default=1.0, help="size of the sample in MB (10^6 bytes)")
    ap.add_argument("--deb-dir", type=Path, default=None,
                    help="take <package>_*.deb from this folder instead of downloading")
    ap.add_argument("--sources", default=",".join(s.name for s in SOURCES),
                    help="comma-separated subset of: " + ", ".join(s.name for s in SOURCES))
    ap.add_argument("--prepared", type=Path, default=DEFAULT_PREPARED,
                    help="where to prepare the corpus for span_corruption (default: data-bin/technical)")
    ap.add_argument("--no-prepare", action="store_true", help="stop after writing the text files")
    ap.add_argument("--workers", type=int, default=2, help="processes for the conversion and the preparation")
    args = ap.parse_args(argv)
    known = {s.name for s in SOURCES}
    wanted = [s for s in args.sources.split(",") if s]
    bad = [s for s in wanted if s not in known]
    if bad or not wanted:
        ap.error(f"--sources: unknown source(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(known)}")
    args.sources = [s for s in SOURCES if s.name in wanted]
    if args.sample_mb <= 0:
        ap.error(f"--sample-mb must be > 0, got {args.sample_mb}")
    if args.workers < 1:
        ap.error(f"--workers must be >= 1, got {args.workers}")
    return args


# ---------------------------------------------------------------------- packages

def _tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SourceError(f"`{name}` not found: {why} needs a Debian/Ubuntu machine "
                          f"(or pass --deb-dir with the .deb files and install dpkg)")
    return path


def get_deb(package: str, deb_dir: Path | None, cache: Path) -> Path:
    """The package's .deb: from --deb-dir, from the cache, or `apt-get download`ed into the cache."""
    for folder in (deb_dir, cache):
        if folder is not None:
            found = sorted(folder.glob(f"{package}_*.deb"))
            if found:
                return found[-1]
    if deb_dir is not None:
        raise SourceError(f"{display_path(deb_dir)} holds no {package}_*.deb; add it or drop --deb-dir")
    cache.mkdir(parents=True, exist_ok=True)
    print(f"[fetch] apt-get download {package}", flush=True)
    proc = subprocess.run([_tool("apt-get", "downloading"), "download", package], cwd=cache,
                          capture_output=True, text=True)
    found = sorted(cache.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not found:
        raise SourceError(f"`apt-get download {package}` failed (exit {proc.returncode}): "
                          f"{proc.stderr.strip().splitlines()[-1:] or ''}; run `apt-get update` first, "
                          f"or pass --deb-dir with {package}_*.deb")
    return found[-1]


def deb_version(deb: Path) -> str:
    out = subprocess.run([_tool("dpkg-deb", "unpacking"), "-f", str(deb), "Version"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _convert(job: tuple[str, str, str]) -> tuple[str, str]:
    path, rel, fmt = job
    return rel, file_document(Path(path), fmt)


def source_documents(source: Source, deb: Path, workers: int) -> tuple[list[Doc], dict]:
    """The source's documents (in file order) and what was dropped."""
    dropped = {"short": 0, "duplicate": 0, "canary": 0}
    with tempfile.TemporaryDirectory(prefix=f"fs-{source.name}-") as tmp:
        subprocess.run([_tool("dpkg-deb", "unpacking"), "-x", str(deb), tmp], check=True)
        root = Path(tmp)
        files = select_files(root, source)
        if not files:
            raise SourceError(f"{deb.name}: no file matches {', '.join(source.include)}; the package layout "
                              f"changed: update technical_sources.SOURCES")
        if source.fmt == "dict":
            raw = [(f"{files[0].name}:{key}", text) for f in files for key, text in dict_documents(f)]
        else:
            jobs = [(str(f), f.relative_to(root).as_posix(), source.fmt) for f in files]
            with ProcessPoolExecutor(workers) as pool:
                raw = list(pool.map(_convert, jobs, chunksize=16))
    docs, seen = [], set()
    for key, text in raw:
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        if len(text.split()) < MIN_DOC_WORDS:
            dropped["short"] += 1
        elif CANARY.search(text):
            dropped["canary"] += 1
        elif digest in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(digest)
            docs.append(Doc(f"{source.name}:{key}", text))
    return docs, dropped


# ---------------------------------------------------------------------- sample and README

def sample_round_robin(per_source: dict[str, list[Doc]], max_bytes: int) -> dict[str, list[Doc]]:
    """Documents taken one per source in turn (each source in its file order) while they fit.

    A document longer than one source's share of the budget is skipped, not the whole source, so that
    every source is represented."""
    picked: dict[str, list[Doc]] = {k: [] for k in per_source}
    cursors = {k: 0 for k in per_source}
    used = 0
    share = max_bytes // max(len(per_source), 1)
    active = [k for k in per_source if per_source[k]]
    while active:
        for k in list(active):
            docs = per_source[k]
            while cursors[k] < len(docs) and docs[cursors[k]].n_bytes > share:
                cursors[k] += 1
            if cursors[k] >= len(docs) or used + docs[cursors[k]].n_bytes > max_bytes:
                active.remove(k)
                continue
            picked[k].append(docs[cursors[k]])
            used += docs[cursors[k]].n_bytes
            cursors[k] += 1
    return picked


def readme(title: str, rows: list[dict], command: str, note: str) -> str:
    lines = [f"# {title}", "", note, "",
             "Plain UTF-8 text, one document per line (NFC, whitespace collapsed). Made by:", "",
             f"    {command}", "",
             "| file | Debian package (version) | what | licence | documents | words | bytes | sha256 |",
             "|---|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        s = r["stats"]
        lines.append(f"| `{r['name']}.txt` | `{r['package']}` ({r['version']}) | {r['title']} | {r['licence']} | "
                     f"{s['docs']:,} | {s['words']:,} | {s['bytes']:,} | `{s['sha256'][:16]}` |")
    total = {k: sum(r["stats"][k] for r in rows) for k in ("docs", "words", "bytes")}
    lines += [f"| **total** | | | | {total['docs']:,} | {total['words']:,} | {total['bytes']:,} | |", "",
              "All packages are from Debian's `main` archive (bookworm): each licence above is the one its "
              "`/usr/share/doc/<package>/copyright` file states, all DFSG-free. The licence texts travel with "
              "the packages. Documents under 20 words, exact duplicates and any document carrying a "
              "benchmark canary string are dropped (counts in the full corpus's `meta.json`).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return exit_status(lambda: run(args))


def run(args: argparse.Namespace) -> None:
    out: Path = args.out_dir
    for folder in (out, args.sample_dir):
        if folder.exists() and not folder.is_dir():
            raise SourceError(f"{display_path(folder)} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    per_source: dict[str, list[Doc]] = {}
    rows, meta = [], {"sources": {}}
    for source in args.sources:
        deb = get_deb(source.package, args.deb_dir, out / "debs")
        docs, dropped = source_documents(source, deb, args.workers)
        per_source[source.name] = docs
        row = {"name": source.name, "package": source.package, "version": deb_version(deb), "title": source.title,
               "licence": source.licence, "stats": stats(docs)}
        rows.append(row)
        meta["sources"][source.name] = {**row, "deb": deb.name, "deb_sha256": sha256_file(deb), "dropped": dropped}
        changed = write_if_changed(out / f"{source.name}.txt", render(docs))
        s = row["stats"]
        print(f"[fetch] {source.name:>10}: {s['docs']:,} documents, {s['words']:,} words, {s['bytes'] / 1e6:.1f} MB"
              f" (dropped {dropped['short']} short, {dropped['duplicate']} duplicate, {dropped['canary']} canary)"
              f"{'' if changed else ', unchanged'}", flush=True)
    command = "fairseq-switch-fetch technical"
    write_if_changed(out / "README.md", readme("Technical-documentation corpus (full, generated)", rows, command,
                                               "Not committed (`data-raw/` is git-ignored).").encode("utf-8"))
    write_meta(out / "meta.json", meta)

    sample = sample_round_robin(per_source, int(args.sample_mb * 1e6))
    sample_rows = []
    for row in rows:
        docs = sample[row["name"]]
        if docs:
            write_if_changed(args.sample_dir / f"{row['name']}.txt", render(docs))
            sample_rows.append({**row, "stats": stats(docs)})
    note = (f"The committed sample of the corpus (at most {args.sample_mb:g} MB, documents taken round-robin over "
            f"the sources in file order). The full corpus (`data-raw/technical/`, "
            f"{sum(r['stats']['bytes'] for r in rows) / 1e6:.0f} MB) is made by the same command.")
    write_if_changed(args.sample_dir / "README.md",
                     readme("Technical-documentation corpus (sample)", sample_rows, command, note).encode("utf-8"))
    total = sum(r["stats"]["bytes"] for r in rows)
    print(f"[fetch] {display_path(out)}: {total / 1e6:.1f} MB in {len(rows)} files; sample in "
          f"{display_path(args.sample_dir)}", flush=True)
    if args.no_prepare:
        return
    from .prepare.pretraining import main as prepare
    # SentencePiece learns from a sample of 20,000 pieces (about 30 MB): the whole corpus would take far longer
    status = prepare(["--out", str(args.prepared), "--workers", str(args.workers), "--spm-sentences", "20000"]
                     + [str(out / f"{r['name']}.txt") for r in rows])
    if status:
        raise SourceError(f"preparing {display_path(args.prepared)} failed (exit {status})")
