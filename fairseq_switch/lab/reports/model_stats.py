"""Parameter and FLOP counts of a fairseq_switch architecture, built on the meta device (no memory).

    python scripts/model_stats.py --arch switch_base [--moe-expert-count N] [--vocab-size 32128]
                                  [--src-len 512] [--tgt-len 114]

The model is built the fairseq way (training parser + parse_args_and_arch, TranslationTask,
task.build_model) inside `with torch.device("meta"):`, so even Switch-Large (26B parameters)
costs nothing but construction time.

Parameters
  total     every parameter once (the tied input/output embedding is one tensor).
  active    total minus, in every SwitchFFN, all experts but one: a token goes through one
            expert. The router is active (every token uses it).

FLOPs (forward, per token; a multiply-add is 2 FLOPs; matmuls only: layer norms, softmax,
activations, bias adds, embedding lookups and positional embeddings or biases are not counted)
  nn.Linear(in, out) a token passes through      2 * in * out
  SwitchFFN                                      one expert's Linears; the router's 2 * d * E
                                                 is reported apart as "router FLOPs"
  attention scores + weighted values             2 * 2 * L_kv * heads * d_kv per attention, with
      encoder self-attention                     L_kv = src_len
      decoder self-attention (causal)            L_kv = tgt_len / 2, the average context of a
                                                 causal token (fairseq's training forward
                                                 computes the full masked tgt_len x tgt_len
                                                 matrix; that is tgt_len, i.e. twice this)
      decoder cross-attention                    L_kv = src_len
  output projection (decoder tokens)             2 * d * V (a Linear, tied to the embedding)

  Cross-attention K/V projections act on encoder outputs, once per source position per
  sequence, so they are charged to source tokens:
    src token = encoder stack + every decoder layer's cross-attention k_proj and v_proj
    tgt token = rest of the decoder stack + output projection
    combined  = (src_len * src + tgt_len * tgt) / (src_len + tgt_len), i.e. forward FLOPs of
                one (src_len, tgt_len) pair divided by its src_len + tgt_len tokens.
  All these exclude the router; `router_*` keys hold it and `*_with_router` keys add it.

For a Switch model (experts > 0) the dense twin (same args, --moe-expert-count 0) is built and
counted the same way: its FLOPs equal the Switch model's without router (FLOP-matched).
"""

import argparse
import logging
import tempfile
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..project import PLUGIN_DIR

USER_DIR = PLUGIN_DIR  # fairseq's --user-dir


def _param_count(module: nn.Module) -> int:
    # Module.parameters() yields each Parameter object once (tied weights dedupe by identity).
    return sum(p.numel() for p in module.parameters())


def build_model(
    arch: str, moe_expert_count: Optional[int] = None, vocab_size: int = 32128, extra_args: Sequence[str] = (),
    device: str = "meta",
) -> Tuple[nn.Module, argparse.Namespace]:
    """Build `arch` with fairseq's parser and TranslationTask, by default on the meta device (no
    memory). `extra_args` are more fairseq command-line flags. Returns (model, args)."""
    from fairseq import options
    from fairseq.data import Dictionary
    from fairseq.tasks.translation import TranslationTask

    # fairseq skips --user-dir when the package is already imported (it is: this module is in it), so
    # the architectures are registered here
    from fairseq_switch import models  # noqa: F401

    d = Dictionary()  # bos, pad, eos, unk
    n_specials = len(d)
    if vocab_size < n_specials:
        raise ValueError(f"--vocab-size must be >= {n_specials} (the dictionary's special symbols)")
    for i in range(vocab_size - n_specials):
        d.add_symbol(f"w{i}")
    assert len(d) == vocab_size, (len(d), vocab_size)

    argv = [tempfile.gettempdir(), "--user-dir", str(USER_DIR), "--arch", arch,
            "--task", "translation", "-s", "src", "-t", "tgt"]
    if moe_expert_count is not None:
        argv += ["--moe-expert-count", str(moe_expert_count)]
    argv += list(extra_args)
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    with torch.device(device):
        model = TranslationTask(args, d, d).build_model(args)
    return model, args


