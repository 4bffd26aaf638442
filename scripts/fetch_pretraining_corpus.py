#!/usr/bin/env python3
"""Fetch the English prose corpus for span-corruption pretraining (State of the Union, Brown corpus, Moby-Dick):
see fairseq_switch/lab/corpora/fetch_pretraining.py (--help for the options)."""

from fairseq_switch.lab.corpora.fetch_pretraining import main

if __name__ == "__main__":
    raise SystemExit(main())
