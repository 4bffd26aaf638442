"""Score fairseq-generate output: ROUGE-1/2/L, exact match, accuracy, BLEU.

Pairs each example's best hypothesis (the D- line, else H-) with its reference (T- line), turns raw
SentencePiece pieces into text ("▁The ▁cat s" -> "The cats"; text that is already detokenized is
left alone; <unk> is deleted, never scored as a word) and prints the number of examples and each
metric, in percent. With rouge, also two signs of degenerate output: distinct (distinct hypotheses
/ hypotheses) and repetitive (outputs whose H- line repeats one piece 4 or more times in a row,
like "▁US S S S S"). The scoring is fairseq_switch/evaluation.py's `evaluate`, the same as
validation by generation (--eval-metric) logs.

    fairseq-generate data-bin/x --user-dir fairseq_switch --task text_to_text --path ckpt.pt \\
        --gen-subset test --beam 4 > gen.out
    python scripts/score_generations.py gen.out --spm-model data-bin/x/spm.model

    # classification / QA cast as text, as JSON, from a pipe
    fairseq-generate ... | python scripts/score_generations.py - --metrics em,acc --json
    python scripts/score_generations.py gen.out --metrics rouge,bleu --json --output scores.json

--metrics: rouge (ROUGE-1/2/L F, with stemming; ROUGE-2 is the usual headline for summarization),
em (SQuAD-normalized exact match), acc (exact label match after strip), bleu (sacrebleu corpus BLEU).
Without --spm-model, raw pieces are joined by SentencePiece's rule ("▁" -> space), which is exact
for ordinary pieces; the model also decodes byte-fallback pieces and checks the pieces belong to it.
Bad input (missing file, no hypotheses, no references) exits 2 with a one-line error.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from fairseq_switch import evaluation


def metric_list(value: str) -> List[str]:
    """argparse type for --metrics: a comma-separated subset of evaluation.METRICS."""
    names = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in names if m not in evaluation.METRICS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(evaluation.METRICS)}"
        )
    return list(dict.fromkeys(names))  # drop repeats, keep order


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("generate_output", help="file holding fairseq-generate's stdout, or - for stdin")
    p.add_argument("--metrics", type=metric_list, default=["rouge"],
                   help="comma-separated: rouge,em,acc,bleu (default: rouge)")
    p.add_argument("--spm-model", help="SentencePiece .model of the dictionary, to decode raw pieces with")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--output", help="write the table / JSON to this file instead of stdout")
    return p.parse_args(argv)


def score(lines: Iterable[str], metrics: List[str], spm_model: Optional[str] = None) -> Dict[str, float]:
    """{"examples": n, <metric>: value, ...} for fairseq-generate output `lines`."""
    if spm_model:
        evaluation.load_spm(spm_model)  # a wrong path fails now, even if every line is already text
    examples = evaluation.read_generate_output(lines)
    scores = evaluation.evaluate([e.hypothesis for e in examples], [e.target for e in examples], metrics,
                                 spm_model, hyp_tokens=[e.tokens for e in examples])
    return {"examples": len(examples), **scores}


def format_table(result: Dict[str, float], metrics: List[str]) -> str:
    n = result["examples"]
    rows = [("examples", str(n))]
    for m in metrics:
        if m == "rouge":
            for name in ("rouge1", "rouge2", "rougeL"):
                rows.append((name, f"{result[name]:.2f}  (P {result[name + '_precision']:.2f}  "
                                   f"R {result[name + '_recall']:.2f})"))
            rows.append(("distinct", f"{result['distinct']:.2f}  ({round(result['distinct'] * n / 100)} different "
                                     f"outputs of {n})"))
            rows.append(("repetitive", f"{result['repetitive']:.2f}  ({round(result['repetitive'] * n / 100)} of "
                                       f"{n} repeat a token {evaluation.REPEAT_RUN}+ times in a row)"))
        else:
            rows.append((m, f"{result[m]:.2f}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows) + "\n"


def score_file(path: str, metrics: List[str], spm_model: Optional[str] = None) -> Dict[str, float]:
    """`score` of the fairseq-generate output in file `path` ("-": stdin). Bad input raises OSError or
    ValueError (UnicodeDecodeError: not a text file); `error_line` words them for the user."""
    if path == "-":
        return score(sys.stdin, metrics, spm_model)
    with open(path, encoding="utf-8") as f:
        return score(f, metrics, spm_model)


def error_line(e: Exception) -> str:
    """The one-line error printed for bad input, whatever the library said."""
    msg = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror else str(e)
    return "error: " + " ".join(msg.split())


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        result = score_file(args.generate_output, args.metrics, args.spm_model)
    except (OSError, ValueError) as e:
        print(error_line(e), file=sys.stderr)
        return 2
    text = json.dumps(result) + "\n" if args.json else format_table(result, args.metrics)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