def _switch_ffn_class():
    from fairseq_switch.modules.switch_layer import SwitchFFN

    return SwitchFFN


def _linear_flops(m: nn.Linear) -> int:
    return 2 * m.in_features * m.out_features


def _stack_flops(stack: nn.Module, self_len: float, src_len: int, is_decoder: bool) -> Dict[str, float]:
    """Walk one stack (encoder or decoder) analytically. Returns per-token FLOPs split by who pays."""
    from fairseq.modules import MultiheadAttention

    from fairseq_switch.modules.t5_layers import T5Attention

    SwitchFFN = _switch_ffn_class()
    own = 0.0  # per token of this stack
    src_side = 0.0  # per source token (decoder cross-attention K/V projections)
    router = 0.0  # per token of this stack
    skip = []  # module-name prefixes already accounted for

    def skipped(name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in skip)

    for name, m in stack.named_modules():
        if skipped(name):
            continue
        if isinstance(m, SwitchFFN):
            d = m.router.weight.shape[1]
            router += 2 * d * m.num_experts
            # A token passes through exactly one expert: count experts[0]'s Linears only.
            own += sum(_linear_flops(l) for l in m.experts[0].modules() if isinstance(l, nn.Linear))
            skip.append(name)
        elif isinstance(m, (MultiheadAttention, T5Attention)):
            cross = is_decoder and m.encoder_decoder_attention
            L = src_len if cross else self_len
            inner = m.q_proj.out_features  # heads * d_kv (= d_model in the fairseq layout)
            own += 2 * 2 * L * inner  # q.k scores and attention-weighted values
            for pname in ("q_proj", "out_proj"):
                own += _linear_flops(getattr(m, pname))
            kv = _linear_flops(m.k_proj) + _linear_flops(m.v_proj)
            if cross:
                src_side += kv
            else:
                own += kv
            skip.append(name)
        elif isinstance(m, nn.Linear):
            # Any other Linear (decoder output projection included) acts on every token of the stack.
            own += _linear_flops(m)
    return {"own": own, "src_side": src_side, "router": router}


def count_flops(model: nn.Module, src_len: int = 512, tgt_len: int = 114) -> Dict[str, float]:
    """Forward FLOPs per token, see the module docstring."""
    enc = _stack_flops(model.encoder, self_len=src_len, src_len=src_len, is_decoder=False)
    dec = _stack_flops(model.decoder, self_len=tgt_len / 2, src_len=src_len, is_decoder=True)
    out = {
        "flops_per_src_token": enc["own"] + dec["src_side"],
        "flops_per_tgt_token": dec["own"],
        "router_flops_per_src_token": enc["router"],
        "router_flops_per_tgt_token": dec["router"],
    }
    n = src_len + tgt_len
    out["flops_per_token"] = (src_len * out["flops_per_src_token"] + tgt_len * out["flops_per_tgt_token"]) / n
    out["router_flops_per_token"] = (
        src_len * out["router_flops_per_src_token"] + tgt_len * out["router_flops_per_tgt_token"]
    ) / n
    out["flops_per_token_with_router"] = out["flops_per_token"] + out["router_flops_per_token"]
    out["flops_per_sequence_pair"] = out["flops_per_token_with_router"] * n
    return out


def count_params(model: nn.Module) -> Dict[str, int]:
    total = _param_count(model)
    ffns = list(model.switch_ffns)
    inactive = sum(_param_count(f.experts[0]) * (len(f.experts) - 1) for f in ffns)
    return {
        "total_params": total,
        "active_params": total - inactive,
        "router_params": sum(_param_count(f.router) for f in ffns),
        "expert_params": sum(_param_count(f.experts) for f in ffns),
        "switch_layers": len(ffns),
    }


