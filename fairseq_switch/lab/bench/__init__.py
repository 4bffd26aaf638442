"""Benchmarks and sanity checks of the Switch layer and of training, behind the scripts in scripts/.

Each module holds one script's logic and its `main(argv) -> int`; the script is a thin command line:
  - layer: dense FFN vs Switch FFN (index, grouped, einsum dispatch) vs transformers, time and peak memory
    (scripts/bench_switch_layer.py);
  - expert_parallel: fairseq training steps on W expert-parallel CPU processes
    (scripts/bench_expert_parallel.py);
  - layout: training steps of the T5 layout vs the fairseq layout (scripts/bench_layout.py);
  - convert_memory: peak memory of checkpoint conversion (scripts/bench_convert_memory.py);
  - convert_base: switch-base-8's shapes converted: time, memory and logits vs transformers
    (scripts/bench_convert_base.py);
  - capacity_check: a Switch FFN must memorise better than a dense FFN of equal FLOPs
    (scripts/check_expert_capacity.py);
  - common: what they share (option helpers, a free port);
  - device_check and train_run: the GPU acceptance run behind scripts/device_check.sh (docs/gpu.md).

They print markdown for docs/results/ and docs/. Only device_check runs in CI (its --dry-run).
"""
