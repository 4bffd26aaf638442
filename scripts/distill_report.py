#!/usr/bin/env python
"""Table 6/7-style rows for a distillation sweep.

A thin command line: the code and the full usage (--help) are in fairseq_switch/lab/reports/distillation.py.
"""

from fairseq_switch.lab.reports.distillation import main

if __name__ == "__main__":
    raise SystemExit(main())
