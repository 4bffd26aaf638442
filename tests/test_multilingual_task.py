"""Multilingual span corruption (Fedus et al. 2021, Sec. 4.3): language sampling, per-language validation, errors."""

import math
import os

import numpy as np
import pytest
import torch
from fairseq import options, tasks
from fairseq.data import Dictionary, indexed_dataset
from fairseq.logging import metrics

from fairseq_switch.data.language_mixture import epoch_plan, sampling_probs

from . import ep_harness as H
from tests.helpers import USER_DIR


def test_sampling_probabilities_are_counts_to_the_alpha_normalised():
    p = sampling_probs([100, 10_000], 0.3)
    a, b = 100 ** 0.3, 10_000 ** 0.3  # 3.981, 15.849
    assert p.tolist() == pytest.approx([a / (a + b), b / (a + b)]) and p[0] == pytest.approx(0.2008, abs=1e-4)
    assert sampling_probs([100, 10_000], 1.0).tolist() == pytest.approx([100 / 10_100, 10_000 / 10_100])
    assert sampling_probs([5, 50, 500], 0.0).tolist() == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError, match=r"--language-alpha must be in \[0, 1\], got 1.5"):
        sampling_probs([1, 2], 1.5)
    with pytest.raises(ValueError, match="every language needs data"):
        sampling_probs([10, 0], 0.3)


def test_epoch_plan_draws_each_language_share_and_every_example_before_repeats():
    sizes = [10, 1000]
    p = sampling_probs(sizes, 0.3)
    plan = epoch_plan(sizes, p, seed=1, epoch=1)
    assert [len(ix) for ix in plan] == [203, 807] == [round(p[0] * 1010), round(p[1] * 1010)]  # 10 upsampled
    small = plan[0]  # 203 = 20 full rounds of the 10 examples + 3
    assert sorted(small[:10]) == list(range(10)) and sorted(np.bincount(small)) == [20] * 7 + [21] * 3
    assert len(set(plan[1].tolist())) == len(plan[1])  # the big language: no repeats
    again = epoch_plan(sizes, p, seed=1, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(plan, again))
    assert not np.array_equal(plan[1], epoch_plan(sizes, p, seed=1, epoch=2)[1])


def _write_split(folder, name, docs, d):
    builder = indexed_dataset.make_builder(os.path.join(folder, f"{name}.bin"), impl="mmap", vocab_size=len(d))
    for doc in docs:
        builder.add_item(torch.tensor(doc + [d.eos()], dtype=torch.int32))
    builder.finalize(os.path.join(folder, f"{name}.idx"))


@pytest.fixture(scope="module")
def two_languages(tmp_path_factory):
    """Languages x and y over disjoint halves of the words, x three times bigger (token data for a mechanism test)."""
    root = tmp_path_factory.mktemp("ml")
    H.write_dictionary(str(root))
    d = Dictionary.load(str(root / "dict.txt"))
    first = d.index("w0")
    half = H.NUM_WORDS // 2
    g = torch.Generator().manual_seed(0)
    for lang, lo, n_train in (("x", first, 90), ("y", first + half, 30)):
        (root / lang).mkdir()
        for split, n in (("train", n_train), ("valid", 12)):
            docs = [torch.randint(lo, lo + half, (int(torch.randint(30, 60, (1,), generator=g)),),
                                  generator=g).tolist() for _ in range(n)]
            _write_split(root / lang, split, docs, d)
    return root


def _task(root, *extra):
    argv = [str(root), "--user-dir", USER_DIR, "--task", "multilingual_span_corruption", "--input-length", "32",
            "--arch", "t5_tiny", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
            "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64", "--criterion", "switch_cross_entropy",
            "--max-tokens", "400", *extra]
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    return args, tasks.setup_task(args)


def test_training_mixture_follows_alpha(two_languages):
    _, task = _task(two_languages, "--language-alpha", "0.3")
    task.load_dataset("train")
    ds = task.dataset("train")
    n = ds.lang_sizes
    assert n[0] > n[1] > 0
    p = sampling_probs(n, 0.3)
    assert ds.counts() == {"x": round(p[0] * sum(n)), "y": round(p[1] * sum(n))}
    batch = ds.collater([ds[i] for i in range(len(ds) - 3, len(ds))])
    assert batch["lang"].tolist() == [1, 1, 1] and "net_input" in batch  # the last examples are y's
    # y is upsampled: its second copy of an example is corrupted anew; a first copy is the example itself
    ys = np.flatnonzero(ds.lang == 1)
    first, second = ys[0], ys[n[1]:][list(ds.index[ys[n[1]:]]).index(ds.index[ys[0]])]
    assert ds.index[first] == ds.index[second] and (ds.draw[first], ds.draw[second]) == (0, 1)
    y = ds.datasets[1]
    assert torch.equal(ds[first]["source"], y[ds.index[first]]["source"])
    assert not torch.equal(ds[first]["source"], ds[second]["source"])


