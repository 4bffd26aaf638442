#!/usr/bin/env python
"""Parameter and FLOP counts of a fairseq_switch architecture.

A thin command line: the code and the full usage (--help) are in fairseq_switch/lab/reports/model_stats.py.
"""

from fairseq_switch.lab.reports.model_stats import main

if __name__ == "__main__":
    raise SystemExit(main())
