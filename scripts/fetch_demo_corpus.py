#!/usr/bin/env python3
"""Fetch the bundled demo corpus, Moby-Dick: see fairseq_switch/corpora/demo.py (--help for the options)."""

from fairseq_switch.corpora.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
