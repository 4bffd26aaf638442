"""Expert-parallel training through fairseq's own Trainer equals one process holding every expert.

The central test of expert parallelism (Fedus et al. 2021, Sec. 5): W gloo processes, each with its
share of a global batch and its share of the experts, take the same optimizer steps as one process with the whole
batch: same loss, same gradient norm, same gradients, same updated parameters.
"""

import argparse

import pytest
import torch

from fairseq_switch.models.switch_transformer import check_expert_parallel_args
from fairseq_switch.distributed import check_expert_count

from . import ep_harness as H


def assert_same_run(multi, single, tol=1e-5):
    assert len(multi) == len(single)
    for k, (m, s) in enumerate(zip(multi, single)):
        assert m["loss"] == pytest.approx(s["loss"], rel=tol, abs=tol), f"step {k} loss"
        assert m["gnorm"] == pytest.approx(s["gnorm"], rel=tol, abs=tol), f"step {k} gnorm"
        for key in ("grads", "params"):
            assert m[key].keys() == s[key].keys()
            for name in s[key]:
                torch.testing.assert_close(m[key][name], s[key][name], atol=tol, rtol=tol, msg=f"step {k} {key} {name}")


def run_pair(tmp_path, data_dir, world, sizes, extra=(), steps=3, dummy=None):
    """W ranks on per-rank batches vs one process on their concatenation (same global batch)."""
    batches = H.global_batches(steps, sizes)
    if dummy is not None:  # (step, rank): that rank has run out of data
        k, r = dummy
        batches[k][r] = []
    single_batches = [[sum(step, [])] for step in batches]
    multi = H.merge_ranks(H.run(world, data_dir, batches, str(tmp_path / f"w{world}"), extra))
    single = H.run(1, data_dir, single_batches, str(tmp_path / "w1"), extra)[0]
    return multi, single


@pytest.mark.parametrize("backend", ["c10d", "legacy_ddp"])
def test_two_ranks_four_experts_match_one_process(tmp_path, data_dir, backend):
    multi, single = run_pair(tmp_path, data_dir, 2, [3, 5], ["--ddp-backend", backend])
    # the experts really were split: each expert parameter exists once, gathered from both ranks
    assert any(".experts.3." in n for n in multi[0]["params"])
    # clipping was active (the norm is above --clip-norm 0.5), so an expert-blind norm would show
    assert single[0]["gnorm"] > 0.5
    assert_same_run(multi, single)


def test_einsum_dispatch_two_ranks_match_one_process(tmp_path, data_dir):
    """fairscale's MOELayer (`--moe-dispatch einsum`), the design's cross-rank layer, under real
    expert parallelism: the same updates as one process holding every expert."""
    multi, single = run_pair(tmp_path, data_dir, 2, [3, 5], ["--moe-dispatch", "einsum"], steps=2)
    assert any(".experts.3." in n for n in multi[0]["params"])
    assert_same_run(multi, single)


def test_four_ranks_two_replicated_experts_match_one_process(tmp_path, data_dir):
    multi, single = run_pair(tmp_path, data_dir, 4, [2, 3, 1, 2], ["--moe-expert-count", "2"], steps=2)
    assert_same_run(multi, single)


def test_rank_without_data_runs_a_dummy_batch_and_matches(tmp_path, data_dir):
    """Rank 1 has no batch at step 2: it must still join every all-to-all (no hang), and the update is
    the one-process update on rank 0's batch alone (the dummy tokens count nowhere)."""
    multi, single = run_pair(tmp_path, data_dir, 2, [4, 2], dummy=(1, 1))
    assert_same_run(multi, single)


def test_expert_count_must_divide_ranks():
    check_expert_count(8, 4)
    check_expert_count(2, 4)  # replicated
    with pytest.raises(ValueError, match=r"--moe-expert-count 6 does not divide across 4 ranks.*multiple of 4"):
        check_expert_count(6, 4)
    with pytest.raises(ValueError, match=r"--moe-expert-count 3 does not divide across 4 ranks"):
        check_expert_count(3, 4)


def _args(**kw):
    base = dict(moe_expert_count=4, ddp_backend="c10d", no_save=True, fp16=False, bf16=False,
                memory_efficient_fp16=False, memory_efficient_bf16=False, fp16_no_flatten_grads=False,
                encoder_layerdrop=0, decoder_layerdrop=0)
    base.update(kw)
    return argparse.Namespace(**base)


def test_expert_parallel_rejects_settings_that_would_give_wrong_numbers():
    check_expert_parallel_args(_args(), 2)
    check_expert_parallel_args(_args(ddp_backend="legacy_ddp", bf16=True, fp16_no_flatten_grads=True), 2)
    with pytest.raises(ValueError, match=r"--ddp-backend fully_sharded.*use --ddp-backend c10d or legacy_ddp"):
        check_expert_parallel_args(_args(ddp_backend="fully_sharded"), 2)
    with pytest.raises(ValueError, match=r"--fp16-no-flatten-grads"):
        check_expert_parallel_args(_args(fp16=True), 2)
    with pytest.raises(ValueError, match=r"layerdrop"):
        check_expert_parallel_args(_args(encoder_layerdrop=0.1), 2)
    with pytest.raises(ValueError, match=r"--store-ema .* drop --store-ema"):
        check_expert_parallel_args(_args(store_ema=True), 2)
    check_expert_parallel_args(_args(no_save=False), 2)  # sharded checkpoints


def test_gradient_norm_counts_expert_gradients():
    """fairseq's own clip_grad_norm_ leaves `expert` parameters out; the plugin's counts them."""
    from fairseq import utils

    shared, expert = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    expert.expert = True
    shared.grad, expert.grad = torch.tensor([3.0]), torch.tensor([4.0])
    assert float(utils.clip_grad_norm_([shared, expert], 0)) == pytest.approx(5.0)
    assert float(utils.clip_grad_norm_([shared, expert], 1.0)) == pytest.approx(5.0)
    assert float(expert.grad) == pytest.approx(0.8) and float(shared.grad) == pytest.approx(0.6)


def test_clipping_used_the_norm_over_all_parameters(tmp_path, data_dir):
    (single,) = H.run(1, data_dir, H.global_batches(1, [4]), str(tmp_path))
    clipped = torch.stack([g.pow(2).sum() for g in single[0]["grads"].values()]).sum().sqrt()
    assert single[0]["gnorm"] > 0.5  # so clipping to --clip-norm 0.5 happened
    assert float(clipped) == pytest.approx(0.5, rel=1e-4)
