"""Files that a crash never leaves half-written, and the test-only fault points inside them.

Every file is written to a temporary name in its destination folder, fsynced and renamed over the
destination with os.replace (atomic within one file system); the folder is fsynced afterwards so the
rename itself survives a power loss. A full disk or any other error removes the temporary file and
leaves the destination as it was, and raises a one-line `WriteError`. Files get the mode the umask
gives (mkstemp alone would make them 0600). Copies are independent files, never hard links (writing
into one name, e.g. `cp checkpoint_1_6.pt checkpoint_last.pt`, must not change the others): a
reflink where the file system has one (FICLONE: no bytes written until either file changes), else
an in-kernel copy (copy_file_range), else a plain one.

Fault injection (tests only): `FAIRSEQ_SWITCH_FAULT=<phase>[@<updates>][:<rank>]` makes the process
exit at once (as `kill -9` would: no cleanup, exit status 86) when it reaches `phase` of a checkpoint
save, optionally only in the save at `updates` and on `rank`. A "mid" phase first leaves the
temporary file half written.
"""

import argparse
import collections
import errno
import fcntl
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

from .cli_errors import WriteError

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


def current_umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it, which
    would briefly give other threads' files mode 0666)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def _temp_for(path: str, fault: Fault = None):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(temp_name(path)), suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        # the mode open() would give (mkstemp makes 0600; some writers, e.g. safetensors, replace the file)
        os.chmod(tmp, 0o666 & ~current_umask())
        if fault is not None:
            fault(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def write_error(path: str, e: OSError) -> WriteError:
    """The one-line error for a failed write of `path`: the reason, and the free space where it matters."""
    folder = os.path.dirname(os.path.abspath(path))
    why = e.strerror or str(e)
    if e.errno in _NO_SPACE:
        free = shutil.disk_usage(folder).free if os.path.isdir(folder) else 0
        why += f"; {free / 2**20:.0f} MiB free there: free some space or write elsewhere"
    elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        why += f": {folder} is not writable; give a folder this process can write"
    elif e.errno in (errno.ENOTDIR, errno.EEXIST):
        why += f": a part of {folder} is a file, not a folder"
    error = WriteError(f"could not write {path} ({why}); the file it would replace is unchanged")
    error.errno = e.errno  # set apart: OSError(errno, msg) would print as "[Errno 28] could not ..."
    return error


def atomic_write(path: str, write: Callable[[str], None], fault: Fault = None) -> None:
    """Call write(tmp_path), then move the result to `path` atomically."""
    try:
        with _temp_for(path, fault) as tmp:
            write(tmp)
    except WriteError:
        raise
    except OSError as e:
        raise write_error(path, e) from e


class _WriteTracker:
    """A file for torch.save that remembers a failed write: torch reports it as `RuntimeError: unexpected pos`,
    without the OS error (disk full, read-only, ...)."""

    def __init__(self, f: Any) -> None:
        self.f, self.error = f, None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.f.flush()


def save_torch(obj: Any, path: str, fault: Fault = None) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            out = _WriteTracker(f)
            try:
                torch.save(obj, out)
            except RuntimeError:
                if out.error is not None:
                    raise out.error from None
                raise

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


FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


def clone_or_copy(src: str, dst: str) -> str:
    """Copy the bytes of `src` into `dst` (created or truncated) as cheaply as the file system allows:
    a reflink (shared blocks, copied on write), else copy_file_range (in the kernel), else read/write.
    Returns the method used."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        try:
            fcntl.ioctl(fo.fileno(), FICLONE, fi.fileno())
            return "reflink"
        except OSError:  # ext4, tmpfs, another file system, ...: not supported
            pass
        size = os.fstat(fi.fileno()).st_size
        try:
            done = 0
            while done < size:
                n = os.copy_file_range(fi.fileno(), fo.fileno(), size - done)
                if n == 0:
                    break
                done += n
            if done == size:
                return "copy_file_range"
        except OSError as e:
            if e.errno in _NO_SPACE:
                raise
        fi.seek(0)
        fo.seek(0)
        fo.truncate()
        shutil.copyfileobj(fi, fo, 1 << 20)
        return "copy"


def copy_file(src: str, path: str, fault: Fault = None) -> None:
    """Copy `src` to `path` atomically, as an independent file (`clone_or_copy`)."""
    atomic_write(path, lambda tmp: clone_or_copy(src, tmp), fault)


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
    if os.path.isdir(path):
        raise unreadable(path, IsADirectoryError(path), what)
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
    if os.path.isdir(path):
        inside = sorted(f for f in os.listdir(path) if f.endswith(".pt"))
        hint = f"e.g. {os.path.join(path, inside[0])}" if inside else "it holds no .pt file"
        return ValueError(f"{path} is a folder, not a {what} file: give a file in it ({hint})")
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    why = "it is empty (0 bytes)" if size == 0 else (
        f"it is truncated or corrupt ({size:,} bytes, not a complete torch file: {type(error).__name__})")
    return ValueError(f"{path} is not a readable {what}: {why}")
