"""Optimizers of the paper's recipe that fairseq lacks or gets wrong (registered on import)."""

from .adafactor import T5Adafactor, T5AdafactorConfig  # noqa: F401  (registers --optimizer t5_adafactor)
