"""Which preparation steps are up to date: their options and stats, kept in <out>/prepare.json.

A step is redone when its key (the options and inputs it depends on, including the previous step's
key) changed or one of its outputs is missing; redoing a step invalidates the steps after it.
`Steps` keeps one entry per step; `OneRecord` is the record of a preparation that runs as one step
(downstream pairs, the demo), in the layout those folders have always had.
"""

import hashlib
import json
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

STAMP = "prepare.json"
ORDER = ("split", "spm", "encode", "binarize")


def sha256_files(files: Iterable[Path]) -> str:
    """One SHA-256 over the files' names and contents, in order (the inputs' fingerprint)."""
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class Steps:
    """Remembers which steps finished with which options (in <out>/prepare.json)."""

    def __init__(self, out: Path, force: bool):
        self.path = out / STAMP
        self.state: dict = {}
        if self.path.is_file() and not force:
            try:
                self.state = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError:
                self.state = {}

    def done(self, name: str, key: dict, outputs: List[Path], stats: Sequence[str] = ()) -> bool:
        """The step finished with `key`, its outputs exist and its record holds `stats` (older runs lack some)."""
        entry = self.state.get(name)
        return (bool(entry) and entry.get("key") == key and all(p.is_file() for p in outputs)
                and all(k in entry.get("stats", {}) for k in stats))

    def known(self, name: str) -> bool:
        """An earlier run recorded `name` (with whatever key)."""
        return name in self.state

    def stats(self, name: str) -> dict:
        """What `name` recorded when it finished."""
        return self.state[name]["stats"]

    def invalidate_from(self, name: str) -> None:
        """Forget `name` and every step after it (and save)."""
        for later in ORDER[ORDER.index(name):]:
            self.state.pop(later, None)
        self.save()

    def finish(self, name: str, key: dict, stats: dict) -> None:
        """Record that `name` finished with `key` (and save)."""
        self.state[name] = {"key": key, "stats": stats}
        self.save()

    def save(self) -> None:
        """Write the record."""
        self.path.write_text(json.dumps(self.state, indent=2) + "\n", encoding="utf-8")


class OneRecord:
    """The record of a preparation that is one step, in one file: {key_field: key, stats_field: stats},
    or the stats beside the key when `stats_field` is None."""

    def __init__(self, path: Path, force: bool, key_field: str = "key", stats_field: Optional[str] = None):
        self.path, self.key_field, self.stats_field = path, key_field, stats_field
        self.present = path.is_file() and not force
        self.state: dict = {}
        if self.present:
            try:
                self.state = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.state = {}

    def done(self, name: str, key: dict, outputs: List[Path], stats: Sequence[str] = ()) -> bool:
        return bool(self.state) and self.state.get(self.key_field) == key and all(p.is_file() for p in outputs)

    def known(self, name: str) -> bool:
        return self.present

    def stats(self, name: str) -> dict:
        if self.stats_field:
            return self.state.get(self.stats_field, {})
        return {k: v for k, v in self.state.items() if k != self.key_field}

    def invalidate_from(self, name: str) -> None:
        """A failed rebuild must not look up to date."""
        self.path.unlink(missing_ok=True)

    def finish(self, name: str, key: dict, stats: dict) -> None:
        self.state = {self.key_field: key, **({self.stats_field: stats} if self.stats_field else stats)}
        self.path.write_text(json.dumps(self.state, indent=2) + "\n", encoding="utf-8")
