"""On-disk cache of a distillation teacher's top-k logits (Fedus et al. 2021, Sec. 4.2): the teacher is
the expensive part.

Entries are keyed by the example's content (source tokens and decoder input), not by its index:
span corruption draws new inputs every epoch, so an index would point at stale outputs, while the
content key is right for any task. An epoch that repeats its inputs (text-to-text fine-tuning,
span corruption rerun with the same seed: every run of an ablation sweep, a resumed run) reads the
teacher's outputs instead of running it. Values are stored in float32, so a cached step computes
exactly what an uncached one does.

One SQLite file per cache folder: safe for several ranks and runs at once (SQLite's locking), and
tied to one teacher and one k by a fingerprint; a folder made for another teacher is refused,
never overwritten.

`fairseq_switch.lab.precompute_teacher` fills a cache ahead of training (scripts/precompute_teacher.py).
"""

import hashlib
import json
import os
import sqlite3
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

FORMAT = 1
FILE = "teacher_topk.sqlite"

Entry = Tuple[torch.Tensor, torch.Tensor]  # (logits [n, k] float32, vocab indices [n, k] int64)


def file_fingerprint(path: str, chunk: int = 1 << 22) -> str:
    """sha1 of a checkpoint file (its expert shards share its save id, so the main file identifies the save)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def example_key(src: torch.Tensor, prev: torch.Tensor) -> bytes:
    """Content key of one example: its non-pad source tokens and decoder input tokens."""
    a = src.to(torch.int32).cpu().numpy().tobytes()
    b = prev.to(torch.int32).cpu().numpy().tobytes()
    return hashlib.sha1(len(a).to_bytes(8, "little") + a + b).digest()


class TeacherCache:
    def __init__(self, directory: str, teacher: str, k: int):
        if k <= 0:
            raise ValueError(f"--teacher-cache-dir needs --teacher-topk > 0 (got {k}): full distributions of "
                             f"V floats per token are too large to store; 16-64 keeps nearly all the mass")
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, FILE)
        self.k = k
        self.meta = {"format": FORMAT, "teacher_sha1": file_fingerprint(teacher), "topk": k}
        self.conn = sqlite3.connect(self.path, timeout=600)
        with self.conn:
            self.conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            self.conn.execute("CREATE TABLE IF NOT EXISTS topk (key BLOB PRIMARY KEY, n INTEGER, val BLOB, idx BLOB)")
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('fingerprint', ?)", (json.dumps(self.meta),))
        saved = json.loads(self.conn.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()[0])
        if saved != self.meta:
            self.conn.close()
            raise ValueError(
                f"--teacher-cache-dir {directory} holds top-{saved.get('topk')} outputs of another teacher "
                f"(sha1 {saved.get('teacher_sha1', '?')[:12]}, now {self.meta['teacher_sha1'][:12]} with top-"
                f"{k}); give this teacher its own cache folder (nothing was overwritten)"
            )

    def __len__(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM topk").fetchone()[0]

    def get(self, keys: Sequence[bytes]) -> List[Optional[Entry]]:
        found = {}
        for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = list(keys[start:start + 500])
            q = f"SELECT key, n, val, idx FROM topk WHERE key IN ({','.join('?' * len(chunk))})"
            for key, n, val, idx in self.conn.execute(q, chunk):
                v = torch.from_numpy(np.frombuffer(val, dtype=np.float32).reshape(n, self.k).copy())
                i = torch.from_numpy(np.frombuffer(idx, dtype=np.int32).reshape(n, self.k).astype(np.int64))
                found[bytes(key)] = (v, i)
        return [found.get(bytes(k)) for k in keys]

    def put(self, items: Sequence[Tuple[bytes, torch.Tensor, torch.Tensor]]) -> None:
        rows = [
            (key, val.shape[0], val.detach().float().cpu().numpy().tobytes(),
             idx.detach().to(torch.int32).cpu().numpy().tobytes())
            for key, val, idx in items
        ]
        with self.conn:  # one transaction per batch; a crash leaves whole entries or none
            self.conn.executemany("INSERT OR REPLACE INTO topk VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        self.conn.close()
