"""The replacements of fairseq's Trainer and checkpoint_utils functions that route saves and loads through
this package."""

import logging
import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

from .. import checkpoint_lock, file_io
from .fingerprint import check_dictionary, check_vocabulary, dictionary_of, task_option, vocab_sizes
from .manifest import leftover_temp_files
from .names import MANIFEST_SUFFIX, RECORD_KEY, main_of, model_param_names, shard_suffix, switch_layers_of
from .resume import refuse_restart_over_saves, resolve_restore_file, resume_path
from .save import CRASH_DUMP, PARENT_ATTR, PendingSave, layout_of, new_save, save_checkpoint
from .sharding import LoadTarget, localize, read_named

if TYPE_CHECKING:  # fairseq is imported when its functions call ours
    from fairseq.tasks import FairseqTask
    from fairseq.trainer import Trainer

logger = logging.getLogger(__name__)


class CheckpointHooks:
    """Replacements for fairseq's Trainer and checkpoint_utils functions that route saves and loads
    through this module (expert-sharded saves of Switch models, atomic files and manifests for every
    save, fallback to the newest complete save on resume, named errors for unreadable files, checks of
    the dictionary), and the state they share. `compat` makes one per process and installs what its
    methods return (each takes fairseq's original). fairseq calls them nested
    (checkpoint_utils.save_checkpoint -> Trainer.save_checkpoint -> torch_persistent_save and
    PathManager.copy; Trainer.load_checkpoint or load_model_ensemble_and_task -> load_checkpoint_to_cpu):
    the outer call tells the inner ones, through this object, what they are part of."""

    def __init__(self) -> None:
        self.saving = False  # inside checkpoint_utils.save_checkpoint: ranks >= 1 name their own files
        self.save: Optional[PendingSave] = None  # the save being written
        self.target: Optional[LoadTarget] = None  # the Trainer's model, while the Trainer loads
        # (embedding rows, dictionary record, --allow-dictionary-change) while a Trainer or an ensemble loads
        self.vocab: Optional[Tuple[Dict[str, int], Optional[dict], bool]] = None

    @contextmanager
    def _loading_for(self, trainer: "Trainer", reset_optimizer: bool) -> Iterator[None]:
        """Every rank reads the checkpoint itself (it needs its own experts), for this model's layout."""
        from omegaconf import open_dict

        model = trainer.get_model()
        layout = layout_of(trainer)
        self.target = LoadTarget(layout, switch_layers_of(model), model_param_names(model, trainer.get_criterion()),
                                 not reset_optimizer)
        ck = trainer.cfg.checkpoint
        before = ck.load_checkpoint_on_all_dp_ranks
        with open_dict(ck):
            ck.load_checkpoint_on_all_dp_ranks = before or layout.distributed
        try:
            yield
        finally:
            self.target = None
            with open_dict(ck):
                ck.load_checkpoint_on_all_dp_ranks = before

    def trainer_save(self, orig_save: Callable) -> Callable:
        """Trainer.save_checkpoint: Switch models through `save_checkpoint`; every save gets its record."""

        def trainer_save(trainer: "Trainer", filename: str, extra_state: dict) -> Optional[str]:
            crash = os.path.basename(filename) == CRASH_DUMP
            if crash and trainer.cfg.checkpoint.no_save:  # fairseq would write it into ./checkpoints
                logger.info(f"not writing {filename} after the failed step: --no-save")
                return None
            save = new_save(trainer, extra_state)
            self.save = save
            try:
                if layout_of(trainer) is None:
                    out = orig_save(trainer, filename, extra_state)
                else:
                    out = save_checkpoint(trainer, filename, extra_state)
                if out is not None or layout_of(trainer) is None:
                    save.commit(filename)
                if not crash:  # the next save continues this one
                    setattr(trainer, PARENT_ATTR, save.record["save_id"])
                return out
            finally:
                if not self.saving:  # inside checkpoint_utils.save_checkpoint, its copies belong to this save
                    self.save = None

        return trainer_save

    def trainer_load(self, orig_load: Callable) -> Callable:
        """Trainer.load_checkpoint: resume fallback, vocabulary checks, every rank reads its experts."""

        def trainer_load(trainer: "Trainer", filename: str, reset_optimizer: bool = False, *args: Any,
                         **kwargs: Any) -> Optional[dict]:
            ck = trainer.cfg.checkpoint
            if not ck.no_save:  # one run per --save-dir, for the run's whole life
                checkpoint_lock.lock_for_run(ck.save_dir)
            if ck.restore_file != "checkpoint_last.pt" and not os.path.isfile(filename):
                filename = resolve_restore_file(ck.restore_file, filename, ck.save_dir)
            elif ck.finetune_from_model and filename == ck.finetune_from_model:
                refuse_restart_over_saves(ck.save_dir, f"--finetune-from-model {filename}")
            elif ck.restore_file == "checkpoint_last.pt" and os.path.basename(filename).startswith("checkpoint_last"):
                # a plain resume: fall back to the newest complete save if checkpoint_last's is broken
                filename = resume_path(ck.save_dir, filename,
                                       bool(task_option(trainer.task, "no_resume_fallback", False)),
                                       announce=trainer.data_parallel_rank == 0)
                if trainer.data_parallel_rank == 0 and os.path.isdir(ck.save_dir):
                    for tmp in leftover_temp_files(ck.save_dir):
                        logger.info(f"removing {tmp}, left by an interrupted write")
                        os.remove(tmp)
            self.vocab = (vocab_sizes(trainer.get_model()), dictionary_of(trainer.task),
                          bool(task_option(trainer.task, "allow_dictionary_change", False)))
            try:
                if layout_of(trainer) is None:
                    extra = orig_load(trainer, filename, reset_optimizer, *args, **kwargs)
                else:
                    with self._loading_for(trainer, reset_optimizer):
                        extra = orig_load(trainer, filename, reset_optimizer, *args, **kwargs)
            except Exception as e:
                # fairseq's "Cannot load model parameters ...; please ensure that the architectures match"
                if not str(e).startswith("Cannot load model parameters") or not os.path.isfile(filename):
                    raise
                from ..models import load_hints  # models import this module

                saved = load_hints.read_saved_model_cfg(filename)
                raise ValueError(load_hints.mismatch_message(filename, saved, trainer.cfg.model, e.__context__)) from e
            finally:
                self.vocab = None
            # the saves of this run continue the one read (none: a fresh start)
            setattr(trainer, PARENT_ATTR, ((extra or {}).get(RECORD_KEY) or {}).get("save_id"))
            return extra

        return trainer_load

    def trainer_should_save(self, orig: property) -> property:
        """Trainer.should_save_checkpoint_on_current_rank: every rank holding distinct experts saves."""
        orig_should = orig.fget

        def should_save(trainer: "Trainer") -> bool:
            layout = layout_of(trainer)
            if layout is None or not layout.distributed:
                return orig_should(trainer)
            return layout.rank < layout.group_size  # replicas hold copies of rank r mod G's experts

        return property(should_save)

    def trainer_suffix(self, orig: property) -> property:
        """Trainer.checkpoint_suffix: while saving, ranks >= 1 name their own files."""
        orig_suffix = orig.fget

        def suffix(trainer: "Trainer") -> str:
            base = orig_suffix(trainer)
            layout = layout_of(trainer) if self.saving else None
            if layout is None or not layout.distributed or layout.rank == 0:
                return base
            return base + shard_suffix(layout.rank)

        return property(suffix)

    def checkpoint_utils_save(self, orig_cu_save: Callable) -> Callable:
        """checkpoint_utils.save_checkpoint: marks one save's files; drops the manifests of pruned saves."""

        def cu_save(cfg: Any, trainer: "Trainer", epoch_itr: Any, val_loss: Optional[float]) -> Any:
            # while saving, ranks >= 1 name (copy, prune) their own files: checkpoint_X-experts-rank{r}.pt
            self.saving = True
            try:
                return orig_cu_save(cfg, trainer, epoch_itr, val_loss)
            finally:
                self.saving, self.save = False, None
                if trainer.data_parallel_rank == 0 and os.path.isdir(cfg.save_dir):
                    for f in os.listdir(cfg.save_dir):  # manifests of the saves fairseq pruned
                        if f.endswith(MANIFEST_SUFFIX) and not os.path.exists(
                                os.path.join(cfg.save_dir, f[: -len(MANIFEST_SUFFIX)] + ".pt")):
                            os.remove(os.path.join(cfg.save_dir, f))

        return cu_save

    def torch_persistent_save(self, orig: Callable) -> Callable:
        """checkpoint_utils.torch_persistent_save: every file written atomically, at the save's fault points."""

        def persistent_save(obj: Any, filename: str, async_write: bool = False) -> None:
            save = self.save
            phase = "main-file" if main_of(filename) == filename else "shard-file"
            file_io.save_torch(obj, filename, save.at(phase) if save is not None else None)

        return persistent_save

    def path_manager(self, path_manager: type) -> type:
        """checkpoint_utils.PathManager with atomic copies of a save."""
        hooks = self

        class AtomicCopies(path_manager):
            """fairseq copies a save to checkpoint_last/best byte by byte, in place: a kill mid-copy left a
            truncated checkpoint_last.pt. Here each copy is atomic and an independent file (never a hard link:
            `cp checkpoint_1_6.pt checkpoint_last.pt` must not rewrite the others), and the copied save gets its
            manifest."""

            @staticmethod
            def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
                save = hooks.save
                if save is None or path_manager.path_requires_pathmanager(dst_path):
                    return path_manager.copy(src_path, dst_path, overwrite)
                base = os.path.basename(dst_path)
                phase = "copy-last" if base.startswith("checkpoint_last") else (
                    "copy-best" if base.startswith("checkpoint_best") else "copy")
                file_io.copy_file(src_path, dst_path, save.at(phase))
                save.commit(dst_path)
                return True

        return AtomicCopies

    def load_checkpoint_to_cpu(self, orig_to_cpu: Callable) -> Callable:
        """checkpoint_utils.load_checkpoint_to_cpu: named errors, checks, the save cut for this process."""

        def to_cpu(path: str, arg_overrides: Optional[dict] = None, load_on_all_ranks: bool = False) -> dict:
            state = read_named(orig_to_cpu, path, arg_overrides, load_on_all_ranks)
            if self.vocab and "model" in state:
                sizes, expected, allow = self.vocab
                check_vocabulary(path, state["model"], sizes)
                if expected is not None:
                    check_dictionary(path, state, expected, allow)
            return localize(path, state, self.target)

        return to_cpu

    def load_model_ensemble_and_task(self, orig_ensemble: Callable) -> Callable:
        """checkpoint_utils.load_model_ensemble_and_task: the task's dictionary must be the checkpoint's."""

        def ensemble(filenames: List[str], arg_overrides: Optional[dict] = None, task: Optional["FairseqTask"] = None,
                     *args: Any, **kwargs: Any) -> Any:
            # fairseq-generate and friends: the task's dictionary must be the one the checkpoint was trained with
            if task is None or self.vocab is not None:
                return orig_ensemble(filenames, arg_overrides, task, *args, **kwargs)
            self.vocab = ({}, dictionary_of(task), bool(task_option(task, "allow_dictionary_change", False)))
            try:
                return orig_ensemble(filenames, arg_overrides, task, *args, **kwargs)
            finally:
                self.vocab = None

        return ensemble
