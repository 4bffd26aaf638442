#!/usr/bin/env python3
"""Fetch and prepare the technical-documentation corpus (Debian documentation packages, 50M+ tokens):
see fairseq_switch/lab/corpora/fetch_technical.py (--help for the options)."""

from fairseq_switch.lab.corpora.fetch_technical import main

if __name__ == "__main__":
    raise SystemExit(main())
