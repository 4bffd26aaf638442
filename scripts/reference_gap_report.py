#!/usr/bin/env python3
"""Switch-minus-dense gap of this project against transformers' implementation on the same batches:
see fairseq_switch/lab/reports/reference_gap.py (--help for the options)."""

from fairseq_switch.lab.reports.reference_gap import main

if __name__ == "__main__":
    raise SystemExit(main())
