"""Bad options and bad input rows (issue 27, sections 5 and 6): each ends in one line that names the bad value
and the fix (a plugin ValueError, which cli_errors prints as one line with exit status 1), never a traceback
or a silently wrong result. Everything runs in this process on tiny models and data."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fairseq_switch.cli_errors import USER_ERRORS, raised_by_plugin
from fairseq_switch.data.corpus import CorpusError, read_documents
from fairseq_switch.data.pairs import read_pairs
from fairseq_switch.data.span_corruption import num_sentinels_needed, raw_length_for_input

from . import ep_harness as H
from .helpers import USER_DIR

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    yield


def one_line(fn, *args, **kwargs) -> str:
    """The message of the user error fn raises: one the plugin raised itself, so cli_errors prints it as one line."""
    with pytest.raises(USER_ERRORS) as exc:
        fn(*args, **kwargs)
    assert raised_by_plugin(exc.value.__traceback__), exc.value
    message = str(exc.value)
    assert "\n" not in message
    return message


def train_cfg(data, *extra):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = [str(data), "--user-dir", USER_DIR, "--task", "span_corruption", "--input-length", "64", "--arch",
            "switch_tiny", "--moe-expert-count", "4", "--criterion", "switch_cross_entropy", "--optimizer", "adam",
            "--lr", "2e-3", "--cpu", "--num-workers", "0", "--seed", "1", "--max-update", "1", "--no-save",
            "--max-valid-steps", "1", *map(str, extra)]
    return convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))


def train(data, *extra):
    from fairseq.distributed import utils as distributed_utils
    from fairseq_cli import train as train_cli

    distributed_utils.call_main(train_cfg(data, *extra), train_cli.main)


# -- section 5: options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("max_tokens", [10, 50])
def test_max_tokens_under_the_examples_is_refused(pretrain_data, max_tokens):
    # was: IndexError (10); 50 trained on the split's one short last chunk, then AssertionError in validation
    message = one_line(train, pretrain_data[0], "--max-tokens", max_tokens)
    assert message == (f"--max-tokens {max_tokens} is smaller than the examples of the train split (64 tokens, the "
                       f"larger of input and target with </s>), and a batch holds whole examples: use --max-tokens "
                       f"64 or more, or a smaller --input-length")


def test_text_to_text_max_tokens_under_the_shortest_example_is_refused():
    from fairseq.data import LanguagePairDataset

    from fairseq_switch.tasks.text_to_text import TextToTextConfig, TextToTextTask

    from .helpers import make_dictionary

    d = make_dictionary()
    task = TextToTextTask(TextToTextConfig(source_lang="input", target_lang="target"), d, d)
    src = [torch.tensor([5] * n + [d.eos()]) for n in (6, 9)]
    tgt = [torch.tensor([7] * n + [d.eos()]) for n in (2, 3)]
    pairs = LanguagePairDataset(src, np.array([7, 10]), d, tgt, np.array([3, 4]), d)
    task.datasets["valid"] = pairs
    message = one_line(task.get_batch_iterator, pairs, max_tokens=5, max_positions=(1024, 1024))
    assert message.startswith("--max-tokens-valid (default: --max-tokens) 5 is smaller than the shortest examples of "
                              "the valid split (7 tokens")
    assert message.endswith("use --max-tokens-valid 10 or more")
    # what fits the shortest goes on as fairseq does (longer examples: dropped in training, refused in validation)
    assert list(task.get_batch_iterator(pairs, max_tokens=7, max_positions=(7, 7),
                                        ignore_invalid_inputs=True).next_epoch_itr())


def test_fp16_on_cpu_is_refused(data_dir):
    from fairseq import tasks

    cfg = train_cfg(data_dir, "--fp16")  # was: AssertionError: Torch not compiled with CUDA enabled
    task = tasks.setup_task(cfg.task)
    fix = "train on CPU with --bf16 (bfloat16, fp32 router) or --memory-efficient-fp16, or drop --fp16"
    assert one_line(task.build_model, cfg.model).endswith(f"but --cpu: {fix}")
    # the same under Hydra, where the common options sit at the root of the config
    hydra = OmegaConf.create({"common": {"fp16": True, "cpu": True}, "model": {"_name": "switch_tiny"}})
    assert one_line(task.build_model, hydra.model).endswith(fix)
    bf16 = train_cfg(data_dir, "--bf16")
    task.build_model(bf16.model)


def test_an_input_length_beyond_the_sentinels_names_the_longest_that_works(data_dir):
    from fairseq import tasks

    message = one_line(tasks.setup_task, train_cfg(data_dir, "--input-length", 1000000).task)
    # was: "... append lines '<extra_id_N> 0' for N = 0..99 to dict.txt", which cannot help
    assert message.startswith("--input-length 1000000 needs 55556 sentinel tokens")
    assert message.endswith("(<extra_id_0>..<extra_id_99>): use --input-length 1792 or less, the longest whose spans "
                            "100 sentinels can mark")
    tasks.setup_task(train_cfg(data_dir, "--input-length", 1792).task)
    assert "use --input-length 1792 or less" in one_line(tasks.setup_task, train_cfg(data_dir, "--input-length",
                                                                                         1793).task)


@pytest.mark.parametrize("density,span,final", [(0.15, 3.0, True), (0.15, 3.0, False), (0.5, 1.0, True)])
@pytest.mark.parametrize("sentinels", [2, 5, 100])
def test_max_input_length_is_the_largest_that_fits(density, span, final, sentinels):
    from fairseq_switch.data.span_corruption import max_input_length

    def needed(length):
        return num_sentinels_needed(raw_length_for_input(length, density, span), density, span, final)

    longest = max_input_length(sentinels, density, span, final)
    assert needed(longest) <= sentinels < needed(longest + 1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, data_dir):
    """A switch_tiny save in the T5 layout (the architectures' default), and a 'converted' one: built from the
    flags a conversion prints, which conversion.json keeps next to it."""
    folder = tmp_path_factory.mktemp("saved")

    def save(path, extra=()):
        trainer = H.build_trainer(data_dir, 1, 0, list(extra))
        trainer.consolidate_optimizer()  # what checkpoint_utils.save_checkpoint does first
        trainer.save_checkpoint(str(path), {})

    save(folder / "t5.pt")
    conv = folder / "conv"
    conv.mkdir()
    flags = ["--layout", "t5", "--share-all-embeddings", "--encoder-layers", "2", "--decoder-layers", "2",
             "--moe-expert-count", "4", "--moe-freq", "2"]
    save(conv / "checkpoint.pt", ["--arch", "switch_transformer", *flags])
    (conv / "conversion.json").write_text(json.dumps({"fairseq_flags": flags}))
    return folder, flags


def finetune(data_dir, path, *flags):
    trainer = H.build_trainer(data_dir, 1, 0, list(flags))
    return one_line(trainer.load_checkpoint, str(path), reset_optimizer=True)


def test_finetuning_with_the_wrong_layout_names_the_checkpoints_flags(saved, data_dir):
    # was: Exception: Cannot load model parameters from checkpoint ...; please ensure that the architectures match.
    path = saved[0] / "t5.pt"
    assert finetune(data_dir, path, "--layout", "fairseq") == (
        f"{path} does not fit this model: it was saved with --layout t5 (this model: fairseq); build the model with "
        f"the checkpoint's flags: --layout t5")
    assert finetune(data_dir, path, "--encoder-ffn-embed-dim", "64").endswith(
        "it was saved with --encoder-ffn-embed-dim 32 (this model: 64); build the model with the checkpoint's flags: "
        "--encoder-ffn-embed-dim 32")


def test_finetuning_a_conversion_without_its_flags_names_them(saved, data_dir):
    folder, flags = saved
    path = folder / "conv" / "checkpoint.pt"
    message = finetune(data_dir, path, "--arch", "switch_transformer")
    assert message.endswith(f"build the model with the checkpoint's flags: --arch switch_transformer {' '.join(flags)}"
                            f" (from {folder / 'conv' / 'conversion.json'}) (changing the expert count of a trained "
                            f"model is not supported)")
    dense = finetune(data_dir, path, "--arch", "switch_transformer", "--moe-expert-count", "0")
    assert dense.startswith(f"{path} does not fit this model: it was saved with --layout t5 (this model: fairseq)")
    record = folder / "conv" / "conversion.json"
    assert dense.endswith(f"flags: --arch switch_transformer {' '.join(flags)} (from {record})")
    H.build_trainer(data_dir, 1, 0, ["--arch", "switch_transformer", *flags]).load_checkpoint(str(path),
                                                                                              reset_optimizer=True)


def test_an_arch_mismatch_names_the_arch(saved, data_dir):
    # was: "build the model with the checkpoint's --moe-expert-count and --moe-freq", which were the same
    message = finetune(data_dir, saved[0] / "t5.pt", "--arch", "switch_small")
    assert message.endswith("build the model with the checkpoint's flags: --arch switch_tiny --encoder-layers 2 "
                            "--decoder-layers 2 --moe-expert-count 4 --moe-freq 2 (changing the expert count of a "
                            "trained model is not supported)")


# -- section 6: input read wrong without a word -------------------------------------------------------------

def test_a_tab_inside_a_tsv_field_is_refused(tmp_path):
    f = tmp_path / "pairs.tsv"
    f.write_text("input\ttarget\nPack\tage\tjose\nfine\tok\n", encoding="utf-8")
    # was: "1 read, 1 kept", input 'Pack', target 'age': the columns shifted
    with pytest.raises(CorpusError, match=rf"^{f}:2: 3 tab-separated fields, but the header has 2: a field holds a "
                                          r"tab \(tsv has no quoting here\); replace tabs inside fields by spaces"):
        list(read_pairs(f))
    f.write_text("a\tb\nc\n", encoding="utf-8")  # no header (column numbers): the first row sets the width
    with pytest.raises(CorpusError, match=rf"^{f}:2: 1 tab-separated fields, but line 1 has 2"):
        list(read_pairs(f, "0", "1"))


@pytest.mark.parametrize("value,kind", [(None, "null"), (12345, "a number"), ({"nested": "x"}, "an object"),
                                        (True, "a boolean")])
def test_a_jsonl_text_that_is_not_a_string_is_refused(tmp_path, value, kind):
    f = tmp_path / "docs.jsonl"
    f.write_text(json.dumps({"text": "fine words"}) + "\n" + json.dumps({"text": value}) + "\n", encoding="utf-8")
    # was: trained on as 'None', '12345', "{'nested': 'x'}"
    with pytest.raises(CorpusError, match=rf"^{f}:2: field 'text' is {kind} \(.*\), not text"):
        list(read_documents(f))


def test_jsonl_pairs_refuse_what_is_not_text_but_keep_labels(tmp_path):
    f = tmp_path / "pairs.jsonl"
    rows = [{"input": "a", "target": 1}, {"input": "b", "target": ["x", "y"]}, {"input": None, "target": "c"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(CorpusError, match=rf"^{f}:3: field 'input' is null"):
        list(read_pairs(f))
    f.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]), encoding="utf-8")
    assert list(read_pairs(f)) == [("a", "1"), ("b", "x")]  # a class label; the first of several references


def hydra_cfg(*overrides):
    """A config composed as fairseq-hydra-train composes it (then resolved and frozen as its _hydra_main does)."""
    from fairseq.dataclass.initialize import add_defaults, hydra_init
    from hydra import compose, initialize_config_dir

    hydra_init("pretrain_tiny")  # fairseq-hydra-train's schema under the config's name (fairseq_cli.hydra_train)
    # version_base 1.1, as fairseq-hydra-train: a newer base is process-global and turns the
    # hydra.experimental API that fairseq calls later (convert_namespace_to_omegaconf) into an error
    with initialize_config_dir(config_dir=str(ROOT / "config"), version_base="1.1"):
        cfg = compose("pretrain_tiny", overrides=[f"common.user_dir={USER_DIR}", "task.data=x", *overrides])
    add_defaults(cfg)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    OmegaConf.set_struct(cfg, True)
    return cfg


def test_an_unknown_hydra_model_key_is_refused_with_the_nearest(data_dir):
    from fairseq import tasks

    cfg = hydra_cfg("+model.moe_expert_cont=2", f"task.data={data_dir}", "task.input_length=16")
    task = tasks.setup_task(cfg.task)
    # was: ignored without a word, and 8 experts trained
    assert one_line(task.build_model, cfg.model) == (
        "unknown option model.moe_expert_cont: nothing reads it, so it would be ignored; did you mean "
        "model.moe_expert_count?")


CONFIGS = sorted(str(p.relative_to(ROOT / "config")) for p in (ROOT / "config").rglob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS)
def test_every_shipped_config_has_only_known_model_keys(config):
    from fairseq_switch.tasks.config_checks import model_option_names, refuse_unknown_keys

    model = (OmegaConf.load(ROOT / "config" / config) or {}).get("model") or {}
    # a group file (distill/, multilingual/) adds keys to a config that names the model
    refuse_unknown_keys(model.keys(), model_option_names(model.get("_name", "switch_transformer")), "model")


def test_checks_do_not_change_the_config(data_dir):
    from fairseq_switch.tasks.config_checks import check_model_cfg, check_precision

    cfg = hydra_cfg(f"task.data={data_dir}")
    before = OmegaConf.to_yaml(cfg)
    check_model_cfg(cfg.model)
    check_precision(cfg.model)
    assert OmegaConf.to_yaml(cfg) == before
