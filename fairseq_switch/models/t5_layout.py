"""Encoder and decoder in T5 v1.0's layout (`--layout t5`, the default of the t5_*/switch_* architectures).

The Switch Transformer keeps T5's layout (Fedus et al. 2021, Sec. 2; Raffel et al. 2019, Sec. 2.1):
relative position biases instead of absolute positions, computed once per forward by each stack's
first layer and shared by all of its layers; unscaled embeddings; RMS norms; no biases; a final
norm on each stack followed by dropout. With tied embeddings the decoder output is multiplied by
d_model^-0.5 before the (shared) output projection; `--untied-lm-head` (T5 v1.1) has its own
projection and no such factor.

The decoder starts from <pad>, T5's decoder start symbol: fairseq puts </s> first in every
decoder input (training and generation), and the embedding reads position 0 as <pad>. The
routing mask still comes from the real tokens, so that start position is routed like any token.

fairseq's pieces are kept where they fit: the encoder output dict and its reordering, the
incremental-state protocol of its sequence generator, FairseqDropout and the model class around.
"""

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from fairseq import utils
from fairseq.models import FairseqEncoder, FairseqIncrementalDecoder
from fairseq.models.transformer import TransformerEncoderBase
from fairseq.modules import FairseqDropout, LayerDropModuleList
from torch import Tensor

from ..modules.init import scaled_trunc_normal_
from ..modules.t5_layers import RMSNorm, T5Layer
from .switch_host import SwitchHostMixin
from .switch_options import SwitchLayers


def head_dim(cfg: Any, embed_dim: int, heads: int) -> int:
    if cfg.attention_head_dim:
        return int(cfg.attention_head_dim)
    if embed_dim % heads:
        raise ValueError(f"d_model {embed_dim} is not divisible by {heads} heads: set --attention-head-dim (d_kv)")
    return embed_dim // heads


def embedding_init_variance(cfg: Any) -> float:
    """Variance of the embedding's init: --embed-init-std squared (T5: 1.0), else init_scale (std sqrt(s))."""
    std = getattr(cfg, "embed_init_std", None)
    return cfg.init_scale if std is None else float(std) ** 2


def build_t5_embedding(cfg: Any, dictionary: Any, embed_dim: int) -> nn.Embedding:
    """T5's embedding: no padding row (<pad> is the decoder's start symbol and must learn), std
    --embed-init-std (default sqrt(s))."""
    emb = nn.Embedding(len(dictionary), embed_dim)
    scaled_trunc_normal_(emb.weight, embedding_init_variance(cfg), fan_in=1)
    return emb


class _T5Stack(SwitchHostMixin):
    def _build_layers(self, cfg: Any, switch: SwitchLayers, side: Any, is_decoder: bool) -> None:
        self._init_switch_ids(switch, side.layers)
        d = side.embed_dim
        hd = head_dim(cfg, d, side.attention_heads)
        act = utils.get_activation_fn(activation=cfg.activation_fn)
        layers = []
        for i in range(side.layers):
            ffn = switch.build_ffn(d, side.ffn_embed_dim) if self._next_is_switch() else None
            layers.append(T5Layer(
                d, side.attention_heads, hd, side.ffn_embed_dim, is_decoder=is_decoder, first=i == 0,
                relative_buckets=cfg.relative_attention_num_buckets,
                relative_max_distance=cfg.relative_attention_max_distance, dropout=cfg.dropout,
                attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout, activation_fn=act,
                gated=bool(cfg.ffn_gated), norm_eps=cfg.layer_norm_eps, switch_ffn=ffn,
            ))
            layers[-1].reset_parameters(cfg.init_scale)
        layerdrop = side.layerdrop
        self.layers = LayerDropModuleList(layerdrop, layers) if layerdrop > 0 else nn.ModuleList(layers)
        self.layer_norm = RMSNorm(d, cfg.layer_norm_eps)
        self.dropout_module = FairseqDropout(cfg.dropout, module_name=self.__class__.__name__)


