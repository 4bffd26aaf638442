"""Expert-sharded checkpoints (Fedus et al. 2021, Sec. 5): each rank saves its experts, a save reshards to any rank
count (on load or with scripts/reshard_checkpoint.py, optimizer state included), and a resumed run takes
exactly the steps of an uninterrupted one.

One global batch sequence drives every run: 4 ranks get [1, 2, 2, 3] examples per step, 2 ranks the
pairwise concatenations, one process everything, so runs on any rank count are the same training
run (the equivalence test_expert_parallel_training.py establishes). Each resumed run is compared
step by step (loss, gradient norm, gradients, parameters) with one uninterrupted process. The
optimizer is SGD with momentum, so a lost or misplaced optimizer state changes the next steps.
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairseq_switch.checkpoints import (
    inspect_save,
    SavedCheckpoint,
    derive_param_order,
    model_param_names,
    optimizer_state_by_name,
    positional_optimizer_state,
    shard_path,
)

from fairseq_switch import reshard as reshard_cli

from . import ep_harness as H
from tests.test_expert_parallel_training import assert_same_run

ROOT = Path(__file__).resolve().parents[1]
STEPS, SPLIT = 4, 2  # train 2 steps, save, resume for 2 more


def _views(w4):
    w2 = [[s[0] + s[1], s[2] + s[3]] for s in w4]
    w1 = [[s[0] + s[1] + s[2] + s[3]] for s in w4]
    return w2, w1


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("ep_ckpt")
    w4 = H.global_batches(STEPS, [1, 2, 2, 3], seed=5)
    w2, w1 = _views(w4)
    out = {"tmp": tmp}
    # the reference: one process, all four steps, never interrupted
    (out["ref"],) = H.run(1, data_dir, w1, str(tmp / "ref"))
    # two ranks: stop, resume on two ranks, and on one process straight from the two-rank files
    out["w2_first"] = H.merge_ranks(
        H.run(2, data_dir, w2[:SPLIT], str(tmp / "w2a"), save_to=str(tmp / "w2" / "checkpoint.pt"))
    )
    out["w2_resumed"] = H.merge_ranks(
        H.run(2, data_dir, w2[SPLIT:], str(tmp / "w2b"), load_from=str(tmp / "w2" / "checkpoint.pt"))
    )
    (out["w2_to_1"],) = H.run(1, data_dir, w1[SPLIT:], str(tmp / "w21"), load_from=str(tmp / "w2" / "checkpoint.pt"))
    # four ranks (one expert each), resharded offline to two, resumed on two ranks
    H.run(4, data_dir, w4[:SPLIT], str(tmp / "w4a"), save_to=str(tmp / "w4" / "checkpoint.pt"))
    reshard(tmp / "w4" / "checkpoint.pt", tmp / "w4to2" / "checkpoint.pt", 2)
    out["w4_to_2"] = H.merge_ranks(
        H.run(2, data_dir, w2[SPLIT:], str(tmp / "w42"), load_from=str(tmp / "w4to2" / "checkpoint.pt"))
    )
    return out


def reshard(src, dst, world, *extra, subprocess_run=False):
    """scripts/reshard_checkpoint.py, in this process (or as a real subprocess)."""
    argv = [str(src), str(dst), "--world-size", str(world), *extra]
    if subprocess_run:
        return subprocess.run([sys.executable, str(ROOT / "scripts" / "reshard_checkpoint.py"), *argv],
                              capture_output=True, text=True, cwd=ROOT)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = reshard_cli.main(argv)
    return subprocess.CompletedProcess(argv, rc, out.getvalue(), err.getvalue())


def test_rank_files_hold_their_own_experts(runs):
    tmp = runs["tmp"]
    main, shard = tmp / "w2" / "checkpoint.pt", tmp / "w2" / "checkpoint-experts-rank1.pt"
    assert main.exists() and shard.exists()
    m = torch.load(main, map_location="cpu", weights_only=False)
    s = torch.load(shard, map_location="cpu", weights_only=False)
    experts = lambda sd: sorted({int(k.split(".experts.")[1].split(".")[0]) for k in sd if ".experts." in k})  # noqa: E731
    assert experts(m["model"]) == [0, 1] and experts(s["model"]) == [2, 3]  # global ids on disk
    # the shared weights are saved once, in the main file
    assert all(".experts." in k for k in s["model"]) and set(s) == {"expert_parallel", "model", "optimizer_state"}
    assert m["expert_parallel"]["save_id"] == s["expert_parallel"]["save_id"]
    assert set(s["optimizer_state"]) == set(s["model"])  # SGD momentum for every expert weight
    # four ranks, four experts: four files
    assert sorted(os.listdir(tmp / "w4")) == ["checkpoint-experts-rank1.pt", "checkpoint-experts-rank2.pt",
                                               "checkpoint-experts-rank3.pt", "checkpoint.manifest.json",
                                               "checkpoint.pt"]


def test_resume_on_two_ranks_matches_an_uninterrupted_run(runs):
    assert_same_run(runs["w2_first"], runs["ref"][:SPLIT])
    assert_same_run(runs["w2_resumed"], runs["ref"][SPLIT:])


def test_two_rank_save_resumes_on_one_process(runs):
    """Loading reshards: the one process gathers both ranks' experts and their optimizer state."""
    assert_same_run(runs["w2_to_1"], runs["ref"][SPLIT:])


