"""Zero-shot probe: score downstream examples by the model's log-likelihood of their targets.

Does upstream quality predict downstream quality (Fedus et al. 2021, Appendix E)? The probe-selection
paper's Algorithm 1 scores each candidate model by the log-likelihood it gives a few selected
downstream points, with no fine-tuning, and predicts fine-tuned quality from that score. Here one
probe task is a downstream folder as bundled in `data/downstream/<name>/` ({split}.jsonl with
"input" and "target"; .tsv works too, see data/pairs.py). Each example is put in the pretraining
format with two templates: by default the input is followed by a sentinel and the target is the
span that fills it, "<extra_id_0> {target} <extra_id_1></s>", exactly what span corruption taught
the model to predict.

* classification tasks (meta.json says so, or few distinct targets): every label is scored as a
  candidate; the point is right when its gold label has the highest log-likelihood, and its
  *confidence* is the gold label's softmax probability over the candidates (the probe-selection
  paper's §3.3).
* other tasks (summaries, ...): the gold target's mean per-token log-likelihood.

Per point, `value` is what selection clusters on (the confidence, or the per-token log-likelihood);
across checkpoints the values form the point's trajectory (probe_selection.py).

Used at every validation of a pretraining run (task option --probe, `ProbeConfig`) and offline on
saved checkpoints (fairseq_switch/lab/reports/probe_checkpoints.py, scripts/probe_checkpoints.py); both
write the same per-point rows.
"""

import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from fairseq.data.language_pair_dataset import collate
from fairseq.dataclass import FairseqDataclass
from omegaconf import II

from .data.pairs import read_pairs

logger = logging.getLogger(__name__)

MAX_LABELS = 32  # a task without meta.json is classification when it has at most this many distinct targets
_SPLIT_EXTS = (".jsonl", ".jsonl.gz", ".tsv", ".tsv.gz")
_SENTINEL_RE = re.compile(r"(<extra_id_\d+>)")


@dataclass
class ProbeConfig(FairseqDataclass):
    """Task options of the zero-shot probe; a pretraining task's config inherits them."""

    probe: str = field(
        default="",
        metadata={"help": "downstream folders scored zero-shot at every validation, comma-separated, each "
                          "'folder' or 'name=folder' (as bundled in data/downstream/); logs probe_<name>_acc, "
                          "_conf and _ll and writes per-point rows to <save_dir>/probe/<name>.jsonl"},
    )
    probe_split: str = field(default="valid", metadata={"help": "which split of each probe folder to score"})
    probe_points: int = field(
        default=256,
        metadata={"help": "points per probe task: a random subset of the split, fixed by --seed (0 = all)"},
    )
    probe_select: str = field(
        default="",
        metadata={"help": "JSON file of selected points, {name: {\"split\": s, \"indices\": [...]}}, written by "
                          "scripts/upstream_downstream.py --write-selection; replaces --probe-points"},
    )
    probe_source_template: str = field(
        default="{input} <extra_id_0>",
        metadata={"help": "the encoder input; {input} is the example's input, truncated to fit the model"},
    )
    probe_target_template: str = field(
        default="<extra_id_0> {target} <extra_id_1>",
        metadata={"help": "the decoder target scored ({target}: the gold target or a candidate label); </s> is "
                          "appended. The default is the span that span corruption taught the model to predict"},
    )
    probe_batch_size: int = field(default=64, metadata={"help": "(input, target) rows per forward pass"})
    # per-point rows go to <probe_dir>/probe/<name>.jsonl. No help string on purpose: fairseq then leaves
    # the field out of argparse and keeps the interpolation (it follows --save-dir)
    probe_dir: str = II("checkpoint.save_dir")


@dataclass
class ProbeTask:
    """One task's encoded probe points."""

    name: str
    kind: str                          # "classification" or "generation"
    split: str
    indices: np.ndarray                # positions in the split's file
    sources: List[torch.Tensor]
    gold: List[torch.Tensor]           # the gold target, encoded
    labels: List[str] = field(default_factory=list)        # classification: the candidates
    candidates: List[torch.Tensor] = field(default_factory=list)
    gold_label: Optional[np.ndarray] = None                # classification: index into labels
    weights: Optional[np.ndarray] = None   # pool points each point stands for (a weighted selection)


