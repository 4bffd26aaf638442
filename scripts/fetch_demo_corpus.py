#!/usr/bin/env python3
"""Fetch the bundled demo corpus, Moby-Dick: see fairseq_switch/lab/corpora/fetch_moby_dick.py
(--help for the options)."""

from fairseq_switch.lab.corpora.fetch_moby_dick import main

if __name__ == "__main__":
    raise SystemExit(main())
