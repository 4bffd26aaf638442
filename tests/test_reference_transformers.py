"""scripts/reference_transformers.py: transformers' T5 / SwitchTransformers trained on this project's batches,
initial weights and recipe. On the session's tiny Moby-Dick data-bin (vocab 600), the real pretrain_tiny config."""

import json
import math

import pytest
import torch

from fairseq_switch.lab import reference_transformers as R

# no jitter and capacity for every token: both implementations route (and keep) exactly the same tokens
NO_DROP = ("+model.moe_jitter_eps=0", "model.moe_capacity_factor=8", "model.moe_eval_capacity_factor=8")


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """This module runs on one torch thread (see conftest)."""


@pytest.fixture(scope="module")
def data(pretrain_data):
    return str(pretrain_data[0])


@pytest.fixture(scope="module")
def dense(data):
    side = R.build_fairseq(R.compose_config(data, 0, 1))
    return side, R.to_transformers(side)


def _first_batch_losses(side, hf, balance_mode):
    sample = next(side.train_batches())
    side.model.train()
    side.criterion.train()
    with torch.no_grad():
        loss, sample_size, log = side.criterion(side.model, sample)
        inputs = R.hf_inputs(sample, side.pad, hf.config.vocab_size)
        R.set_capacity(hf, side.cfg.model, inputs["input_ids"].shape[1], inputs["labels"].shape[1], training=True)
        dec_valid = sample["net_input"]["prev_output_tokens"].ne(side.pad)
        step = R.hf_loss(hf, inputs, sample["ntokens"], side.cfg.criterion.moe_loss_weight, 0.0, balance_mode,
                         dec_valid)
    ours = {"loss": float(loss) / sample_size, "ce": float(log["nll_loss"]) / sample_size,
            "balance": float(log.get("moe_balance", 0.0)), "dropped": float(log.get("moe_dropped", 0.0))}
    return ours, step


def test_dense_init_same_training_loss_and_valid(dense):
    side, hf = dense
    assert type(hf).__name__ == "T5ForConditionalGeneration"
    ours, step = _first_batch_losses(side, hf, "transformers")
    assert step.ce_sum / step.ntokens == pytest.approx(ours["ce"], abs=1e-4)
    assert float(step.loss) == pytest.approx(ours["loss"], abs=1e-4)
    # the valid number the fairseq log reports (neg_log_perplexity), on the same valid batches
    ref = side.valid_neg_log_perplexity()
    assert -10 < ref < -5  # untrained, vocabulary 600: about -ln(600)
    assert R.hf_valid_neg_log_perplexity(hf, side) == pytest.approx(ref, abs=1e-4)


def test_switch_init_same_training_loss_without_drops(data):
    side = R.build_fairseq(R.compose_config(data, 8, 1, overrides=NO_DROP))
    hf = R.to_transformers(side)
    assert type(hf).__name__ == "SwitchTransformersForConditionalGeneration"
    assert {k: len(v) for k, v in R.switch_routers(hf).items()} == {"encoder": 1, "decoder": 1}
    ours, step = _first_batch_losses(side, hf, "batch")
    assert ours["dropped"] == 0 and ours["balance"] > 1.0
    assert step.ce_sum / step.ntokens == pytest.approx(ours["ce"], abs=1e-4)
    # this project's Eq. 4 computed from transformers' router logits: the whole loss agrees
    assert step.balance == pytest.approx(ours["balance"], abs=1e-4)
    assert float(step.loss) == pytest.approx(ours["loss"], abs=1e-4)
    # transformers' own balance loss (per sequence) differs, the cross-entropy does not
    _, own = _first_batch_losses(side, hf, "transformers")
    assert own.ce_sum == pytest.approx(step.ce_sum, rel=1e-6)
    assert own.balance != pytest.approx(step.balance, abs=1e-6) and 1.0 < own.balance < 8.0


def _same(a, b):
    assert a["id"].tolist() == b["id"].tolist()
    for key in ("src_tokens", "src_lengths", "prev_output_tokens"):
        assert torch.equal(a["net_input"][key], b["net_input"][key]), key
    assert torch.equal(a["target"], b["target"]) and a["ntokens"] == b["ntokens"]