@dataclass
class ProbeResult:
    """Per-point scores of one task at one checkpoint."""

    name: str
    kind: str
    split: str
    indices: np.ndarray
    ll: np.ndarray                     # gold target: mean log-likelihood per token (nats)
    value: np.ndarray                  # confidence in the gold label (classification) or ll
    correct: Optional[np.ndarray] = None
    scores: Optional[np.ndarray] = None  # [points, labels] summed candidate log-likelihoods
    weights: Optional[np.ndarray] = None

    def metrics(self) -> Dict[str, float]:
        """Task-level scores, as logged: acc (%), conf (mean gold probability), ll; weighted means when
        the points come from a weighted selection (each counts for the pool points it stands for)."""
        w = self.weights
        out = {"ll": float(np.average(self.ll, weights=w))}
        if self.kind == "classification":
            out["acc"] = 100.0 * float(np.average(self.correct, weights=w))
            out["conf"] = float(np.average(self.value, weights=w))
        return out

    def row(self, **extra) -> dict:
        r = dict(extra, task=self.name, kind=self.kind, split=self.split, indices=self.indices.tolist(),
                 value=_round(self.value), ll=_round(self.ll), metrics=self.metrics())
        if self.correct is not None:
            r["correct"] = self.correct.astype(int).tolist()
        if self.weights is not None:
            r["weights"] = self.weights.tolist()
        return r


def _round(a: np.ndarray) -> List[float]:
    return [round(float(x), 6) for x in a]


# ----------------------------------------------------------------------------- parsing and loading


def parse_probe_spec(spec: str) -> List[tuple]:
    """'a=path,b' -> [(name, folder)]; a bare folder is named after its last component."""
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, _, folder = item.partition("=") if "=" in item else ("", "", item)
        folder = folder.strip()
        name = name.strip() or os.path.basename(os.path.normpath(folder))
        if not re.fullmatch(r"[\w.-]+", name):
            raise ValueError(f"--probe: task name {name!r} may only hold letters, digits, '.', '_' and '-' "
                             f"(it becomes part of the metric names); name it with 'name=folder'")
        out.append((name, folder))
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"--probe names task(s) {', '.join(dup)} twice; give them distinct names with 'name=folder'")
    return out


def split_file(folder: str, split: str) -> str:
    for ext in _SPLIT_EXTS:
        path = os.path.join(folder, split + ext)
        if os.path.isfile(path):
            return path
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--probe: no such folder {folder} (a downstream folder as in data/downstream/)")
    have = sorted(f for f in os.listdir(folder) if f.endswith(_SPLIT_EXTS))
    raise FileNotFoundError(f"--probe: {folder} has no {split} split ({split}.jsonl or .tsv); it holds: "
                            f"{', '.join(have) or 'no split files'}. Pick one with --probe-split")


def task_kind(folder: str, targets: Sequence[str]) -> str:
    meta = os.path.join(folder, "meta.json")
    if os.path.isfile(meta):
        with open(meta, encoding="utf-8") as f:
            kind = json.load(f).get("task")
        if kind:
            return "classification" if kind == "classification" else "generation"
    distinct = set(targets)
    return "classification" if len(distinct) <= MAX_LABELS and len(distinct) < len(targets) / 2 else "generation"


def _template_parts(template: str, key: str, flag: str):
    if template.count("{" + key + "}") != 1:
        raise ValueError(f"{flag} {template!r} must contain {{{key}}} exactly once")
    return template.split("{" + key + "}")