def test_four_rank_save_resharded_to_two_resumes(runs):
    assert_same_run(runs["w4_to_2"], runs["ref"][SPLIT:])


def _flat(path):
    """Every tensor of a save by global name: model weights and optimizer state."""
    saved = SavedCheckpoint(str(path), torch.load(path, map_location="cpu", weights_only=False))
    out = {f"model.{k}": v for k, v in {**saved.shared, **saved.experts}.items()}
    for name, st in saved.optim_named.items():
        for k, v in st.items():
            out[f"optim.{name}.{k}"] = v
    return saved, out


@pytest.fixture(scope="module")
def round_trip(runs):
    """The two-rank save -> one file (the script as a real command) -> two ranks again."""
    tmp = runs["tmp"]
    first = reshard(tmp / "w2" / "checkpoint.pt", tmp / "rt1" / "one.pt", 1, subprocess_run=True)
    second = reshard(tmp / "rt1" / "one.pt", tmp / "rt2" / "two.pt", 2)
    return first, second


def test_reshard_round_trip_two_one_two(runs, round_trip):
    tmp = runs["tmp"]
    src = tmp / "w2" / "checkpoint.pt"
    res, res2 = round_trip
    assert res.returncode == 0, res.stderr[-2000:]
    assert "wrote 1 file(s) for 1 rank(s), 4 expert(s) per rank per layer, with optimizer state" in res.stdout
    assert sorted(os.listdir(tmp / "rt1")) == ["one.manifest.json", "one.pt"]
    assert res2.returncode == 0, res2.stderr[-2000:]
    assert sorted(os.listdir(tmp / "rt2")) == ["two-experts-rank1.pt", "two.manifest.json", "two.pt"]
    s0, orig = _flat(src)
    s1, one = _flat(tmp / "rt1" / "one.pt")
    s2, back = _flat(tmp / "rt2" / "two.pt")
    assert s1.world_size == 1 and s2.world_size == 2 and s0.num_experts == s1.num_experts == 4
    for other in (one, back):
        assert other.keys() == orig.keys()
        for k in orig:
            assert torch.equal(other[k], orig[k]), k
    assert len([k for k in orig if k.startswith("optim.")]) > 0
    # the single file is a plain fairseq checkpoint: its optimizer state is in the one-process order
    plain = torch.load(tmp / "rt1" / "one.pt", map_location="cpu", weights_only=False)
    assert plain["expert_parallel"]["world_size"] == 1
    n_params = len(plain["expert_parallel"]["param_names"])
    assert len(plain["last_optimizer_state"]["param_groups"][0]["params"]) == n_params


def test_one_file_and_sharded_save_load_for_inference(runs, round_trip):
    """fairseq's load_model_ensemble (fairseq-generate, fine-tuning) on one process, from the single file
    and straight from the two-rank files, gives the weights the two ranks held after step 2."""
    from fairseq import checkpoint_utils

    tmp = runs["tmp"]
    expected = runs["w2_first"][-1]["params"]
    for path in (tmp / "w2" / "checkpoint.pt", tmp / "rt1" / "one.pt"):
        models, _cfg, _task = checkpoint_utils.load_model_ensemble_and_task([str(path)])
        got = dict(models[0].named_parameters())
        assert got.keys() == expected.keys()
        for name, t in expected.items():
            torch.testing.assert_close(got[name].detach(), t, atol=0, rtol=0, msg=name)


