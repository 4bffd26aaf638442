#!/usr/bin/env python3
"""Prepare a multilingual corpus for span-corruption pretraining (one shared vocabulary, per-language splits): see
fairseq_switch/lab/corpora/prepare/multilingual_data.py (--help for the options)."""

from fairseq_switch.lab.corpora.prepare.multilingual_data import main

if __name__ == "__main__":
    raise SystemExit(main())
