"""Per-sequence expert capacity (transformers' SwitchTransformers `expert_capacity`) and one-line loading.

A converted Switch model keeps, outside training, transformers' fixed number of slots per expert in each
sequence, so it scores and generates as transformers does, drops included. Tiny random models: the
SwitchTransformers of test_convert (4 experts, sparse step 2) with expert_capacity 64 (nothing dropped on
these lengths) and 2 (transformers drops many tokens).
"""

import dataclasses
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from fairseq_switch.convert import transformers_to_fairseq
from fairseq_switch.modules.routing import RouterConfig, RoutingMode, route_plan
from fairseq_switch.modules.switch_layer import SwitchFFN
from fairseq_switch.convert.compare import fairseq_logits, t5_batch
from tests.test_convert import EXTRA_IDS, _make, _n_pieces, _quiet, load_fairseq, spm_model  # noqa: F401

LENGTHS = (17, 40, 64)  # the padded batch of the issue


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """This module runs on one torch thread (see conftest)."""


@pytest.fixture(scope="module")
def switch(spm_model, tmp_path_factory):  # noqa: F811
    """expert_capacity -> (transformers model, its folder, the conversion folder, vocab size)."""
    V = _n_pieces(spm_model) + EXTRA_IDS + 5
    out = {}
    for capacity in (64, 2):
        m = _make("switch", V, expert_capacity=capacity).eval()
        d = tmp_path_factory.mktemp(f"hf_cap{capacity}")
        m.save_pretrained(d)
        shutil.copy(spm_model, d / "spiece.model")
        (d / "tokenizer_config.json").write_text(json.dumps({"extra_ids": EXTRA_IDS}))
        conv = tmp_path_factory.mktemp(f"fs_cap{capacity}")
        transformers_to_fairseq(str(d), str(conv), log=_quiet)
        out[capacity] = (m, d, conv, V)
    return out


# -- the rule --------------------------------------------------------------------------------
def test_route_plan_uses_the_sequence_capacity_outside_training_only():
    cfg = RouterConfig(4, capacity_per_sequence=3)
    assert route_plan(cfg, RoutingMode.EVAL).per_sequence == 3
    assert route_plan(cfg, RoutingMode.GENERATE).per_sequence == 3
    assert route_plan(cfg, RoutingMode.TRAIN) == route_plan(RouterConfig(4), RoutingMode.TRAIN)  # the factor
    assert route_plan(cfg, RoutingMode.DUMMY).per_sequence is None
    no_drop = RouterConfig(4, capacity_per_sequence=3, eval_capacity_factor=None)  # --moe-eval-no-drop wins
    plan = route_plan(no_drop, RoutingMode.EVAL)
    assert plan.capacity_factor is None and plan.per_sequence is None
    with pytest.raises(ValueError, match=r"--moe-capacity-per-sequence must be >= 1"):
        RouterConfig(4, capacity_per_sequence=-1)


@pytest.mark.parametrize("dispatch", ["index", "einsum"])
def test_switch_ffn_keeps_and_drops_what_transformers_sparse_mlp_does(dispatch):
    """One layer against transformers' SwitchTransformersSparseMLP with the same weights: right-padded
    sequences (transformers routes its padding, after every real token); fairseq's layer sees T x B."""
    from transformers import SwitchTransformersConfig
    from transformers.models.switch_transformers.modeling_switch_transformers import SwitchTransformersSparseMLP

    torch.manual_seed(0)
    ref = SwitchTransformersSparseMLP(SwitchTransformersConfig(
        d_model=16, d_ff=32, num_experts=4, expert_capacity=2, router_jitter_noise=0.0)).eval()
    layer = SwitchFFN(16, 32, RouterConfig(4, capacity_per_sequence=2, jitter_eps=0.0, dispatch=dispatch),
                      activation_fn=F.relu, bias=False).eval()
    layer.router.weight.data.copy_(ref.router.classifier.weight)
    for e, expert in enumerate(layer.experts):
        expert.fc1.weight.data.copy_(ref.experts[f"expert_{e}"].wi.weight)
        expert.fc2.weight.data.copy_(ref.experts[f"expert_{e}"].wo.weight)
    x = torch.randn(3, 11, 16)  # B x T x d
    pad = torch.zeros(3, 11, dtype=torch.bool)
    pad[1, 7:] = pad[2, 4:] = True
    with torch.no_grad():
        want = ref(x)
        got = layer(x.transpose(0, 1), pad.t()).transpose(0, 1)
    torch.testing.assert_close(got[~pad], want[~pad], atol=1e-6, rtol=0)
    r = layer.last_routing
    assert int(r.stats.num_dropped) >= 3  # transformers dropped these tokens too: their outputs are 0 on both sides
    assert int((got[~pad].abs().sum(-1) == 0).sum()) == int(r.stats.num_dropped)


def _per_sequence_layer(seed=0):
    torch.manual_seed(seed)
    return SwitchFFN(8, 16, RouterConfig(4, capacity_per_sequence=2, jitter_eps=0.0), activation_fn=F.relu).eval()


def _sequences(rank):
    """T x B x d with left padding, T and B differing per rank (so do the ranks' buffers: 2 x B slots)."""
    g = torch.Generator().manual_seed(7 + rank)
    x = torch.randn(6 + 3 * rank, 3 + rank, 8, generator=g)
    pad = torch.zeros(x.shape[:2], dtype=torch.bool)
    pad[:2, 1] = pad[:4, 2] = True
    return x, pad


