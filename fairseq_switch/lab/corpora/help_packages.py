"""The Debian packages ``libreoffice-help-<lang>``: downloading them and reading their help pages.

The packages are fetched with ``apt-get download`` into ``<cache-dir>/debs`` using a private apt
lists folder (``<cache-dir>/apt-lists``, filled by ``apt-get update`` with ``Dir::State::Lists``
pointed there), so the system's apt state is not touched. The .deb files are read with Python
(``ar`` + tar), not installed or unpacked to disk.
"""

from __future__ import annotations

import io
import lzma
import re
import shutil
import subprocess
import tarfile
import urllib.parse
from pathlib import Path

from .downloads import SourceError, apt_update_translations

PACKAGE_PREFIX = "libreoffice-help-"
HELP_PATH_RE = re.compile(r"^(?:\./)?usr/share/libreoffice/help/([^/]+)/(text/.+\.html)$")


def deb_members(path: Path) -> dict[str, bytes]:
    """The members of a .deb (an ``ar`` archive): name -> bytes."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise SourceError(f"{path} is not a .deb (ar) file; delete it and re-run to "
                          "download it again")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        members[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)  # members are 2-byte aligned
    return members


def deb_help_pages(path: Path, lang: str) -> dict[str, str]:
    """page path (``text/...html``) -> HTML of every help page of ``lang`` in a .deb."""
    members = deb_members(path)
    name = next((n for n in members if n.startswith("data.tar")), None)
    if name is None:
        raise SourceError(f"{path}: no data.tar member; delete it and re-run")
    if name.endswith(".zst"):  # Python's tarfile cannot read zstd (Ubuntu packages)
        if not shutil.which("dpkg-deb"):
            raise SourceError(f"{path} uses zstd compression: install dpkg (dpkg-deb) to read it")
        raw = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(path)], check=True,
                             capture_output=True).stdout
    else:
        raw = members[name]
    pages = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:*") as tf:
            for member in tf:
                m = HELP_PATH_RE.match(member.name)
                if member.isfile() and m and m.group(1).lower() == lang:
                    pages[m.group(2)] = tf.extractfile(member).read().decode("utf-8")
    except (tarfile.TarError, lzma.LZMAError, EOFError, UnicodeDecodeError) as err:
        # e.g. a download that was cut off
        raise SourceError(f"{path} is damaged ({err}); delete it and re-run") from None
    if not pages:
        raise SourceError(f"{path} holds no usr/share/libreoffice/help/{lang}/text/**/*.html pages")
    return pages


def deb_version(path: Path) -> str:
    """Version from an apt download name ``<package>_<version, %-quoted>_<arch>.deb``."""
    return urllib.parse.unquote(path.name.split("_")[1])


# --------------------------------------------------------------------------- apt

def apt_options(cache_dir: Path) -> list[str]:
    """apt options that use the private lists and no on-disk binary caches."""
    return ["-o", f"Dir::State::Lists={cache_dir.resolve() / 'apt-lists'}",
            "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="]


def ensure_apt_lists(cache_dir: Path, force: bool) -> None:
    lists = cache_dir / "apt-lists"
    if force or not any(lists.glob("*_Packages*")):
        print(f"[apt] updating the private package lists in {lists}", flush=True)
        apt_update_translations(lists)  # needs root; the system's lists stay as they are


def available_help_languages(cache_dir: Path) -> list[str]:
    """Language suffixes of the libreoffice-help-* packages in the private lists."""
    proc = subprocess.run(["apt-cache", *apt_options(cache_dir), "pkgnames", PACKAGE_PREFIX],
                          capture_output=True, text=True)  # real packages only, not virtual names
    return sorted(n[len(PACKAGE_PREFIX):] for n in proc.stdout.split()
                  if n != PACKAGE_PREFIX + "common")


def cached_deb(deb_dir: Path, package: str) -> Path | None:
    found = sorted(deb_dir.glob(f"{package}_*.deb"))
    if len(found) > 1:
        raise SourceError(f"several cached versions of {package} in {deb_dir}: "
                          f"{', '.join(p.name for p in found)}; delete all but one")
    return found[0] if found else None


def fetch_debs(packages: list[str], cache_dir: Path, apt_update: bool) -> dict[str, Path]:
    """package -> .deb path; downloads (``apt-get download``) only what is not cached."""
    deb_dir = cache_dir / "debs"
    deb_dir.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if cached_deb(deb_dir, p) is None]
    if missing or apt_update:
        if not shutil.which("apt-get"):
            raise SourceError("`apt-get` not found: this script needs a Debian/Ubuntu machine, or "
                              f"put the libreoffice-help-<lang>_*.deb files into {deb_dir}")
        ensure_apt_lists(cache_dir, apt_update)
    if missing:
        # check the names first: apt's own message for a missing one is obscure ("has no
        # candidate" for a name that is only referenced, e.g. libreoffice-help-ar)
        available = available_help_languages(cache_dir)
        unknown = [p for p in missing if p[len(PACKAGE_PREFIX):] not in available]
        if unknown:
            raise SourceError(
                f"not in the apt lists of {cache_dir / 'apt-lists'}: {', '.join(unknown)}.\n  "
                f"Available languages: {', '.join(available) or 'none (the lists are empty)'}.\n  "
                "Fix: pick --languages from those; re-run with --apt-update if the lists are old; "
                "the suites searched are those of /etc/apt/sources.list(.d).")
        print(f"[apt] apt-get download {' '.join(missing)}", flush=True)
        proc = subprocess.run(["apt-get", *apt_options(cache_dir), "download", *missing],
                              cwd=deb_dir, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SourceError(
                f"`apt-get download` failed (exit {proc.returncode}):\n"
                f"{proc.stderr.strip()[-2000:]}"
                f"\n  Check the mirror in /etc/apt/sources.list.d/ and `apt-cache "
                f"{' '.join(apt_options(cache_dir))} policy {missing[0]}`; a 404 means the "
                "lists are stale: re-run with --apt-update.")
    else:
        print(f"[apt] all {len(packages)} packages cached in {deb_dir}", flush=True)
    return {p: cached_deb(deb_dir, p) for p in packages}

