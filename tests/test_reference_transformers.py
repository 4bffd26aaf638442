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
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [0, 2, 3, 3] and rows[-1]["final"] is True
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
