"""Run the zero-shot probe (fairseq_switch/probe.py) offline on saved checkpoints (Fedus et al. 2021,
Appendix E).

Give it checkpoint files or run folders (a folder means every checkpoint_<epoch>_<update>.pt and
checkpoint_last.pt in it or in its checkpoints/ subfolder, one per update). Each checkpoint's
per-point rows are appended to <out>/<task>.jsonl, the same rows a pretraining run with --probe
writes at each validation; a checkpoint already scored there (same update, split and points) is
skipped, so re-running after more checkpoints appear only scores the new ones.

    python scripts/probe_checkpoints.py --probe bbc-topic=data/downstream/bbc-topic --probe-split train \\
        --probe-points 0 runs/ud/pre_e0 runs/ud/pre_e8

The dictionary and SentencePiece model come from the checkpoint's pretraining data (its task.data);
--data points elsewhere when that folder has moved.
"""

import logging
import os
import sys
import time
from typing import TYPE_CHECKING, List, Optional

import torch

from .checkpoint_files import checkpoints_of, checkpoints_parser

if TYPE_CHECKING:
    from fairseq_switch.probe import ProbeTask


def main(argv: Optional[List[str]] = None) -> int:
    p = checkpoints_parser(__doc__)
    p.add_argument("--probe", required=True, help="downstream folders, comma-separated, each 'folder' or 'name=folder'")
    p.add_argument("--probe-split", default="valid", help="split of each folder to score (default: valid)")
    p.add_argument("--probe-points", type=int, default=256, help="random points per task, fixed by --seed (0 = all)")
    p.add_argument("--probe-select", default="", help="selection JSON from upstream_downstream.py --write-selection")
    p.add_argument("--probe-source-template", default=None, help="as the task option (default: '{input} <extra_id_0>')")
    p.add_argument("--probe-target-template", default=None,
                   help="as the task option (default: '<extra_id_0> {target} <extra_id_1>')")
    p.add_argument("--probe-batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=1, help="picks the random points (as common.seed does in training)")
    p.add_argument("--data", default=None, help="the pretraining data folder (dict.txt, spm.model), if not the "
                                                "checkpoint's task.data")
    p.add_argument("--out", default=None, help="folder for <task>.jsonl (default: probe/ next to each checkpoint, "
                                               "where a pretraining run with --probe writes)")
    p.add_argument("--cpu", action="store_true", help="score on CPU even when CUDA is available")
    args = p.parse_args(argv)

    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO,
                        stream=sys.stdout)
    from fairseq import tasks, utils

    # the plugin's tasks and models load its checkpoints, and its errors print as one line (fairseq would
    # import a --user-dir; here nothing does)
    from fairseq_switch.plugin import register

    register()

    from fairseq_switch import probe as zero_shot
    from fairseq_switch.models.teacher import load_model, read_checkpoint

    cfg = zero_shot.ProbeConfig(probe=args.probe, probe_split=args.probe_split, probe_points=args.probe_points,
                                probe_select=args.probe_select, probe_batch_size=args.probe_batch_size)
    if args.probe_source_template is not None:
        cfg.probe_source_template = args.probe_source_template
    if args.probe_target_template is not None:
        cfg.probe_target_template = args.probe_target_template
    zero_shot.parse_probe_spec(cfg.probe)  # bad names fail before any checkpoint is read
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"

    paths = [c for t in args.checkpoints for c in checkpoints_of(t)]
    probes = {}  # (data folder, max source) -> Probe: built once per dictionary
    for path in paths:
        state_cfg = read_checkpoint(path, "checkpoint")["cfg"]
        task_cfg = state_cfg.task
        data = args.data or utils.split_paths(str(task_cfg.data))[0]
        task_cfg.data = data
        if "probe" in task_cfg:
            task_cfg.probe = ""  # the run's own in-training probe is not needed here
        task = tasks.setup_task(task_cfg)
        out = args.out or os.path.join(os.path.dirname(os.path.abspath(path)), "probe")
        t0 = time.time()
        model = load_model(path, task, "checkpoint").to(device)
        update = model.num_updates
        max_source = utils.resolve_max_positions(task.max_positions(), model.max_positions())[0]
        key = (data, max_source)
        if key not in probes:
            probes[key] = zero_shot.Probe(cfg, task.target_dictionary, os.path.join(data, "spm.model"), max_source,
                                          args.seed)
        probe = probes[key]
        todo = [t for t in probe.tasks if not _done(os.path.join(out, f"{t.name}.jsonl"), path, update, t)]
        if not todo:
            print(f"[probe] {path} (update {update}): already scored in {out}, skipped", flush=True)
            continue
        for t in todo:
            r = zero_shot.run_probe(model, task.target_dictionary, t, probe.batch_size)
            zero_shot.write_rows(os.path.join(out, f"{t.name}.jsonl"), [r.row(update=update, checkpoint=path)])
            shown = ", ".join(f"{k} {v:.4g}" for k, v in r.metrics().items())
            print(f"[probe] {path} (update {update}) {t.name}: {len(t.indices)} points, {shown}", flush=True)
        print(f"[probe] {path}: {time.time() - t0:.1f}s", flush=True)
    return 0


def _done(rows_file: str, checkpoint: str, update: int, task: "ProbeTask") -> bool:
    """Whether `rows_file` holds this task's points at this update of this run (the checkpoint's folder;
    a row without one was written by the run itself)."""
    from fairseq_switch.probe import read_rows

    if not os.path.isfile(rows_file):
        return False
    run = os.path.dirname(os.path.abspath(checkpoint))
    idx = task.indices.tolist()
    return any(r.get("update") == update and r.get("split") == task.split and r.get("indices") == idx
               and os.path.dirname(os.path.abspath(r.get("checkpoint", checkpoint))) == run
               for r in read_rows(rows_file))
