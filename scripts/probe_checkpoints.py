#!/usr/bin/env python
"""Run the zero-shot probe offline on saved checkpoints.

A thin command line: the code and the full usage (--help) are in fairseq_switch/lab/reports/probe_checkpoints.py.
"""

from fairseq_switch.lab.reports.probe_checkpoints import main

if __name__ == "__main__":
    raise SystemExit(main())
