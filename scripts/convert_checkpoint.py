#!/usr/bin/env python
"""Convert checkpoints between transformers' T5 / SwitchTransformers and fairseq-switch (T5 layout).

A thin command line: the code and the full usage (--help) are in fairseq_switch/convert/cli.py.
"""

from fairseq_switch.convert.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
