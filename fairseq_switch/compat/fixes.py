"""The replacements `compat` installs for fairseq's own functions and classes. Each factory takes what
it replaces (fairseq's original) and returns the replacement; why each exists is in `compat.registry`."""

import functools
import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch

if TYPE_CHECKING:
    from fairseq.nan_detector import NanDetector


def complete_batches(batches: List[np.ndarray], indices: np.ndarray, num_tokens_fn: Callable[[int], int],
                     num_tokens_vec: Optional[Sequence[int]], max_tokens: Optional[int],
                     max_sentences: Optional[int]) -> List[np.ndarray]:
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


def batch_by_size(original: Callable) -> Callable:
    """fairseq.data.data_utils.batch_by_size that keeps every example."""

    def batch_by_size(indices: Union[np.ndarray, Iterable[int]], num_tokens_fn: Callable[[int], int],
                      num_tokens_vec: Optional[Sequence[int]] = None, max_tokens: Optional[int] = None,
                      max_sentences: Optional[int] = None, required_batch_size_multiple: int = 1,
                      fixed_shapes: Optional[Sequence[Sequence[int]]] = None) -> List[np.ndarray]:
        if not isinstance(indices, np.ndarray):
            indices = np.fromiter(indices, dtype=np.int64, count=-1)
        batches = original(indices, num_tokens_fn, num_tokens_vec, max_tokens, max_sentences,
                           required_batch_size_multiple, fixed_shapes)
        if fixed_shapes is not None:  # fixed shapes drop by design
            return batches
        vec = None if num_tokens_vec is None else np.asarray(num_tokens_vec).tolist()
        return complete_batches(batches, indices, num_tokens_fn, vec, max_tokens, max_sentences)

    batch_by_size.__doc__ = original.__doc__
    return batch_by_size


def ddp_without_cpu_device_ids(ddp: type) -> type:
    """torch's DistributedDataParallel (as fairseq's c10d backend builds it) without device ids for a CPU model."""

    class DistributedDataParallel(ddp):
        def __init__(self, module: torch.nn.Module, *args: Any, device_ids: Optional[List[int]] = None,
                     output_device: Optional[int] = None, **kwargs: Any) -> None:
            if all(p.device.type == "cpu" for p in module.parameters()):
                device_ids = output_device = None
            super().__init__(module, *args, device_ids=device_ids, output_device=output_device, **kwargs)

    return DistributedDataParallel


def torchrun_without_gpus(original: Callable) -> Callable:
    """fairseq.distributed.utils._infer_torch_distributed_launch_init that works without GPUs."""

    def infer(cfg: Any) -> None:
        if torch.cuda.device_count() > 0:
            return original(cfg)
        cfg.distributed_init_method = "env://"
        cfg.distributed_world_size = int(os.environ["WORLD_SIZE"])
        cfg.distributed_rank = int(os.environ["RANK"])
        cfg.device_id = 0
        cfg.distributed_no_spawn = True  # torchrun created the processes

    return infer


def _tensors(x: Any) -> Iterator[torch.Tensor]:
    """The tensors in a module output, found the way NanDetector walks it (dicts, lists, tuples)."""
    if torch.is_tensor(x):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)


def _hook_output_grads(detector: "NanDetector", module: torch.nn.Module, inp: Any, output: Any) -> None:
    # The gradient w.r.t. the module's output: what the legacy hook passed as grad_output.
    # Only graph outputs: a hook on a leaf (a parameter returned as is) would outlive close().
    for t in _tensors(output):
        if t.grad_fn is not None and torch.is_floating_point(t):
            t.register_hook(functools.partial(detector.bhook_fn, module, None))


def nan_detector_add_hooks(original: Callable) -> Callable:
    """NanDetector.add_hooks with gradient hooks on each output tensor instead of legacy backward hooks."""

    def add_hooks(self: "NanDetector", module: torch.nn.Module) -> None:
        if self.forward:
            self.fhooks.append(module.register_forward_hook(self.fhook_fn))
        if self.backward:  # removed by close() with the forward hooks
            self.bhooks.append(module.register_forward_hook(functools.partial(_hook_output_grads, self)))

    return add_hooks


def bf16_on_cpu(original: Callable) -> Callable:
    """fairseq.distributed.utils.call_main that keeps `--bf16 --cpu` off the TPU path."""

    def call_main(cfg: Any, main: Callable, **kwargs: Any) -> Any:
        if cfg.common.cpu and cfg.common.bf16 and cfg.common.tpu:
            # both: the converted namespace holds a copy, not the Hydra route's ${common.tpu}
            cfg.common.tpu = cfg.distributed_training.tpu = False
        return original(cfg, main, **kwargs)

    return call_main


def allow_fairseq_checkpoint_types(add_safe_globals: Callable) -> None:
    """Allow, process-wide, the types fairseq-train's checkpoints hold (`file_io.FAIRSEQ_CHECKPOINT_TYPES`)."""
    from ..file_io import FAIRSEQ_CHECKPOINT_TYPES

    add_safe_globals(FAIRSEQ_CHECKPOINT_TYPES)


def grad_norm_with_experts(original: Callable) -> Callable:
    """fairseq.utils.clip_grad_norm_ that counts expert gradients (see `distributed.global_grad_norm_patch`)."""
    from ..distributed import global_grad_norm_patch

    return global_grad_norm_patch(original)


def one_line_errors(previous: Callable) -> Callable:
    """sys.excepthook printing the plugin's user errors as one line (see `cli_errors`)."""
    from ..cli_errors import one_line_errors as hook

    return hook(previous)


def save_dir_checked(original: Callable) -> Callable:
    """checkpoint_utils.verify_checkpoint_directory with one-line errors (checkpoint_lock.check_save_dir)."""
    from ..checkpoint_lock import check_save_dir

    return check_save_dir
