"""Files that a crash never leaves half-written, and the test-only fault points inside them.

Every file is written to a temporary name in its destination folder, fsynced and renamed over the
destination with os.replace (atomic within one file system); the folder is fsynced afterwards so the
rename itself survives a power loss. A full disk or any other error removes the temporary file and
leaves the destination as it was. Copies are hard links where the file system allows them (no bytes
written, no extra space), else byte copies written the same way.

Fault injection (tests only): `FAIRSEQ_SWITCH_FAULT=<phase>[@<updates>][:<rank>]` makes the process
exit at once (as `kill -9` would: no cleanup, exit status 86) when it reaches `phase` of a checkpoint
save, optionally only in the save at `updates` and on `rank`. A "mid" phase first leaves the
temporary file half written.
"""

import argparse
import collections
import json
import os
import pickle
import shutil
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional

import numpy as np
import torch

FAULT_ENV = "FAIRSEQ_SWITCH_FAULT"
FAULT_EXIT = 86
FAULT_PHASES = {
    "main-file": "mid-write of a save's main file",
    "shard-file": "mid-write of an expert shard (ranks >= 1)",
    "between-shards": "after this rank's file of a save is written, before the save's manifest",
    "copy-last": "mid-copy of a save to checkpoint_last",
    "copy-best": "mid-copy of a save to checkpoint_best",
    "copy": "mid-copy of a save to another name (epoch or best-N copies)",
    "manifest": "mid-write of a save's manifest (every file of the save in place)",
}


@dataclass(frozen=True)
class FaultPlan:
    """Where a test wants the process to die."""

    phase: str
    updates: Optional[int] = None
    rank: Optional[int] = None

    @classmethod
    def from_env(cls) -> Optional["FaultPlan"]:
        spec = os.environ.get(FAULT_ENV, "")
        if not spec:
            return None
        rest, _, rank = spec.partition(":")
        phase, _, updates = rest.partition("@")
        if phase not in FAULT_PHASES or not (updates.isdigit() or not updates) or not (rank.isdigit() or not rank):
            raise ValueError(f"{FAULT_ENV}={spec!r}: expected <phase>[@<updates>][:<rank>] with a phase out of "
                             f"{', '.join(FAULT_PHASES)}")
        return cls(phase, int(updates) if updates else None, int(rank) if rank else None)

    def hit(self, phase: str, updates: Optional[int], rank: int, partial: Optional[str] = None) -> None:
        """Exit now if this is the planned fault; `partial`: a temporary file to leave half written."""
        if phase != self.phase or (self.updates is not None and updates != self.updates) or \
                (self.rank is not None and rank != self.rank):
            return
        # a hard link shares its bytes with the file it copies: truncating it would damage that file
        if partial is not None and os.path.isfile(partial) and os.stat(partial).st_nlink == 1:
            os.truncate(partial, os.path.getsize(partial) // 2)
        print(f"fairseq-switch: fault injected at {phase} (update {updates}, rank {rank})", file=sys.stderr, flush=True)
        os._exit(FAULT_EXIT)


Fault = Optional[Callable[[Optional[str]], None]]  # called with the half-written temporary file, if any


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


def temp_name(path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.")


def is_temp_file(name: str) -> bool:
    """A leftover of an interrupted write (never a complete file)."""
    return name.startswith(".") and name.endswith(".tmp")


@contextmanager
def _temp_for(path: str, fault: Fault = None):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(temp_name(path)), suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        if fault is not None:
            fault(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def atomic_write(path: str, write: Callable[[str], None], fault: Fault = None) -> None:
    """Call write(tmp_path), then move the result to `path` atomically."""
    try:
        with _temp_for(path, fault) as tmp:
            write(tmp)
    except OSError as e:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free if os.path.isdir(
            os.path.dirname(os.path.abspath(path))) else 0
        raise OSError(e.errno, f"could not write {path} ({e.strerror or e}; {free / 2**20:.0f} MiB free there); "
                               f"the file it would replace is unchanged") from e


def save_torch(obj: Any, path: str, fault: Fault = None) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    atomic_write(path, write, fault)


def save_safetensors(tensors: Dict[str, torch.Tensor], path: str) -> None:
    from safetensors.torch import save_file

    # transformers checks the "format" metadata of every safetensors file it loads
    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp,
                                             metadata={"format": "pt"}))


def save_json(obj: Any, path: str, fault: Fault = None) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")

    atomic_write(path, write, fault)


def save_text(text: str, path: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def copy_file(src: str, path: str, fault: Fault = None, link: bool = False) -> None:
    """Copy `src` to `path` atomically; `link`: a hard link where the file system allows one."""

    def write(tmp: str) -> None:
        if link:
            try:
                os.unlink(tmp)
                os.link(src, tmp)
                return
            except OSError:  # another file system, or no hard links: copy the bytes
                pass
        shutil.copyfile(src, tmp)

    atomic_write(path, write, fault)


# torch >= 2.6 loads with weights_only=True; checkpoints written by fairseq-train also hold these types
# (args, optimizer history, meters). They are allowed by name, the safety check stays on.
FAIRSEQ_CHECKPOINT_TYPES = [
    argparse.Namespace,
    collections.OrderedDict,
    collections.defaultdict,
    np.dtype,
    np.ndarray,
    type(np.dtype(np.float64)),
    type(np.dtype(np.float32)),
    type(np.dtype(np.int64)),
]
try:  # numpy scalars (e.g. a best validation loss) and arrays pickle through these
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct, scalar
FAIRSEQ_CHECKPOINT_TYPES += [scalar, _reconstruct]


@contextmanager
def fairseq_checkpoint_types() -> Iterator[None]:
    """torch.load inside accepts FAIRSEQ_CHECKPOINT_TYPES: the plugin's own reads need no process-wide
    allow-list (fairseq's own reads do: `compat` adds one)."""
    listed = getattr(torch.serialization, "get_safe_globals", None)
    scoped = getattr(torch.serialization, "safe_globals", None)
    if listed is None or scoped is None:  # torch < 2.5 loads with weights_only=False by default
        yield
        return
    # only the missing ones: leaving the context removes what it added, even types allowed process-wide
    missing = [t for t in FAIRSEQ_CHECKPOINT_TYPES if t not in listed()]
    with scoped(missing):
        yield


def load_torch(path: str, what: str = "checkpoint", mmap: bool = False) -> Any:
    """torch.load with a named error for a missing, empty, truncated or corrupt file (torch itself says
    `PytorchStreamReader failed reading zip archive` or a bare `EOFError`, without the file).

    `mmap`: tensors stay on disk until used (cheap inspection of a save)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such {what} file")
    try:
        with fairseq_checkpoint_types():
            if mmap:
                return torch.load(path, map_location="cpu", mmap=True)
            with open(path, "rb") as f:
                return torch.load(f, map_location="cpu")
    except READ_ERRORS as e:
        if "Weights only load failed" in str(e):  # a type torch refuses: not a broken file
            raise
        raise unreadable(path, e, what) from e


READ_ERRORS = (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile)


def unreadable(path: str, error: BaseException, what: str = "checkpoint") -> ValueError:
    """The one-line error for a file torch could not read (`error`: what torch raised)."""
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    why = "it is empty (0 bytes)" if size == 0 else (
        f"it is truncated or corrupt ({size:,} bytes, not a complete torch file: {type(error).__name__})")
    return ValueError(f"{path} is not a readable {what}: {why}")