def _trainer(side):
    from fairseq import tasks
    from fairseq.trainer import Trainer

    return Trainer(side.cfg, tasks.setup_task(side.cfg.task), side.model, side.criterion)


def test_batches_are_those_of_fairseqs_trainer(dense):
    side, _ = dense
    itr = _trainer(side).get_train_iterator(epoch=1).next_epoch_itr(shuffle=True)
    theirs = [next(itr) for _ in range(2)]
    mine = side.train_batches()
    for a, b in zip([next(mine) for _ in range(2)], theirs):
        _same(a, b)
    assert theirs[0]["net_input"]["src_tokens"].shape[0] > 1


def test_later_epochs_follow_fairseq_train(data):
    """Past the end of the data, as fairseq_cli.train goes on: a new iterator for the next epoch (the dataset
    not reloaded), reshuffled and corrupted anew. The small valid split stands in for train here."""
    side = R.build_fairseq(R.compose_config(data, 0, 1, overrides=["dataset.train_subset=valid"]))
    trainer = _trainer(side)
    epoch_itr = trainer.get_train_iterator(epoch=1)
    theirs = list(epoch_itr.next_epoch_itr(shuffle=True))
    epoch_itr = trainer.get_train_iterator(epoch_itr.next_epoch_idx, load_dataset=False)
    theirs += list(epoch_itr.next_epoch_itr(shuffle=True))
    mine = side.train_batches()
    ours = [next(mine) for _ in range(len(theirs))]
    assert len(theirs) >= 4 and epoch_itr.epoch == 2
    for a, b in zip(ours, theirs):
        _same(a, b)
    assert not torch.equal(ours[len(ours) // 2]["target"], ours[0]["target"])


def test_three_updates_write_the_log(data, tmp_path, capsys):
    out = tmp_path / "hf_e8"
    rc = R.main(["--data", data, "--experts", "8", "--seed", "1", "--max-update", "3", "--validate-interval", "2",
                 "--out", str(out)])
    assert rc == 0
    every = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    per_update = [r for r in every if "train_update_loss" in r]
    rows = [r for r in every if "train_update_loss" not in r]
    assert [r["update"] for r in rows] == [0, 2, 3, 3] and rows[-1]["final"] is True
    # each update's routing under this project's names: 2 Switch layers (encoder, decoder)
    assert [r["update"] for r in per_update] == [1, 2, 3]
    for r in per_update:
        assert 0 <= r["moe_dropped"] <= 1 and r["moe_load_max_0"] >= 1 and r["moe_load_max_1"] >= 1
        assert min(r["moe_dropped_0"], r["moe_dropped_1"]) <= r["moe_dropped"] <= max(r["moe_dropped_0"],
                                                                                      r["moe_dropped_1"])
    assert rows[0]["train_loss"] is None and math.isfinite(rows[0]["fairseq_valid_neg_log_perplexity"])
    for r in rows[1:3]:
        assert math.isfinite(r["train_loss"]) and math.isfinite(r["valid_neg_log_perplexity"])
        assert r["train_balance"] > 1.0 and r["wall"] > 0
    assert rows[1]["lr"] < rows[2]["lr"]  # warmup
    assert rows[2]["valid_neg_log_perplexity"] != rows[0]["valid_neg_log_perplexity"]
    assert rows[1]["train_loss"] != rows[2]["train_loss"]
    assert rows[-1]["seconds_per_update"] > 0 and rows[-1]["threads"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["log.jsonl"]  # no temporary file left
    assert "update 3/3" in capsys.readouterr().out
    # a second run into the same folder is refused unless asked
    assert R.main(["--data", data, "--max-update", "0", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing_data", "out_is_file", "negative_experts", "no_dict", "no_splits"])
def test_bad_input_is_one_error_line(case, data, tmp_path, capsys):
    import shutil

    argv = {"missing_data": ["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
            "out_is_file": ["--data", data, "--out", str(tmp_path / "f")],
            "negative_experts": ["--data", data, "--experts", "-2", "--out", str(tmp_path / "o")],
            "no_dict": ["--data", str(tmp_path), "--out", str(tmp_path / "o")],
            "no_splits": ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")]}[case]
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    shutil.copy(f"{data}/dict.txt", tmp_path / "d")
    assert R.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    named = {"missing_data": "nope", "out_is_file": "--out", "negative_experts": "--experts -2",
             "no_dict": "dict.txt", "no_splits": "split 'valid' not found"}[case]
    assert named in err[0]
    assert not (tmp_path / "o").exists()


def _recorded_routing(expert_capacity):
    """transformers' own router on a hand-made batch, seen through RouterRecorder: 2 experts, width 2, the
    classifier the identity, so token [1, 0] picks expert 0 and [0, 1] expert 1."""
    from transformers import SwitchTransformersConfig
    from transformers.models.switch_transformers.modeling_switch_transformers import SwitchTransformersTop1Router

    cfg = SwitchTransformersConfig(num_experts=2, d_model=2, expert_capacity=expert_capacity, router_jitter_noise=0.0,
                                   router_bias=False)
    model = torch.nn.Module()
    model.encoder = torch.nn.Sequential(SwitchTransformersTop1Router(cfg))
    model.decoder = torch.nn.Sequential()
    with torch.no_grad():
        model.encoder[0].classifier.weight.copy_(torch.eye(2))
    e0, e1 = [1.0, 0.0], [0.0, 1.0]
    # sequence 0: e0 e0 e1 + one padding token (which picks e0); sequence 1: e1 e1 e1 e0, all real
    x = torch.tensor([[e0, e0, e1, e0], [e1, e1, e1, e0]])
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    rec = R.RouterRecorder(model)
    rec.active = True
    model.encoder(x)
    calls = rec.pop()
    rec.remove()
    return calls, valid


def test_routing_counts_follow_transformers_per_sequence_capacity():
    calls, valid = _recorded_routing(expert_capacity=2)
    assert len(calls["encoder"]) == 1 and not calls["decoder"]
    n, dropped, counts = R.routing_counts(*calls["encoder"][0], valid)
    # 2 slots per expert per sequence: sequence 1's third e1 is dropped; sequence 0's padding (its third e0)
    # is dropped too but is not a real token, so it is not counted
    assert (n, dropped) == (7, 1)
    assert counts.tolist() == [3.0, 4.0]  # argmax choices before drops, real tokens only
    m = R.routing_metrics(calls, {"encoder": valid})
    assert m == {"moe_dropped_0": round(1 / 7, 4), "moe_load_max_0": round(4 / 3.5, 3), "moe_counts_0": [3, 4],
                 "moe_dropped": round(1 / 7, 4)}
    # this project's per-batch capacity, ceil(7 / 2 * 1.25) = 5 slots per expert, keeps every token (Sec. 2.2)
    from fairseq_switch.modules.routing import expert_capacity

    assert expert_capacity(7, 2, 1.25, 1) >= counts.max()


def test_routing_metrics_pool_layers_encoder_first():
    calls, valid = _recorded_routing(expert_capacity=1)
    # one slot per expert per sequence: sequence 0 keeps e0 e1 (drops one), sequence 1 keeps e1 e0 (drops two)
    n, dropped, _ = R.routing_counts(*calls["encoder"][0], valid)
    assert (n, dropped) == (7, 3)
    dec_valid = torch.tensor([[True, True, True, True], [True, False, False, False]])
    m = R.routing_metrics({"encoder": calls["encoder"], "decoder": calls["encoder"]},
                          {"encoder": valid, "decoder": dec_valid})
    # decoder: real tokens e0 e0 e1 e0 | e1 -> the second and last e0 of sequence 0 are dropped
    assert m["moe_dropped_0"] == round(3 / 7, 4) and m["moe_dropped_1"] == round(2 / 5, 4)
    assert m["moe_dropped"] == round(5 / 12, 4)
    assert m["moe_load_max_1"] == round(3 / 2.5, 3)
