"""Fixes for the stack we run on, applied when the plugin is imported.

fairseq imports the user dir before it loads a checkpoint or builds a batch iterator, so
importing fairseq_switch is enough for fairseq-train, fairseq-generate and fairseq-hydra-train.

1. torch >= 2.6 loads with weights_only=True, and fairseq 0.12 calls `torch.load(f, map_location=...)`;
   its checkpoints hold an argparse.Namespace and a few numpy types. We allow-list exactly those
   types instead of turning the safety check off.
2. fairseq-fixed 0.12.3.1's compiled `batch_by_size` silently drops the final examples when
   `--required-batch-size-multiple` (default 8) exceeds what is left: measured, 20 test sentences
   with --batch-size 20 gave one batch of 16, so fairseq-generate translated 16 of 20 and
   validation skipped the longest examples. We put the dropped indices back as final batches.
3. fairseq's `clip_grad_norm_` leaves every parameter marked `expert` out of the gradient norm,
   so the logged norm and the clipping ignore the experts. We count them, once each across
   expert-parallel ranks (see `distributed.py`).
4. fairseq's c10d backend builds torch DDP with `device_ids=[device_id]` even for a CPU model,
   which torch rejects ("device_ids ... only work with ... GPU modules"), so `--cpu` multi-process
   training with the default backend failed. We pass no device ids for CPU models.
5. Under torchrun, fairseq sets `device_id = rank % torch.cuda.device_count()`, a ZeroDivisionError
   on a machine without GPUs. We use device 0 there (the id is unused on CPU).
6. fairseq saves checkpoints from rank 0 only and broadcasts rank 0's file on load, which would
   drop every other rank's experts. The Trainer's saves and loads of Switch models go through
   `checkpoints.py` (one expert shard per rank, resharded on load).
7. When a step goes non-finite the Trainer reruns the batch under fairseq's NanDetector, which hooks
   every module with torch's legacy `register_backward_hook`. On each forward torch then looks for a
   tensor in the module's output by taking `[0]` or the first tensor value of a dict, and crashes
   (StopIteration) on fairseq's own encoder output, a dict of lists; the crash hid the
   FloatingPointError and NanDetector's report of which module went non-finite. We hook the
   gradient of each output tensor instead (what the legacy hook reported as grad_output), found
   the way NanDetector's forward check walks outputs.
8. fairseq-train's argument post-processing turns `--bf16` into TPU mode (`tpu = True`), so
   `fairseq-train --bf16 --cpu` crashed looking for an XLA device, while fairseq-hydra-train with
   common.bf16=true (no such post-processing) trains in bf16 on the CPU. With --cpu there is no TPU
   to use: we switch the implied TPU mode off, as the Hydra route has it.
"""

import argparse
import collections
import functools
import logging
from typing import Iterator

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Types found in checkpoints written by fairseq-train (args, optimizer history, meters).
SAFE_GLOBALS = [
    argparse.Namespace,
    collections.OrderedDict,
    collections.defaultdict,
    np.dtype,
    np.ndarray,
    type(np.dtype(np.float64)),
    type(np.dtype(np.float32)),
    type(np.dtype(np.int64)),
]
try:  # numpy scalars (e.g. a best validation loss) and arrays pickle through these
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct, scalar
SAFE_GLOBALS += [scalar, _reconstruct]


def allow_fairseq_checkpoints() -> None:
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 loads everything anyway
        add(SAFE_GLOBALS)


def _complete_batches(batches, indices, num_tokens_fn, num_tokens_vec, max_tokens, max_sentences):
    """Append, in their original order, the indices the fast batcher left out."""
    covered = np.zeros(0, dtype=np.int64) if not batches else np.concatenate([np.asarray(b) for b in batches])
    indices = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices, dtype=np.int64)
    missing = indices[~np.isin(indices, covered)]
    if len(missing) == 0:
        return batches
    sizes = dict(zip(indices.tolist(), num_tokens_vec)) if num_tokens_vec is not None else None
    extra, cur, cur_max = [], [], 0
    for i in missing.tolist():
        n = sizes[i] if sizes is not None else num_tokens_fn(i)
        longest = max(cur_max, n)
        too_many = max_sentences not in (None, -1) and len(cur) + 1 > max_sentences
        too_long = max_tokens not in (None, -1) and longest * (len(cur) + 1) > max_tokens
        if cur and (too_many or too_long):
            extra.append(np.array(cur, dtype=np.int64))
            cur, longest = [], n
        cur.append(i)
        cur_max = longest
    extra.append(np.array(cur, dtype=np.int64))
    return list(batches) + extra


