"""Sparse upcycling (fairseq_switch/convert/upcycle.py): a dense checkpoint becomes a Switch checkpoint whose
experts are exact copies of the dense FFNs, and which computes the dense function when each token's gate is 1."""

import json
from pathlib import Path

import pytest
import torch

from fairseq_switch.checkpoints import RECORD_KEY, SavedCheckpoint, dictionary_record
from fairseq_switch.convert.upcycle import main, upcycle
from fairseq_switch.distributed import plan_layout
from fairseq_switch.modules import routing
from fairseq_switch.modules.routing import RouterConfig, RoutingMode, route_plan

from .helpers import build, make_dictionary, random_batch
from .test_convert import (EXTRA_IDS, _binarize_pairs, _make, _n_pieces, _restore_in_process,  # noqa: F401
                           spm_model)  # a fixture

SHAPE = ["--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
         "--decoder-ffn-embed-dim", "32", "--encoder-layers", "4", "--decoder-layers", "2", "--dropout", "0"]
LAYOUTS = {"t5": ["--layout", "t5"], "fairseq": ["--layout", "fairseq"]}
SPARSE = {"t5": {"encoder": [1, 3], "decoder": [1]}, "fairseq": {"encoder": [1, 3], "decoder": [1]}}
FFN = ("fc1", "fc1_linear", "fc2")


def _quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """This module runs on one torch thread (see conftest)."""


def _dense(layout, path: Path, dict_cfg: bool):
    """A dense checkpoint as fairseq-train saves it (cfg.model a Namespace; a dict from fairseq-hydra-train)."""
    d = make_dictionary()
    args, _, model = build("t5_tiny", [*SHAPE, *LAYOUTS[layout]], d)
    state = {"args": None, "cfg": {"model": vars(args).copy() if dict_cfg else args, "task": {"data": "/nowhere"}},
             "model": model.state_dict(), "criterion": None, "last_optimizer_state": {"state": {1: "moments"}},
             "optimizer_history": [{"criterion_name": "SwitchCrossEntropyCriterion", "optimizer_name": "FairseqAdam",
                                    "lr_scheduler_state": {}, "num_updates": 300}],
             "extra_state": {RECORD_KEY: {"save_id": "abc", "dictionary": dictionary_record(d, "dense")}}}
    torch.save(state, path)
    return model, d


def _load_upcycled(layout, path: Path, d, extra=()):
    _, _, model = build("switch_tiny", [*SHAPE, *LAYOUTS[layout], "--moe-expert-count", "4", *extra], d)
    model.load_state_dict(torch.load(path, weights_only=False)["model"], strict=True)
    return model


@pytest.mark.parametrize("layout", LAYOUTS)
def test_experts_copy_the_dense_ffn_bit_for_bit_and_the_rest_is_equal(layout, tmp_path):
    dense, d = _dense(layout, tmp_path / "dense.pt", dict_cfg=layout == "fairseq")
    record = upcycle(str(tmp_path / "dense.pt"), str(tmp_path / "up.pt"), 4, log=_quiet)
    assert record["sparse_layers"] == SPARSE[layout]  # every 2nd layer, by the model's own rule for the layout
    state = torch.load(tmp_path / "up.pt", weights_only=False)
    src = dense.state_dict()
    up = _load_upcycled(layout, tmp_path / "up.pt", d)  # strict: exactly the Switch model's tensors
    n_expert_tensors = 0
    for side, ids in SPARSE[layout].items():
        for i in ids:
            p = f"{side}.layers.{i}."
            dense_ffn = {k[len(p):]: v for k, v in src.items() if k.startswith(p) and k[len(p):].split(".")[0] in FFN}
            assert dense_ffn and (layout == "fairseq") == any(k.endswith("bias") for k in dense_ffn)
            for e in range(4):
                for k, v in dense_ffn.items():
                    assert torch.equal(state["model"][f"{p}fc1.experts.{e}.{k}"], v)
                    n_expert_tensors += 1
            router = state["model"][p + "fc1.router.weight"]
            assert router.shape == (4, 16) and router.dtype == torch.float32
            assert 0.3 * (0.1 / 16) ** 0.5 < router.std() < 3 * (0.1 / 16) ** 0.5  # the paper's init, std sqrt(s/d)
    others = [k for k in state["model"] if ".experts." not in k and ".router." not in k]
    assert len(state["model"]) == len(others) + n_expert_tensors + 3
    assert all(torch.equal(state["model"][k], src[k]) for k in others)
    assert torch.equal(up.decoder.embed_tokens.weight, dense.decoder.embed_tokens.weight)
    # optimizer state dropped, a new schedule, the dictionary fingerprint kept, the cfg builds the Switch model
    assert state.get("last_optimizer_state") is None and state["optimizer_history"][-1]["num_updates"] == 0
    assert state["extra_state"][RECORD_KEY]["dictionary"] == dictionary_record(d, "dense")
    cfg = state["cfg"]["model"]
    get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k)
    assert (get("moe_expert_count"), get("moe_freq"), get("arch")) == (4, 2, "switch_tiny")
    assert (get("moe_gate_warmup_updates"), get("moe_no_drop_updates")) == (100, 100)  # the default start


