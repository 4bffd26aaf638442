#!/usr/bin/env python3
"""Build the Moby-Dick next-sentence demo data set for fairseq: see fairseq_switch/lab/corpora/prepare/demo_pairs.py
(--help for the options)."""

from fairseq_switch.lab.corpora.prepare.demo_pairs import main

if __name__ == "__main__":
    raise SystemExit(main())
