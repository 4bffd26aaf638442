"""Two-way checkpoint conversion between transformers' T5 / SwitchTransformers folders and fairseq-switch
checkpoints in the T5 layout (`--layout t5`).

    from fairseq_switch.convert import transformers_to_fairseq, fairseq_to_transformers
    transformers_to_fairseq("t5-small/", "fs-t5-small/")            # checkpoint.pt, dict.txt, spm.model
    fairseq_to_transformers("fs-t5-small/checkpoint.pt", "hf-out/")  # config.json, model.safetensors

Modules: `hf_folder` reads transformers folders lazily, `mapping` holds the model description, the
tensor names of both sides and the vocabulary mapping, `to_fairseq` / `to_transformers` write the
outputs one file at a time (peak memory is bounded by the largest output file, not the model), `cli` is
the command line (scripts/convert_checkpoint.py). Files are written atomically (`fairseq_switch.file_io`).
Bad input raises ValueError / FileNotFoundError with a one-line message.
"""

from typing import Any


def transformers_to_fairseq(*args: Any, **kwargs: Any) -> dict:
    """`to_fairseq.transformers_to_fairseq` (imported when called: torch and safetensors are loaded then)."""
    from .to_fairseq import transformers_to_fairseq as run

    return run(*args, **kwargs)


def fairseq_to_transformers(*args: Any, **kwargs: Any) -> dict:
    """`to_transformers.fairseq_to_transformers` (imported when called)."""
    from .to_transformers import fairseq_to_transformers as run

    return run(*args, **kwargs)


__all__ = ["transformers_to_fairseq", "fairseq_to_transformers"]
