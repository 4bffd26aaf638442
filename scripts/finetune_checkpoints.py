#!/usr/bin/env python
"""Fine-tune every checkpoint of a pretraining sweep on one downstream task.

A thin command line: the code and the full usage (--help) are in fairseq_switch/lab/reports/finetune_checkpoints.py.
"""

from fairseq_switch.lab.reports.finetune_checkpoints import main

if __name__ == "__main__":
    raise SystemExit(main())
