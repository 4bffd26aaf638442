#!/usr/bin/env python
"""Upcycle a dense checkpoint into a Switch checkpoint (Komatsuzaki et al. 2022, "Sparse Upcycling").

A thin command line: the code and the full usage (--help) are in fairseq_switch/convert/upcycle.py.
"""

from fairseq_switch.convert.upcycle import main

if __name__ == "__main__":
    raise SystemExit(main())
