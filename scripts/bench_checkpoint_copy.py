#!/usr/bin/env python
"""What the independent copies of a save cost against hard links (fairseq_switch/lab/bench/checkpoint_copy.py)."""
from fairseq_switch.lab.bench.checkpoint_copy import main

if __name__ == "__main__":
    raise SystemExit(main())
