"""Writing the fetched and prepared files: whole or not at all, and only when their content changed.

A file is written to `<name>.tmp` next to it and renamed over it, so an interrupted run never leaves
half a file under the real name; unchanged files are not rewritten, so re-running a fetcher with the
same source and options leaves every file (and its modification time) as it was.
"""

import hashlib
import json
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `<path>.tmp`, then rename it to `path`."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write `data` (creating the folders) unless the file already holds exactly it; whether it wrote."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    return True


def write_meta(path: Path, meta: dict) -> bool:
    """meta.json: indented, UTF-8 (not ASCII-escaped), rewritten only when it changed."""
    return write_if_changed(path, (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
