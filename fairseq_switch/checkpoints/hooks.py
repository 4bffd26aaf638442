"""The replacements of fairseq's save and load functions, and the context their outermost call opens.

`compat` installs them when the plugin registers: each function here takes fairseq's original and returns
its replacement. fairseq 0.12 calls them nested (fairseq/checkpoint_utils.py, fairseq/trainer.py):

    checkpoint_utils.save_checkpoint(cfg, trainer, epoch_itr, val_loss)     fairseq-train, at a save point
        trainer.should_save_checkpoint_on_current_rank   which ranks go on: every rank holding distinct experts
        trainer.checkpoint_suffix                        the names: checkpoint_1_6{suffix}.pt, checkpoint_last..
        Trainer.save_checkpoint(first name, extra_state)
            checkpoint_utils.torch_persistent_save(state, filename)
        PathManager.copy(first name, other name)         once per other name (checkpoint_last, checkpoint_best)
        os.remove / PathManager.rm                       pruning (--keep-interval-updates, --keep-last-epochs)
    Trainer.save_checkpoint(save_dir/crash.pt, {})       on its own, from Trainer.train_step after a failed step

    checkpoint_utils.load_checkpoint(cfg, trainer)                          not replaced
        trainer.checkpoint_suffix                        checkpoint_last{suffix}.pt: every rank reads the main file
        Trainer.load_checkpoint(filename, reset_optimizer, ...)
            checkpoint_utils.load_checkpoint_to_cpu(filename, load_on_all_ranks)   rank 0, or every rank
    checkpoint_utils.load_model_ensemble_and_task(filenames, arg_overrides, task)   fairseq-generate, hub
        checkpoint_utils.load_checkpoint_to_cpu(filename, arg_overrides)            once per file

The inner calls need to know what the outer one is doing (the save a copy belongs to, the model a read is
cut for), and fairseq passes none of it down. The outermost replaced call therefore opens one context, a
`SaveCall` or a `LoadCall` in a `ContextVar`: it ends when that call returns or raises, a nested call of
the same kind uses it, and no other thread sees it.

- `SaveCall` is opened by checkpoint_utils.save_checkpoint, or by a Trainer.save_checkpoint called on its
  own. Trainer.save_checkpoint puts the save it starts (`save.PendingSave`: id, parent, fault points) into
  it; torch_persistent_save and PathManager.copy write that save's files and manifests. While it is open,
  ranks >= 1 add `-experts-rank{r}` to the names fairseq gives (saves, copies, pruning), but not on load.
- `LoadCall` is opened by Trainer.load_checkpoint or load_model_ensemble_and_task and never changes:
  what load_checkpoint_to_cpu checks (vocabulary, dictionary) and, for a Trainer's Switch model, the
  layout it cuts the save for. load_checkpoint_to_cpu outside one (a tool's read) checks nothing.
"""

import logging
import os
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, TypeVar

from .. import checkpoint_lock, file_io
from .fingerprint import check_dictionary, check_vocabulary, dictionary_of, vocab_sizes
from .manifest import leftover_temp_files
from .names import MANIFEST_SUFFIX, RECORD_KEY, main_of, model_param_names, shard_suffix, switch_layers_of
from .options import checkpoint_checks
from .resume import continue_wall_clock, refuse_restart_over_saves, resolve_restore_file, resume_path
from .save import CRASH_DUMP, PARENT_ATTR, PendingSave, layout_of, new_save, save_checkpoint
from .sharding import LoadTarget, localize, read_named

if TYPE_CHECKING:  # fairseq is imported when its functions call ours
    from fairseq.tasks import FairseqTask
    from fairseq.trainer import Trainer

logger = logging.getLogger(__name__)


@dataclass
class SaveCall:
    """One save, from its outermost replaced call to that call's end."""

    pending: Optional[PendingSave] = None  # set by Trainer.save_checkpoint; the copies after it are of this save


@dataclass(frozen=True)
class LoadCall:
    """What every checkpoint read of one Trainer or ensemble load checks, and cuts the save for."""

    allow_dictionary_change: bool
    dictionary: Optional[dict]  # the task's `dictionary_record`
    sizes: Dict[str, int] = field(default_factory=dict)  # embedding rows of the Trainer's model
    target: Optional[LoadTarget] = None  # the Trainer's Switch model


_SAVE: ContextVar[Optional[SaveCall]] = ContextVar("fairseq_switch_save", default=None)
_LOAD: ContextVar[Optional[LoadCall]] = ContextVar("fairseq_switch_load", default=None)
T = TypeVar("T")


@contextmanager
def _opened(var: "ContextVar[Optional[T]]", value: T) -> Iterator[T]:
    token = var.set(value)
    try:
        yield value
    finally:
        var.reset(token)


def _pending() -> Optional[PendingSave]:
    call = _SAVE.get()
    return call.pending if call is not None else None


