"""What both sides call things: the model description and the tensor names.

`ModelSpec` describes one model in terms both sides share; it is read from a transformers
config.json (`spec_from_hf_config`) or a fairseq-switch checkpoint's cfg (`spec_from_fairseq_cfg`) and
written as fairseq command-line flags (`fairseq_flags`) or a config.json (`hf_config`). `tensor_pairs`
lists every (fairseq name, transformers name, shape) except the embeddings and the output head, which
need the vocabulary roll (`vocabulary.py`).

Sparse layers follow transformers' SwitchTransformersStack: step = num_layers // num_sparse_layers and
layer i is a Switch layer iff i % step == 1 or step == 1 (Fedus et al. 2021 put experts in every other
FFN: layers 1, 3, 5, ...). The fairseq T5 layout uses the same rule with step = --moe-freq.
"""

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .vocabulary import T5_EOS, T5_PAD
DEFAULT_EXPERT_CAPACITY = 64  # SwitchTransformersConfig's default
LAYER_NORM_EPS = 1e-6  # T5's RMS norm epsilon (--layer-norm-eps)
ACTIVATIONS = {"relu": "relu", "gelu_new": "gelu_accurate"}  # transformers -> fairseq (gelu_new == gelu_accurate)


@dataclass
class ModelSpec:
    d_model: int
    d_kv: int
    d_ff: int
    heads: int
    encoder_layers: int
    decoder_layers: int
    vocab_size: int
    gated: bool  # T5 v1.1 gated FFN: act(wi_0 x) * wi_1 x
    activation: str  # fairseq name: relu | gelu_accurate
    untied: bool  # separate lm_head, decoder output not scaled by d_model**-0.5
    num_buckets: int = 32
    max_distance: int = 128
    dropout: float = 0.1
    layer_norm_eps: float = LAYER_NORM_EPS
    num_experts: int = 0
    moe_freq: int = 1  # meaningful only with experts
    jitter_eps: float = 0.01
    expert_capacity: Optional[int] = None  # transformers' slots per expert per sequence (--moe-capacity-per-sequence)

    @property
    def switch(self) -> bool:
        return self.num_experts > 0

    def sparse_ids(self, side: str) -> List[int]:
        if not self.switch:
            return []
        return t5_layout_sparse_ids(self.layers(side), self.moe_freq)

    def layers(self, side: str) -> int:
        return self.encoder_layers if side == "encoder" else self.decoder_layers

    def as_dict(self) -> dict:
        return asdict(self)


# -- sparse layers ------------------------------------------------------------------------
def hf_sparse_ids(num_layers: int, num_sparse: int) -> List[int]:
    """The Switch layers transformers builds (SwitchTransformersConfig + SwitchTransformersStack), including
    its quirk that num_sparse_*_layers=0 sets step = num_layers, which still makes layer 1 sparse."""
    step = num_layers // num_sparse if num_sparse > 0 else num_layers
    if step <= 0:  # more sparse layers than layers: transformers builds none
        return []
    return [i for i in range(num_layers) if i % step == 1 or step == 1]


def t5_layout_sparse_ids(num_layers: int, freq: int) -> List[int]:
    """The Switch layers of the fairseq-switch T5 layout for --moe-freq `freq` (the model's own rule)."""
    from ..modules.switch_layer import switch_layer_ids

    return switch_layer_ids(num_layers, freq, t5_layout=True)


def moe_freq_for(enc_ids: Sequence[int], dec_ids: Sequence[int], enc_layers: int, dec_layers: int) -> Optional[int]:
    """The --moe-freq giving exactly these Switch layers in both stacks, or None (the model accepts
    --moe-freq up to the smaller stack's depth)."""
    for f in range(1, min(enc_layers, dec_layers) + 1):
        if (t5_layout_sparse_ids(enc_layers, f) == list(enc_ids)
                and t5_layout_sparse_ids(dec_layers, f) == list(dec_ids)):
            return f
    return None


def num_sparse_for(num_layers: int, ids: Sequence[int]) -> Optional[int]:
    """The num_sparse_*_layers for which transformers builds exactly `ids`, or None: the largest such count,
    num_layers // step, as transformers' configs state it (12 layers, step 2: 6, although 5 builds them too)."""
    for n in range(num_layers, 0, -1):
        if hf_sparse_ids(num_layers, n) == list(ids):
            return n
    return None


