#!/usr/bin/env python3
"""Build the small text-to-text fine-tuning sets (debian, bbc-topic, spam, bbc-headline): see
fairseq_switch/lab/corpora/downstream/build.py (--help for the options)."""

from fairseq_switch.lab.corpora.downstream.build import main

if __name__ == "__main__":
    raise SystemExit(main())
