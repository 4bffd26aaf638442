#!/usr/bin/env python
"""List the saves in a checkpoint folder and say which are complete.

    python scripts/verify_checkpoint.py checkpoints/switch_tiny

A thin command line: the code (`main`) is in fairseq_switch/checkpoints/verify.py.
"""

from fairseq_switch.checkpoints.verify import main

if __name__ == "__main__":
    raise SystemExit(main())
