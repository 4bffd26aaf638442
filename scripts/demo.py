#!/usr/bin/env python
"""The README's main job: switch_tiny pretrained next to its dense twin, then the scaling report.

A thin command line: the code and the full usage (--help) are in fairseq_switch/lab/reports/demo_run.py.
"""

from fairseq_switch.lab.reports.demo_run import main

if __name__ == "__main__":
    raise SystemExit(main())
