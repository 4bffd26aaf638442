"""Which saves are complete: the manifest a save's last write leaves, and the check of a save's files
against it (what scripts/verify_checkpoint.py and a resume's fallback read).

A crash leaves each file old or new (`file_io`), never part of one, but a save of several files can
still be cut short between files; the manifest, written once every file is in place, and the save id
every file carries tell a complete save from an interrupted one.
"""

import json
import os
import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from .. import file_io
from .names import FORMAT_VERSION, META_KEY, RECORD_KEY, SAVE_FILE, files_of, manifest_path, shard_path
from .sharding import SavedCheckpoint


def write_manifest(main_path: str, record: dict, files: Sequence[str], fault: file_io.Fault = None) -> None:
    """Written last: a save is complete once every file it lists is in place, with these sizes."""
    file_io.save_json({
        "format": FORMAT_VERSION, "save_id": record.get("save_id"), "parent": record.get("parent"),
        "num_updates": record.get("num_updates"), "epoch": record.get("epoch"),
        "files": {os.path.basename(f): os.path.getsize(f) for f in files},
    }, manifest_path(main_path), fault)


@dataclass
class SaveStatus:
    """What scripts/verify_checkpoint.py reports for one save (main file + its shards + manifest)."""

    path: str
    complete: bool
    problem: str = ""
    num_updates: Optional[int] = None
    epoch: Optional[int] = None
    files: List[str] = field(default_factory=list)
    manifest: bool = False
    save_id: Optional[str] = None
    parent: Optional[str] = None
    lineage: bool = False  # records its parent (saves written before parents were recorded do not)

    def learn(self, record: dict) -> None:
        """The save id and parent from a manifest or a file's record."""
        self.save_id = record.get("save_id") or self.save_id
        if "parent" in record:
            self.parent, self.lineage = record["parent"], True

    @property
    def bytes(self) -> int:
        return sum(os.path.getsize(f) for f in self.files if os.path.isfile(f))


def _updates_from_name(path: str) -> Optional[int]:
    m = re.match(r"^checkpoint_\d+_(\d+)\.pt$", os.path.basename(path))
    return int(m.group(1)) if m else None


def inspect_save(path: str) -> SaveStatus:
    """Is the save whose main file is `path` complete? Reads the manifest and every file's header
    (tensors stay on disk): all files readable, of one save (save ids), at the manifest's sizes.

    A save written by this plugin is complete only with a manifest that agrees; one written before
    manifests existed (or by plain fairseq) only needs readable, consistent files."""
    st = SaveStatus(path, False, files=[path], num_updates=_updates_from_name(path))
    man, name = None, os.path.basename(manifest_path(path))
    missing = (f"{name} is missing: the save was interrupted before it completed, or {os.path.basename(path)} was "
               f"copied without it")
    if os.path.isfile(manifest_path(path)):
        try:
            with open(manifest_path(path), encoding="utf-8") as f:
                man = json.load(f)
            if not isinstance(man, dict):
                raise ValueError(f"a JSON {type(man).__name__}, not an object")
            st.manifest = True
            st.num_updates, st.epoch = man.get("num_updates", st.num_updates), man.get("epoch")
            st.learn(man)
        except (OSError, ValueError) as e:
            man = None
            missing = f"{name} is corrupt ({e}), so the save cannot be checked"
    try:
        state = file_io.load_torch(path, mmap=True)
    except (ValueError, FileNotFoundError) as e:
        st.problem = str(e)
        return st
    history = state.get("optimizer_history") or [{}]
    st.num_updates = history[-1].get("num_updates", st.num_updates)
    record = (state.get("extra_state") or {}).get(RECORD_KEY) or {}
    st.learn(record)
    st.epoch = ((state.get("extra_state") or {}).get("train_iterator") or {}).get("epoch", st.epoch)
    meta = state.get(META_KEY) or {}
    if meta.get("num_experts"):
        st.files = [path] + [shard_path(path, r) for r in range(1, files_of(meta["num_experts"], meta["world_size"]))]
    try:
        saved = SavedCheckpoint(path, state, mmap=True) if "model" in state else None
    except (ValueError, FileNotFoundError) as e:
        st.problem = str(e)
        return st
    if saved is not None:
        st.files = saved.files()
    if man is None and (record or os.path.isfile(manifest_path(path))):
        st.problem = missing
        return st
    if man is not None:
        if man.get("save_id") != record.get("save_id"):
            st.problem = (f"{os.path.basename(path)} is not the save its manifest describes: it was interrupted "
                          f"while being replaced")
            return st
        for f in st.files:
            want = man.get("files", {}).get(os.path.basename(f))
            if want is None or os.path.getsize(f) != want:
                st.problem = f"{f} has {os.path.getsize(f):,} bytes, its manifest says {want}"
                return st
    st.complete = True
    return st


def list_saves(folder: str) -> List[SaveStatus]:
    """Every save in `folder`, newest first (by update, then modification time); unknown updates (an
    unreadable file without a manifest) first."""
    mains = [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if SAVE_FILE.match(f)]
    found = [inspect_save(p) for p in mains]
    inf = float("inf")
    # among copies of one save (same update), checkpoint_last first (what a resume reads), then the numbered one
    def name_rank(s: SaveStatus) -> int:
        base = os.path.basename(s.path)
        return 2 if base.startswith("checkpoint_last") else int(_updates_from_name(base) is not None)

    return sorted(found, key=lambda s: (inf if s.num_updates is None else s.num_updates, name_rank(s),
                                        os.path.getmtime(s.path)), reverse=True)


def leftover_temp_files(folder: str) -> List[str]:
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if file_io.is_temp_file(f)]