@contextmanager
def _every_rank_reads(trainer: "Trainer") -> Iterator[None]:
    """Every rank reads the checkpoint itself (it needs its own experts) instead of rank 0's broadcast."""
    from omegaconf import open_dict

    ck = trainer.cfg.checkpoint
    before = ck.load_checkpoint_on_all_dp_ranks
    with open_dict(ck):
        ck.load_checkpoint_on_all_dp_ranks = before or layout_of(trainer).distributed
    try:
        yield
    finally:
        with open_dict(ck):
            ck.load_checkpoint_on_all_dp_ranks = before


def _load_call(trainer: "Trainer", reset_optimizer: bool) -> LoadCall:
    model, task = trainer.get_model(), trainer.task
    layout = layout_of(trainer)
    target = None if layout is None else LoadTarget(
        layout, switch_layers_of(model), model_param_names(model, trainer.get_criterion()), not reset_optimizer)
    return LoadCall(checkpoint_checks(task).allow_dictionary_change, dictionary_of(task),
                    vocab_sizes(model), target)


def _read_from(trainer: "Trainer", filename: str) -> str:
    """The file a Trainer load reads: --restore-file looked up, a plain resume's fallback; takes the lock."""
    ck = trainer.cfg.checkpoint
    if not ck.no_save:  # one run per --save-dir, for the run's whole life
        checkpoint_lock.lock_for_run(ck.save_dir)
    if ck.restore_file != "checkpoint_last.pt" and not os.path.isfile(filename):
        return resolve_restore_file(ck.restore_file, filename, ck.save_dir)
    if ck.finetune_from_model and filename == ck.finetune_from_model:
        refuse_restart_over_saves(ck.save_dir, f"--finetune-from-model {filename}")
    elif ck.restore_file == "checkpoint_last.pt" and os.path.basename(filename).startswith("checkpoint_last"):
        # a plain resume: fall back to the newest complete save if checkpoint_last's is broken
        filename = resume_path(ck.save_dir, filename, checkpoint_checks(trainer.task).no_resume_fallback,
                               announce=trainer.data_parallel_rank == 0)
        if trainer.data_parallel_rank == 0 and os.path.isdir(ck.save_dir):
            for tmp in leftover_temp_files(ck.save_dir):
                logger.info(f"removing {tmp}, left by an interrupted write")
                os.remove(tmp)
    return filename


# -- the replacements (each takes fairseq's original) ----------------------------------------------------
def trainer_save(orig_save: Callable) -> Callable:
    """Trainer.save_checkpoint: Switch models through `save.save_checkpoint`; every save gets its record."""

    def trainer_save(trainer: "Trainer", filename: str, extra_state: dict) -> Optional[str]:
        crash = os.path.basename(filename) == CRASH_DUMP
        if crash and trainer.cfg.checkpoint.no_save:  # fairseq would write it into ./checkpoints
            logger.info(f"not writing {filename} after the failed step: --no-save")
            return None
        outer = _SAVE.get()  # checkpoint_utils.save_checkpoint's: its copies belong to this save
        with nullcontext(outer) if outer is not None else _opened(_SAVE, SaveCall()) as call:
            call.pending = save = new_save(trainer, extra_state)
            if layout_of(trainer) is None:
                out = orig_save(trainer, filename, extra_state)
            else:
                out = save_checkpoint(trainer, filename, extra_state)
            if out is not None or layout_of(trainer) is None:
                save.commit(filename)
            if not crash:  # the next save continues this one
                setattr(trainer, PARENT_ATTR, save.record["save_id"])
            return out

    return trainer_save


def trainer_load(orig_load: Callable) -> Callable:
    """Trainer.load_checkpoint: resume fallback, vocabulary checks, every rank reads its experts, and a
    resume's wall clock goes on from the save's."""

    def trainer_load(trainer: "Trainer", filename: str, reset_optimizer: bool = False, *args: Any,
                     **kwargs: Any) -> Optional[dict]:
        # (reset_lr_scheduler, optimizer_overrides, reset_meters) follow; fine-tuning resets the meters
        reset_meters = kwargs.get("reset_meters", args[2] if len(args) > 2 else False)
        filename = _read_from(trainer, filename)
        call = _load_call(trainer, reset_optimizer)
        try:
            with _opened(_LOAD, call), nullcontext() if call.target is None else _every_rank_reads(trainer):
                extra = orig_load(trainer, filename, reset_optimizer, *args, **kwargs)
        except Exception as e:
            # fairseq's "Cannot load model parameters ...; please ensure that the architectures match"
            if not str(e).startswith("Cannot load model parameters") or not os.path.isfile(filename):
                raise
            from ..models import load_hints  # models import this package

            saved = load_hints.read_saved_model_cfg(filename)
            raise ValueError(load_hints.mismatch_message(filename, saved, trainer.cfg.model, e.__context__)) from e
        # the saves of this run continue the one read (none: a fresh start)
        setattr(trainer, PARENT_ATTR, ((extra or {}).get(RECORD_KEY) or {}).get("save_id"))
        if extra is not None and not reset_meters:
            continue_wall_clock(trainer)
        return extra

    return trainer_load


