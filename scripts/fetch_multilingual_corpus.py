#!/usr/bin/env python3
"""Fetch the multilingual corpus, the LibreOffice help in many languages: see
fairseq_switch/lab/corpora/fetch_multilingual.py
(--help for the options)."""

from fairseq_switch.lab.corpora.fetch_multilingual import main

if __name__ == "__main__":
    raise SystemExit(main())
