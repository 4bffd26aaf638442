"""The T5 layout (`--layout t5`): its pieces against transformers' T5, and fairseq's decoding protocol.

Whole converted models are compared with transformers in tests/test_convert.py.
"""

import argparse
import copy

import pytest
import torch

from fairseq_switch.models.switch_transformer import SwitchTransformerModel
from fairseq_switch.models.t5_layout import T5Decoder, T5Encoder
from fairseq_switch.modules.t5_layers import RMSNorm, relative_position_bucket
from tests.helpers import build, random_batch


def test_relative_position_buckets_equal_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention as HFT5Attention

    offsets = torch.arange(-300, 301)[None, :]
    for bidirectional in (True, False):
        for buckets, dist in ((32, 128), (8, 20)):
            ours = relative_position_bucket(offsets, bidirectional, buckets, dist)
            theirs = HFT5Attention._relative_position_bucket(offsets, bidirectional, buckets, dist)
            assert torch.equal(ours, theirs), (bidirectional, buckets)
    # hand-checked values: exact up to 8 (bidirectional: 16 buckets a side), log-spaced after, capped
    b = relative_position_bucket(torch.tensor([0, 1, 7, 8, 200, -1, -200]), True, 32, 128)
    assert b.tolist() == [0, 17, 23, 24, 31, 1, 15]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_equals_transformers(dtype):
    from transformers.models.t5.modeling_t5 import T5LayerNorm

    torch.manual_seed(0)
    ours, theirs = RMSNorm(16), T5LayerNorm(16)
    with torch.no_grad():
        ours.weight.normal_()
        theirs.weight.copy_(ours.weight)
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    x = (torch.randn(3, 5, 16) * 40).to(dtype)  # large values: the statistics must be fp32
    out = ours(x)
    assert out.dtype == dtype
    assert torch.equal(out, theirs(x))
    # scale only: no mean subtraction, no bias
    torch.testing.assert_close(RMSNorm(4)(torch.tensor([[1.0, 1.0, 1.0, 1.0]])), torch.ones(1, 4))


def test_t5_layout_has_no_biases_and_one_bias_table_per_stack():
    _, _, model = build("switch_tiny", ["--encoder-layers", "3", "--decoder-layers", "3"])
    assert isinstance(model.encoder, T5Encoder) and isinstance(model.decoder, T5Decoder)
    names = [n for n, _ in model.named_parameters()]
    assert all(n.endswith(".weight") for n in names), [n for n in names if not n.endswith(".weight")]
    tables = [n for n in names if "relative_attention_bias" in n]
    assert tables == ["encoder.layers.0.self_attn.relative_attention_bias.weight",
                      "decoder.layers.0.self_attn.relative_attention_bias.weight"]
    assert model.encoder.layers[0].self_attn.relative_attention_bias.weight.shape == (32, 4)
    # transformers' sparse-layer rule: step 2 of 3 layers is layer 1 only
    assert [layer.is_switch for layer in model.encoder.layers] == [False, True, False]


def test_sparse_layers_follow_transformers_rule():
    _, _, model = build("switch_tiny", ["--encoder-layers", "6", "--decoder-layers", "6", "--moe-freq", "3"])
    assert [i for i, layer in enumerate(model.decoder.layers) if layer.is_switch] == [1, 4]
    _, _, old = build("switch_tiny", ["--encoder-layers", "6", "--decoder-layers", "6", "--moe-freq", "3",
                                      "--layout", "fairseq"])
    assert [i for i, layer in enumerate(old.decoder.layers) if hasattr(layer.fc1, "router")] == [2, 5]


def test_paper_initialisation_scale():
    """Sec. 2.4: std sqrt(s / fan_in), s = 0.1; the query also carries 1/sqrt(d_kv)."""
    torch.manual_seed(0)
    _, _, model = build("t5_tiny", ["--encoder-layers", "1", "--decoder-layers", "1"])
    attn = model.encoder.layers[0].self_attn
    d, dk, ff = 128, 32, 512
    assert attn.q_proj.weight.std().item() == pytest.approx((0.1 / (d * dk)) ** 0.5, rel=0.05)
    assert attn.k_proj.weight.std().item() == pytest.approx((0.1 / d) ** 0.5, rel=0.05)
    assert model.encoder.layers[0].fc2.weight.std().item() == pytest.approx((0.1 / ff) ** 0.5, rel=0.05)
    _, _, switch = build("switch_tiny", ["--init-scale", "1.0"])
    expert = switch.switch_ffns[0].experts[3]
    assert expert.fc1.weight.std().item() == pytest.approx((1.0 / d) ** 0.5, rel=0.05)


