#!/usr/bin/env python
"""Training-step throughput under expert parallelism on W CPU processes
(fairseq_switch/lab/bench/expert_parallel.py)."""
from fairseq_switch.lab.bench.expert_parallel import main

if __name__ == "__main__":
    raise SystemExit(main())