# -- transformers config ------------------------------------------------------------------
def _req(config: dict, key: str, where: str):
    if key not in config or config[key] is None:
        raise ValueError(f"{where}: config.json lacks {key!r}")
    return config[key]


def spec_from_hf_config(config: dict, where: str = "config.json") -> ModelSpec:
    """Read a T5 / SwitchTransformers config.json; refuse what the fairseq T5 layout cannot express."""
    mt = config.get("model_type")
    for key, want in (("pad_token_id", T5_PAD), ("eos_token_id", T5_EOS)):
        if config.get(key, want) != want:
            raise ValueError(f"{where}: {key} {config.get(key)!r} is not supported (T5 uses {want}; the vocabulary "
                             f"mapping relies on it)")
    if config.get("decoder_start_token_id", T5_PAD) not in (T5_PAD, None):
        raise ValueError(f"{where}: decoder_start_token_id {config['decoder_start_token_id']!r} is not supported: "
                         f"the fairseq T5 layout starts decoding from T5's pad (0)")
    d_model = int(_req(config, "d_model", where))
    num_layers = int(_req(config, "num_layers", where))
    dec_layers = config.get("num_decoder_layers")
    dec_layers = num_layers if dec_layers is None else int(dec_layers)
    tie = config.get("tie_word_embeddings", True)
    # transformers >= 5 keeps T5 tied and says "not T5 v1.0" with scale_decoder_outputs=False instead
    untied = tie is False or config.get("scale_decoder_outputs", True) is False
    common = dict(
        d_model=d_model, d_kv=int(config.get("d_kv", d_model // int(_req(config, "num_heads", where)))),
        d_ff=int(_req(config, "d_ff", where)), heads=int(_req(config, "num_heads", where)),
        encoder_layers=num_layers, decoder_layers=dec_layers, vocab_size=int(_req(config, "vocab_size", where)),
        untied=untied, num_buckets=int(config.get("relative_attention_num_buckets", 32)),
        max_distance=int(config.get("relative_attention_max_distance", 128)),
        dropout=float(config.get("dropout_rate", 0.1)),
        layer_norm_eps=float(config.get("layer_norm_epsilon", LAYER_NORM_EPS)),
    )
    if mt == "t5":
        ffp = config.get("feed_forward_proj", "relu")
        if ffp == "relu":
            return ModelSpec(gated=False, activation="relu", **common)
        if ffp == "gated-gelu":  # T5 v1.1: transformers runs gelu_new, i.e. fairseq's gelu_accurate
            return ModelSpec(gated=True, activation="gelu_accurate", **common)
        raise ValueError(f"{where}: feed_forward_proj {ffp!r} is not supported; T5 models with 'relu' (T5 v1.0) "
                         f"or 'gated-gelu' (T5 v1.1) convert")
    # switch_transformers
    act = config.get("dense_act_fn", "relu")
    if act not in ACTIVATIONS:
        raise ValueError(f"{where}: dense_act_fn {act!r} is not supported; 'relu' or 'gelu_new' convert")
    if config.get("router_bias", False):
        raise ValueError(f"{where}: router_bias true is not supported (the fairseq-switch router has no bias)")
    experts = int(_req(config, "num_experts", where))
    enc_ids = hf_sparse_ids(num_layers, int(config.get("num_sparse_encoder_layers", 3)))
    dec_ids = hf_sparse_ids(dec_layers, int(config.get("num_sparse_decoder_layers", 3)))
    if not enc_ids and not dec_ids:
        return ModelSpec(gated=False, activation=ACTIVATIONS[act], **common)
    freq = moe_freq_for(enc_ids, dec_ids, num_layers, dec_layers)
    if freq is None or experts < 1:
        raise ValueError(
            f"{where}: transformers puts Switch layers at encoder layers {enc_ids} and decoder layers {dec_ids} "
            f"(num_sparse_encoder_layers {config.get('num_sparse_encoder_layers')}, num_sparse_decoder_layers "
            f"{config.get('num_sparse_decoder_layers')}); the fairseq T5 layout needs the same --moe-freq step in "
            f"both stacks (layer i sparse iff i % step == 1 % step), and no step gives these layers")
    return ModelSpec(gated=False, activation=ACTIVATIONS[act], num_experts=experts, moe_freq=freq,
                     jitter_eps=float(config.get("router_jitter_noise", 0.01)),
                     expert_capacity=int(config.get("expert_capacity", DEFAULT_EXPERT_CAPACITY)), **common)


def hf_config(spec: ModelSpec, expert_capacity: Optional[int] = None, source: Optional[dict] = None) -> dict:
    """config.json for transformers: T5ForConditionalGeneration without experts, else
    SwitchTransformersForConditionalGeneration. `source`, the config.json the model was converted from, is
    written back as read (loss coefficients, sparse-layer counts, ...), each field that still describes
    this model: one whose value reads back as the same model (`spec_from_hf_config`)."""
    config = _model_config(spec, expert_capacity)
    if not source or source.get("model_type") != config["model_type"]:  # e.g. a T5 upcycled to Switch
        return config

    def same_model(c: dict) -> bool:
        try:
            return _model_config(spec_from_hf_config(c)) == config
        except (ValueError, TypeError):
            return False

    if same_model(source):  # a conversion's config, unchanged by training
        return dict(source)
    for k, v in source.items():  # changed (e.g. --dropout): keep what the model agrees with
        if same_model({**config, k: v}):
            config = {**config, k: v}
    return config


def _model_config(spec: ModelSpec, expert_capacity: Optional[int] = None) -> dict:
    """The config.json fields that describe `spec` (the canonical ones where several would do)."""
    act = {v: k for k, v in ACTIVATIONS.items()}
    if spec.activation not in act:
        raise ValueError(f"activation {spec.activation!r} has no transformers counterpart (relu or gelu_accurate "
                         f"convert)")
    common = {
        "vocab_size": spec.vocab_size, "d_model": spec.d_model, "d_kv": spec.d_kv, "d_ff": spec.d_ff,
        "num_layers": spec.encoder_layers, "num_decoder_layers": spec.decoder_layers, "num_heads": spec.heads,
        "relative_attention_num_buckets": spec.num_buckets, "relative_attention_max_distance": spec.max_distance,
        "dropout_rate": spec.dropout, "layer_norm_epsilon": spec.layer_norm_eps, "initializer_factor": 1.0,
        "is_encoder_decoder": True, "use_cache": True, "pad_token_id": T5_PAD, "eos_token_id": T5_EOS,
        "decoder_start_token_id": T5_PAD, "tie_word_embeddings": not spec.untied,
    }
    if not spec.switch:
        if spec.gated and spec.activation != "gelu_accurate":
            raise ValueError("a gated FFN converts to T5 only with gelu_accurate (T5 v1.1's gated-gelu)")
        if not spec.gated and spec.activation != "relu":
            raise ValueError("an ungated FFN converts to T5 only with relu (T5 v1.0)")
        return {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
                "feed_forward_proj": "gated-gelu" if spec.gated else "relu", **common}
    if spec.gated:
        raise ValueError("transformers' SwitchTransformers has no gated FFN: a Switch model with --ffn-gated "
                         "cannot be converted")
    enc = num_sparse_for(spec.encoder_layers, spec.sparse_ids("encoder"))
    dec = num_sparse_for(spec.decoder_layers, spec.sparse_ids("decoder"))
    if enc is None or dec is None:
        raise ValueError(
            f"--moe-freq {spec.moe_freq} puts Switch layers at encoder layers {spec.sparse_ids('encoder')} and "
            f"decoder layers {spec.sparse_ids('decoder')}, which no num_sparse_encoder_layers / "
            f"num_sparse_decoder_layers of transformers' SwitchTransformers reproduces")
    capacity = next(c for c in (expert_capacity, spec.expert_capacity, DEFAULT_EXPERT_CAPACITY) if c is not None)
    return {"architectures": ["SwitchTransformersForConditionalGeneration"], "model_type": "switch_transformers",
            "num_experts": spec.num_experts, "num_sparse_encoder_layers": enc, "num_sparse_decoder_layers": dec,
            # what SwitchTransformersConfig derives from them and saves
            "encoder_sparse_step": spec.encoder_layers // enc, "decoder_sparse_step": spec.decoder_layers // dec,
            "expert_capacity": int(capacity), "router_bias": False, "router_jitter_noise": spec.jitter_eps,
            "router_dtype": "float32", "dense_act_fn": act[spec.activation], **common}


# -- fairseq side -------------------------------------------------------------------------
def fairseq_flags(spec: ModelSpec) -> List[str]:
    """fairseq-train flags that build this model (arch switch_transformer, T5 layout)."""
    flags = ["--layout", "t5", "--share-all-embeddings", "--activation-fn", spec.activation,
             "--attention-head-dim", str(spec.d_kv),
             "--relative-attention-num-buckets", str(spec.num_buckets),
             "--relative-attention-max-distance", str(spec.max_distance),
             "--layer-norm-eps", repr(spec.layer_norm_eps)]
    for side in ("encoder", "decoder"):
        flags += [f"--{side}-embed-dim", str(spec.d_model), f"--{side}-ffn-embed-dim", str(spec.d_ff),
                  f"--{side}-attention-heads", str(spec.heads), f"--{side}-layers", str(spec.layers(side))]
    for name in ("dropout", "attention-dropout", "activation-dropout"):
        flags += [f"--{name}", repr(spec.dropout)]
    if spec.gated:
        flags.append("--ffn-gated")
    if spec.untied:
        flags.append("--untied-lm-head")
    flags += ["--moe-expert-count", str(spec.num_experts)]
    if spec.switch:
        flags += ["--moe-freq", str(spec.moe_freq), "--moe-jitter-eps", repr(spec.jitter_eps)]
        if spec.expert_capacity:
            flags += ["--moe-capacity-per-sequence", str(spec.expert_capacity)]
    return flags


def _get(model_cfg: Any, name: str, default: Any = None) -> Any:
    v = model_cfg.get(name, default) if isinstance(model_cfg, dict) else getattr(model_cfg, name, default)
    return default if v is None else v


def spec_from_fairseq_cfg(model_cfg: Any, where: str) -> ModelSpec:
    """The model a fairseq-switch checkpoint's cfg['model'] (Namespace or dict) describes."""
    layout = _get(model_cfg, "layout", "fairseq")
    if layout != "t5":
        raise ValueError(f"{where} is a fairseq-layout model (--layout {layout}): only --layout t5 checkpoints have "
                         f"a transformers counterpart (T5 / SwitchTransformers)")
    d = int(_get(model_cfg, "encoder_embed_dim"))
    heads = int(_get(model_cfg, "encoder_attention_heads"))
    for a, b in (("encoder_embed_dim", "decoder_embed_dim"), ("encoder_ffn_embed_dim", "decoder_ffn_embed_dim"),
                 ("encoder_attention_heads", "decoder_attention_heads")):
        if _get(model_cfg, a) != _get(model_cfg, b):
            raise ValueError(f"{where}: --{a.replace('_', '-')} {_get(model_cfg, a)} differs from "
                             f"--{b.replace('_', '-')} {_get(model_cfg, b)}; transformers' T5 uses one value for both")
    act = str(_get(model_cfg, "activation_fn", "relu"))
    return ModelSpec(
        d_model=d, d_kv=int(_get(model_cfg, "attention_head_dim", 0) or d // heads),
        d_ff=int(_get(model_cfg, "encoder_ffn_embed_dim")), heads=heads,
        encoder_layers=int(_get(model_cfg, "encoder_layers")), decoder_layers=int(_get(model_cfg, "decoder_layers")),
        vocab_size=-1, gated=bool(_get(model_cfg, "ffn_gated", False)), activation=act,
        untied=bool(_get(model_cfg, "untied_lm_head", False)),
        num_buckets=int(_get(model_cfg, "relative_attention_num_buckets", 32)),
        max_distance=int(_get(model_cfg, "relative_attention_max_distance", 128)),
        dropout=float(_get(model_cfg, "dropout", 0.1)),
        layer_norm_eps=float(_get(model_cfg, "layer_norm_eps", LAYER_NORM_EPS)),
        num_experts=int(_get(model_cfg, "moe_expert_count", 0)), moe_freq=int(_get(model_cfg, "moe_freq", 1)),
        jitter_eps=float(_get(model_cfg, "moe_jitter_eps", 0.01)),
        expert_capacity=_get(model_cfg, "moe_capacity_per_sequence") or None,
    )


# -- tensor names -------------------------------------------------------------------------
EMBED_FS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
OUTPUT_FS = "decoder.output_projection.weight"
EMBED_HF = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
LM_HEAD_HF = "lm_head.weight"
TRANSFORMERS_CONFIG = "transformers_config"  # extra_state key: the source config.json, written back
IGNORED_HF = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)  # old files


@dataclass(frozen=True)
class TensorPair:
    fairseq: str
    hf: str
    shape: Tuple[int, ...]
    expert: Optional[int] = None  # global expert id, for expert-sharded files


def _attn(fs: str, hf: str, spec: ModelSpec) -> List[TensorPair]:
    inner, d = spec.heads * spec.d_kv, spec.d_model
    return [TensorPair(f"{fs}.{a}_proj.weight", f"{hf}.{b}.weight", (inner, d)) for a, b in
            (("q", "q"), ("k", "k"), ("v", "v"))] + [TensorPair(f"{fs}.out_proj.weight", f"{hf}.o.weight", (d, inner))]


def _ffn(spec: ModelSpec, fs: str, hf: str, sparse: bool) -> List[TensorPair]:
    """fs: '{side}.layers.{i}', hf: '{side}.block.{i}.layer.{k}'."""
    d, f = spec.d_model, spec.d_ff
    if sparse:
        out = [TensorPair(f"{fs}.fc1.router.weight", f"{hf}.mlp.router.classifier.weight", (spec.num_experts, d))]
        for e in range(spec.num_experts):
            out += [TensorPair(f"{fs}.fc1.experts.{e}.fc1.weight", f"{hf}.mlp.experts.expert_{e}.wi.weight", (f, d), e),
                    TensorPair(f"{fs}.fc1.experts.{e}.fc2.weight", f"{hf}.mlp.experts.expert_{e}.wo.weight", (d, f), e)]
        return out
    dense = f"{hf}.mlp" if spec.switch else f"{hf}.DenseReluDense"  # SwitchTransformers vs T5 module names
    if spec.gated:
        return [TensorPair(f"{fs}.fc1.weight", f"{dense}.wi_0.weight", (f, d)),
                TensorPair(f"{fs}.fc1_linear.weight", f"{dense}.wi_1.weight", (f, d)),
                TensorPair(f"{fs}.fc2.weight", f"{dense}.wo.weight", (d, f))]
    return [TensorPair(f"{fs}.fc1.weight", f"{dense}.wi.weight", (f, d)),
            TensorPair(f"{fs}.fc2.weight", f"{dense}.wo.weight", (d, f))]


def tensor_pairs(spec: ModelSpec) -> List[TensorPair]:
    """Every tensor but the embeddings and the output head, encoder first, layer by layer."""
    d = spec.d_model
    out: List[TensorPair] = []
    for side in ("encoder", "decoder"):
        sparse = set(spec.sparse_ids(side))
        for i in range(spec.layers(side)):
            fs, hf = f"{side}.layers.{i}", f"{side}.block.{i}"
            out += _attn(f"{fs}.self_attn", f"{hf}.layer.0.SelfAttention", spec)
            if i == 0:  # T5 keeps one relative position bias per stack, in its first layer
                out.append(TensorPair(f"{fs}.self_attn.relative_attention_bias.weight",
                                      f"{hf}.layer.0.SelfAttention.relative_attention_bias.weight",
                                      (spec.num_buckets, spec.heads)))
            out.append(TensorPair(f"{fs}.self_attn_layer_norm.weight", f"{hf}.layer.0.layer_norm.weight", (d,)))
            k = 1
            if side == "decoder":
                out += _attn(f"{fs}.encoder_attn", f"{hf}.layer.1.EncDecAttention", spec)
                out.append(TensorPair(f"{fs}.encoder_attn_layer_norm.weight", f"{hf}.layer.1.layer_norm.weight", (d,)))
                k = 2
            out += _ffn(spec, fs, f"{hf}.layer.{k}", i in sparse)
            out.append(TensorPair(f"{fs}.final_layer_norm.weight", f"{hf}.layer.{k}.layer_norm.weight", (d,)))
        out.append(TensorPair(f"{side}.layer_norm.weight", f"{side}.final_layer_norm.weight", (d,)))
    return out


def switch_layer_names(spec: ModelSpec) -> List[str]:
    """Module names of the Switch FFNs, in the order the model lists them (checkpoints.switch_layers_of)."""
    return [f"{side}.layers.{i}.fc1" for side in ("encoder", "decoder") for i in spec.sparse_ids(side)]


def expected_shapes(spec: ModelSpec) -> Dict[str, Tuple[int, ...]]:
    return {p.hf: p.shape for p in tensor_pairs(spec)}