def test_left_padding_does_not_move_relative_positions():
    """Relative positions make the encoder indifferent to fairseq's left padding of the source."""
    args, task, model = build("switch_tiny", ["--dropout", "0", "--moe-eval-no-drop"])
    model.eval()
    d = task.source_dictionary
    src = torch.randint(d.nspecial, len(d), (1, 6))
    padded = torch.cat([torch.full((1, 3), d.pad()), src], 1)
    with torch.no_grad():
        a = model.encoder(src, torch.tensor([6]))["encoder_out"][0][:, 0]
        b = model.encoder(padded, torch.tensor([6]))["encoder_out"][0][3:, 0]
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_decoder_starts_from_pad_whatever_fairseq_puts_first():
    args, task, model = build("t5_tiny", ["--dropout", "0"])
    model.eval()
    d = task.target_dictionary
    batch = random_batch(d)
    net = dict(batch["net_input"])
    out, _ = model(**net)
    net["prev_output_tokens"] = net["prev_output_tokens"].clone()
    net["prev_output_tokens"][:, 0] = d.unk()
    assert torch.equal(model(**net)[0], out)
    with torch.no_grad():
        model.decoder.embed_tokens.weight[d.pad()] += 1.0  # the start symbol's row is <pad>'s
    assert not torch.allclose(model(**net)[0][:, 0], out[:, 0])


@pytest.mark.parametrize("arch", ["switch_tiny", "t5_tiny"])
def test_beam_search_scores_equal_full_forward(arch):
    """Beam search reorders the cached keys and values; every hypothesis' positional scores must equal
    a full teacher-forced forward of that hypothesis."""
    from fairseq.sequence_generator import SequenceGenerator

    args, task, model = build(arch, ["--dropout", "0", "--untied-lm-head"])
    model.eval()
    d = task.target_dictionary
    batch = random_batch(d, bsz=2, src_len=6)
    gen = SequenceGenerator([model], d, beam_size=3, max_len_b=6, min_len=2)
    with torch.no_grad():
        hypos = gen.generate([model], {"net_input": batch["net_input"]})
        for i, beams in enumerate(hypos):
            for h in beams:
                toks = h["tokens"]
                prev = torch.cat([toks.new_tensor([d.eos()]), toks[:-1]])[None]
                net = batch["net_input"]
                logits, _ = model(net["src_tokens"][i:i + 1], net["src_lengths"][i:i + 1], prev)
                lprobs = torch.log_softmax(logits.float(), -1)[0]
                expect = lprobs.gather(1, toks[:, None])[:, 0]
                torch.testing.assert_close(h["positional_scores"], expect, atol=1e-4, rtol=1e-4)


def test_checkpoint_options_without_layout_build_the_fairseq_layout():
    """Checkpoints from before the T5 layout have no `layout` option: they rebuild as they were trained."""
    args, task, _ = build("switch_tiny", ["--layout", "fairseq"])
    old = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "layout"})
    model = SwitchTransformerModel.build_model(old, task)
    assert not isinstance(model.encoder, T5Encoder)
    assert any("embed_positions" in n for n, _ in model.named_modules())


@pytest.mark.parametrize("layout", ["t5", "fairseq"])
def test_the_model_builds_its_switch_options_once_and_shares_them(layout):
    """One RouterConfig per model, in every Switch FFN of both stacks; the options it came from stay as given."""
    args, _, model = build("switch_tiny", ["--layout", layout, "--moe-capacity-factor", "1.5"])
    ffns = model.switch_ffns
    assert len(ffns) == 2 and all(f.config is model.encoder.switch_layers.router for f in ffns)
    assert model.encoder.switch_layers is model.decoder.switch_layers
    assert ffns[0].config.capacity_factor == 1.5
    assert not hasattr(args, "switch_layers")  # a saved cfg never holds the built object


@pytest.mark.parametrize("extra, bad", [
    ([], {}), (["--moe-expert-count", "0"], {}), (["--moe-eval-no-drop", "--ffn-gated"], {}),
    ([], {"moe_freq": 9}), ([], {"moe_capacity_factor": 0.0}),
])
def test_validating_switch_args_changes_nothing(extra, bad):
    from fairseq_switch.models.switch_transformer import validate_switch_args

    args, _, _ = build("switch_tiny", extra)
    vars(args).update(bad)
    before = copy.deepcopy(args)
    if bad:
        with pytest.raises(ValueError):
            validate_switch_args(args)
    else:
        validate_switch_args(args)
    assert vars(args) == vars(before)


@pytest.mark.parametrize("extra, match", [
    (["--encoder-attention-heads", "3", "--decoder-attention-heads", "3"], "set --attention-head-dim"),
    (["--relative-attention-num-buckets", "5"], "--relative-attention-num-buckets must be an even number"),
    (["--init-scale", "0"], "--init-scale must be > 0"),
    (["--attention-head-dim", "0"], "--attention-head-dim must be >= 1"),
])
def test_bad_t5_options_are_clear_errors(extra, match):
    with pytest.raises(ValueError, match=match):
        build("switch_tiny", extra)
