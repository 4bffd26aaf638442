"""The checkpoint options: declared here, mixed into every plugin task's config, read through `checkpoint_checks`."""

from dataclasses import dataclass, field, fields
from typing import Any

from fairseq.dataclass import FairseqDataclass


@dataclass
class CheckpointChecksConfig(FairseqDataclass):
    """Options of every plugin task for what loading a checkpoint checks."""

    no_resume_fallback: bool = field(
        default=False,
        metadata={"help": "when checkpoint_last's save is broken (interrupted or corrupt), stop with an error "
                          "naming the newest complete save instead of resuming from it"},
    )
    allow_dictionary_change: bool = field(
        default=False,
        metadata={"help": "load a checkpoint trained with another dictionary (its recorded fingerprint differs "
                          "from this task's dictionary): only for deliberate vocabulary changes"},
    )


def checkpoint_checks(task: Any) -> CheckpointChecksConfig:
    """The options of `task`'s config; a task that does not declare them (fairseq's own) gets the defaults."""
    cfg = getattr(task, "cfg", None)
    return CheckpointChecksConfig(**{f.name: bool(getattr(cfg, f.name, f.default))
                                     for f in fields(CheckpointChecksConfig) if f.name != "_name"})