class Encoder:
    """Template + SentencePiece pieces -> dictionary ids (as prepare_downstream_data.py encodes)."""

    def __init__(self, spm_model: str, dictionary: Any, source_template: str, target_template: str,
                 max_source: int):
        from .evaluation import load_spm

        self.sp = load_spm(spm_model)
        self.dictionary = dictionary
        self.src_pre, self.src_post = (self.pieces(p) for p in _template_parts(source_template, "input",
                                                                               "--probe-source-template"))
        self.tgt_pre, self.tgt_post = (self.pieces(p) for p in _template_parts(target_template, "target",
                                                                               "--probe-target-template"))
        self.max_input = max_source - 1 - len(self.src_pre) - len(self.src_post)  # 1: </s>
        if self.max_input < 1:
            raise ValueError(f"--probe-source-template leaves no room for the input in {max_source} source tokens")

    def pieces(self, text: str) -> List[int]:
        """Sentinels written in the text become their own ids directly (SentencePiece would put a lone
        "▁" piece before each, which span corruption never does); the rest is encoded as usual."""
        ids = []
        for part in _SENTINEL_RE.split(text):
            if _SENTINEL_RE.fullmatch(part):
                ids.append(self.dictionary.index(part))
            elif part.strip():
                ids += [self.dictionary.index(p) for p in self.sp.encode(part.strip(), out_type=str)]
        return ids

    def source(self, text: str) -> torch.Tensor:
        ids = self.src_pre + self.pieces(text)[: self.max_input] + self.src_post + [self.dictionary.eos()]
        return torch.tensor(ids, dtype=torch.long)

    def target(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tgt_pre + self.pieces(text) + self.tgt_post + [self.dictionary.eos()],
                            dtype=torch.long)


def load_selection(path: str) -> Dict[str, dict]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--probe-select {path}: no such file (write one with "
                                f"scripts/upstream_downstream.py --write-selection)")
    with open(path, encoding="utf-8") as f:
        sel = json.load(f)
    if not isinstance(sel, dict) or not all(isinstance(v, dict) and "indices" in v for v in sel.values()):
        raise ValueError(f"--probe-select {path}: expected {{task: {{\"split\": ..., \"indices\": [...]}}}}")
    return sel


def load_probe_task(name: str, folder: str, encoder: Encoder, split: str = "valid", points: int = 0,
                    seed: int = 1, selection: Optional[dict] = None) -> ProbeTask:
    """The task's probe points: `selection` ({"split", "indices"}) if given, else `points` random ones
    (0 = all), in file order."""
    if selection is not None:
        split = selection.get("split", split)
    path = split_file(folder, split)
    pairs = list(read_pairs(path))
    if not pairs:
        raise ValueError(f"--probe: {path} holds no examples")
    inputs, targets = [p[0] for p in pairs], [p[1].strip() for p in pairs]
    n = len(pairs)
    weights = None
    if selection is not None:
        idx = np.asarray(selection["indices"], dtype=np.int64)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"--probe-select: task {name}: indices must lie in 0..{n - 1} (the {n} examples of "
                             f"{path}); the selection was made on other data")
        if selection.get("weights") is not None:
            weights = np.asarray(selection["weights"], dtype=np.float64)
            if weights.shape != idx.shape or weights.min() < 0 or weights.sum() <= 0:
                raise ValueError(f"--probe-select: task {name}: weights must be {idx.size} non-negative numbers "
                                 f"(one per index), not all zero")
    elif points and points < n:
        idx = np.sort(np.random.default_rng([seed, 7]).choice(n, size=points, replace=False))
    else:
        idx = np.arange(n)
    kind = task_kind(folder, targets)
    task = ProbeTask(name, kind, split, idx, [encoder.source(inputs[i]) for i in idx],
                     [encoder.target(targets[i]) for i in idx], weights=weights)
    if kind == "classification":
        task.labels = sorted(set(targets))
        task.candidates = [encoder.target(label) for label in task.labels]
        task.gold_label = np.array([task.labels.index(targets[i]) for i in idx])
    logger.info(f"probe {name}: {idx.size} {kind} points from {path}"
                + (f", labels {', '.join(task.labels)}" if task.labels else ""))
    return task


# ----------------------------------------------------------------------------- scoring


