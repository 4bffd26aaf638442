"""Fine-tuning data and task: pairs files -> prepare_downstream_data.py -> task text_to_text."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_switch.data.pairs import PairsError, read_pairs

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PREPARE = ROOT / "scripts" / "prepare_downstream_data.py"


def prepare(pretrained, out, *args):
    """scripts/prepare_downstream_data.py, and its fairseq-preprocess, in this process (a subprocess spends
    seconds importing fairseq): its exit status and output, as a CompletedProcess."""
    import contextlib
    import io

    from fairseq_switch.lab.corpora.prepare.downstream import main
    from fairseq_switch.data import vocab

    from tests.helpers import fairseq_preprocess_in_process

    argv = ["--pretrained", str(pretrained), "--out", str(out), *map(str, args)]
    stdout, stderr = io.StringIO(), io.StringIO()
    saved, vocab.run_fairseq_preprocess = vocab.run_fairseq_preprocess, fairseq_preprocess_in_process
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                rc = main(argv) or 0
            except SystemExit as e:  # argparse and the script's one-line errors (sys.exit(message))
                rc = e.code if isinstance(e.code, int) else 1
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
    finally:
        vocab.run_fairseq_preprocess = saved
    return subprocess.CompletedProcess([str(PREPARE), *argv], rc, stdout.getvalue(), stderr.getvalue())


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_read_pairs_jsonl_and_tsv(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"document": "long text", "summary": "short", "id": 1},
                                       {"document": "x", "summary": ["first ref", "second ref"]}])
    assert list(read_pairs(tmp_path / "a.jsonl", "document", "summary")) == [("long text", "short"), ("x", "first ref")]
    (tmp_path / "b.tsv").write_text("label\tsentence\npositive\tgreat film\nnegative\tdull\n")
    assert list(read_pairs(tmp_path / "b.tsv", "sentence", "label")) == [
        ("great film", "positive"), ("dull", "negative")
    ]
    (tmp_path / "c.tsv").write_text("great film\tpositive\n")  # no header: column numbers
    assert list(read_pairs(tmp_path / "c.tsv", "0", "1")) == [("great film", "positive")]
    with pytest.raises(PairsError,
                       match=r"a.jsonl:1: no field 'text' \(fields: document, id, summary\).*--input-field"):
        list(read_pairs(tmp_path / "a.jsonl", "text", "summary"))
    with pytest.raises(PairsError, match=r"header row .* no column 'input'"):
        list(read_pairs(tmp_path / "b.tsv"))
    (tmp_path / "d.jsonl").write_text('{"input": "a", "target": "b"}\n{oops\n')
    with pytest.raises(PairsError, match=r"d.jsonl:2: not JSON"):
        list(read_pairs(tmp_path / "d.jsonl"))


def test_prepare_counts_every_example_and_is_idempotent(pretrain_data, tmp_path):
    pretrained = pretrain_data[0]
    src = tmp_path / "pairs"
    src.mkdir()
    long_input = " ".join(["whale"] * 200)
    write_jsonl(src / "train.jsonl", [
        {"input": "Call me Ishmael.", "target": "a name"},
        {"input": "  ", "target": "empty input"},
        {"input": "some text", "target": ""},
        {"input": long_input, "target": "too long"},
        {"input": "The sea was calm.", "target": "calm sea"},
    ])
    write_jsonl(src / "valid.jsonl", [{"input": "The ship sailed.", "target": "ship"}])
    res = prepare(pretrained, tmp_path / "out", src, "--prefix", "summarize: ", "--max-input-tokens", "32")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "train:      5 read,      3 kept (2 empty, 1 input truncated)" in res.stdout
    assert "valid:      1 read,      1 kept;" in res.stdout
    stamp = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert stamp["counts"]["train"]["empty"] == 2 and stamp["counts"]["train"]["input_truncated"] == 1
    pieces = (tmp_path / "out" / "raw" / "train.input").read_text().splitlines()
    assert len(pieces) == 3 and len(pieces[1].split()) == 31  # truncated to 32 with </s>
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "out" / "spm.model"))
    assert sp.decode(pieces[0].split()) == "summarize: Call me Ishmael."  # prefix + input, whitespace normalized
    for f in ("dict.input.txt", "dict.target.txt", "spm.model", "train.input-target.input.bin",
              "valid.input-target.target.idx"):
        assert (tmp_path / "out" / f).is_file(), f
    assert (tmp_path / "out" / "dict.input.txt").read_text() == (pretrained / "dict.txt").read_text()
    again = prepare(pretrained, tmp_path / "out", src, "--prefix", "summarize: ", "--max-input-tokens", "32")
    assert again.returncode == 0 and "up to date" in again.stdout and "fairseq-preprocess" not in again.stdout
    dropped = prepare(pretrained, tmp_path / "out2", src, "--max-input-tokens", "32", "--overlong", "drop")
    assert "train:      5 read,      2 kept (2 empty, 1 dropped overlong)" in dropped.stdout


def test_prepare_errors_name_the_fix(pretrain_data, tmp_path):
    pretrained = pretrain_data[0]
    (tmp_path / "p").mkdir()
    write_jsonl(tmp_path / "p" / "train.jsonl", [{"document": "a", "summary": "b"}])
    res = prepare(pretrained, tmp_path / "o", tmp_path / "p")
    assert res.returncode != 0 and "no valid pairs" in res.stderr
    write_jsonl(tmp_path / "p" / "valid.jsonl", [{"document": "a", "summary": "b"}])
    res = prepare(pretrained, tmp_path / "o", tmp_path / "p")
    assert res.returncode != 0 and "no field 'input'" in res.stderr and "--input-field" in res.stderr
    assert "Traceback" not in res.stderr
    res = prepare(tmp_path, tmp_path / "o", tmp_path / "p")
    assert res.returncode != 0 and "spm.model not found: --pretrained must be the pretraining data" in res.stderr


@pytest.fixture(scope="module")
def downstream(pretrain_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("t2t") / "bin"
    src = out.parent / "pairs"
    src.mkdir()
    words = "the whale ship sea captain sailed over deep water with men boats".split()
    for split, n in (("train", 120), ("valid", 12), ("test", 12)):
        rows = []
        for i in range(n):
            text = " ".join(words[(i + k) % len(words)] for k in range(12))
            rows.append({"input": text, "target": " ".join(text.split()[:2])})
        write_jsonl(src / f"{split}.jsonl", rows)
    res = prepare(pretrain_data[0], out, src, "--prefix", "copy: ")
    assert res.returncode == 0, res.stderr[-2000:]
    return out


def _task_and_model(data, extra=()):
    from fairseq import options, tasks

    from tests.helpers import USER_DIR

    argv = [str(data), "--user-dir", USER_DIR, "--task", "text_to_text", "--arch", "switch_tiny",
            "--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--moe-expert-count", "2", *extra]
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    task = tasks.setup_task(args)
    return task, task.build_model(args)


def test_task_applies_the_paper_expert_dropout_unless_given(downstream):
    _, model = _task_and_model(downstream)
    ffn = model.switch_ffns[0]
    assert ffn.experts[0].dropout.p == 0.4 and model.encoder.dropout_module.p == 0.1
    _, model = _task_and_model(downstream, ["--moe-expert-dropout", "0.2"])
    assert model.switch_ffns[0].experts[0].dropout.p == 0.2
    task, _ = _task_and_model(downstream)
    task.load_dataset("valid")
    sample = task.dataset("valid")[0]
    assert task.src_dict.string(sample["source"], "sentencepiece").startswith("copy: the whale ship")


def test_task_rejects_missing_or_mismatched_dictionaries(downstream, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no dictionary at .*dict.input.txt.*prepare_downstream_data.py"):
        _task_and_model(tmp_path)
    (tmp_path / "dict.input.txt").write_text((downstream / "dict.input.txt").read_text())
    lines = (downstream / "dict.target.txt").read_text().splitlines(keepends=True)
    (tmp_path / "dict.target.txt").write_text("".join(lines[:-5]))
    with pytest.raises(ValueError, match=r"dict.target.txt differs from .*dict.input.txt; inputs and targets"):
        _task_and_model(tmp_path)


# -- end to end through the real CLIs: pretrain -> prepare -> fine-tune -> generate -> score -----------
TINY = ["--arch", "switch_tiny", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim",
        "64", "--decoder-ffn-embed-dim", "64", "--moe-expert-count", "4"]


def run(cmd, **kw):
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT, timeout=600, **kw)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def fairseq_train(data, save_dir, task, updates, extra=()):
    if "--eval-metric" not in map(str, extra):
        extra = ["--disable-validation", *extra]
    return run([BIN / "fairseq-train", data, "--user-dir", ROOT / "fairseq_switch", "--task", task, *TINY,
                "--criterion", "switch_cross_entropy", "--optimizer", "adam", "--lr", "3e-3", "--max-tokens", "2048",
                "--max-update", updates, "--save-dir", save_dir, "--no-epoch-checkpoints",
                "--no-progress-bar", "--num-workers", "0", "--seed", "1", "--cpu", *extra])


@pytest.fixture(scope="module")
def pretrained_ckpt(pretrain_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("t2t_pretrain")
    fairseq_train(pretrain_data[0], save, "span_corruption", 10, ["--input-length", "64"])
    return save / "checkpoint_last.pt"


def test_finetune_generate_score_on_bundled_summaries(pretrain_data, pretrained_ckpt, tmp_path):
    data = tmp_path / "bin"
    res = prepare(pretrain_data[0], data, ROOT / "data" / "downstream" / "debian", "--prefix", "summarize: ",
                  "--max-input-tokens", "128", "--max-target-tokens", "128")
    assert res.returncode == 0, res.stderr[-2000:]
    test_line = next(line for line in res.stdout.splitlines() if "test :" in line)
    assert "200 read,    200 kept" in test_line and "target truncated" not in test_line, test_line
    fairseq_train(data, tmp_path / "ft", "text_to_text", 30, ["--finetune-from-model", pretrained_ckpt])
    gen = run([BIN / "fairseq-generate", data, "--user-dir", ROOT / "fairseq_switch", "--task", "text_to_text",
               "--path", tmp_path / "ft" / "checkpoint_last.pt", "--gen-subset", "test", "--beam", "2",
               "--max-len-b", "20", "--batch-size", "50", "--cpu"])
    out = tmp_path / "gen.out"
    out.write_text(gen.stdout)
    # the references fairseq prints are raw pieces; detokenized they are the bundled targets again
    from fairseq_switch.evaluation import detokenize, read_generate_output

    examples = read_generate_output(gen.stdout.splitlines())
    assert [e.id for e in examples] == list(range(200)) and all("▁" in e.target for e in examples)
    bundled = [json.loads(line)["target"] for line in (ROOT / "data/downstream/debian/test.jsonl").open()]
    known = [(e, b) for e, b in zip(examples, bundled) if "<unk>" not in e.target]  # chars Moby-Dick lacks
    assert len(known) > 100
    for e, b in known:
        assert detokenize(e.target, data / "spm.model") == " ".join(b.split()), e.id
    scored = run([sys.executable, ROOT / "scripts" / "score_generations.py", out, "--spm-model", data / "spm.model",
                  "--json"])
    scores = json.loads(scored.stdout)
    assert scores["examples"] == 200
    for key in ("rouge1", "rouge2", "rougeL"):
        assert 0 <= scores[key] <= 100, scores
    assert scores["rouge1"] >= scores["rouge2"]


def test_finetuning_with_another_vocabulary_fails_clearly(downstream, pretrained_ckpt, tmp_path):
    data = tmp_path / "bin"
    data.mkdir()
    for f in downstream.iterdir():
        if f.is_file():
            (data / f.name).write_bytes(f.read_bytes())
    for name in ("dict.input.txt", "dict.target.txt"):  # a dictionary 5 symbols shorter
        lines = (data / name).read_text().splitlines(keepends=True)
        (data / name).write_text("".join(lines[:-5]))
    cmd = [BIN / "fairseq-train", data, "--user-dir", ROOT / "fairseq_switch", "--task", "text_to_text", *TINY,
           "--criterion", "switch_cross_entropy", "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "1024",
           "--max-update", "1", "--save-dir", tmp_path / "x", "--finetune-from-model", pretrained_ckpt, "--cpu"]
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode != 0
    assert "was trained with a vocabulary of 600 symbols (encoder.embed_tokens.weight), but this task's " \
           "dictionary has 595" in res.stderr
    assert "scripts/prepare_downstream_data.py --pretrained" in res.stderr


def test_validation_by_generation_matches_generate_and_score(downstream, pretrained_ckpt, tmp_path):
    """--eval-metric rouge logs, at the last validation, the ROUGE that fairseq-generate (greedy, same
    length limit) + score_generations.py give for the saved model; the best checkpoint is kept by it."""
    from fairseq_switch.logs import json_records

    res = fairseq_train(
        downstream, tmp_path / "ft", "text_to_text", 20,
        ["--finetune-from-model", pretrained_ckpt, "--eval-metric", "rouge", "--eval-generate-args",
         '{"beam": 1, "max_len_a": 0, "max_len_b": 8}', "--validate-interval-updates", "10",
         "--best-checkpoint-metric", "rouge2", "--maximize-best-checkpoint-metric", "--log-format", "json"],
    )
    res_text = res.stdout + res.stderr
    assert "--disable-validation" not in map(str, res.args)
    valid = json_records(res_text.splitlines(), "valid")
    assert len(valid) >= 2 and all(k in valid[-1] for k in ("rouge1", "rouge2", "rougeL", "best_rouge2"))
    assert valid[-1]["best_rouge2"] == max(v["rouge2"] for v in valid)  # the peak
    assert (tmp_path / "ft" / "checkpoint_best.pt").exists()
    gen = run([BIN / "fairseq-generate", downstream, "--user-dir", ROOT / "fairseq_switch", "--task", "text_to_text",
               "--path", tmp_path / "ft" / "checkpoint_last.pt", "--gen-subset", "valid", "--beam", "1",
               "--max-len-a", "0", "--max-len-b", "8", "--batch-size", "64", "--cpu"])
    (tmp_path / "gen.out").write_text(gen.stdout)
    scored = json.loads(run([sys.executable, ROOT / "scripts" / "score_generations.py", tmp_path / "gen.out",
                             "--json"]).stdout)
    assert scored["examples"] == 12 and scored["rouge1"] > 0, scored  # something to agree on
    for key in ("rouge1", "rouge2", "rougeL"):
        assert valid[-1][key] == pytest.approx(scored[key], abs=0.01), key


def test_validation_scores_equal_score_generations_on_the_same_tokens(downstream):
    """--eval-metric rouge and fairseq-generate + score_generations.py agree on the same tokens, unknown
    ones included: <unk> is deleted before scoring (in-training it used to be a made-up word)."""
    import sentencepiece as spm
    import torch
    from fairseq.data import data_utils

    from fairseq_switch.evaluation import rouge_scores
    from fairseq_switch.lab.reports.generations import score

    task, _ = _task_and_model(downstream, ["--eval-metric", "rouge"])
    d, sp = task.tgt_dict, spm.SentencePieceProcessor(model_file=str(downstream / "spm.model"))

    def ids(text):  # "?" is an unknown token
        out = []
        for i, part in enumerate(text.split("?")):
            out += [d.unk()] * (i > 0) + [d.index(p) for p in sp.encode(part.strip(), out_type=str)]
        return torch.tensor(out + [d.eos()])

    pairs = [("the whale ? ship sailed", "the whale ship ? sailed"), ("? the captain", "the captain ?"),
             ("the sea", "whale whale whale whale"), ("deep water with men", "? deep water ?")]
    refs, hyps = [ids(r) for r, _ in pairs], [ids(h) for _, h in pairs]
    assert sum(t.eq(d.unk()).sum() for t in refs + hyps) == 6  # every other word is in the dictionary
    logs = task.generation_logs({"target": data_utils.collate_tokens(refs, d.pad())}, [[{"tokens": h}] for h in hyps])
    # fairseq-generate's lines for the same tokens: T- escapes <unk> as <<unk>>
    lines = [line for i, (r, h) in enumerate(zip(refs, hyps)) for line in (
        f"T-{i}\t{d.string(r, escape_unk=True)}", f"H-{i}\t-0.5\t{d.string(h)}", f"D-{i}\t-0.5\t{d.string(h)}")]
    assert "<<unk>>" in lines[0] and "<unk>" in lines[1]
    # <unk> deleted: 100, 100, 0, and "deep water" of "deep water with men" (R1 2/3, R2 1/2, RL 2/3)
    hand = {"rouge1": (200 + 200 / 3) / 4, "rouge2": 250 / 4, "rougeL": (200 + 200 / 3) / 4, "repetitive": 25.0}
    plain = rouge_scores(["the whale ship sailed", "the captain", "whale whale whale whale", "deep water"],
                         ["the whale ship sailed", "the captain", "the sea", "deep water with men"])
    assert logs["_t2t_n"] == 4
    for offline in (score(lines, ["rouge"], downstream / "spm.model"), score(lines, ["rouge"])):
        for key, value in hand.items():
            assert logs[f"_t2t_{key}"] / 4 == pytest.approx(offline[key], abs=1e-9), key
            assert offline[key] == pytest.approx(value), key
            assert key == "repetitive" or offline[key] == pytest.approx(plain[key]), key


@pytest.fixture(scope="module")
def mixture(pretrain_data, downstream, tmp_path_factory):
    """Two prepared tasks under one root: a (copy the first two words) and b (label: long/short input)."""
    root = tmp_path_factory.mktemp("mix")
    src = root / "pairs_b"
    src.mkdir()
    words = "sea whale ship captain".split()
    for split, n in (("train", 60), ("valid", 10)):
        rows = [{"input": " ".join(words[: 1 + i % 4] * (1 + i % 3)), "target": "long" if (1 + i % 4) * (1 + i % 3) > 4
                 else "short"} for i in range(n)]
        write_jsonl(src / f"{split}.jsonl", rows)
    res = prepare(pretrain_data[0], root / "b", src, "--prefix", "classify: ")
    assert res.returncode == 0, res.stderr[-2000:]
    (root / "a").symlink_to(downstream, target_is_directory=True)
    return root


def test_mixture_epoch_visits_every_example_of_every_task_once(mixture):
    from fairseq import options, tasks

    from tests.helpers import USER_DIR

    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(mixture), "--user-dir", USER_DIR, "--task", "text_to_text", "--mixture", "a,b", "--arch", "switch_tiny",
        "--max-tokens", "300"])
    task = tasks.setup_task(args)
    task.load_dataset("train")
    ds = task.dataset("train")
    assert len(ds) == 120 + 60 and ds.offsets == [0, 120]
    itr = task.get_batch_iterator(ds, max_tokens=300, seed=1, epoch=1).next_epoch_itr(shuffle=True)
    seen, tokens = [], {0: 0, 1: 0}
    for batch in itr:
        ids, task_ids = batch["id"].tolist(), batch["task_ids"].tolist()
        assert task_ids == [0 if i < 120 else 1 for i in ids]
        for i, t in zip(ids, task_ids):
            tokens[t] += int(ds.src_sizes[i] + ds.tgt_sizes[i])
        seen += ids
    assert sorted(seen) == list(range(180))  # each task contributes in proportion to its tokens
    assert tokens[0] == int(ds.src_sizes[:120].sum() + ds.tgt_sizes[:120].sum())


def test_mixture_validation_reports_each_task_and_their_mean(mixture, pretrained_ckpt, tmp_path):
    from fairseq_switch.logs import json_records

    res = fairseq_train(mixture, tmp_path / "ft", "text_to_text", 10,
                        ["--mixture", "a,b", "--finetune-from-model", pretrained_ckpt, "--eval-metric", "acc",
                         "--validate-interval-updates", "10", "--best-checkpoint-metric", "acc",
                         "--maximize-best-checkpoint-metric", "--log-format", "json"])
    valid = json_records((res.stdout + res.stderr).splitlines(), "valid")
    last = valid[-1]
    assert {"a_acc", "b_acc", "acc", "best_acc"} <= set(last), sorted(last)
    assert last["acc"] == pytest.approx((last["a_acc"] + last["b_acc"]) / 2, abs=0.011)


def test_mixture_score_is_the_mean_of_task_scores_not_pooled(mixture):
    """a: 2 of 3 right (66.67), b: 0 of 1: the mixture's acc is their mean, 33.33 (pooled would be 50)."""
    from fairseq import options, tasks
    from fairseq.logging import metrics

    from tests.helpers import USER_DIR

    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(mixture), "--user-dir", USER_DIR, "--task", "text_to_text", "--mixture", "a,b", "--eval-metric", "acc",
        "--arch", "switch_tiny"])
    task = tasks.setup_task(args)

    class NoCriterion:
        @staticmethod
        def reduce_metrics(logging_outputs):
            pass

    # two batches (or ranks): fairseq hands over per-batch sums
    logs = [{"_t2t_a_n": 2, "_t2t_a_acc": 100.0 * 2, "_t2t_b_n": 1, "_t2t_b_acc": 0.0},
            {"_t2t_a_n": 1, "_t2t_a_acc": 0.0}]
    with metrics.aggregate() as agg:
        task.reduce_metrics(logs, NoCriterion())
        m = agg.get_smoothed_values()
    assert m["a_acc"] == pytest.approx(66.67) and m["b_acc"] == 0.0 and m["acc"] == pytest.approx(33.33)
