"""Checkpoints: expert-sharded saves that load on any rank count, and saves that survive a crash.

Files of one save, with W expert-parallel ranks of which G = min(N, W) hold distinct experts (expert
parallelism as in Fedus, Zoph & Shazeer 2021, Sec. 5):

    checkpoint_X.pt                  rank 0: everything fairseq saves (shared weights, optimizer
                                     state, iterator, meters) and rank 0's experts
    checkpoint_X-experts-rank{r}.pt  rank r = 1..G-1: its experts and their optimizer state only
    checkpoint_X.manifest.json       written last, by rank 0, once every rank's file is in place

Replicas (ranks >= G) write nothing. One process writes fairseq's plain single file. Every file
carries the save's id (and the Switch files `expert_parallel` metadata: the layout and the
optimizer's parameter names). Every file is written atomically (`file_io`), last/best copies
included, so a crash leaves each file old or new; the manifest and the save ids tell a complete
save from an interrupted one. Every save also records its parent (the save its run continued), so a
plain resume continues checkpoint_last's branch and falls back to the newest complete save of it. A
run holds the folder's lock (`checkpoint_lock`) from its first load on.

On disk experts are named by their global id (`...fc1.experts.5.fc2.weight`), and optimizer
state is tied to parameter names rather than positions, so one save can be cut for any rank
count: when loading (every rank reads the shared state and just the experts it holds) or
offline with `scripts/reshard_checkpoint.py`. Every save also records a fingerprint of the
dictionary it was trained with, which loading compares with the task's.

Modules, one concept each:

    names        expert names by global id, the files of one save, the optimizer's parameter order
    sharding     a save read and cut for any rank count; optimizer state by name
    manifest     manifests, and which saves in a folder are complete
    fingerprint  the dictionary a save was trained with, and vocabulary checks
    save         the save path: each rank's file, the save's record, the manifest after a barrier
    resume       which save a resume reads (--restore-file, checkpoint_last's branch, fallback)
    hooks        the replacements of fairseq's save and load functions: how fairseq nests them, and the
                 one context the outermost call opens for the calls inside it
    verify       fairseq-switch-verify (scripts/verify_checkpoint.py)

Importing this package changes nothing: `compat` installs the hooks when the plugin registers.
"""

from .fingerprint import check_dictionary, check_vocabulary, dictionary_record
from .manifest import SaveStatus, inspect_save, leftover_temp_files, list_saves, write_manifest
from .names import (FORMAT_VERSION, MANIFEST_SUFFIX, META_KEY, RECORD_KEY, derive_param_order, experts_in_file,
                    files_of, main_of, manifest_path, model_param_names, shard_path, shard_suffix, shift_expert_id,
                    split_expert_name, switch_layers_of)
from .resume import branch_of, refuse_restart_over_saves, resolve_restore_file, resume_path
from .save import CRASH_DUMP, PARENT_ATTR, _meta, rank_file, save_checkpoint, write_resharded
from .sharding import (LoadTarget, SavedCheckpoint, load_checkpoint_whole, localize, optimizer_state_by_name,
                       positional_optimizer_state)
from .verify import main

__all__ = ["CRASH_DUMP", "FORMAT_VERSION", "LoadTarget", "MANIFEST_SUFFIX", "META_KEY",
           "PARENT_ATTR", "RECORD_KEY", "SaveStatus", "SavedCheckpoint", "_meta", "branch_of", "check_dictionary",
           "check_vocabulary", "derive_param_order", "dictionary_record", "experts_in_file", "files_of",
           "inspect_save", "leftover_temp_files", "list_saves", "load_checkpoint_whole", "localize", "main",
           "main_of", "manifest_path", "model_param_names", "optimizer_state_by_name", "positional_optimizer_state",
           "rank_file", "refuse_restart_over_saves", "resolve_restore_file", "resume_path", "save_checkpoint",
           "shard_path", "shard_suffix", "shift_expert_id", "split_expert_name", "switch_layers_of", "write_manifest",
           "write_resharded"]