def test_replicated_experts_are_saved_once(tmp_path, data_dir):
    """2 experts on 4 ranks: ranks 2 and 3 hold copies of ranks 0 and 1's experts and write nothing."""
    from fairseq import checkpoint_utils

    ckpt = tmp_path / "ck" / "checkpoint.pt"
    steps = H.global_batches(2, [1, 2, 2, 3], seed=6)
    merged = H.merge_ranks(
        H.run(4, data_dir, steps, str(tmp_path / "r"), ["--moe-expert-count", "2"], save_to=str(ckpt))
    )
    assert sorted(os.listdir(ckpt.parent)) == [
        "checkpoint-experts-rank1.pt", "checkpoint.manifest.json", "checkpoint.pt"
    ]
    models, _cfg, _task = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)])
    got = dict(models[0].named_parameters())
    assert got.keys() == merged[-1]["params"].keys()
    for name, t in merged[-1]["params"].items():
        torch.testing.assert_close(got[name].detach(), t, atol=0, rtol=0, msg=name)


def test_interrupted_or_incomplete_saves_do_not_load(runs, round_trip, tmp_path):
    tmp = runs["tmp"]
    for f in os.listdir(tmp / "w2"):
        shutil.copy(tmp / "w2" / f, tmp_path / f)
    main = tmp_path / "checkpoint.pt"
    state = lambda: torch.load(main, map_location="cpu", weights_only=False)  # noqa: E731
    # a crash between files: rank 1's file is from another save
    other = torch.load(tmp / "rt2" / "two-experts-rank1.pt", map_location="cpu", weights_only=False)
    torch.save(other, shard_path(str(main), 1))
    with pytest.raises(ValueError, match=r"checkpoint-experts-rank1.pt belongs to a different save .* interrupted"):
        SavedCheckpoint(str(main), state())
    os.remove(shard_path(str(main), 1))
    with pytest.raises(FileNotFoundError,
                       match=r"checkpoint-experts-rank1.pt is missing: .* saved by 2 expert-parallel"):
        SavedCheckpoint(str(main), state())
    # a rank that needs only rank 0's experts does not read (or need) the other file
    assert sorted(SavedCheckpoint(str(main), state(), expert_ids=[0, 1]).experts)[0].startswith("decoder")


def test_loading_a_different_expert_layout_fails_clearly(runs, data_dir):
    ckpt = str(runs["tmp"] / "w2" / "checkpoint.pt")
    for extra, what in (
        (["--moe-expert-count", "8"], r"it has 4 experts in 2 Switch layers .* this model has 8 experts"),
        (["--moe-freq", "1"], r".*--moe-expert-count 4 --moe-freq 2\), this model has 4 experts in 4 Switch layers"),
    ):
        trainer = H.build_trainer(data_dir, 1, 0, extra)
        with pytest.raises(ValueError,
                           match=r"different expert layout: " + what
                           + r".*checkpoint's flags: --arch switch_tiny .*--moe-expert-count 4 --moe-freq 2 \("):
            trainer.load_checkpoint(ckpt)


def test_derived_optimizer_order_is_the_models(runs, data_dir):
    """The script orders a resharded optimizer state without building the model; that order must be the
    one fairseq's optimizer uses (else same-shaped experts would swap their Adam moments silently)."""
    main = torch.load(runs["tmp"] / "w2" / "checkpoint.pt", map_location="cpu", weights_only=False)
    saved_names = main["expert_parallel"]["param_names"]  # rank 0's: experts 0 and 1
    assert any(".experts.1." in n for n in saved_names) and not any(".experts.2." in n for n in saved_names)
    trainer = H.build_trainer(data_dir, 1, 0)
    assert derive_param_order(saved_names, range(4)) == model_param_names(trainer.get_model(), trainer.get_criterion())


def test_reshard_script_refuses_bad_requests(runs, tmp_path):
    src = runs["tmp"] / "w2" / "checkpoint.pt"
    res = reshard(src, tmp_path / "x.pt", 3)
    assert res.returncode == 2 and "cannot split 4 experts over 3 ranks" in res.stderr and "1, 2, 4, 8" in res.stderr
    res = reshard(src, src, 1)
    assert res.returncode == 2 and "write to a new path" in res.stderr
    (tmp_path / "y.pt").write_text("keep me")
    res = reshard(src, tmp_path / "y.pt", 1)
    assert res.returncode == 2 and "already exist" in res.stderr and (tmp_path / "y.pt").read_text() == "keep me"
    res = reshard(tmp_path / "missing.pt", tmp_path / "z.pt", 1)
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr


