#!/usr/bin/env python
"""Peak memory of checkpoint conversion vs the checkpoint's size (fairseq_switch/lab/bench/convert_memory.py)."""
from fairseq_switch.lab.bench.convert_memory import main

if __name__ == "__main__":
    raise SystemExit(main())
