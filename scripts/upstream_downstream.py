#!/usr/bin/env python
"""Does upstream quality, or a zero-shot probe, predict fine-tuned quality?

A thin command line: the code and the full usage (--help) are in fairseq_switch/lab/reports/upstream_downstream.py.
"""

from fairseq_switch.lab.reports.upstream_downstream import main

if __name__ == "__main__":
    raise SystemExit(main())