def test_optimizer_state_follows_parameter_names():
    names = ["emb", "l.fc1.router.w", "l.fc1.experts.0.fc1.weight", "l.fc1.experts.0.fc2.weight",
             "l.fc1.experts.1.fc1.weight", "l.fc1.experts.1.fc2.weight", "out"]
    # rank 1 of 2 with 4 experts holds experts 2 and 3, in the same block layout
    assert derive_param_order(names, [2, 3]) == [
        "emb", "l.fc1.router.w", "l.fc1.experts.2.fc1.weight", "l.fc1.experts.2.fc2.weight",
        "l.fc1.experts.3.fc1.weight", "l.fc1.experts.3.fc2.weight", "out"]
    opt = {"state": {i: {"momentum_buffer": torch.tensor([float(i)])} for i in range(7) if i != 4},
           "param_groups": [{"lr": 0.1, "params": list(range(7))}], "loss_scale": 8.0}
    named = optimizer_state_by_name(opt, names)
    assert float(named["out"]["momentum_buffer"]) == 6.0 and "l.fc1.experts.1.fc1.weight" not in named
    target = ["emb", "l.fc1.router.w", "l.fc1.experts.1.fc2.weight", "out"]
    back = positional_optimizer_state(opt, names, named, target)
    assert back["param_groups"] == [{"lr": 0.1, "params": [0, 1, 2, 3]}] and back["loss_scale"] == 8.0
    assert [float(back["state"][i]["momentum_buffer"]) for i in range(4)] == [0.0, 1.0, 5.0, 6.0]
    with pytest.raises(ValueError, match=r"covers 7 parameters but the model lists 6"):
        optimizer_state_by_name(opt, names[:-1])


# -- broken expert shards -------------------------------------------------------------------------
def test_broken_and_swapped_expert_shards_are_named(runs, tmp_path):
    """A truncated or empty shard is named (not checkpoint.pt); shards of a 4-rank save swapped between
    rank files fail with a layout error on a rank that reads a subset, and still reshard by expert id."""
    from fairseq_switch.distributed import plan_layout

    shutil.copytree(runs["tmp"] / "w4", tmp_path / "w4")
    main = tmp_path / "w4" / "checkpoint.pt"
    state = lambda: torch.load(main, map_location="cpu", weights_only=False)  # noqa: E731
    one, two = Path(shard_path(str(main), 1)), Path(shard_path(str(main), 2))
    a, b = one.read_bytes(), two.read_bytes()
    one.write_bytes(b), two.write_bytes(a)
    with pytest.raises(ValueError, match=r"checkpoint-experts-rank1.pt holds the experts of rank 2 \(\[2\]\), not rank "
                                         r"1's \(\[1\]\): the files of this 4-rank save were renamed or swapped"):
        SavedCheckpoint(str(main), state(), plan_layout(4, 2, 0).local_expert_ids)
    whole = SavedCheckpoint(str(main), state())  # every file read: experts land by their global id
    assert sorted({k.split(".experts.")[1].split(".")[0] for k in whole.experts}) == ["0", "1", "2", "3"]
    one.write_bytes(a[:3000])
    two.write_bytes(b"")
    problem = inspect_save(str(main)).problem
    assert "checkpoint-experts-rank1.pt is not a readable expert shard: it is truncated" in problem
    with pytest.raises(ValueError, match=r"checkpoint-experts-rank2.pt is not a readable expert shard: it is empty"):
        SavedCheckpoint(str(main), state(), [2])


# -- fairseq-train itself: stop, resume, same losses -----------------------------------------
def _train(data, save_dir, world, max_update, extra=(), fault=None):
    """fairseq-train on `world` ranks; `fault`: FAIRSEQ_SWITCH_FAULT, the run must then die at it.
    Returns (losses by update, the whole log)."""
    argv = [data, "--user-dir", ROOT / "fairseq_switch",
            "--task", "span_corruption", "--arch", "switch_tiny", "--encoder-embed-dim", "32", "--decoder-embed-dim",
            "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64", "--moe-expert-count", "4",
            "--input-length", "32", "--criterion", "switch_cross_entropy", "--optimizer", "adam", "--lr", "3e-3",
            "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "3", "--max-tokens", "512", "--seed", "7",
            "--max-update", str(max_update), "--save-dir", str(save_dir), "--save-interval-updates", "3",
            "--disable-validation", "--log-format", "json", "--log-interval", "1", "--no-progress-bar",
            "--num-workers", "0", "--cpu", *extra]
    env = {"FAIRSEQ_SWITCH_FAULT": fault} if fault else {}
    rc, stdout, stderr = H.run_process_group(H.fairseq_train_cmd(argv, world), cwd=ROOT, env=env)
    log = stdout + stderr
    if fault:
        assert rc != 0 and f"fault injected at {fault.split('@')[0]}" in log, log[-3000:]
    else:
        assert rc == 0, log[-6000:]
    losses = {}
    for line in log.splitlines():
        if "| train_inner |" in line:
            rec = json.loads(line.split("| train_inner |", 1)[1])
            losses[int(rec["num_updates"])] = rec["loss"]
    return losses, log