def _forced_gate_one(monkeypatch):
    """Every token kept by its argmax expert with combine weight exactly 1."""
    forward = routing.Top1Router.forward

    def forced(self, x, padding_mask, capacity, **kw):
        r = forward(self, x, padding_mask, x.shape[0], **kw)
        return r._replace(gate=r.kept.float())

    monkeypatch.setattr(routing.Top1Router, "forward", forced)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gate_one_gives_the_dense_models_logits(layout, tmp_path, monkeypatch):
    dense, d = _dense(layout, tmp_path / "dense.pt", dict_cfg=False)
    upcycle(str(tmp_path / "dense.pt"), str(tmp_path / "up.pt"), 4, log=_quiet)
    up = _load_upcycled(layout, tmp_path / "up.pt", d).eval()
    dense.eval()
    net = random_batch(d, bsz=4, src_len=9, tgt_len=6)["net_input"]
    with torch.no_grad():
        want = dense(**net)[0]
        plain = up(**net)[0]
        assert (plain - want).abs().max() > 1e-3  # a plain copy outputs p * FFN(x): not the dense function
        with monkeypatch.context() as m:
            _forced_gate_one(m)
            real = net["prev_output_tokens"].ne(d.pad())  # padding is never routed: its FFN output is 0
            torch.testing.assert_close(up(**net)[0][real], want[real], atol=1e-5, rtol=0)
            routed = [r.expert_index for r in up(**net)[1]["moe_routing"]]
            assert any(len(set(e.tolist())) > 1 for e in routed)  # the tokens did go to different experts


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gate_warmup_and_no_drop_start_exactly_dense_in_training(layout, tmp_path):
    """--moe-gate-warmup-updates: combine weight p / stop_gradient(p) = 1 at update 0 (the router still gets a
    gradient); --moe-no-drop-updates: no token dropped. Together the first training step is the dense model's."""
    dense, d = _dense(layout, tmp_path / "dense.pt", dict_cfg=False)
    upcycle(str(tmp_path / "dense.pt"), str(tmp_path / "up.pt"), 4, gate_warmup_updates=10, no_drop_updates=10,
            log=_quiet)
    opts = ["--moe-gate-warmup-updates", "10", "--moe-no-drop-updates", "10", "--moe-capacity-factor", "0.5"]
    up = _load_upcycled(layout, tmp_path / "up.pt", d, opts).train()
    dense.train()
    net = random_batch(d, bsz=4, src_len=9, tgt_len=6)["net_input"]
    want = dense(**net)[0].detach()
    logits, extra = up(**net)
    real = net["prev_output_tokens"].ne(d.pad())  # padding is never routed: its FFN output is 0
    torch.testing.assert_close(logits[real], want[real], atol=1e-5, rtol=0)
    assert all(r.kept_counts.sum() == r.stats.num_tokens for r in extra["moe_routing"])
    logits.logsumexp(-1).sum().backward()
    assert all(f.router.weight.grad.abs().sum() > 0 for f in up.switch_ffns)
    up.set_num_updates(10)  # the warm-up is over: Switch's gate p and the training capacity factor
    logits, extra = up(**net)
    assert (logits - want).abs().max() > 1e-3
    assert any(r.kept_counts.sum() < r.stats.num_tokens for r in extra["moe_routing"])


