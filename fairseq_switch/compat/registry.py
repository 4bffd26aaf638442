"""Every patch the plugin applies to fairseq, torch and Python: what it replaces and why.

18 patches, installed only when the plugin registers (`fairseq_switch.plugin.register`, which fairseq's
--user-dir import of the package calls); importing a module installs none. Each entry gives what it
fixes (`why`) and, for the eight stack fixes, why no fairseq extension point (a task, model or criterion
hook, an option, a Trainer argument) can do it instead (`kept`): registration is the only place they
can come from. The other ten are the checkpoint group (`checkpoints/hooks.py`, `checkpoint_lock.py`).
Issue 28 removed `user_dir_registers` (a patch of fairseq's import_user_module, installed by an import
hook), which explicit `register()` calls replace (see `plugin`): 19 before (the 18 counted when issue 28
was filed and issue 27's save_dir_checked), 18 now.

The plugin was written for fairseq 0.12 (the pinned fairseq-fixed==0.12.3.1) and torch 2.13; each entry
records the signature its target had there (tests/test_fairseq_compat.py checks it on the original), so
a stack upgrade that moves a target fails a test instead of silently changing behaviour.
"""

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, List, Tuple

from . import fixes


@dataclass(frozen=True)
class Patch:
    """One attribute the plugin replaces.

    `make(original)` returns the replacement. `assign=False`: `make` hands the plugin's values to the
    target, which stays in place.
    `signature`: the target's parameters (annotations left out) as the patch expects them; a trailing
    `...` leaves later parameters free. `checked`: check the signature of this attribute of the target
    instead (a class whose method is what the patch relies on). `kept`: why fairseq offers no extension
    point that could do it without a patch."""

    name: str
    target: str  # "module:attribute[.attribute]"
    signature: str
    replaces: str
    why: str
    make: Callable[..., Any]
    assign: bool = True
    checked: str = ""
    kept: str = ""

    def resolve(self) -> Tuple[Any, str]:
        """The object holding the target attribute (imported if needed), and the attribute's name."""
        module, attribute = self.target.split(":")
        owner = importlib.import_module(module)
        *path, attr = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        return owner, attr

    def current(self) -> Any:
        """The target attribute as it is now (a property or staticmethod object, not what it returns)."""
        owner, attr = self.resolve()
        return inspect.getattr_static(owner, attr) if inspect.isclass(owner) else getattr(owner, attr)


def _checkpoints(name: str) -> Callable[[Any], Any]:
    """The replacement built by checkpoints.hooks.<name> from fairseq's original (the hooks share no state:
    the outermost call opens a context for the calls fairseq makes inside it)."""

    def make(original: Any) -> Any:
        from ..checkpoints import hooks

        return getattr(hooks, name)(original)

    make.__name__ = make.__qualname__ = f"checkpoints.hooks.{name}"
    return make


_SHARDED = ("expert-sharded saves: fairseq saves from rank 0 only and loads rank 0's file everywhere, which "
            "would drop every other rank's experts (checkpoints/)")

