"""One fairseq-train run in this process, measured: steady-state step time, tokens per second, peak memory
and the last loss, as JSON (scripts/device_check.sh runs one per model, each in its own process).

  python -m fairseq_switch.lab.bench.train_run --json out.json -- DATA --arch switch_small ... --log-format json

The figures come from fairseq's own `train_inner` records (so --log-format json and a --log-interval
are needed): `ups` (updates per second) and `wps` (target tokens per second) over each interval,
medians over the intervals after --skip-updates; peak memory is torch.cuda.max_memory_allocated on
CUDA, the process's peak RSS on CPU.
"""

import argparse
import json
import logging
import resource
import statistics
import sys
import time
from typing import Any, Dict, List, Optional


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: List[Dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "train_inner":
            try:
                self.records.append(json.loads(record.getMessage()))
            except ValueError:
                pass


def summarize(records: List[Dict[str, Any]], skip_updates: int) -> Dict[str, Any]:
    """Medians over the train_inner intervals past `skip_updates` (all of them if none is)."""
    steady = [r for r in records if int(r.get("num_updates", 0)) > skip_updates] or records
    ups = [float(r["ups"]) for r in steady if "ups" in r]
    wps = [float(r["wps"]) for r in steady if "wps" in r]
    last = records[-1] if records else {}
    return {
        "updates": int(last["num_updates"]) if "num_updates" in last else 0,
        "step_ms": 1000 / statistics.median(ups) if ups else None,
        "target_tokens_per_s": statistics.median(wps) if wps else None,
        "final_loss": float(last["loss"]) if "loss" in last else None,
        "intervals": len(steady),
    }


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("usage: train_run --json OUT [--skip-updates N] -- FAIRSEQ_TRAIN_ARGS...", file=sys.stderr)
        return 2
    cut = argv.index("--")
    p = argparse.ArgumentParser()
    p.add_argument("--json", required=True)
    p.add_argument("--skip-updates", type=int, default=50, help="warm-up updates left out of the medians")
    args = p.parse_args(argv[:cut])
    train_argv = argv[cut + 1:]

    import torch
    from fairseq_cli import train

    from fairseq_switch.plugin import register

    register()  # fairseq skips the run's --user-dir: this process imported the package first
    handler = _Records()
    logging.getLogger().addHandler(handler)  # the root: fairseq configures logging when it starts
    sys.argv = ["fairseq-train", *train_argv]
    t0 = time.perf_counter()
    error = None
    try:
        train.cli_main()
    except Exception as e:  # reported in the JSON; the caller decides
        error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    out = summarize(handler.records, args.skip_updates)
    cuda = torch.cuda.is_available() and "--cpu" not in train_argv
    out.update({
        "seconds": time.perf_counter() - t0,
        "peak_memory_mb": (torch.cuda.max_memory_allocated() / 2**20 if cuda
                           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_memory_kind": "cuda max_memory_allocated" if cuda else "process peak RSS",
        "error": error,
        "argv": train_argv,
    })
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: v for k, v in out.items() if k != "argv"}))
    return 1 if error or not handler.records else 0


if __name__ == "__main__":
    raise SystemExit(main())
