#!/usr/bin/env python3
"""Prepare (input, target) pairs for fine-tuning with task text_to_text: see
fairseq_switch/lab/corpora/prepare/downstream.py (--help for the options)."""

from fairseq_switch.lab.corpora.prepare.downstream import main

if __name__ == "__main__":
    raise SystemExit(main())