def trainer_should_save(orig: property) -> property:
    """Trainer.should_save_checkpoint_on_current_rank: every rank holding distinct experts saves."""
    orig_should = orig.fget

    def should_save(trainer: "Trainer") -> bool:
        layout = layout_of(trainer)
        if layout is None or not layout.distributed:
            return orig_should(trainer)
        return layout.rank < layout.group_size  # replicas hold copies of rank r mod G's experts

    return property(should_save)


def trainer_suffix(orig: property) -> property:
    """Trainer.checkpoint_suffix: while saving, ranks >= 1 name their own files."""
    orig_suffix = orig.fget

    def suffix(trainer: "Trainer") -> str:
        base = orig_suffix(trainer)
        layout = layout_of(trainer) if _SAVE.get() is not None else None
        if layout is None or not layout.distributed or layout.rank == 0:
            return base
        return base + shard_suffix(layout.rank)

    return property(suffix)


def checkpoint_utils_save(orig_cu_save: Callable) -> Callable:
    """checkpoint_utils.save_checkpoint: one save's files, copies and pruning; drops the manifests of pruned
    saves."""

    def cu_save(cfg: Any, trainer: "Trainer", epoch_itr: Any, val_loss: Optional[float]) -> Any:
        try:
            with _opened(_SAVE, SaveCall()):
                return orig_cu_save(cfg, trainer, epoch_itr, val_loss)
        finally:
            if trainer.data_parallel_rank == 0 and os.path.isdir(cfg.save_dir):
                for f in os.listdir(cfg.save_dir):  # manifests of the saves fairseq pruned
                    if f.endswith(MANIFEST_SUFFIX) and not os.path.exists(
                            os.path.join(cfg.save_dir, f[: -len(MANIFEST_SUFFIX)] + ".pt")):
                        os.remove(os.path.join(cfg.save_dir, f))

    return cu_save


def torch_persistent_save(orig: Callable) -> Callable:
    """checkpoint_utils.torch_persistent_save: every file written atomically, at the save's fault points."""

    def persistent_save(obj: Any, filename: str, async_write: bool = False) -> None:
        save = _pending()
        phase = "main-file" if main_of(filename) == filename else "shard-file"
        file_io.save_torch(obj, filename, save.at(phase) if save is not None else None)

    return persistent_save


def path_manager(path_manager: type) -> type:
    """checkpoint_utils.PathManager with atomic copies of a save."""

    class AtomicCopies(path_manager):
        """fairseq copies a save to checkpoint_last/best byte by byte, in place: a kill mid-copy left a
        truncated checkpoint_last.pt. Here each copy is atomic and an independent file (never a hard link:
        `cp checkpoint_1_6.pt checkpoint_last.pt` must not rewrite the others), and the copied save gets its
        manifest."""

        @staticmethod
        def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
            save = _pending()
            if save is None or path_manager.path_requires_pathmanager(dst_path):
                return path_manager.copy(src_path, dst_path, overwrite)
            base = os.path.basename(dst_path)
            phase = "copy-last" if base.startswith("checkpoint_last") else (
                "copy-best" if base.startswith("checkpoint_best") else "copy")
            file_io.copy_file(src_path, dst_path, save.at(phase))
            save.commit(dst_path)
            return True

    return AtomicCopies


def load_checkpoint_to_cpu(orig_to_cpu: Callable) -> Callable:
    """checkpoint_utils.load_checkpoint_to_cpu: named errors, checks, the save cut for this process."""

    def to_cpu(path: str, arg_overrides: Optional[dict] = None, load_on_all_ranks: bool = False) -> dict:
        state = read_named(orig_to_cpu, path, arg_overrides, load_on_all_ranks)
        call = _LOAD.get()
        if call is not None and "model" in state:
            check_vocabulary(path, state["model"], call.sizes)
            if call.dictionary is not None:
                check_dictionary(path, state, call.dictionary, call.allow_dictionary_change)
        return localize(path, state, call.target if call is not None else None)

    return to_cpu


def load_model_ensemble_and_task(orig_ensemble: Callable) -> Callable:
    """checkpoint_utils.load_model_ensemble_and_task: the task's dictionary must be the checkpoint's."""

    def ensemble(filenames: List[str], arg_overrides: Optional[dict] = None, task: Optional["FairseqTask"] = None,
                 *args: Any, **kwargs: Any) -> Any:
        # fairseq-generate and friends: the task's dictionary must be the one the checkpoint was trained with
        if task is None or _LOAD.get() is not None:
            return orig_ensemble(filenames, arg_overrides, task, *args, **kwargs)
        call = LoadCall(checkpoint_checks(task).allow_dictionary_change, dictionary_of(task))
        with _opened(_LOAD, call):
            return orig_ensemble(filenames, arg_overrides, task, *args, **kwargs)

    return ensemble