def _ep_worker(rank, port, out_dir):
    import torch.distributed as dist

    full = _per_sequence_layer()  # before the group exists: all 4 experts
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        layer = _per_sequence_layer()
        assert layer.num_local_experts == 2
        layer.router.load_state_dict(full.router.state_dict())
        for j, expert in enumerate(layer.experts):
            expert.load_state_dict(full.experts[2 * rank + j].state_dict())
        with torch.no_grad():
            y = layer(*_sequences(rank))
        torch.save({"y": y, "dropped": int(layer.last_routing.stats.num_dropped)}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_per_sequence_capacity_under_expert_parallelism_equals_one_process(tmp_path):
    """2 gloo ranks with 2 of 4 experts each: the exchanged buffers hold the per-sequence keeps."""
    import torch.multiprocessing as mp

    from fairseq_switch.lab.bench.common import free_port

    mp.start_processes(_ep_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    full = _per_sequence_layer()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        with torch.no_grad():
            want = full(*_sequences(rank))
        torch.testing.assert_close(got["y"], want, atol=1e-6, rtol=1e-5)
        assert got["dropped"] == int(full.last_routing.stats.num_dropped) > 0


# -- converted models ------------------------------------------------------------------------
@pytest.mark.parametrize("capacity", [64, 2])
def test_default_flags_score_a_padded_batch_as_transformers(switch, capacity):
    """Lengths 17/40/64 with the conversion's own flags: equal logits; with capacity 2 transformers drops
    tokens and the converted model drops the same ones (the per-batch factor would not)."""
    m, _, conv, V = switch[capacity]
    cfg = torch.load(conv / "checkpoint.pt", weights_only=False)["cfg"]["model"]
    assert cfg.moe_capacity_per_sequence == capacity
    src, mask, dec = t5_batch(LENGTHS, 20, V)
    with torch.no_grad():
        want = m(input_ids=src, attention_mask=mask, decoder_input_ids=dec).logits
    model, _ = load_fairseq(conv / "checkpoint.pt")
    got, dropped = fairseq_logits(model, src, mask, dec, V)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    if capacity == 64:
        assert dropped == 0
        return
    assert dropped > 50
    per_batch, _ = load_fairseq(conv / "checkpoint.pt", moe_capacity_per_sequence=None)
    other, dropped_per_batch = fairseq_logits(per_batch, src, mask, dec, V)
    assert dropped_per_batch != dropped and (other - want).abs().max() > 1e-2


def test_from_pretrained_samples_the_text_transformers_generates(switch):
    """One line on the conversion folder alone; capacity 2, so the encoder drops tokens on both sides."""
    import sentencepiece as spm

    from fairseq_switch.models.switch_transformer import SwitchTransformerModel

    m, hf, conv, V = switch[2]
    hub = SwitchTransformerModel.from_pretrained(str(conv))
    sp = spm.SentencePieceProcessor(model_file=str(hf / "spiece.model"))
    # inputs on which the random model writes SentencePiece pieces (it often picks <pad>, which fairseq never does)
    sentences = ["the whale sailed over deep water", "men over deep the water sea deep boats sailed", "deep ship with"]
    got = hub.sample(sentences, beam=1, max_len_b=12)
    assert sum(int(f.last_routing.stats.num_dropped) for f in hub.models[0].encoder.switch_ffns) > 0
    for text, out in zip(sentences, got):
        ids = torch.tensor([sp.encode(text) + [1]])
        gen = m.generate(input_ids=ids, max_new_tokens=12, do_sample=False, num_beams=1)[0, 1:].tolist()
        assert all(2 < i < sp.get_piece_size() for i in gen if i != 1), gen  # pieces only: text decodes alike
        assert out == sp.decode([i for i in gen if i != 1]), (text, gen)
    per_batch = SwitchTransformerModel.from_pretrained(str(conv), moe_capacity_per_sequence=None)
    assert per_batch.sample(sentences, beam=1, max_len_b=12) != got  # the encoder's drops matter
    with pytest.raises(FileNotFoundError, match=r"spm.model does not exist: pass sentencepiece_model="):
        SwitchTransformerModel.from_pretrained(str(hf), checkpoint_file="checkpoint.pt")


def test_config_without_the_source_record_reads_back_as_switch_base_8s():
    """A checkpoint that lost its conversion record (fine-tuned with --finetune-from-model) still writes
    switch-base-8's config: 6 sparse layers of 12 (step 2; 5 would build the same layers), capacity 64."""
    from transformers import SwitchTransformersConfig

    from fairseq_switch.convert.mapping import hf_config, spec_from_fairseq_cfg, spec_from_hf_config
    from fairseq_switch.convert.to_fairseq import fairseq_cfg

    base8 = SwitchTransformersConfig(d_model=768, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12,
                                     d_kv=64, num_experts=8, num_sparse_encoder_layers=6,
                                     num_sparse_decoder_layers=6, expert_capacity=64, vocab_size=32128,
                                     architectures=["SwitchTransformersForConditionalGeneration"]).to_dict()
    spec = spec_from_fairseq_cfg(fairseq_cfg(spec_from_hf_config(base8), "unused", [])["model"], "cfg")
    spec.vocab_size = 32128
    written = SwitchTransformersConfig(**hf_config(spec)).to_dict()
    assert {k: written.get(k) for k in base8 if written.get(k) != base8[k]} == {}
    # a model changed since (here its dropout) keeps the source's other fields, e.g. the loss coefficients
    source = {**hf_config(spec), "router_aux_loss_coef": 0.5, "dropout_rate": 0.1}
    changed = hf_config(dataclasses.replace(spec, dropout=0.3), source=source)
    assert [changed[k] for k in ("dropout_rate", "router_aux_loss_coef", "num_sparse_encoder_layers")] == [0.3, 0.5, 6]
    assert hf_config(spec, source={"model_type": "t5", "n_positions": 512}) == hf_config(spec)  # another model's
