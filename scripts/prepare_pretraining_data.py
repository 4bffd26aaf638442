#!/usr/bin/env python3
"""Prepare a raw text corpus for span-corruption pretraining (task span_corruption): see
fairseq_switch/lab/corpora/prepare/pretraining.py (--help for the options)."""

from fairseq_switch.lab.corpora.prepare.pretraining import main

if __name__ == "__main__":
    raise SystemExit(main())
