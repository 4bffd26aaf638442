"""Crash-safe saves, fallback on resume, named errors for broken files, and the dictionary fingerprint.

Faults are injected at named phases of fairseq's own save (checkpoint_utils.save_checkpoint with a real
Trainer, one process): the fault hook, which kills the process in real runs, raises here instead, and
what is left on disk is then inspected and resumed from. The same faults in real fairseq-train runs
(one and two ranks, with the losses after resuming) are in test_expert_parallel_checkpoints.py.
"""

import contextlib
import io
import os
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from fairseq_switch import checkpoints, file_io, reshard
from fairseq_switch.checkpoints import (
    RECORD_KEY,
    check_dictionary,
    dictionary_record,
    inspect_save,
    list_saves,
    resume_path,
)

from . import ep_harness as H


class Killed(Exception):
    """What the fault hook raises here instead of exiting."""


class _EpochItr:
    epoch = 1

    def end_of_epoch(self):
        return False

    def state_dict(self):
        return {"epoch": 1, "iterations_in_epoch": 0, "shuffle": True, "version": 2}


@pytest.fixture(scope="module")
def trainer(data_dir):
    return H.build_trainer(data_dir, 1, 0)


def save_id_of(path):
    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return state["extra_state"][RECORD_KEY]["save_id"]


def save(trainer, folder, updates, val_loss, fault=None, monkeypatch=None, parent="last"):
    """fairseq's save at `updates` (numbered, best and last files), optionally killed at `fault`. `parent`: the
    save id the trainer's state continues; "last": as if resumed from the folder's checkpoint_last."""
    from fairseq import checkpoint_utils

    ck = trainer.cfg.checkpoint
    with open_dict(ck):
        ck.no_save, ck.save_dir, ck.save_interval_updates = False, str(folder), 3
    if parent == "last":
        last = Path(folder) / "checkpoint_last.pt"
        parent = save_id_of(last) if last.exists() else None
    setattr(trainer, checkpoints.PARENT_ATTR, parent)
    trainer.set_num_updates(updates)
    if fault is not None:
        monkeypatch.setenv(file_io.FAULT_ENV, fault)
        monkeypatch.setattr(os, "_exit", lambda code: (_ for _ in ()).throw(Killed(code)))
    try:
        checkpoint_utils.save_checkpoint(ck, trainer, _EpochItr(), val_loss)
    except Killed:
        pass
    else:
        assert fault is None, f"{fault} was never reached"
    finally:
        monkeypatch and monkeypatch.delenv(file_io.FAULT_ENV, raising=False)
        monkeypatch and monkeypatch.undo()


@pytest.fixture(scope="module")
def first_save(trainer, tmp_path_factory):
    """A complete save at update 3 (checkpoint_1_3, best, last): the start of every fault below."""
    from fairseq import checkpoint_utils

    if hasattr(checkpoint_utils.save_checkpoint, "best"):
        del checkpoint_utils.save_checkpoint.best
    folder = tmp_path_factory.mktemp("saves") / "base"
    save(trainer, folder, 3, 1.0)
    return folder


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# the save at update 6 killed at each phase: which save a plain resume then reads, and whether it warns
FAULTS = [
    ("main-file@6", "checkpoint_last.pt", 3, None),
    ("between-shards@6", "checkpoint_last.pt", 3, "^checkpoint_1_6.manifest.json is missing: the save was interrupted"),
    ("manifest@6", "checkpoint_last.pt", 3, "^checkpoint_1_6.manifest.json is missing: the save was interrupted"),
    ("copy-best@6", "checkpoint_1_6.pt", 6, None),
    ("copy-last@6", "checkpoint_1_6.pt", 6, None),
]


@pytest.mark.parametrize("fault,resumes_from,update,problem", FAULTS, ids=[f[0] for f in FAULTS])
def test_a_kill_at_any_phase_of_a_save_leaves_a_resumable_folder(trainer, first_save, tmp_path, monkeypatch, caplog,
                                                                 fault, resumes_from, update, problem):
    folder = _copy(first_save, tmp_path / "run")
    save(trainer, folder, 6, 0.5, fault, monkeypatch)
    saves = {os.path.basename(s.path): s for s in list_saves(str(folder))}
    assert saves["checkpoint_1_3.pt"].complete and saves["checkpoint_best.pt"].complete
    if problem is not None:
        assert not saves["checkpoint_1_6.pt"].complete
        assert __import__("re").search(problem, saves["checkpoint_1_6.pt"].problem)
    last = str(folder / "checkpoint_last.pt")
    with caplog.at_level("WARNING"):
        got = resume_path(str(folder), last, refuse=False)
    assert os.path.basename(got) == resumes_from and inspect_save(got).num_updates == update
    if resumes_from != "checkpoint_last.pt":  # checkpoint_last still holds update 3: say so, once
        assert [r.getMessage() for r in caplog.records] == [
            f"{last} (update 3) is older than a complete save (a save was interrupted); resuming from "
            f"{folder}/checkpoint_1_6.pt (update 6), the newest complete save"]
        with pytest.raises(ValueError, match=r"the newest complete save is .*checkpoint_1_6.pt \(update 6\): resume "
                                             r"from it with --restore-file .* drop --no-resume-fallback"):
            resume_path(str(folder), last, refuse=True)
    else:
        assert not caplog.records