def fix_batch_by_size() -> None:
    from fairseq.data import data_utils

    original = data_utils.batch_by_size
    if getattr(original, "_fairseq_switch_fixed", False):
        return

    def batch_by_size(indices, num_tokens_fn, num_tokens_vec=None, max_tokens=None, max_sentences=None,
                      required_batch_size_multiple=1, fixed_shapes=None):
        if not isinstance(indices, np.ndarray):
            indices = np.fromiter(indices, dtype=np.int64, count=-1)
        batches = original(indices, num_tokens_fn, num_tokens_vec, max_tokens, max_sentences,
                           required_batch_size_multiple, fixed_shapes)
        if fixed_shapes is not None:  # fixed shapes drop by design
            return batches
        vec = None if num_tokens_vec is None else np.asarray(num_tokens_vec).tolist()
        return _complete_batches(batches, indices, num_tokens_fn, vec, max_tokens, max_sentences)

    batch_by_size.__doc__ = original.__doc__
    batch_by_size._fairseq_switch_fixed = True
    data_utils.batch_by_size = batch_by_size


def count_experts_in_grad_norm() -> None:
    from fairseq import utils

    from .distributed import global_grad_norm_patch

    if not getattr(utils.clip_grad_norm_, "_fairseq_switch_fixed", False):
        utils.clip_grad_norm_ = global_grad_norm_patch(utils.clip_grad_norm_)


def cpu_ddp_without_device_ids() -> None:
    from fairseq.models import distributed_fairseq_model as dfm

    ddp = dfm.DistributedDataParallel
    if getattr(ddp, "_fairseq_switch_fixed", False):
        return

    class DistributedDataParallel(ddp):
        _fairseq_switch_fixed = True

        def __init__(self, module, *args, device_ids=None, output_device=None, **kwargs):
            if all(p.device.type == "cpu" for p in module.parameters()):
                device_ids = output_device = None
            super().__init__(module, *args, device_ids=device_ids, output_device=output_device, **kwargs)

    dfm.DistributedDataParallel = DistributedDataParallel


def torchrun_without_gpus() -> None:
    from fairseq.distributed import utils as dist_utils

    original = dist_utils._infer_torch_distributed_launch_init
    if getattr(original, "_fairseq_switch_fixed", False):
        return

    def infer(cfg):
        if torch.cuda.device_count() > 0:
            return original(cfg)
        import os

        cfg.distributed_init_method = "env://"
        cfg.distributed_world_size = int(os.environ["WORLD_SIZE"])
        cfg.distributed_rank = int(os.environ["RANK"])
        cfg.device_id = 0
        cfg.distributed_no_spawn = True  # torchrun created the processes

    infer._fairseq_switch_fixed = True
    dist_utils._infer_torch_distributed_launch_init = infer


def _tensors(x) -> Iterator[torch.Tensor]:
    """The tensors in a module output, found the way NanDetector walks it (dicts, lists, tuples)."""
    if torch.is_tensor(x):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)


def nan_detector_without_legacy_backward_hooks() -> None:
    from fairseq import nan_detector

    cls = nan_detector.NanDetector
    if getattr(cls, "_fairseq_switch_fixed", False):
        return

    def add_hooks(self, module):
        if self.forward:
            self.fhooks.append(module.register_forward_hook(self.fhook_fn))
        if self.backward:  # removed by close() with the forward hooks
            self.bhooks.append(module.register_forward_hook(self._hook_output_grads))

    def _hook_output_grads(self, module, inp, output):
        # The gradient w.r.t. the module's output: what the legacy hook passed as grad_output.
        # Only graph outputs: a hook on a leaf (a parameter returned as is) would outlive close().
        for t in _tensors(output):
            if t.grad_fn is not None and torch.is_floating_point(t):
                t.register_hook(functools.partial(self.bhook_fn, module, None))

    cls.add_hooks = add_hooks
    cls._hook_output_grads = _hook_output_grads
    cls._fairseq_switch_fixed = True


def bf16_on_cpu() -> None:
    from fairseq.distributed import utils as dist_utils

    original = dist_utils.call_main
    if getattr(original, "_fairseq_switch_fixed", False):
        return

    def call_main(cfg, main, **kwargs):
        if cfg.common.cpu and cfg.common.bf16 and cfg.common.tpu:
            # both: the converted namespace holds a copy, not the Hydra route's ${common.tpu}
            cfg.common.tpu = cfg.distributed_training.tpu = False
        return original(cfg, main, **kwargs)

    call_main._fairseq_switch_fixed = True
    dist_utils.call_main = call_main


def apply() -> None:
    allow_fairseq_checkpoints()
    fix_batch_by_size()
    count_experts_in_grad_norm()
    cpu_ddp_without_device_ids()
    torchrun_without_gpus()
    nan_detector_without_legacy_backward_hooks()
    bf16_on_cpu()
    from . import cli_errors
    from .checkpoints import install

    install()
    cli_errors.install()
