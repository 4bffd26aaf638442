#!/usr/bin/env python
"""Convert an expert-parallel checkpoint written by W ranks into one for W' ranks, optimizer state included.

A thin command line: the code and the full usage (--help) are in fairseq_switch/reshard.py.
"""

from fairseq_switch.reshard import main

if __name__ == "__main__":
    raise SystemExit(main())