def model_stats(
    arch: str,
    moe_expert_count: Optional[int] = None,
    vocab_size: int = 32128,
    src_len: int = 512,
    tgt_len: int = 114,
    dense_twin: bool = True,
) -> dict:
    """All counts for one architecture as a dict (see the module docstring for definitions).

    For a Switch model (and `dense_twin`), `dense_*` keys hold the twin's counts and
    `flop_ratio` = Switch FLOPs without router / dense FLOPs (1.0 when FLOP-matched).
    """
    model, args = build_model(arch, moe_expert_count, vocab_size)
    stats = {
        "arch": arch,
        "experts": int(args.moe_expert_count),
        "vocab_size": vocab_size,
        "src_len": src_len,
        "tgt_len": tgt_len,
        "d_model": args.encoder_embed_dim,
        "d_ff": args.encoder_ffn_embed_dim,
        "layers": (args.encoder_layers, args.decoder_layers),
    }
    stats.update(count_params(model))
    stats.update(count_flops(model, src_len, tgt_len))
    del model
    if dense_twin and stats["experts"] > 0:
        twin = model_stats(arch, 0, vocab_size, src_len, tgt_len, dense_twin=False)
        stats["dense_total_params"] = twin["total_params"]
        for k in ("flops_per_src_token", "flops_per_tgt_token", "flops_per_token"):
            stats["dense_" + k] = twin[k]
        stats["flop_ratio"] = stats["flops_per_token"] / twin["flops_per_token"]
        stats["flop_ratio_with_router"] = stats["flops_per_token_with_router"] / twin["flops_per_token"]
    return stats


def _short(n: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3f}{unit}"
    return f"{n:.0f}"


def format_stats(s: dict) -> str:
    lines = [
        f"arch {s['arch']}: d_model={s['d_model']} d_ff={s['d_ff']} layers(enc,dec)={s['layers']} "
        f"experts={s['experts']} switch_layers={s['switch_layers']} vocab={s['vocab_size']} "
        f"src_len={s['src_len']} tgt_len={s['tgt_len']}",
        f"  total params            {s['total_params']:>16,}  ({_short(s['total_params'])})",
        f"  active params / token   {s['active_params']:>16,}  ({_short(s['active_params'])})",
    ]
    if s["switch_layers"]:
        lines += [
            f"    router params         {s['router_params']:>16,}  ({_short(s['router_params'])})",
            f"    expert params         {s['expert_params']:>16,}  ({_short(s['expert_params'])})",
        ]
    lines += [
        "  forward FLOPs / token (excl. router; decoder self-attn L=tgt_len/2; cross-attn K/V on src tokens)",
        f"    per encoder (src) token {s['flops_per_src_token']:>16,.0f}  ({_short(s['flops_per_src_token'])})",
        f"    per decoder (tgt) token {s['flops_per_tgt_token']:>16,.0f}  ({_short(s['flops_per_tgt_token'])})",
        f"    combined (len-weighted) {s['flops_per_token']:>16,.0f}  ({_short(s['flops_per_token'])})",
        f"  router FLOPs / token: src {s['router_flops_per_src_token']:,.0f}  "
        f"tgt {s['router_flops_per_tgt_token']:,.0f}  combined {s['router_flops_per_token']:,.0f}",
        f"  combined incl. router     {s['flops_per_token_with_router']:>16,.0f}  "
        f"({_short(s['flops_per_token_with_router'])})",
        f"  forward FLOPs / (src,tgt) pair incl. router  {_short(s['flops_per_sequence_pair'])}",
    ]
    if "dense_flops_per_token" in s:
        lines += [
            f"  dense twin (--moe-expert-count 0): params {s['dense_total_params']:,} "
            f"({_short(s['dense_total_params'])}), "
            f"FLOPs/token src {s['dense_flops_per_src_token']:,.0f} tgt {s['dense_flops_per_tgt_token']:,.0f} "
            f"combined {s['dense_flops_per_token']:,.0f}",
            f"  FLOP ratio switch/dense: {s['flop_ratio']:.6f} excl. router, "
            f"{s['flop_ratio_with_router']:.6f} incl. router",
        ]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", required=True)
    p.add_argument("--moe-expert-count", type=int, default=None)
    p.add_argument("--vocab-size", type=int, default=32128)
    p.add_argument("--src-len", type=int, default=512)
    p.add_argument("--tgt-len", type=int, default=114)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)  # fairscale's torch.cuda.amp deprecations
    s = model_stats(a.arch, a.moe_expert_count, a.vocab_size, a.src_len, a.tgt_len)
    print(format_stats(s))
    return 0