def test_route_plan_warmups():
    cfg = RouterConfig(4, gate_warmup_updates=100, no_drop_updates=50)
    assert [route_plan(cfg, RoutingMode.TRAIN, n).gate_power for n in (0, 25, 100, 400)] == [0.0, 0.25, 1.0, 1.0]
    assert route_plan(cfg, RoutingMode.EVAL, 25).gate_power == 0.25  # validation sees the gate training had
    assert route_plan(cfg, RoutingMode.TRAIN, 49).capacity_factor is None
    assert route_plan(cfg, RoutingMode.TRAIN, 50).capacity_factor == 1.25
    assert route_plan(cfg, RoutingMode.EVAL, 0).capacity_factor == 2.0  # only training capacity changes
    assert route_plan(RouterConfig(4), RoutingMode.TRAIN, 0).gate_power == 1.0
    with pytest.raises(ValueError, match="--moe-gate-warmup-updates must be >= 0"):
        RouterConfig(4, gate_warmup_updates=-1)


def test_expert_parallel_save_equals_the_plain_one_after_resharding(tmp_path):
    _dense("t5", tmp_path / "dense.pt", dict_cfg=False)
    upcycle(str(tmp_path / "dense.pt"), str(tmp_path / "plain" / "up.pt"), 4, log=_quiet)
    upcycle(str(tmp_path / "dense.pt"), str(tmp_path / "ep" / "up.pt"), 4, world_size=2, log=_quiet)
    assert sorted(p.name for p in (tmp_path / "ep").glob("*.pt")) == ["up-experts-rank1.pt", "up.pt"]
    assert (tmp_path / "ep" / "up.manifest.json").is_file()

    def whole(path):
        saved = SavedCheckpoint(str(path), torch.load(path, weights_only=False))
        return saved, saved.state_for(plan_layout(4, 1, 0), optimizer=False)["model"]

    ep, a = whole(tmp_path / "ep" / "up.pt")
    _, b = whole(tmp_path / "plain" / "up.pt")
    assert ep.world_size == 2 and sorted(a) == sorted(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_expert_noise_perturbs_weight_matrices_only(tmp_path):
    _dense("fairseq", tmp_path / "dense.pt", dict_cfg=False)
    upcycle(str(tmp_path / "dense.pt"), str(tmp_path / "up.pt"), 4, expert_noise=0.01, log=_quiet)
    m = torch.load(tmp_path / "up.pt", weights_only=False)["model"]
    w = [m[f"encoder.layers.1.fc1.experts.{e}.fc1.weight"] for e in range(4)]
    assert not torch.equal(w[0], w[1]) and 0 < (w[0] - w[1]).std() / w[0].std() < 0.03
    assert torch.equal(m["encoder.layers.1.fc1.experts.0.fc1.bias"], m["encoder.layers.1.fc1.experts.3.fc1.bias"])


def test_bad_input_gets_one_line(tmp_path, capsys):
    _dense("t5", tmp_path / "dense.pt", dict_cfg=False)
    assert main([str(tmp_path / "dense.pt"), str(tmp_path / "up.pt"), "--experts", "4"]) == 0
    capsys.readouterr()
    cases = [
        ([str(tmp_path / "up.pt"), str(tmp_path / "again.pt")], "is already sparse (--moe-expert-count 4)"),
        ([str(tmp_path / "dense.pt"), str(tmp_path / "f5.pt"), "--moe-freq", "5"],
         "--moe-freq 5 does not fit the encoder's 4 layers"),
        ([str(tmp_path / "dense.pt"), str(tmp_path / "up.pt")], "up.pt already exists"),
        ([str(tmp_path / "missing.pt"), str(tmp_path / "x.pt")], "missing.pt does not exist"),
    ]
    for argv, message in cases:
        assert main([*argv, "--experts", "4"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and err.startswith("fairseq-switch-upcycle: error: "), err
    assert not (tmp_path / "again.pt").exists() and not (tmp_path / "f5.pt").exists()


def test_converted_t5_upcycles_trains_and_generates(spm_model, tmp_path, monkeypatch):  # noqa: F811
    """A tiny random transformers T5, converted, upcycled into a folder, fine-tuned 3 updates, then generating."""
    import shutil

    from fairseq_switch.convert import transformers_to_fairseq
    from tests.test_text_to_text import BIN, ROOT, fairseq_train, run

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the subprocesses' tiny matmuls, as in one_thread
    V = _n_pieces(spm_model) + EXTRA_IDS + 5
    hf = tmp_path / "hf"
    _make("t5_relu", V).save_pretrained(hf)  # 2 encoder + 3 decoder layers, ReLU, tied head
    shutil.copy(spm_model, hf / "spiece.model")
    (hf / "tokenizer_config.json").write_text(json.dumps({"extra_ids": EXTRA_IDS}))
    conv, up = tmp_path / "conv", tmp_path / "up"
    transformers_to_fairseq(str(hf), str(conv), log=_quiet)
    record = upcycle(str(conv), str(up), 4, gate_warmup_updates=2, log=_quiet)
    assert record["sparse_layers"] == {"encoder": [1], "decoder": [1]}
    assert {p.name for p in up.iterdir()} >= {"checkpoint.pt", "dict.txt", "spm.model", "upcycle.json"}
    data = tmp_path / "bin"
    _binarize_pairs(up, data)
    flags = json.loads((up / "upcycle.json").read_text())["fairseq_flags"]  # the conversion's, now sparse
    assert flags[-8:] == ["--moe-expert-count", "4", "--moe-freq", "2", "--moe-gate-warmup-updates", "2",
                          "--moe-no-drop-updates", "100"]  # the default start's
    assert flags.count("--moe-expert-count") == 1 and "--layout" in flags
    fairseq_train(data, tmp_path / "ft", "text_to_text", 3,
                  ["--arch", "switch_transformer", *flags, "--finetune-from-model", up / "checkpoint.pt"])
    trained = torch.load(tmp_path / "ft" / "checkpoint_last.pt", weights_only=False)
    assert trained["optimizer_history"][-1]["num_updates"] == 3
    start = torch.load(up / "checkpoint.pt", weights_only=False)["extra_state"][RECORD_KEY]["dictionary"]
    assert start is not None and trained["extra_state"][RECORD_KEY]["dictionary"]["sha256"] == start["sha256"]
    gen = run([BIN / "fairseq-generate", data, "--user-dir", ROOT / "fairseq_switch", "--task", "text_to_text",
               "--path", tmp_path / "ft" / "checkpoint_last.pt", "--gen-subset", "test", "--beam", "1",
               "--max-len-b", "5", "--batch-size", "4", "--cpu"])
    assert sum(line.startswith("H-") for line in gen.stdout.splitlines()) == 4
    _restore_in_process(data, up / "checkpoint.pt", flags, tmp_path / "rs")  # --restore-file: one update from 0



def test_study_report_reads_curves_the_start_and_the_gaps(tmp_path):
    """The study's report (fairseq_switch/lab/reports/upcycle_study.py) on two made-up hydra logs."""
    from fairseq_switch.lab.reports.upcycle_study import report

    def log(run, curve, dropped=None, start=None):
        lines = []
        for u, q in curve.items():
            moe = "" if dropped is None else f', "moe_dropped": "{dropped}"'
            lines.append(f'[t][train_inner][INFO] - {{"loss": "{7 - q / 10:.3f}", "num_updates": "{u}", '
                         f'"train_wall": "{u}"{moe}}}')
            lines.append(f'[t][valid][INFO] - {{"valid_neg_log_perplexity": "{q}", "valid_num_updates": "{u}"}}')
        (tmp_path / run).mkdir()
        (tmp_path / run / "hydra_train.log").write_text("\n".join(lines) + "\n")
        if start is not None:
            (tmp_path / run / "validate0.log").write_text(
                f'2026-01-01 00:00:00 | INFO | valid | {{"valid_neg_log_perplexity": "{start}"}}\n')

    log("dense", {100: -5.2, 200: -5.1, 300: -5.0})
    log("up", {100: -5.3, 200: -5.05, 300: -4.9}, dropped=0.25, start=-5.5)
    data = report({"dense": tmp_path / "dense", "up": tmp_path / "up"}, tmp_path / "out", "t")
    up = data["up"]
    assert up["curve"][0] == -5.5 and up["gap_to_reference"][300] == pytest.approx(0.1)
    assert up["ahead_of_reference_from"] == 200 and up["dropped_first"] == 0.25
    assert up["seconds_per_update"] == pytest.approx(600 / 300)
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"report.md", "report.json", "curves.png"}
