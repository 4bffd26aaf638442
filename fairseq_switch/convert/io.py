"""Atomic file writes: a reader (or a crash) never sees a half-written checkpoint.

Each file is written to a temporary name in its destination folder, fsynced and renamed over the
destination with os.replace (atomic within one file system); the folder is fsynced afterwards so the
rename itself survives a crash.
"""

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Callable, Dict

import torch


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _temp_for(path: str):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call write(tmp_path), then move the result to `path` atomically."""
    with _temp_for(path) as tmp:
        write(tmp)


def save_torch(obj, path: str) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    atomic_write(path, write)


def save_safetensors(tensors: Dict[str, torch.Tensor], path: str) -> None:
    from safetensors.torch import save_file

    # transformers checks the "format" metadata of every safetensors file it loads
    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp,
                                             metadata={"format": "pt"}))


def save_json(obj, path: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")

    atomic_write(path, write)


def save_text(text: str, path: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def copy_file(src: str, path: str) -> None:
    atomic_write(path, lambda tmp: shutil.copyfile(src, tmp))
