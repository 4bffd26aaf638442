"""Which tokens a trained Switch model's routers send to their busiest expert, and which they drop.

    python -m fairseq_switch.lab.reports.drop_tokens runs/drop_study/ours_e8_s2/checkpoints/checkpoint_1_100.pt \\
        --data data-bin/pretrain_sample

Routes the valid split's batches in training mode (the training capacity factor and jitter, no gradient) and
splits each Switch layer's real tokens by the token that enters the layer's stack at that position: the
decoder's first position (the start token, the same in every sequence), the span sentinels <extra_id_N>,
EOS, and the other tokens. For each class: its share of the layer's tokens, the share of it routed to the
layer's busiest expert, and the share of it dropped (its expert full, Sec. 2.2).
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional

CLASSES = ("start", "sentinel", "eos", "other")


def token_classes(tokens: Any, dictionary: Any, decoder: bool) -> Any:
    """[T, B] class index (CLASSES order) of each position's input token."""
    import torch

    from fairseq_switch.data.sentinels import NUM_SENTINELS, sentinel_symbols

    sentinels = torch.tensor([dictionary.index(s) for s in sentinel_symbols(NUM_SENTINELS)])
    cls = torch.full_like(tokens, CLASSES.index("other"))
    cls[torch.isin(tokens, sentinels)] = CLASSES.index("sentinel")
    cls[tokens.eq(dictionary.eos())] = CLASSES.index("eos")
    if decoder:
        cls[0] = CLASSES.index("start")
    return cls


def routing_by_class(checkpoint: str, data: str, batches: int, seed: int = 1) -> List[Dict]:
    """One row per Switch layer and token class (see the module docstring)."""
    import torch
    from fairseq import checkpoint_utils, utils

    from fairseq_switch.modules.switch_layer import SwitchFFN
    from fairseq_switch.plugin import register

    register()  # the plugin's task and model, as --user-dir would
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": data})
    model = models[0]
    model.train()  # training routing: capacity factor and jitter as in the run
    task.load_dataset("valid", combine=False, epoch=1)
    itr = task.get_batch_iterator(dataset=task.dataset("valid"), max_tokens=cfg.dataset.max_tokens,
                                  max_positions=utils.resolve_max_positions(task.max_positions(),
                                                                            model.max_positions()),
                                  seed=seed).next_epoch_itr(shuffle=False)
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, SwitchFFN)]
    pad = task.target_dictionary.pad()
    E = layers[0][1].num_experts
    acc = {name: torch.zeros(len(CLASSES), E, 2) for name, _ in layers}  # [class, expert, (routed, dropped)]
    utils.set_torch_seed(seed)
    with torch.no_grad():
        for i, sample in enumerate(itr):
            if i >= batches:
                break
            model(**sample["net_input"])
            src = sample["net_input"]["src_tokens"].t()  # fairseq's layers are time-major: T x B
            prev = sample["net_input"]["prev_output_tokens"].t()
            for name, layer in layers:
                r = layer.last_routing
                decoder = name.startswith("decoder")
                toks = prev if decoder else src
                cls = token_classes(toks, task.target_dictionary, decoder).reshape(-1)
                real = toks.ne(pad).reshape(-1)
                idx = (cls * E + r.expert_index)[real]
                routed = torch.bincount(idx, minlength=len(CLASSES) * E).view(len(CLASSES), E)
                dropped = torch.bincount(idx[~r.kept[real]], minlength=len(CLASSES) * E).view(len(CLASSES), E)
                acc[name] += torch.stack([routed, dropped], -1).float()
    rows = []
    for name, a in acc.items():
        per_expert = a[..., 0].sum(0)
        busiest = int(per_expert.argmax())
        total = float(per_expert.sum())
        for c, cname in enumerate(CLASSES):
            n = float(a[c, :, 0].sum())
            if n == 0:
                continue
            rows.append({"layer": name, "class": cname, "tokens": n / total, "to_busiest": float(a[c, busiest, 0]) / n,
                         "dropped": float(a[c, :, 1].sum()) / n, "busiest_load": float(per_expert.max()) * E / total,
                         "layer_dropped": float(a[..., 1].sum()) / total})
    return rows


def markdown(rows: List[Dict]) -> str:
    from .tables import md_table

    head = ["layer", "busiest expert's load", "layer dropped", "tokens", "share of the layer",
            "routed to the busiest expert", "dropped"]
    body = [[r["layer"], f"{r['busiest_load']:.2f}", f"{100 * r['layer_dropped']:.1f}%", r["class"],
             f"{100 * r['tokens']:.1f}%", f"{100 * r['to_busiest']:.1f}%", f"{100 * r['dropped']:.1f}%"]
            for r in rows]
    return "\n".join(md_table(head, body)) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a fairseq checkpoint of a Switch model")
    ap.add_argument("--data", required=True, help="its data-bin folder (the valid split is routed)")
    ap.add_argument("--batches", type=int, default=8, help="valid batches to route")
    ap.add_argument("--seed", type=int, default=1, help="jitter draws")
    a = ap.parse_args(argv)
    print(markdown(routing_by_class(a.checkpoint, a.data, a.batches, a.seed)), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
