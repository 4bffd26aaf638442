#!/usr/bin/env python
"""A Switch FFN must memorise better than a dense FFN of equal FLOPs (fairseq_switch/lab/bench/capacity_check.py)."""
from fairseq_switch.lab.bench.capacity_check import main

if __name__ == "__main__":
    raise SystemExit(main())
