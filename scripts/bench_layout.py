#!/usr/bin/env python
"""Training steps of the T5 layout vs the fairseq layout, side by side (fairseq_switch/lab/bench/layout.py)."""
from fairseq_switch.lab.bench.layout import main

if __name__ == "__main__":
    raise SystemExit(main())
