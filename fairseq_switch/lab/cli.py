"""The console commands that setup.py installs, each a dispatcher over the package's `main` functions.

`fairseq-switch-prepare pretraining --out data-bin/x corpus.txt` runs the same code, with the same
options, as `python scripts/prepare_pretraining_data.py --out data-bin/x corpus.txt`. The target
module is imported only when its command runs, so `--help` is instant and fairseq is loaded only
by the commands that need it.
"""

import importlib
import sys
from typing import Dict, List, Optional

# command -> subcommand -> "module:function" (a `main(argv) -> int`)
COMMANDS: Dict[str, Dict[str, str]] = {
    "fetch": {
        "pretraining": "fairseq_switch.lab.corpora.fetch_pretraining:main",
        "multilingual": "fairseq_switch.lab.corpora.fetch_multilingual:main",
        "downstream": "fairseq_switch.lab.corpora.downstream.build:main",
        "demo": "fairseq_switch.lab.corpora.fetch_moby_dick:main",
        "technical": "fairseq_switch.lab.corpora.fetch_technical:main",
    },
    "prepare": {
        "pretraining": "fairseq_switch.lab.corpora.prepare.pretraining:main",
        "multilingual": "fairseq_switch.lab.corpora.prepare.multilingual_data:main",
        "downstream": "fairseq_switch.lab.corpora.prepare.downstream:main",
        "demo": "fairseq_switch.lab.corpora.prepare.demo_pairs:main",
        "teacher-cache": "fairseq_switch.lab.precompute_teacher:main",
    },
    "report": {
        "scaling": "fairseq_switch.lab.reports.scaling:main",
        "distillation": "fairseq_switch.lab.reports.distillation:main",
        "multilingual": "fairseq_switch.lab.reports.multilingual_report:main",
        "upstream-downstream": "fairseq_switch.lab.reports.upstream_downstream:main",
        "generations": "fairseq_switch.lab.reports.generations:main",
        "model-stats": "fairseq_switch.lab.reports.model_stats:main",
        "probe-checkpoints": "fairseq_switch.lab.reports.probe_checkpoints:main",
        "finetune-checkpoints": "fairseq_switch.lab.reports.finetune_checkpoints:main",
        "demo": "fairseq_switch.lab.reports.demo_run:main",
        "reference-gap": "fairseq_switch.lab.reports.reference_gap:main",
    },
}


def _usage(command: str) -> str:
    subs = "\n".join(f"  {name:22s} {target.split(':')[0]}" for name, target in COMMANDS[command].items())
    return (f"usage: fairseq-switch-{command} <subcommand> [options]  (<subcommand> --help for its options)\n\n"
            f"subcommands:\n{subs}\n")


def run(command: str, argv: Optional[List[str]] = None) -> int:
    """Run `fairseq-switch-<command> <subcommand> ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    table = COMMANDS[command]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(command), end="")
        return 0 if argv else 2
    sub, rest = argv[0], argv[1:]
    if sub not in table:
        print(f"fairseq-switch-{command}: unknown subcommand {sub!r}; choose one of {', '.join(table)}",
              file=sys.stderr)
        return 2
    module, function = table[sub].split(":")
    sys.argv = [f"fairseq-switch-{command} {sub}", *rest]  # argparse's prog in usage and errors
    return int(getattr(importlib.import_module(module), function)(rest) or 0)


def fetch() -> int:
    return run("fetch")


def prepare() -> int:
    return run("prepare")


def report() -> int:
    return run("report")


if __name__ == "__main__":  # python -m fairseq_switch.lab.cli prepare downstream ...: no console script needed
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python -m fairseq_switch.lab.cli {{{'|'.join(COMMANDS)}}} <subcommand> [options]")
    sys.exit(run(sys.argv[1], sys.argv[2:]))
