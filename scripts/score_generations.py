#!/usr/bin/env python
"""Score fairseq-generate output: ROUGE-1/2/L, exact match, accuracy, BLEU.

A thin command line: the code and the full usage (--help) are in fairseq_switch/lab/reports/generations.py.
"""

from fairseq_switch.lab.reports.generations import main

if __name__ == "__main__":
    raise SystemExit(main())
