"""The layers of T5 v1.0 (Raffel et al. 2019), whose layout the Switch Transformer keeps (Fedus et al.
2021, Sec. 2 and Table 9), in fairseq's T x B x C convention.

How they differ from fairseq's transformer layers:
- attention adds a learned relative position bias (32 log-spaced buckets up to distance 128,
  bidirectional in the encoder, causal in the decoder, none in cross-attention) and does not
  scale scores by 1/sqrt(d_kv): T5 folds that factor into the query's initialisation. heads * d_kv
  may differ from d_model (T5-3B and T5-11B do this);
- layer norms are RMS norms: scale only, no mean subtraction, no bias, eps 1e-6, computed in fp32;
- no biases anywhere; the FFN is ReLU (v1.0) or gated, activation(fc1 x) * fc1_linear(x) (v1.1).

Parameter names follow fairseq's layers (`self_attn.q_proj`, `final_layer_norm`, `fc1`, `fc2`), so
distillation and checkpoint code treat both layouts alike; `scripts/convert_checkpoint.py` maps
them to transformers' T5 and SwitchTransformers names.
"""

import math
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.incremental_decoding_utils import with_incremental_state
from fairseq.modules import FairseqDropout
from torch import Tensor

from .init import scaled_trunc_normal_
from .switch_layer import SwitchFFN


class RMSNorm(nn.Module):
    """T5's layer norm: x / sqrt(mean(x^2) + eps) * weight, the statistics in fp32 whatever the dtype."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        x = x.float() * torch.rsqrt(variance + self.eps)
        return self.weight * x.to(self.weight.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def relative_position_bucket(relative_position: Tensor, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> Tensor:
    """T5's bucket of each (key - query) offset: half the buckets hold exact small distances, the rest
    log-spaced distances up to `max_distance`; bidirectional splits them between the two directions,
    causal maps every future offset to bucket 0 (it is masked anyway)."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # distance 0 takes the exact branch; clamp only keeps log() finite there
    large = max_exact + (
        torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


@with_incremental_state
class T5Attention(nn.Module):
    """Multi-head attention without biases or score scaling, with an optional relative position table.

    Self-attention caches its keys and values step by step for incremental decoding; cross-attention
    (`encoder_decoder_attention`) computes the encoder's once and keeps them.
    """

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, dropout: float,
                 encoder_decoder_attention: bool = False, relative_buckets: int = 0, relative_max_distance: int = 128,
                 bidirectional: bool = True):
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(embed_dim, inner, bias=False)
        self.k_proj = nn.Linear(embed_dim, inner, bias=False)
        self.v_proj = nn.Linear(embed_dim, inner, bias=False)
        self.out_proj = nn.Linear(inner, embed_dim, bias=False)
        self.dropout_module = FairseqDropout(dropout, module_name=self.__class__.__name__)
        self.encoder_decoder_attention = encoder_decoder_attention
        self.bidirectional = bidirectional
        self.relative_max_distance = relative_max_distance
        # Only the first layer of a stack holds the table; the stack shares its bias with every layer.
        self.relative_attention_bias = nn.Embedding(relative_buckets, num_heads) if relative_buckets else None

    def reset_parameters(self, scale: float) -> None:
        # Sec. 2.4 init; the query also carries T5's 1/sqrt(d_kv), as there is no score scaling.
        scaled_trunc_normal_(self.q_proj.weight, scale, fan_in=self.embed_dim * self.head_dim)
        for lin in (self.k_proj, self.v_proj, self.out_proj):
            scaled_trunc_normal_(lin.weight, scale, fan_in=lin.in_features)
        if self.relative_attention_bias is not None:
            scaled_trunc_normal_(self.relative_attention_bias.weight, scale, fan_in=self.embed_dim)

    def compute_bias(self, query_len: int, key_len: int, offset: int = 0) -> Tensor:
        """[1, heads, query_len, key_len] bias for queries at positions offset.. and keys at 0..key_len-1."""
        table = self.relative_attention_bias
        device = table.weight.device
        query = torch.arange(offset, offset + query_len, device=device)[:, None]
        key = torch.arange(key_len, device=device)[None, :]
        bucket = relative_position_bucket(key - query, self.bidirectional, table.num_embeddings,
                                          self.relative_max_distance)
        return table(bucket).permute(2, 0, 1).unsqueeze(0)

    def _heads(self, x: Tensor) -> Tensor:
        """T x B x (H*d_kv) -> B x H x T x d_kv."""
        T, B, _ = x.shape
        return x.view(T, B, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

    def forward(self, query: Tensor, key: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None,
                position_bias: Optional[Tensor] = None, attn_mask: Optional[Tensor] = None,
                incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None) -> Tensor:
        """query: T x B x C; key: S x B x C (cross-attention) or None (self-attention);
        key_padding_mask: B x S, True at padding; position_bias: [1, H, T, S]; attn_mask: T x S additive."""
        T, B, _ = query.shape
        q = self._heads(self.q_proj(query))
        saved = self.get_incremental_state(incremental_state, "attn_state") if incremental_state is not None else None
        if self.encoder_decoder_attention and saved is not None and "prev_key" in saved:
            k, v = saved["prev_key"], saved["prev_value"]
        else:
            src = query if key is None else key
            k, v = self._heads(self.k_proj(src)), self._heads(self.v_proj(src))
            if saved is not None and "prev_key" in saved:  # decoder self-attention, one more step
                k = torch.cat([saved["prev_key"], k], dim=2)
                v = torch.cat([saved["prev_value"], v], dim=2)
        if incremental_state is not None:
            self.set_incremental_state(incremental_state, "attn_state", {"prev_key": k, "prev_value": v})

        scores = torch.matmul(q, k.transpose(2, 3))  # B x H x T x S; no 1/sqrt(d_kv) (T5)
        if position_bias is not None:
            scores = scores + position_bias
        if attn_mask is not None:
            scores = scores + attn_mask
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :].to(torch.bool), float("-inf"))
        probs = F.softmax(scores.float(), dim=-1).type_as(scores)
        out = torch.matmul(self.dropout_module(probs), v)  # B x H x T x d_kv
        out = out.permute(2, 0, 1, 3).reshape(T, B, self.num_heads * self.head_dim)
        return self.out_proj(out)

    def reorder_incremental_state(self, incremental_state: Dict[str, Dict[str, Optional[Tensor]]],
                                  new_order: Tensor) -> Dict[str, Dict[str, Optional[Tensor]]]:
        """Beam search reorders the batch: reorder the cached keys and values with it."""
        saved = self.get_incremental_state(incremental_state, "attn_state")
        if saved is not None:
            saved = {name: t.index_select(0, new_order) for name, t in saved.items() if t is not None}
            incremental_state = self.set_incremental_state(incremental_state, "attn_state", saved)
        return incremental_state


