"""No ordinary operation loses, mixes or silently misreads a save (issue 27), and a bad --save-dir, a full
disk, a folder given as a checkpoint or a converter output that is a file get one line.

Saves are made with fairseq's own save (checkpoint_utils.save_checkpoint) on a real Trainer in this
process, as in test_checkpoint_safety.py. A full disk and a read-only folder are real (a size-limited or
read-only tmpfs in a private mount namespace, `unshare -Urm`: this runs as root, where chmod stops no
write), in a small subprocess; where `unshare` is not allowed those two tests are skipped. Two real
fairseq-train runs are not started here: the lock is held by another open file (as another process holds
it) or by a subprocess that is then killed.
"""

import contextlib
import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from fairseq_switch import checkpoint_lock, file_io, reshard
from fairseq_switch.checkpoints import PARENT_ATTR, inspect_save, list_saves, resume_path
from fairseq_switch.cli_errors import one_line_errors

from . import ep_harness as H
from .test_checkpoint_safety import _EpochItr, save, save_id_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def registered():
    """fairseq's functions as the plugin replaces them (verify_checkpoint_directory, the Trainer's save)."""
    from fairseq_switch.plugin import register

    register()


@pytest.fixture(scope="module")
def trainer(data_dir, one_torch_thread):
    from fairseq import checkpoint_utils

    if hasattr(checkpoint_utils.save_checkpoint, "best"):
        del checkpoint_utils.save_checkpoint.best
    return H.build_trainer(data_dir, 1, 0)


@pytest.fixture(scope="module")
def run12(trainer, tmp_path_factory):
    """One run's saves at updates 3, 6, 9, 12 (each continues the one before), as fairseq-train makes them."""
    folder = tmp_path_factory.mktemp("run12") / "ck"
    for i, upd in enumerate((3, 6, 9, 12)):
        save(trainer, folder, upd, 1.0 - 0.1 * i, parent=None if upd == 3 else "last")
    return folder


def _copy_run(src, dst):
    """A copy of a run's folder as it is: `cp -a` keeps hard links (shutil.copytree would split them)."""
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return Path(dst)


def _md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _configure(trainer, folder, restore_file="checkpoint_last.pt", no_save=False):
    ck = trainer.cfg.checkpoint
    with open_dict(ck):
        ck.save_dir, ck.restore_file, ck.no_save = str(folder), restore_file, no_save


# -- 1. every name of a save is a file of its own ----------------------------------------------
def test_the_names_of_a_save_are_independent_files(run12, tmp_path):
    folder = _copy_run(run12, tmp_path / "ck")
    names = ["checkpoint_1_12.pt", "checkpoint_last.pt", "checkpoint_best.pt"]
    assert len({os.stat(folder / n).st_ino for n in names}) == 3
    assert all(os.stat(folder / n).st_nlink == 1 for n in names)
    before = {n: _md5(folder / n) for n in names}
    # fairseq's usual rollback: cp writes into the existing checkpoint_last.pt
    subprocess.run(["cp", str(folder / "checkpoint_1_6.pt"), str(folder / "checkpoint_last.pt")], check=True)
    assert _md5(folder / "checkpoint_last.pt") == _md5(folder / "checkpoint_1_6.pt")
    assert _md5(folder / "checkpoint_1_12.pt") == before["checkpoint_1_12.pt"]
    assert _md5(folder / "checkpoint_best.pt") == before["checkpoint_best.pt"]
    # stripping the optimizer state in place
    state = torch.load(folder / "checkpoint_best.pt", weights_only=False)
    state["last_optimizer_state"] = None
    torch.save(state, folder / "checkpoint_best.pt")
    assert _md5(folder / "checkpoint_1_12.pt") == before["checkpoint_1_12.pt"]
    assert inspect_save(str(folder / "checkpoint_1_12.pt")).complete