def score_pairs(model: torch.nn.Module, dictionary: Any, sources: Sequence[torch.Tensor],
                targets: Sequence[torch.Tensor], batch_size: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """Summed log-likelihood of each target given its source (teacher forcing), and its token count."""
    device = next(model.parameters()).device
    pad, eos = dictionary.pad(), dictionary.eos()
    total, count = [], []
    for start in range(0, len(sources), batch_size):
        samples = [{"id": i, "source": s, "target": t}
                   for i, (s, t) in enumerate(zip(sources[start:start + batch_size],
                                                  targets[start:start + batch_size]))]
        batch = collate(samples, pad, eos, left_pad_source=False, left_pad_target=False, input_feeding=True)
        order = batch["id"].argsort()  # collate sorts by source length; undo it
        net_input = {k: v.to(device) for k, v in batch["net_input"].items()}
        out = model(**net_input)
        lprobs = model.get_normalized_probs(out, log_probs=True).float()
        tgt = batch["target"].to(device)
        tok = lprobs.gather(-1, tgt.unsqueeze(-1)).squeeze(-1).masked_fill(tgt.eq(pad), 0.0)
        total.append(tok.sum(-1).cpu()[order])
        count.append(tgt.ne(pad).sum(-1).cpu()[order])
    return torch.cat(total).double().numpy(), torch.cat(count).numpy()


@torch.no_grad()
def run_probe(model: torch.nn.Module, dictionary: Any, task: ProbeTask, batch_size: int = 64) -> ProbeResult:
    """Score the task's points with `model` in eval mode (its mode is restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        gold_sum, gold_n = score_pairs(model, dictionary, task.sources, task.gold, batch_size)
        ll = gold_sum / gold_n
        if task.kind != "classification":
            return ProbeResult(task.name, task.kind, task.split, task.indices, ll, ll, weights=task.weights)
        n, c = len(task.sources), len(task.candidates)
        srcs = [s for s in task.sources for _ in range(c)]
        cands = [t for _ in range(n) for t in task.candidates]
        scores = score_pairs(model, dictionary, srcs, cands, batch_size)[0].reshape(n, c)
        shifted = scores - scores.max(axis=1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        rows = np.arange(n)
        conf = probs[rows, task.gold_label]
        # ties (identical candidates' scores) count as wrong: an undecided model has not ranked the gold first
        correct = (scores[rows, task.gold_label] > np.where(np.eye(c, dtype=bool)[task.gold_label], -np.inf,
                                                            scores).max(axis=1))
        return ProbeResult(task.name, task.kind, task.split, task.indices, ll, conf, correct, scores, task.weights)
    finally:
        model.train(was_training)


def write_rows(path: str, rows: Sequence[dict]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def read_rows(path: str) -> List[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class Probe:
    """All probe tasks of a run: built once, scored at each validation or checkpoint."""

    def __init__(self, cfg: ProbeConfig, dictionary: Any, spm_model: str, max_source: int, seed: int = 1):
        if not os.path.isfile(spm_model):
            raise FileNotFoundError(f"--probe needs the SentencePiece model of the pretraining data; none at "
                                    f"{spm_model} (scripts/prepare_pretraining_data.py writes it next to dict.txt)")
        if cfg.probe_batch_size < 1:
            raise ValueError(f"--probe-batch-size must be at least 1, got {cfg.probe_batch_size}")
        if cfg.probe_points < 0:
            raise ValueError(f"--probe-points must be 0 (all) or positive, got {cfg.probe_points}")
        self.dictionary = dictionary
        self.batch_size = cfg.probe_batch_size
        encoder = Encoder(spm_model, dictionary, cfg.probe_source_template, cfg.probe_target_template, max_source)
        selection = load_selection(cfg.probe_select) if cfg.probe_select else None
        self.tasks = []
        for name, folder in parse_probe_spec(cfg.probe):
            if selection is not None and name not in selection:
                raise ValueError(f"--probe-select {cfg.probe_select} has no points for task {name} "
                                 f"(it has: {', '.join(selection)})")
            self.tasks.append(load_probe_task(name, folder, encoder, cfg.probe_split, cfg.probe_points, seed,
                                              selection[name] if selection else None))

    def run(self, model: torch.nn.Module) -> List[ProbeResult]:
        return [run_probe(model, self.dictionary, t, self.batch_size) for t in self.tasks]


def stats(results: Sequence[ProbeResult]) -> Dict[str, float]:
    """Logged metrics: probe_<task>_<metric>."""
    return {f"probe_{r.name}_{k}": round(v, 4) for r in results for k, v in r.metrics().items()}