class T5Encoder(_T5Stack, FairseqEncoder):
    def __init__(self, cfg: Any, dictionary: Any, embed_tokens: nn.Embedding, switch: SwitchLayers):
        FairseqEncoder.__init__(self, dictionary)
        self.cfg = cfg
        self.padding_idx = dictionary.pad()
        self.embed_tokens = embed_tokens
        self.max_source_positions = cfg.max_source_positions
        self._build_layers(cfg, switch, cfg.encoder, is_decoder=False)

    def forward(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None, return_all_hiddens: bool = False,
                token_embeddings: Optional[Tensor] = None) -> Dict[str, List[Tensor]]:
        self._set_routing_context(src_tokens)
        padding_mask = src_tokens.eq(self.padding_idx)
        x = self.embed_tokens(src_tokens) if token_embeddings is None else token_embeddings
        x = self.dropout_module(x).transpose(0, 1)  # T x B x C; T5 does not scale embeddings
        bias = self.layers[0].self_attn.compute_bias(x.size(0), x.size(0))
        key_mask = padding_mask if padding_mask.any() else None
        states = []
        for layer in self.layers:
            x = layer(x, key_mask, bias)
            if return_all_hiddens:
                states.append(x)
        x = self.dropout_module(self.layer_norm(x))
        if src_lengths is None:
            src_lengths = (~padding_mask).sum(1, keepdim=True).int()
        return {
            "encoder_out": [x],
            "encoder_padding_mask": [padding_mask],
            "encoder_embedding": [],
            "encoder_states": states,
            "fc_results": [],
            "src_tokens": [],
            "src_lengths": [src_lengths],
        }

    def reorder_encoder_out(self, encoder_out: Dict[str, List[Tensor]], new_order: Tensor) -> Dict[str, List[Tensor]]:
        return TransformerEncoderBase.reorder_encoder_out(self, encoder_out, new_order)

    def max_positions(self) -> int:
        return self.max_source_positions


class T5Decoder(_T5Stack, FairseqIncrementalDecoder):
    def __init__(self, cfg: Any, dictionary: Any, embed_tokens: nn.Embedding, switch: SwitchLayers):
        FairseqIncrementalDecoder.__init__(self, dictionary)
        self.cfg = cfg
        self.padding_idx = dictionary.pad()
        self.embed_tokens = embed_tokens
        self.embed_dim = cfg.decoder.embed_dim
        self.max_target_positions = cfg.max_target_positions
        self._build_layers(cfg, switch, cfg.decoder, is_decoder=True)
        self.untied = bool(cfg.untied_lm_head)
        # tied: the projection's own weight is never used, so it is not allocated
        self.output_projection = nn.Linear(self.embed_dim, len(dictionary), bias=False,
                                           device=None if self.untied else "meta")
        if self.untied:
            scaled_trunc_normal_(self.output_projection.weight, embedding_init_variance(cfg), fan_in=1)
        else:
            self.output_projection.weight = embed_tokens.weight

    def forward(self, prev_output_tokens: Tensor, encoder_out: Optional[Dict[str, List[Tensor]]] = None,
                incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
                features_only: bool = False, full_context_alignment: bool = False,
                alignment_layer: Optional[int] = None, alignment_heads: Optional[int] = None,
                src_lengths: Optional[Any] = None,
                return_all_hiddens: bool = False) -> Tuple[Tensor, Dict[str, Any]]:
        x, extra = self.extract_features(prev_output_tokens, encoder_out, incremental_state)
        if not features_only:
            x = self.output_layer(x)
        return x, extra

    def extract_features(self, prev_output_tokens: Tensor, encoder_out: Optional[Dict[str, List[Tensor]]] = None,
                         incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
                         **kwargs: Any) -> Tuple[Tensor, Dict[str, Any]]:
        offset = prev_output_tokens.size(1) - 1 if incremental_state is not None else 0
        tokens = prev_output_tokens[:, -1:] if incremental_state is not None else prev_output_tokens
        self._set_routing_context(tokens, incremental=incremental_state is not None)
        if offset == 0:  # T5 starts decoding from <pad> where fairseq puts </s>
            tokens = torch.cat([tokens.new_full((tokens.size(0), 1), self.padding_idx), tokens[:, 1:]], dim=1)
        x = self.dropout_module(self.embed_tokens(tokens)).transpose(0, 1)  # T x B x C
        T = x.size(0)
        bias = self.layers[0].self_attn.compute_bias(T, offset + T, offset)
        causal = None
        if incremental_state is None and T > 1:
            causal = torch.triu(x.new_full((T, T), float("-inf")), 1)
        enc, enc_mask = None, None
        if encoder_out is not None and len(encoder_out["encoder_out"]) > 0:
            enc = encoder_out["encoder_out"][0]
            if len(encoder_out["encoder_padding_mask"]) > 0 and encoder_out["encoder_padding_mask"][0].any():
                enc_mask = encoder_out["encoder_padding_mask"][0]
        states = [x]
        for layer in self.layers:
            x = layer(x, None, bias, attn_mask=causal, encoder_out=enc, encoder_padding_mask=enc_mask,
                      incremental_state=incremental_state)
            states.append(x)
        x = self.dropout_module(self.layer_norm(x)).transpose(0, 1)  # B x T x C
        return x, {"attn": [None], "inner_states": states}

    def output_layer(self, features: Tensor) -> Tensor:
        if not self.untied:
            features = features * (self.embed_dim ** -0.5)  # Mesh TensorFlow's rescaling for tied embeddings
        return self.output_projection(features)

    def max_positions(self) -> int:
        return self.max_target_positions
