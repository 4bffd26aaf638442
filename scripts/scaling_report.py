#!/usr/bin/env python
"""Scaling report for a sweep over the number of experts: speed-ups and plots.

A thin command line: the code and the full usage (--help) are in fairseq_switch/lab/reports/scaling.py.
"""

from fairseq_switch.lab.reports.scaling import main

if __name__ == "__main__":
    raise SystemExit(main())
