#!/usr/bin/env python
"""Forward+backward time and peak memory: dense FFN vs Switch FFN (fairseq_switch/lab/bench/layer.py)."""
from fairseq_switch.lab.bench.layer import main

if __name__ == "__main__":
    raise SystemExit(main())
