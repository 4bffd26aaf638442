"""Let fairseq 0.12 load its own checkpoints under torch >= 2.6.

fairseq calls `torch.load(f, map_location=...)`, and torch 2.6+ defaults to weights_only=True,
which refuses the argparse.Namespace (and a few other plain types) that fairseq checkpoints hold.
We allow-list exactly those types instead of turning the safety check off. fairseq imports the
user dir before it loads any checkpoint, so importing fairseq_switch is enough.
"""

import argparse
import collections

import numpy as np
import torch

# Types found in checkpoints written by fairseq-train (args/cfg, optimizer history, meters).
SAFE_GLOBALS = [
    argparse.Namespace,
    collections.OrderedDict,
    collections.defaultdict,
    np.dtype,
    np.ndarray,
    np.core.multiarray.scalar if hasattr(np, "core") else None,
    type(np.dtype(np.float64)),
    type(np.dtype(np.float32)),
    type(np.dtype(np.int64)),
]


def allow_fairseq_checkpoints() -> None:
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is None:  # torch < 2.4 loads everything anyway
        return
    add([g for g in SAFE_GLOBALS if g is not None])
