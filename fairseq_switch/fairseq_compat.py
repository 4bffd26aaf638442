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
"""

import argparse
import collections
import logging

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


def apply() -> None:
    allow_fairseq_checkpoints()
    fix_batch_by_size()