def _valid_metrics(task, model, criterion, split="valid"):
    task.load_dataset(split)
    itr = task.get_batch_iterator(task.dataset(split), max_tokens=400, seed=1).next_epoch_itr(shuffle=False)
    logs = [task.valid_step(sample, model, criterion)[2] for sample in itr]
    with metrics.aggregate(new_root=True) as agg:
        task.reduce_metrics(logs, criterion)
        return agg.get_smoothed_values()


def test_per_language_validation_is_each_language_alone(two_languages):
    """The multilingual task's valid_x/valid_y values equal what the same model scores on x alone and
    on y alone; the overall value is their token-weighted mean."""
    torch.manual_seed(0)
    args, task = _task(two_languages)
    model = task.build_model(args)
    model.eval()
    criterion = task.build_criterion(args)
    both = _valid_metrics(task, model, criterion)
    alone = {}
    for lang in ("x", "y"):
        _, t = _task(two_languages, "--languages", lang)
        alone[lang] = _valid_metrics(t, model, criterion)
        assert set(k for k in alone[lang] if k.endswith("_neg_log_perplexity")) == {f"{lang}_neg_log_perplexity"}
        assert both[f"{lang}_neg_log_perplexity"] == pytest.approx(alone[lang]["neg_log_perplexity"], abs=2e-4)
    x, y = both["x_neg_log_perplexity"], both["y_neg_log_perplexity"]
    assert min(x, y) - 1e-3 <= both["neg_log_perplexity"] <= max(x, y) + 1e-3
    assert not math.isclose(x, y, abs_tol=1e-3)  # different data, different scores


def test_languages_without_data_fail_clearly(two_languages, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no data for language\(s\) zz under .*languages there: x, y"):
        _task(two_languages, "--languages", "x,zz")
    with pytest.raises(FileNotFoundError, match=r"no dictionary at .*scripts/prepare_multilingual_data.py --out"):
        _task(tmp_path)
    H.write_dictionary(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no language folders with a train split"):
        _task(tmp_path)  # no language folders at all
    # a language whose valid split is missing / empty
    import shutil

    root = tmp_path / "d"
    shutil.copytree(two_languages, root)
    (root / "y" / "valid.idx").unlink()
    _, task = _task(root)
    with pytest.raises(FileNotFoundError, match=r"language 'y' has no valid split"):
        task.load_dataset("valid")
    d = Dictionary.load(str(root / "dict.txt"))
    _write_split(root / "y", "valid", [], d)
    with pytest.raises(ValueError, match=r"language 'y': its valid split is empty .*drop it from --languages"):
        task.load_dataset("valid")


def test_two_language_run_through_the_cli(tmp_path):
    """Bundled German and Japanese -> prepare_multilingual_data.py -> fairseq-train: each validation
    logs both languages' negative log perplexity next to the overall one."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from fairseq_switch.logs import json_records

    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "text"
    src.mkdir()
    for lang in ("de", "ja"):  # the leading documents: ~12k characters each
        docs = (root / "data" / "multilingual" / f"{lang}.txt").read_text(encoding="utf-8").split("\n\n")
        keep, size = [], 0
        while size < 12_000:
            keep.append(docs[len(keep)])
            size += len(keep[-1])
        (src / f"{lang}.txt").write_text("\n\n".join(keep) + "\n", encoding="utf-8")
    data = tmp_path / "bin"
    prep = subprocess.run([sys.executable, root / "scripts" / "prepare_multilingual_data.py", "--out", data,
                           "--vocab-size", "900", "--valid-chars", "2000", "--test-chars", "2000", "--workers", "1",
                           src], capture_output=True, text=True, cwd=root, timeout=300)
    assert prep.returncode == 0, prep.stdout[-2000:] + prep.stderr[-2000:]
    res = subprocess.run(
        [Path(sys.executable).parent / "fairseq-train", data, "--user-dir", root / "fairseq_switch",
         "--task", "multilingual_span_corruption", "--input-length", "32", "--arch", "switch_tiny",
         "--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
         "--decoder-ffn-embed-dim", "64", "--moe-expert-count", "4", "--criterion", "switch_cross_entropy",
         "--optimizer", "adam", "--lr", "3e-3", "--max-tokens", "1024", "--max-update", "6",
         "--validate-interval-updates", "3", "--save-dir", tmp_path / "ck", "--no-save", "--log-format", "json",
         "--no-progress-bar", "--num-workers", "0", "--cpu"], capture_output=True, text=True, cwd=root, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    log = (res.stdout + res.stderr).splitlines()
    assert any("sampled with alpha 0.3: de 0." in line and "ja 0." in line for line in log)
    valid = json_records(log, "valid")
    assert [v["num_updates"] for v in valid] == [3, 6]
    for v in valid:
        de, ja, both = v["de_neg_log_perplexity"], v["ja_neg_log_perplexity"], v["neg_log_perplexity"]
        assert min(de, ja) - 1e-3 <= both <= max(de, ja) + 1e-3, json.dumps(v)
