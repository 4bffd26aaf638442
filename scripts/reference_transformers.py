#!/usr/bin/env python3
"""Train transformers' T5 / SwitchTransformers on the batches, initial weights and recipe of this project's
pretrain_tiny run, as the reference for Switch-minus-dense gaps: see fairseq_switch/lab/reference_transformers.py
(--help for the options)."""

from fairseq_switch.lab.reference_transformers import main

if __name__ == "__main__":
    raise SystemExit(main())