def test_a_copy_is_a_reflink_or_a_copy_never_a_link(tmp_path):
    src = tmp_path / "a.pt"
    src.write_bytes(os.urandom(3 << 20))
    file_io.copy_file(str(src), str(tmp_path / "b.pt"))
    assert os.stat(tmp_path / "b.pt").st_ino != os.stat(src).st_ino and _md5(tmp_path / "b.pt") == _md5(src)
    assert file_io.clone_or_copy(str(src), str(tmp_path / "c.pt")) in ("reflink", "copy_file_range", "copy")
    assert _md5(tmp_path / "c.pt") == _md5(src)


# -- 2. one run per --save-dir -------------------------------------------------------------------
def _hold_lock(folder, content=b"4242 otherhost 0\n"):
    """The lock as another run holds it (flock is per open file: a second open in this process conflicts)."""
    import fcntl

    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, checkpoint_lock.LOCK_NAME), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, content)
    return fd


def test_a_second_run_in_a_save_dir_is_refused_naming_the_holder(trainer, tmp_path):
    folder = tmp_path / "ck"
    fd = _hold_lock(folder)
    _configure(trainer, folder)
    try:
        with pytest.raises(ValueError, match=rf"^--save-dir {folder} is in use by another run \(pid 4242 on otherhost, "
                                             r"since .*\): two runs in one folder would mix their saves; .*another "
                                             r"--save-dir$"):
            trainer.load_checkpoint(str(folder / "checkpoint_last.pt"))
    finally:
        os.close(fd)
    assert trainer.load_checkpoint(str(folder / "checkpoint_last.pt")) is None  # free again: a fresh start
    # held by this run from now on, for its whole life
    holder = (folder / checkpoint_lock.LOCK_NAME).read_text().split()
    assert holder[0] == str(os.getpid())
    with pytest.raises(BlockingIOError):
        _hold_lock(folder)
    _configure(trainer, tmp_path / "unlocked", no_save=True)  # --no-save writes nothing: no lock
    trainer.load_checkpoint(str(tmp_path / "unlocked" / "checkpoint_last.pt"))
    assert not (tmp_path / "unlocked").exists()


