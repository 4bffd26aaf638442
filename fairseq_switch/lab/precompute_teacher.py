"""Fill a distillation teacher's top-k cache (`data/teacher_cache.py`) ahead of training: the command
line of scripts/precompute_teacher.py (`fairseq-switch-prepare teacher-cache`)."""

import argparse
import logging
import sys
import time
from typing import List, Optional

import torch


def epochs_of(spec: str) -> List[int]:
    """--epochs "1-3" or "1,2,5" -> [1, 2, 3] or [1, 2, 5] (epochs count from 1)."""
    try:
        if "-" in spec:
            a, b = spec.split("-", 1)
            out = list(range(int(a), int(b) + 1))
        else:
            out = [int(x) for x in spec.split(",")]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise SystemExit(f"error: --epochs {spec!r}: expected epochs from 1, as 1-3 or 1,2,5")
    return out


def precompute(train_argv: List[str], epochs: List[int], splits: List[str]) -> None:
    """Run a distillation teacher once over the training data and store its top-k logits.

    `train_argv`: the distillation run's own fairseq-train arguments (they must include --criterion
    switch_distillation, --teacher-path, --teacher-topk and --teacher-cache-dir). Builds the same task
    and the same training batches as fairseq-train, runs the teacher on every example that the cache
    does not hold yet, and stores the results; the training run then reads them (`teacher_cache_hit`
    1.0 in its log) instead of running the teacher at each step. The teacher can run here on a GPU at
    a larger --max-tokens while students train elsewhere.

    Span corruption draws new inputs each epoch (from the seed and the epoch), so each epoch to be
    trained needs its own pass; text-to-text inputs repeat, and one epoch covers them all (splits
    other than the training subset are covered for the first of `epochs` only). Re-running is cheap:
    examples already cached are skipped.
    """
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.logging import progress_bar

    from fairseq_switch.plugin import register

    register()  # fairseq skips the run's --user-dir: this process imported the package first
    targs = options.parse_args_and_arch(options.get_training_parser(), train_argv)
    cfg = convert_namespace_to_omegaconf(targs)
    utils.import_user_module(cfg.common)
    from fairseq_switch.criterions.switch_distillation import SwitchDistillationCriterion

    if cfg.criterion._name != "switch_distillation" or not cfg.criterion.teacher_cache_dir:
        raise SystemExit("error: give the distillation run's arguments: --criterion switch_distillation with "
                         "--teacher-path, --teacher-topk K and --teacher-cache-dir DIR")
    if cfg.criterion.distill_weight == 0:
        raise SystemExit("error: --distill-weight 0 uses no teacher; nothing to precompute")
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model, from_checkpoint=True)  # the student: only for max_positions
    criterion = task.build_criterion(cfg.criterion)
    assert isinstance(criterion, SwitchDistillationCriterion)
    use_cuda = torch.cuda.is_available() and not cfg.common.cpu
    like = torch.zeros((), device="cuda" if use_cuda else "cpu")
    if cfg.common.fp16 or cfg.common.bf16:
        like = like.half() if cfg.common.fp16 else like.bfloat16()

    for split in splits:
        for epoch in epochs if split == cfg.dataset.train_subset else epochs[:1]:
            task.load_dataset(split, epoch=epoch, combine=True)
            itr = task.get_batch_iterator(
                dataset=task.dataset(split),
                max_tokens=cfg.dataset.max_tokens,
                max_sentences=cfg.dataset.batch_size,
                max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions(),
                                                          cfg.dataset.max_tokens),
                ignore_invalid_inputs=True,
                required_batch_size_multiple=cfg.dataset.required_batch_size_multiple,
                seed=cfg.common.seed,
                num_workers=cfg.dataset.num_workers,
                epoch=epoch,
            ).next_epoch_itr(shuffle=False)
            bar = progress_bar.progress_bar(itr, log_format="tqdm", prefix=f"teacher {split} epoch {epoch}")
            seen = hits = 0
            start = time.time()
            for sample in bar:
                if not sample:
                    continue
                if use_cuda:
                    sample = utils.move_to_cuda(sample)
                hits += criterion.fill_cache(sample, like)
                seen += sample["target"].size(0)
            print(f"[precompute] {split} epoch {epoch}: {seen} examples, {hits} already cached, "
                  f"{seen - hits} computed in {time.time() - start:.1f}s -> {cfg.criterion.teacher_cache_dir}")


def main(argv: Optional[List[str]] = None) -> int:
    """precompute_teacher.py [--epochs 1-3] [--splits train] -- <the distillation run's fairseq-train arguments>

        python scripts/precompute_teacher.py --epochs 1-3 -- data-bin/pretrain_sample --user-dir fairseq_switch \\
            --task span_corruption --arch t5_tiny --criterion switch_distillation --teacher-path T.pt \\
            --teacher-topk 32 --teacher-cache-dir teacher_cache --max-tokens 4096 --seed 1 [...]
    """
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise SystemExit("usage: precompute_teacher.py [--epochs 1-3] [--splits train] -- <fairseq-train arguments>")
    cut = argv.index("--")
    p = argparse.ArgumentParser(description="Run a distillation teacher once over the training data and store its "
                                            "top-k logits (Fedus et al. 2021, Sec. 4.2).")
    p.add_argument("--epochs", default="1", help="training epochs to cover: 1-3 or 1,2,5 (default: 1)")
    p.add_argument("--splits", default="train", help="comma-separated subsets (default: train; add valid to cover "
                                                       "validation, which computes the distillation loss too)")
    args = p.parse_args(argv[:cut])
    epochs = epochs_of(args.epochs)
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO,
                        stream=sys.stdout)
    precompute(argv[cut + 1:], epochs, args.splits.split(","))
    return 0
