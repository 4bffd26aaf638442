#!/usr/bin/env python3
"""Fetch the English prose corpus for span-corruption pretraining (State of the Union, Brown corpus, Moby-Dick):
see fairseq_switch/corpora/pretraining.py (--help for the options)."""

from fairseq_switch.corpora.pretraining import main

if __name__ == "__main__":
    raise SystemExit(main())