class T5Layer(nn.Module):
    """One T5 block: [self-attention, cross-attention (decoder), FFN], each as x + dropout(f(norm(x))).

    The FFN is dense (`fc1` -> activation -> dropout -> `fc2`, gated optionally) or, when `switch_ffn`
    is given, that Switch FFN under the name `fc1` (as in the fairseq layout's layers).
    """

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, ffn_dim: int, *, is_decoder: bool,
                 first: bool, relative_buckets: int, relative_max_distance: int, dropout: float,
                 attention_dropout: float, activation_dropout: float, activation_fn: Callable, gated: bool,
                 norm_eps: float, switch_ffn: Optional[SwitchFFN] = None):
        super().__init__()
        self.self_attn = T5Attention(
            embed_dim, num_heads, head_dim, attention_dropout,
            relative_buckets=relative_buckets if first else 0, relative_max_distance=relative_max_distance,
            bidirectional=not is_decoder,
        )
        self.self_attn_layer_norm = RMSNorm(embed_dim, norm_eps)
        self.encoder_attn = None
        if is_decoder:
            self.encoder_attn = T5Attention(embed_dim, num_heads, head_dim, attention_dropout,
                                            encoder_decoder_attention=True)
            self.encoder_attn_layer_norm = RMSNorm(embed_dim, norm_eps)
        self.final_layer_norm = RMSNorm(embed_dim, norm_eps)
        self.dropout_module = FairseqDropout(dropout, module_name=self.__class__.__name__)
        if switch_ffn is not None:
            self.fc1 = switch_ffn
        else:
            self.fc1 = nn.Linear(embed_dim, ffn_dim, bias=False)
            self.fc1_linear = nn.Linear(embed_dim, ffn_dim, bias=False) if gated else None
            self.fc2 = nn.Linear(ffn_dim, embed_dim, bias=False)
            self.activation_fn = activation_fn
            self.activation_dropout_module = FairseqDropout(activation_dropout, module_name=self.__class__.__name__)

    @property
    def is_switch(self) -> bool:
        return isinstance(self.fc1, SwitchFFN)

    def reset_parameters(self, scale: float) -> None:
        """The paper's init (Sec. 2.4) for the attention and a dense FFN; a Switch FFN inits its own experts."""
        self.self_attn.reset_parameters(scale)
        if self.encoder_attn is not None:
            self.encoder_attn.reset_parameters(scale)
        if not self.is_switch:
            for lin in (self.fc1, self.fc1_linear, self.fc2):
                if lin is not None:
                    scaled_trunc_normal_(lin.weight, scale, fan_in=lin.in_features)

    def _ffn(self, x: Tensor) -> Tensor:
        if self.is_switch:
            return self.fc1(x)  # the host set its routing context (padding mask, mode)
        h = self.activation_fn(self.fc1(x))
        if self.fc1_linear is not None:
            h = h * self.fc1_linear(x)
        return self.fc2(self.activation_dropout_module(h))

    def forward(self, x: Tensor, self_padding_mask: Optional[Tensor], position_bias: Optional[Tensor],
                attn_mask: Optional[Tensor] = None, encoder_out: Optional[Tensor] = None,
                encoder_padding_mask: Optional[Tensor] = None,
                incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None) -> Tensor:
        h = self.self_attn(self.self_attn_layer_norm(x), key_padding_mask=self_padding_mask,
                           position_bias=position_bias, attn_mask=attn_mask, incremental_state=incremental_state)
        x = x + self.dropout_module(h)
        if self.encoder_attn is not None and encoder_out is not None:
            h = self.encoder_attn(self.encoder_attn_layer_norm(x), encoder_out, key_padding_mask=encoder_padding_mask,
                                  incremental_state=incremental_state)
            x = x + self.dropout_module(h)
        return x + self.dropout_module(self._ffn(self.final_layer_norm(x)))