# killed during the save at update 6 (of 9), then resumed: the save each resume must read
KILLS = {
    # one process, mid-write of checkpoint_1_6.pt: it never appears; checkpoint_last (update 3) is read
    1: ("main-file@6", 3, None),
    # two ranks, rank 1 mid-copy of its shard to checkpoint_last: checkpoint_last.pt is update 6's, its rank-1
    # shard update 3's (fairseq's in-place copy left a 0-byte shard here); resume falls back to checkpoint_1_6
    2: ("copy-last@6:1", 6, r"checkpoint_last.pt is broken \(.*checkpoint_last-experts-rank1.pt belongs to a different "
                            r"save .*; resuming from .*checkpoint_1_6.pt \(update 6\), the newest complete save"),
}


@pytest.mark.parametrize("world", [1, 2])
def test_fairseq_train_killed_mid_save_resumes_exactly(tmp_path, world):
    """A run killed at a named phase of a save resumes from a consistent save, with the losses and final
    state (weights, Adam moments) of an uninterrupted run."""
    import re

    fault, resumed_at, warning = KILLS[world]
    data = tmp_path / "data"
    H.write_corpus(str(data))
    full, _ = _train(data, tmp_path / "full", world, 9)
    killed, _ = _train(data, tmp_path / "parts", world, 9, fault=fault)
    assert sorted(killed) == list(range(1, 7))
    resumed, log = _train(data, tmp_path / "parts", world, 9)  # a plain resume: checkpoint_last.pt
    assert sorted(full) == list(range(1, 10)) and sorted(resumed) == list(range(resumed_at + 1, 10))
    assert {k: full[k] for k in resumed} == resumed
    warnings = [ln for ln in log.splitlines() if "WARNING | fairseq_switch.checkpoints" in ln]
    if warning is None:
        assert not warnings
    else:  # once, from rank 0
        assert len(warnings) == 1 and re.search(warning, warnings[0]), warnings
    a = _flat(tmp_path / "full" / "checkpoint_last.pt")[1]
    b = _flat(tmp_path / "parts" / "checkpoint_last.pt")[1]
    assert a.keys() == b.keys()
    for k in a:  # weights and Adam moments bit for bit (and Adam's step count)
        assert torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k], k
    if world == 2:
        assert (tmp_path / "parts" / "checkpoint_1_3-experts-rank1.pt").exists()


def test_unnamed_optimizer_state_is_not_resharded_silently():
    """A checkpoint from before named optimizer state: weights reshard, its optimizer state cannot."""
    from fairseq_switch.distributed import plan_layout

    model = {"emb": torch.zeros(2), **{f"l.fc1.experts.{e}.w": torch.full((2,), float(e)) for e in range(2)}}
    opt = {"state": {i: {"m": torch.ones(1)} for i in range(3)}, "param_groups": [{"lr": 1.0, "params": [0, 1, 2]}]}
    saved = SavedCheckpoint("old.pt", {"model": model, "last_optimizer_state": opt})
    assert saved.num_experts == 2 and saved.switch_layers == ["l.fc1"] and saved.world_size == 1
    assert saved.state_for(plan_layout(2, 1, 0))["last_optimizer_state"] is opt  # same layout: as is
    rank1 = saved.state_for(plan_layout(2, 2, 1), optimizer=False)  # --reset-optimizer: weights only
    assert sorted(rank1["model"]) == ["emb", "l.fc1.experts.0.w"] and float(rank1["model"]["l.fc1.experts.0.w"][0]) == 1
    with pytest.raises(ValueError,
                       match=r"old.pt is not tied to parameter names .* cannot be cut for 2 ranks.*--reset-optimizer"):
        saved.state_for(plan_layout(2, 2, 1))
    # its Switch layers are read from the keys (sorted): the model's own order must still match
    two = SavedCheckpoint("old2.pt", {"model": {"encoder.l.fc1.experts.0.w": torch.zeros(1),
                                                "decoder.l.fc1.experts.0.w": torch.zeros(1)}})
    two.check_layout(1, ["encoder.l.fc1", "decoder.l.fc1"])
    with pytest.raises(ValueError, match=r"different expert layout"):
        two.check_layout(1, ["encoder.l.fc1"])