PATCHES: List[Patch] = [
    Patch(
        "plugin_errors_as_one_line", "sys:excepthook", "(exctype, value, traceback, /)",
        "Python's excepthook: a full traceback through fairseq and torch",
        "the plugin's input errors (ValueError, FileNotFoundError, UnsupportedStack it raises) print as one "
        "line, the message the user needs (cli_errors.py)",
        fixes.one_line_errors,
        kept=(
            "fairseq's console entry points let every exception reach the interpreter; fairseq "
            "has no error hook, and the error is raised before or outside any task or criterion "
            "call")),
    Patch(
        "fairseq_checkpoint_types", "torch.serialization:add_safe_globals", "(safe_globals)",
        "nothing: adds the types to torch's weights_only allow-list",
        "torch >= 2.6 loads with weights_only=True and fairseq 0.12 calls torch.load(f, map_location=...); its "
        "checkpoints hold an argparse.Namespace and a few numpy types, allowed by name instead of turning the "
        "safety check off",
        fixes.allow_fairseq_checkpoint_types, assign=False,
        kept=(
            "fairseq's torch.load in load_checkpoint_to_cpu takes no allow-list and no hook runs "
            "before it (the plugin's own reads scope the list: file_io.load_torch); it could move "
            "into the load_checkpoint_to_cpu replacement")),
    Patch(
        "batch_by_size", "fairseq.data.data_utils:batch_by_size",
        "(indices, num_tokens_fn, num_tokens_vec=None, max_tokens=None, max_sentences=None, "
        "required_batch_size_multiple=1, fixed_shapes=None)",
        "fairseq-fixed 0.12.3.1's compiled batcher",
        "it silently drops the final examples when --required-batch-size-multiple (default 8) exceeds what is "
        "left (measured: 20 test sentences with --batch-size 20 gave one batch of 16, so fairseq-generate "
        "translated 16 of 20 and validation skipped the longest examples); the dropped indices become final "
        "batches",
        fixes.batch_by_size,
        kept=(
            "FairseqDataset.batch_by_size can be overridden, but fairseq-generate, text_to_text "
            "without a mixture and fairseq's own tasks batch fairseq's LanguagePairDataset, whose "
            "override is fairseq's: a fix on the plugin's three datasets would leave those "
            "dropping examples")),
    Patch(
        "grad_norm_with_experts", "fairseq.utils:clip_grad_norm_", "(params, max_norm, aggregate_norm_fn=None)",
        "fairseq's gradient norm and clipping",
        "it leaves out every parameter marked `expert`, so the logged norm and the clipping ignored the experts; "
        "they are counted, once each across expert-parallel ranks (distributed.py)",
        fixes.grad_norm_with_experts,
        kept=(
            "the Trainer clips through optimizer.clip_grad_norm -> utils.clip_grad_norm_ after "
            "train_step returns; no task, criterion or model hook runs there, and the `expert` "
            "mark it skips is what the data-parallel backends need")),
    Patch(
        "cpu_ddp_without_device_ids", "fairseq.models.distributed_fairseq_model:DistributedDataParallel",
        "(module, device_ids=None, output_device=None, ...)",
        "torch's DistributedDataParallel as fairseq's c10d backend builds it",
        "fairseq passes device_ids=[device_id] even for a CPU model, which torch rejects, so --cpu multi-process "
        "training with the default backend failed; a CPU model gets no device ids",
        fixes.ddp_without_cpu_device_ids,
        kept=(
            "the Trainer wraps the model itself (DistributedFairseqModel) with "
            "device_ids=[cfg.device_id]; a task or model hook cannot change the arguments of that "
            "call")),
    Patch(
        "torchrun_without_gpus", "fairseq.distributed.utils:_infer_torch_distributed_launch_init", "(cfg)",
        "fairseq's reading of torchrun's environment",
        "it sets device_id = rank % torch.cuda.device_count(), a ZeroDivisionError without GPUs; device 0 is "
        "used there (the id is unused on CPU)",
        fixes.torchrun_without_gpus,
        kept=(
            "it runs in distributed_utils.call_main (infer_init_method), before any task, model "
            "or criterion exists")),
    Patch(
        "nan_detector_output_grads", "fairseq.nan_detector:NanDetector.add_hooks", "(self, module)",
        "NanDetector's legacy register_backward_hook on every module",
        "on each forward torch then looks for a tensor in the output by `[0]` or a dict's first value and crashes "
        "(StopIteration) on fairseq's encoder output, a dict of lists, hiding the FloatingPointError and the "
        "report of which module went non-finite; the gradient of each output tensor is hooked instead (what "
        "the legacy hook reported as grad_output)",
        fixes.nan_detector_add_hooks,
        kept=(
            "the Trainer builds its NanDetector itself after a non-finite step; nothing of the "
            "plugin runs between")),
    Patch(
        "bf16_on_cpu", "fairseq.distributed.utils:call_main", "(cfg, main, **kwargs)",
        "fairseq's entry into training, after fairseq-train's argument post-processing",
        "that post-processing turns --bf16 into TPU mode, so `fairseq-train --bf16 --cpu` looked for an XLA "
        "device while fairseq-hydra-train with common.bf16=true trains in bf16 on the CPU; with --cpu the "
        "implied TPU mode is switched off, as on the Hydra route",
        fixes.bf16_on_cpu,
        kept=(
            "no task exists before call_main reads the TPU flag; the plugin's architecture functions "
            "run after fairseq-train's post-processing, but not in fairseq-interactive or -validate "
            "(no --arch), which go through call_main too")),
    # -- checkpoints (checkpoints/hooks.py, where the nesting of fairseq's save and load calls is written down)
    Patch(
        "trainer_save_checkpoint", "fairseq.trainer:Trainer.save_checkpoint", "(self, filename, extra_state)",
        "the Trainer's save (rank 0 writes everything)",
        f"{_SHARDED}; every save gets a save id and, once complete, a manifest",
        _checkpoints("trainer_save")),
    Patch(
        "trainer_load_checkpoint", "fairseq.trainer:Trainer.load_checkpoint",
        "(self, filename, reset_optimizer=False, reset_lr_scheduler=False, optimizer_overrides=None, "
        "reset_meters=False)",
        "the Trainer's load (rank 0's file broadcast to every rank)",
        f"{_SHARDED}; a plain resume falls back to the newest complete save; vocabulary and dictionary checks; "
        "a resume's logged wall clock goes on from the save's (fairseq's stays at 0)",
        _checkpoints("trainer_load")),
    Patch(
        "trainer_saves_on_expert_ranks", "fairseq.trainer:Trainer.should_save_checkpoint_on_current_rank",
        "(self)", "which ranks save (rank 0 only)",
        f"{_SHARDED}; every rank holding distinct experts saves",
        _checkpoints("trainer_should_save")),
    Patch(
        "trainer_checkpoint_suffix", "fairseq.trainer:Trainer.checkpoint_suffix", "(self)",
        "the suffix of the files a rank saves",
        f"{_SHARDED}; while saving, ranks >= 1 name (copy, prune) their own -experts-rank{{r}} files",
        _checkpoints("trainer_suffix")),
    Patch(
        "save_checkpoint", "fairseq.checkpoint_utils:save_checkpoint", "(cfg, trainer, epoch_itr, val_loss)",
        "fairseq-train's save, copies to checkpoint_last/best and pruning",
        "marks the files of one save for the Trainer's save and the copies; removes the manifests of pruned "
        "saves",
        _checkpoints("checkpoint_utils_save")),
    Patch(
        "load_checkpoint_to_cpu", "fairseq.checkpoint_utils:load_checkpoint_to_cpu",
        "(path, arg_overrides=None, load_on_all_ranks=False)",
        "every checkpoint read (resume, fine-tuning, fairseq-generate)",
        "an unreadable file is named (torch says `PytorchStreamReader failed` without the file); the save is cut "
        "for this process's experts; the vocabulary and dictionary the caller expects are checked",
        _checkpoints("load_checkpoint_to_cpu")),
    Patch(
        "load_model_ensemble_and_task", "fairseq.checkpoint_utils:load_model_ensemble_and_task",
        "(filenames, arg_overrides=None, task=None, strict=True, suffix='', num_shards=1, state=None)",
        "fairseq-generate's model loading",
        "the task's dictionary must be the one the checkpoint was trained with (its recorded fingerprint)",
        _checkpoints("load_model_ensemble_and_task")),
    Patch(
        "atomic_saves", "fairseq.checkpoint_utils:torch_persistent_save", "(obj, filename, async_write=False)",
        "fairseq's file write (in place)",
        "a kill mid-write left a truncated checkpoint; each file is written to a temporary name and renamed "
        "(file_io.py)",
        _checkpoints("torch_persistent_save")),
    Patch(
        "save_dir_checked", "fairseq.checkpoint_utils:verify_checkpoint_directory", "(save_dir)",
        "fairseq-train's check of --save-dir (it writes and removes a file named `dummy`)",
        "a --save-dir that is a file, read-only or on a full disk ended in an OSError traceback (a full disk only at "
        "the first save, after the updates since the last); each is one line naming the folder and the fix "
        "(checkpoint_lock.py)",
        fixes.save_dir_checked),
    Patch(
        "atomic_copies", "fairseq.checkpoint_utils:PathManager", "(src_path, dst_path, overwrite=False)",
        "the PathManager checkpoint_utils copies saves with (byte by byte, in place)",
        "a kill mid-copy left a truncated checkpoint_last.pt; each copy is atomic and an independent file (a "
        "reflink where the file system has one; never a hard link, which `cp X checkpoint_last.pt` would rewrite "
        "with every other name of the save), and the copied save gets its manifest",
        _checkpoints("path_manager"), checked="copy"),
]
