#!/usr/bin/env python
"""switch-base-8 at its real size: conversion time and memory, logits vs transformers
(fairseq_switch/lab/bench/convert_base.py)."""
from fairseq_switch.lab.bench.convert_base import main

if __name__ == "__main__":
    raise SystemExit(main())