def test_resume_reads_the_fallback_save_and_names_the_broken_file(trainer, first_save, tmp_path, caplog):
    """checkpoint_last truncated as fairseq's in-place copy left it: the Trainer resumes from checkpoint_1_3."""
    folder = _copy(first_save, tmp_path / "run")
    last = folder / "checkpoint_last.pt"
    data = last.read_bytes()
    last.unlink()  # a copy of its own, not a link to checkpoint_1_3.pt
    last.write_bytes(data[: len(data) // 3])
    (folder / ".checkpoint_last.pt.abc.tmp").write_bytes(b"half")
    res = _verify(folder)
    assert res[0] == 1 and "checkpoint_last.pt" in res[1] and "BROKEN" in res[1] and "truncated" in res[1]
    assert "an interrupted write" in res[1]
    ck = trainer.cfg.checkpoint
    with open_dict(ck):
        ck.save_dir = str(folder)
    with caplog.at_level("WARNING"):
        extra = trainer.load_checkpoint(str(last))
    assert extra is not None and trainer.get_num_updates() == 3
    assert any(f"{last} is broken ({last} is not a readable checkpoint: it is truncated" in r.getMessage()
               and "resuming from" in r.getMessage() for r in caplog.records)
    assert not (folder / ".checkpoint_last.pt.abc.tmp").exists()  # leftovers of interrupted writes go
    assert last.exists()  # the broken file itself is kept until the next save replaces it
    # no complete save at all: refuse rather than start afresh over the folder
    for f in folder.iterdir():
        if f.name != "checkpoint_last.pt":
            f.unlink()
    with pytest.raises(ValueError, match=r"checkpoint_last.pt is broken .* no save in .* is complete: nothing to "
                                         r"resume from; check the folder with `python scripts/verify_checkpoint.py"):
        resume_path(str(folder), str(last), refuse=False)


def _verify(folder):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = checkpoints.main([str(folder)])
    return rc, out.getvalue(), err.getvalue()


def test_verify_lists_saves_newest_first(first_save, tmp_path):
    rc, out, _ = _verify(first_save)
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 4 and lines[-1] == "newest save checkpoint_last.pt is complete"
    assert all("update       3" in ln and ln.endswith("complete") for ln in lines[:3])
    assert _verify(tmp_path / "nope")[0] == 2
    assert _verify(tmp_path)[0] == 2  # a folder without saves


def test_saves_are_atomic_and_record_the_dictionary(trainer, first_save):
    files = sorted(os.listdir(first_save))
    assert files == ["checkpoint_1_3.manifest.json", "checkpoint_1_3.pt", "checkpoint_best.manifest.json",
                     "checkpoint_best.pt", "checkpoint_last.manifest.json", "checkpoint_last.pt"]
    state = torch.load(first_save / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    record = state["extra_state"][RECORD_KEY]
    assert record["dictionary"] == dictionary_record(trainer.task.target_dictionary, trainer.task.cfg.data)
    assert record["dictionary"]["size"] == len(trainer.task.target_dictionary)
    assert record["save_id"] == state["expert_parallel"]["save_id"]


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    """A write the OS refuses half way (here: over RLIMIT_FSIZE, EFBIG; a full disk is in test_save_safety.py).
    torch reports it as `RuntimeError: unexpected pos`; the error must name the file and the OS's reason."""
    import resource
    import signal

    target = tmp_path / "checkpoint_last.pt"
    file_io.save_torch({"a": 1}, str(target))
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, limits[1]))
    try:
        with pytest.raises(file_io.WriteError) as e:
            file_io.save_torch({"a": torch.zeros(100_000)}, str(target))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert str(e.value) == f"could not write {target} (File too large); the file it would replace is unchanged"
    assert os.listdir(tmp_path) == ["checkpoint_last.pt"]
    assert torch.load(target, weights_only=False) == {"a": 1}


def test_fault_specs_are_checked(monkeypatch):
    monkeypatch.setenv(file_io.FAULT_ENV, "copy-last@6:1")
    assert file_io.FaultPlan.from_env() == file_io.FaultPlan("copy-last", 6, 1)
    monkeypatch.setenv(file_io.FAULT_ENV, "mid-copy")
    with pytest.raises(ValueError, match=r"FAIRSEQ_SWITCH_FAULT='mid-copy': expected <phase>.*main-file, shard-file"):
        file_io.FaultPlan.from_env()


# -- unreadable files are named --------------------------------------------------------------
@pytest.mark.parametrize("cut", ["empty", "truncated"])
def test_an_unreadable_checkpoint_is_named_by_every_loader(first_save, tmp_path, cut):
    from fairseq import checkpoint_utils

    from fairseq_switch.models.teacher import read_checkpoint

    bad = tmp_path / "checkpoint_9.pt"
    data = (first_save / "checkpoint_1_3.pt").read_bytes()
    bad.write_bytes(b"" if cut == "empty" else data[:5000])
    why = ("it is empty \\(0 bytes\\)" if cut == "empty"
           else "it is truncated or corrupt \\(5,000 bytes, not a complete torch file")
    for load in (checkpoint_utils.load_checkpoint_to_cpu,  # resume, fine-tuning, fairseq-generate
                 lambda p: read_checkpoint(p, "--teacher-path")):  # distillation, student init
        with pytest.raises(ValueError, match=f"{bad} is not a readable checkpoint: {why}.*verify_checkpoint.py"):
            load(str(bad))


def test_dictionary_mismatch_of_the_same_size_is_refused(tmp_path, first_save, caplog):
    from fairseq.data import Dictionary

    d = Dictionary()
    for w in ("a", "b", "c"):
        d.add_symbol(w)
    other = Dictionary()
    for w in ("a", "c", "b"):  # same size, two pieces swapped
        other.add_symbol(w)
    state = {"extra_state": {RECORD_KEY: {"dictionary": dictionary_record(d, "/data/pretrain")}}}
    check_dictionary("ck.pt", state, dictionary_record(d, "/data/finetune"), allow_change=False)
    with pytest.raises(ValueError, match=r"ck.pt was trained with the dictionary of /data/pretrain \(7 symbols, "
                                         r"fingerprint [0-9a-f]{16}\), but this task's dictionary, of /data/finetune "
                                         r"\(7 symbols, .* is a different one: .*--allow-dictionary-change"):
        check_dictionary("ck.pt", state, dictionary_record(other, "/data/finetune"), allow_change=False)
    with caplog.at_level("WARNING"):
        check_dictionary("ck.pt", state, dictionary_record(other, "/data/finetune"), allow_change=True)
        check_dictionary("old.pt", {"extra_state": {}}, dictionary_record(other, "x"), allow_change=False)
    msgs = [r.getMessage() for r in caplog.records]
    assert "going on because of --allow-dictionary-change" in msgs[0]
    assert "old.pt records no dictionary fingerprint" in msgs[1]


@pytest.fixture(scope="module")
def swapped_data(tmp_path_factory, data_dir):
    """The harness dictionary with two words swapped: same size, other ids."""
    d = tmp_path_factory.mktemp("swapped")
    lines = Path(data_dir, "dict.txt").read_text().splitlines()
    i, j = lines.index("w0 1"), lines.index("w1 1")
    lines[i], lines[j] = lines[j], lines[i]
    (d / "dict.txt").write_text("\n".join(lines) + "\n")
    return str(d)


def test_fine_tuning_generation_and_teachers_check_the_fingerprint(first_save, swapped_data):
    from fairseq import checkpoint_utils, tasks

    from fairseq_switch.models.teacher import load_model

    ck = str(first_save / "checkpoint_1_3.pt")
    other = H.build_trainer(swapped_data, 1, 0)
    match = rf"{ck} was trained with the dictionary of .* but this task's dictionary, of {swapped_data} .*different"
    with pytest.raises(ValueError, match=match):  # fine-tuning (--finetune-from-model / --restore-file)
        other.load_checkpoint(ck, reset_optimizer=True)
    task = tasks.setup_task(other.cfg.task)
    with pytest.raises(ValueError, match=match):  # fairseq-generate
        checkpoint_utils.load_model_ensemble_and_task([ck], task=task)
    with pytest.raises(ValueError, match=rf"--teacher-path {match}"):  # distillation
        load_model(ck, task, "--teacher-path")
    allowed = H.build_trainer(swapped_data, 1, 0, ["--allow-dictionary-change"])
    assert allowed.load_checkpoint(ck, reset_optimizer=True) is not None


def test_reshard_names_an_unreadable_input(first_save, tmp_path):
    bad = tmp_path / "checkpoint_1_3.pt"
    bad.write_bytes((first_save / "checkpoint_1_3.pt").read_bytes()[:4000])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = reshard.main([str(bad), str(tmp_path / "out.pt"), "--world-size", "1"])
    assert rc == 2 and err.getvalue().startswith(f"reshard_checkpoint: error: {bad} is not a readable checkpoint: it "
                                                 f"is truncated or corrupt (4,000 bytes")
    assert "Traceback" not in err.getvalue() and not (tmp_path / "out.pt").exists()
