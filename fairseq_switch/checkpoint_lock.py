"""One run per --save-dir, and a --save-dir that can take a save, checked before training starts.

Two runs writing into one folder mixed their saves without a word (checkpoint_1_3 from one run,
checkpoint_last from the other, each file complete). A run therefore holds an exclusive `flock` on
`<save-dir>/.fairseq-switch.lock` for its whole life; the kernel frees it when the process ends, however
it ends (`kill -9` included), so a stale lock cannot block a resume. A second run stops before its
first update with one line naming the holder (pid and host, written into the lock file). With several
ranks, rank 0 takes the lock and every rank raises the same error (the outcome is broadcast).

`flock` is per machine on most network file systems: two hosts sharing a --save-dir are not kept apart.
"""

import errno
import fcntl
import os
import shutil
import socket
import tempfile
import time
from typing import Dict, List

LOCK_NAME = ".fairseq-switch.lock"
_HELD: Dict[str, int] = {}  # real path of a locked --save-dir -> the open lock file (kept open until exit)


def last_save_files(save_dir: str) -> List[str]:
    """checkpoint_last.pt and its expert shards: what one more save of this run writes, at least."""
    names = [f for f in os.listdir(save_dir) if f == "checkpoint_last.pt" or
             (f.startswith("checkpoint_last-experts-rank") and f.endswith(".pt"))]
    return [os.path.join(save_dir, f) for f in sorted(names)]


def check_save_dir(save_dir: str) -> None:
    """fairseq's verify_checkpoint_directory with one-line errors: the folder, or the folder it would be made
    in, must take a file, and on a resume have room for one more save like the last (a save is only known to
    fail at its end, after the updates since the one before). Unlike fairseq it makes no folder: a --no-save
    run writes nothing (a saving run makes it when it takes the lock)."""
    if os.path.lexists(save_dir) and not os.path.isdir(save_dir):
        raise ValueError(f"--save-dir {save_dir} is a file, not a folder: give a folder for the checkpoints (the file "
                         f"was left untouched)")
    here = os.path.abspath(save_dir)
    while not os.path.lexists(here):
        here = os.path.dirname(here)
    if not os.path.isdir(here):
        raise ValueError(f"--save-dir {save_dir} cannot be a folder: {here} is a file")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=here)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ValueError(not_writable(save_dir, e)) from e
    if not os.path.isdir(save_dir):
        return
    files = last_save_files(save_dir)
    need = sum(os.path.getsize(f) for f in files)
    free = shutil.disk_usage(save_dir).free
    if need > free:
        raise ValueError(f"--save-dir {save_dir} has {free / 2**20:.1f} MiB free, less than one save needs "
                         f"({need / 2**20:.1f} MiB, the size of checkpoint_last.pt and its files): the next save would "
                         f"fail; free some space, or give another --save-dir")


def not_writable(save_dir: str, e: OSError) -> str:
    return f"--save-dir {save_dir} is not writable ({e.strerror or e}): give a folder this process can write to"


def holder_of(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            words = f.read().split()
    except OSError:
        words = []
    if len(words) < 2:
        return "another process (its pid is not recorded yet)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(words[2]))) if len(words) > 2 else "?"
    return f"pid {words[0]} on {words[1]}, since {since}"


def lock_save_dir(save_dir: str) -> None:
    """Hold the lock of `save_dir` until this process ends (again for the same folder: nothing to do)."""
    key = os.path.realpath(save_dir)
    if key in _HELD:
        return
    path = os.path.join(save_dir, LOCK_NAME)
    try:
        os.makedirs(save_dir, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise ValueError(not_writable(save_dir, e)) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise ValueError(f"--save-dir {save_dir}: cannot lock {path} ({e.strerror}): this file system has no "
                             f"flock; give a local folder") from e
        raise ValueError(f"--save-dir {save_dir} is in use by another run ({holder_of(path)}): two runs in one folder "
                         f"would mix their saves; wait for it, stop it, or give this run another --save-dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {socket.gethostname()} {time.time():.0f}\n".encode())
    _HELD[key] = fd


def lock_for_run(save_dir: str) -> None:
    """Every rank of a run calls this: rank 0 takes the lock, and all ranks share its outcome."""
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    error = None
    if not distributed or dist.get_rank() == 0:
        try:
            lock_save_dir(save_dir)
        except ValueError as e:
            error = str(e)
    if distributed:
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error is not None:
        raise ValueError(error)
