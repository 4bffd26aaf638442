#!/usr/bin/env python
"""Fill a distillation run's teacher cache ahead of training (fairseq_switch/lab/precompute_teacher.py)."""
from fairseq_switch.lab.precompute_teacher import main

if __name__ == "__main__":
    raise SystemExit(main())