def test_a_killed_run_frees_its_save_dir(tmp_path):
    code = ("import sys; from fairseq_switch import checkpoint_lock as L; L.lock_save_dir(sys.argv[1]); "
            "print('locked', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            cwd=ROOT, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=rf"in use by another run \(pid {proc.pid} on "):
            checkpoint_lock.lock_save_dir(str(tmp_path))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    checkpoint_lock.lock_save_dir(str(tmp_path))  # no stale lock after kill -9


def test_the_ranks_of_a_run_agree_on_the_lock(tmp_path):
    """Rank 0 takes the lock; both ranks stop with its error, or both go on."""
    import torch.multiprocessing as mp

    from .save_lock_worker import lock_worker

    held, free = tmp_path / "held", tmp_path / "free"
    fd = _hold_lock(held)
    try:
        mp.spawn(lock_worker, args=(2, H.free_port(), [str(held), str(free)], str(tmp_path)), nprocs=2)
    finally:
        os.close(fd)
    got = [(tmp_path / f"rank{r}.txt").read_text().splitlines() for r in (0, 1)]
    assert got[0] == got[1] and got[0][1] == "ok", got
    assert got[0][0].startswith(f"--save-dir {held} is in use by another run (pid 4242 on otherhost")


# -- 3. which save a resume reads ------------------------------------------------------------------
def test_a_missing_restore_file_is_refused_and_one_in_save_dir_is_found(trainer, run12, tmp_path):
    folder = _copy_run(run12, tmp_path / "ck")
    before = {f.name: _md5(f) for f in folder.glob("*.pt")}
    _configure(trainer, folder, "checkpoint_1_5.pt")
    with pytest.raises(ValueError, match=rf"^--restore-file checkpoint_1_5.pt: no such file: tried checkpoint_1_5.pt "
                                         rf"and {folder}/checkpoint_1_5.pt; give a checkpoint file"):
        trainer.load_checkpoint("checkpoint_1_5.pt")
    _configure(trainer, folder, "checkpoint_1_6.pt")  # fairseq looked in the working directory only
    assert trainer.load_checkpoint("checkpoint_1_6.pt") is not None and trainer.get_num_updates() == 6
    _configure(trainer, folder, str(tmp_path))
    with pytest.raises(ValueError, match=rf"^--restore-file {tmp_path}: {tmp_path} is a folder, not a checkpoint file"):
        trainer.load_checkpoint(str(tmp_path))
    assert {f.name: _md5(f) for f in folder.glob("*.pt")} == before


def test_fine_tuning_does_not_start_over_saves_without_checkpoint_last(trainer, run12, tmp_path):
    """--finetune-from-model is read whenever checkpoint_last is missing, e.g. after a kill at the first save's copy."""
    folder = tmp_path / "ck"
    folder.mkdir()
    shutil.copyfile(run12 / "checkpoint_1_3.pt", folder / "checkpoint_1_3.pt")
    pretrained = str(run12 / "checkpoint_1_12.pt")
    _configure(trainer, folder)
    with open_dict(trainer.cfg.checkpoint):
        trainer.cfg.checkpoint.finetune_from_model = pretrained
    try:
        with pytest.raises(ValueError, match=rf"^--finetune-from-model {pretrained}: {folder} holds saves "
                                             r"\(checkpoint_1_3.pt\) but no checkpoint_last.pt, so fairseq would start "
                                             rf"over and overwrite them; continue them with --restore-file "
                                             rf"{folder}/checkpoint_1_3.pt"):
            trainer.load_checkpoint(pretrained, reset_optimizer=True)
        (folder / "checkpoint_1_3.pt").unlink()  # an empty folder: fine-tuning starts
        assert trainer.load_checkpoint(pretrained, reset_optimizer=True) is not None
    finally:
        with open_dict(trainer.cfg.checkpoint):
            trainer.cfg.checkpoint.finetune_from_model = None


def test_a_resume_after_a_rollback_stays_on_the_new_branch(trainer, run12, tmp_path, caplog):
    folder = _copy_run(run12, tmp_path / "ck")
    rollback = str(folder / "checkpoint_1_6.pt")
    _configure(trainer, folder, rollback)
    assert trainer.load_checkpoint(rollback) is not None  # --restore-file ck/checkpoint_1_6.pt --max-update 8
    assert getattr(trainer, PARENT_ATTR) == save_id_of(rollback)
    # the end of that run: update 8 is no multiple of --save-interval-updates, so only checkpoint_last is written
    save(trainer, folder, 8, 2.0, parent=getattr(trainer, PARENT_ATTR))
    last = str(folder / "checkpoint_last.pt")
    assert inspect_save(last).num_updates == 8 and inspect_save(last).parent == save_id_of(rollback)
    with caplog.at_level("INFO", logger="fairseq_switch.checkpoints"):
        assert resume_path(str(folder), last, refuse=False) == last  # not the abandoned checkpoint_1_12
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert [r.getMessage() for r in caplog.records] == [
        f"not resuming checkpoint_1_12.pt (update 12), checkpoint_best.pt (update 12), checkpoint_1_9.pt (update 9): "
        f"they do not continue {last} (another branch, e.g. from before a rollback); saves of this run under the same "
        f"names will replace them"]
    # a broken checkpoint_last falls back within its branch: checkpoint_1_6, not checkpoint_1_12
    data = Path(last).read_bytes()
    Path(last).write_bytes(data[: len(data) // 2])
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert resume_path(str(folder), last, refuse=False) == rollback
    assert caplog.records[0].getMessage().startswith(f"{last} is broken ({last} is not a readable checkpoint")


class _MidEpoch(_EpochItr):
    def state_dict(self):
        return {**super().state_dict(), "iterations_in_epoch": 5}


def test_a_resume_keeps_the_wall_clock(trainer, tmp_path, monkeypatch):
    """fairseq restores the `wall` stopwatch without a start time, so every log after a resume said wall 0
    and wall-clock curves (the scaling report's time speed-up) broke; a resume now goes on from the save's
    training time, and fine-tuning (reset_meters) keeps a clock of its own."""
    from fairseq import checkpoint_utils
    from fairseq.logging import metrics

    folder = tmp_path / "ck"
    _configure(trainer, folder)
    monkeypatch.setattr(trainer, "_start_time", time.time() - 1000)  # this run has trained for 1000 s
    checkpoint_utils.save_checkpoint(trainer.cfg.checkpoint, trainer, _MidEpoch(), 1.0)  # update 12, mid-epoch
    last = str(folder / "checkpoint_last.pt")
    metrics.get_meter("default", "wall").start()  # a new process: its clock starts at 0
    assert trainer.load_checkpoint(last) is not None
    wall = metrics.get_meter("default", "wall").elapsed_time  # what fairseq-train logs as `wall`
    assert 1000 <= wall < 1060, wall  # fairseq: 0.0
    metrics.get_meter("default", "wall").start()
    trainer.load_checkpoint(last, reset_optimizer=True, reset_lr_scheduler=True, reset_meters=True)
    wall = metrics.get_meter("default", "wall").elapsed_time
    assert wall < 60, wall


def test_parents_are_recorded_in_the_manifest(run12):
    saves = {os.path.basename(s.path): s for s in list_saves(str(run12))}
    assert saves["checkpoint_1_3.pt"].lineage and saves["checkpoint_1_3.pt"].parent is None
    assert saves["checkpoint_1_12.pt"].parent == saves["checkpoint_1_9.pt"].save_id
    man = (run12 / "checkpoint_1_9.manifest.json").read_text()
    assert f'"parent": "{saves["checkpoint_1_6.pt"].save_id}"' in man


def test_a_checkpoint_without_its_manifest_names_restore_file(trainer, run12, tmp_path):
    folder = tmp_path / "new"
    folder.mkdir()
    shutil.copyfile(run12 / "checkpoint_1_6.pt", folder / "checkpoint_last.pt")
    last = str(folder / "checkpoint_last.pt")
    with pytest.raises(ValueError, match=r"checkpoint_last.manifest.json is missing: the save was interrupted before "
                                         r"it completed, or checkpoint_last.pt was copied without it\), and no save .* "
                                         rf"start from it with --restore-file {last}, or start afresh"):
        resume_path(str(folder), last, refuse=False)
    _configure(trainer, folder, last)  # the fix it names
    assert trainer.load_checkpoint(last) is not None and trainer.get_num_updates() == 6


def test_a_corrupt_manifest_is_called_corrupt(run12, tmp_path):
    folder = _copy_run(run12, tmp_path / "ck")
    (folder / "checkpoint_1_9.manifest.json").write_text('{"save_id": "ab')
    (folder / "checkpoint_1_6.manifest.json").write_text('[1, 2]')
    st = inspect_save(str(folder / "checkpoint_1_9.pt"))
    assert not st.complete and st.problem.startswith("checkpoint_1_9.manifest.json is corrupt (Unterminated string")
    assert "missing" not in st.problem
    st = inspect_save(str(folder / "checkpoint_1_6.pt"))
    assert st.problem.startswith("checkpoint_1_6.manifest.json is corrupt (a JSON list, not an object)")


# -- 4. files follow the umask; the crash dump -------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_follow_the_umask(trainer, run12, tmp_path, umask):
    old = os.umask(umask)
    try:
        save(trainer, tmp_path / "ck", 3, 1.0, parent=None)  # training: numbered, last, best, manifests
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert reshard.main([str(run12 / "checkpoint_1_3.pt"), str(tmp_path / "r" / "one.pt"),
                                 "--world-size", "1"]) == 0
        # conversion writes through these
        file_io.save_safetensors({"w": torch.zeros(2)}, str(tmp_path / "conv" / "model.safetensors"))
        file_io.save_text("a 1\n", str(tmp_path / "conv" / "dict.txt"))
        file_io.copy_file(str(tmp_path / "conv" / "dict.txt"), str(tmp_path / "conv" / "copy.txt"))
    finally:
        os.umask(old)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.rglob("*") if p.is_file()}
    assert {"checkpoint_1_3.pt", "checkpoint_last.pt", "checkpoint_1_3.manifest.json", "one.pt", "one.manifest.json",
            "model.safetensors", "dict.txt", "copy.txt"} <= set(modes)
    assert modes == {name: oct(0o666 & ~umask) for name in modes}  # 0o600 whatever the umask, before


def test_the_crash_dump_goes_to_save_dir_and_not_with_no_save(data_dir, tmp_path, monkeypatch):
    from fairseq import checkpoint_utils

    monkeypatch.chdir(tmp_path)  # where fairseq's default --save-dir, ./checkpoints, would be
    for no_save in (True, False):
        folder = tmp_path / f"ck{int(no_save)}"
        checkpoint_utils.verify_checkpoint_directory(str(folder))  # as fairseq-train does first (it made the folder)
        t = H.build_trainer(data_dir, 1, 0, ["--save-dir", str(folder)])
        _configure(t, folder, no_save=no_save)
        fc2 = t.get_model().switch_ffns[0].experts[1].fc2
        fc2.register_forward_hook(lambda mod, inp, out: torch.full_like(out, float("nan")))
        sample = H.collate(H.global_batches(1, [4])[0][0])
        t.reset_dummy_batch(sample)
        with pytest.raises(FloatingPointError):
            t.train_step([sample])
        assert (folder / "crash.pt").exists() != no_save
    assert sorted(os.listdir(tmp_path)) == ["ck0"]  # nothing in ./checkpoints, nothing for --no-save


# -- 5. one line instead of a traceback ---------------------------------------------------------------
def _one_line(exc):
    """What the plugin's excepthook prints for `exc` raised inside the package."""
    err = io.StringIO()
    try:
        raise exc
    except BaseException as e:  # noqa: BLE001
        with contextlib.redirect_stderr(err):
            one_line_errors(lambda *a: pytest.fail("printed as a traceback"))(type(e), e, e.__traceback__)
    return err.getvalue().splitlines()[0]


def test_a_save_dir_that_is_a_file_is_one_line(tmp_path):
    from fairseq import checkpoint_utils

    f = tmp_path / "notes.txt"
    f.write_text("x")
    with pytest.raises(ValueError) as e:
        checkpoint_utils.verify_checkpoint_directory(str(f))  # fairseq-train's check, as the plugin replaced it
    assert str(e.value) == (f"--save-dir {f} is a file, not a folder: give a folder for the checkpoints (the file was "
                            f"left untouched)")
    with pytest.raises(ValueError, match=rf"^--save-dir {f}/ck/a cannot be a folder: {f} is a file$"):
        checkpoint_utils.verify_checkpoint_directory(str(f / "ck" / "a"))
    assert f.read_text() == "x" and sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_generate_with_a_folder_as_path_says_so(run12):
    from fairseq import checkpoint_utils

    with pytest.raises(ValueError, match=rf"^{run12} is a folder, not a checkpoint file: give a file in it \(e.g. "
                                         rf"{run12}/checkpoint_1_12.pt\); `python scripts/verify_checkpoint.py "
                                         rf"{run12}` lists the complete saves in it$"):
        checkpoint_utils.load_model_ensemble_and_task([str(run12)])  # fairseq-generate --path <folder>


@pytest.mark.parametrize("direction", ["to-fairseq", "to-transformers"])
def test_a_converter_output_that_is_a_file_is_refused(tmp_path, direction):
    from fairseq_switch.convert.cli import main

    out = tmp_path / "out"
    out.write_text("keep")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main([direction, str(tmp_path / "src"), str(out)]) == 2
    assert err.getvalue() == (f"convert_checkpoint: error: {out} is a file, not a folder: give a folder for the "
                              f"outputs (the file was left untouched)\n")
    assert out.read_text() == "keep"


def _unshare_ok():
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode == 0


needs_mounts = pytest.mark.skipif(not _unshare_ok(), reason="needs `unshare -Urm` (a private mount namespace)")


def _in_mount_namespace(tmp_path, shell_setup, python):
    """Run `python` (a script) after `shell_setup` (mounts under $M) in a private mount namespace."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(python))
    m = tmp_path / "mnt"
    m.mkdir()
    cmd = f"set -e; M={m}; {shell_setup}; exec {sys.executable} {script} {m}"
    return subprocess.run(["unshare", "-Urm", "sh", "-c", cmd], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}, timeout=300)


@needs_mounts
def test_a_full_disk_and_a_read_only_save_dir_are_one_line(tmp_path):
    """A 2 MiB tmpfs, where the first save fits and the second does not (torch said `RuntimeError ... unexpected
    pos`), and a read-only one holding a save; one subprocess (it imports fairseq once)."""
    mounts = ("mkdir $M/full $M/ro; mount -t tmpfs -o size=2m tmpfs $M/full; mount -t tmpfs tmpfs $M/ro; "
              "mkdir $M/ro/ck; echo x > $M/ro/ck/checkpoint_last.pt; mount -o remount,ro $M/ro")
    res = _in_mount_namespace(tmp_path, mounts, """
        import os, sys, torch
        from fairseq_switch import file_io
        from fairseq_switch.cli_errors import USER_ERRORS
        from fairseq_switch.plugin import register
        register()
        from fairseq import checkpoint_utils  # verify_checkpoint_directory: fairseq-train's check, as replaced
        m = sys.argv[1]
        full = os.path.join(m, "full")
        last = os.path.join(full, "checkpoint_last.pt")
        file_io.save_torch({"w": torch.zeros(300_000)}, last)  # 1.2 MB
        size = os.path.getsize(last)
        try:
            checkpoint_utils.torch_persistent_save({"w": torch.ones(300_000)}, os.path.join(full, "checkpoint_1_6.pt"))
        except USER_ERRORS as e:
            print("SAVE:", type(e).__name__, e)
        print("LEFT:", sorted(os.listdir(full)), os.path.getsize(last) == size)
        # a resume (a save there), a new run, a resume while the disk is still full: refused before training
        for d in (os.path.join(m, "ro", "ck"), os.path.join(m, "ro", "new"), full):
            try:
                checkpoint_utils.verify_checkpoint_directory(d)
            except ValueError as e:
                print(e)
    """)
    out = res.stdout.splitlines()
    assert res.returncode == 0 and len(out) == 5, res.stdout + res.stderr[-3000:]
    m = tmp_path / "mnt"
    assert re.fullmatch(rf"SAVE: WriteError could not write {m}/full/checkpoint_1_6.pt \(No space left on device; \d "
                        r"MiB free there: free some space or write elsewhere\); the file it would replace is unchanged",
                        out[0]), out[0]
    assert out[1] == "LEFT: ['checkpoint_last.pt'] True"  # no temporary file left, the old save intact
    assert out[2:4] == [
        f"--save-dir {m}/ro/ck is not writable (Read-only file system): give a folder this process can write to",
        f"--save-dir {m}/ro/new is not writable (Read-only file system): give a folder this process can write to"]
    assert re.match(rf"--save-dir {m}/full has 0.\d MiB free, less than one save needs \(1.1 MiB, the size of "
                    r"checkpoint_last.pt and its files\): the next save would fail; free some space", out[4]), out[4]


def test_write_and_save_dir_errors_print_as_one_line(tmp_path):
    def full(tmp):
        raise OSError(28, "No space left on device")

    with pytest.raises(file_io.WriteError) as e:
        file_io.atomic_write(str(tmp_path / "x.pt"), full)
    assert _one_line(e.value).startswith(f"fairseq-switch: error: could not write {tmp_path}/x.pt (No space left on "
                                         f"device; ")
    (tmp_path / "x.pt").touch()
    with pytest.raises(ValueError) as e:
        checkpoint_lock.check_save_dir(str(tmp_path / "x.pt" / "y"))
    assert _one_line(e.value) == (f"fairseq-switch: error: --save-dir {tmp_path}/x.pt/y cannot be a folder: "
                                  f"{tmp_path}/x.pt is a file")
