#!/usr/bin/env python3
"""Build the Moby-Dick next-sentence demo data set for fairseq: see fairseq_switch/corpora/prepare/demo.py
(--help for the options)."""

from fairseq_switch.corpora.prepare.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
