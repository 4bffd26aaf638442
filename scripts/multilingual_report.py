#!/usr/bin/env python
"""Per-language dense vs Switch report for multilingual pretraining.

A thin command line: the code and the full usage (--help) are in fairseq_switch/lab/reports/multilingual_report.py.
"""

from fairseq_switch.lab.reports.multilingual_report import main

if __name__ == "__main__":
    raise SystemExit(main())
