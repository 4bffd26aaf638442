"""The Hydra configs in config/ compose under fairseq and carry the paper's settings (Sec. 3, Table 9)."""

from pathlib import Path

import pytest
from fairseq.dataclass.initialize import hydra_init
from fairseq.models import ARCH_MODEL_REGISTRY
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import fairseq_switch  # noqa: F401  registers the arches, task and criterion
from fairseq_switch.data.span_corruption import example_lengths, raw_length_for_input

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def load(name, overrides=()):
    GlobalHydra.instance().clear()
    hydra_init(name)
    # version_base 1.1, as fairseq-hydra-train runs: a newer base stays set process-wide and breaks
    # fairseq's own hydra.experimental calls in later tests
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.1"):
        return compose(config_name=name, overrides=list(overrides))


@pytest.mark.parametrize("name", ["pretrain_tiny", "pretrain_small", "pretrain_base", "pretrain_large"])
def test_config_composes_with_registered_components(name):
    cfg = load(name)
    assert cfg.task._name == "span_corruption"
    assert cfg.model._name in ARCH_MODEL_REGISTRY
    assert cfg.criterion._name == "switch_cross_entropy"
    assert cfg.criterion.moe_loss_weight == 0.01 and cfg.criterion.router_z_loss_weight == 0.0
    assert cfg.model.moe_capacity_factor == 1.25 and cfg.model.moe_eval_capacity_factor == 2.0
    assert cfg.task.noise_density == 0.15 and cfg.task.mean_noise_span_length == 3.0
    assert cfg.common.log_format == "json" and cfg.dataset.validate_interval_updates > 0
    # the expert count is a plain key, so a sweep can override it without '+'
    assert load(name, ["model.moe_expert_count=0"]).model.moe_expert_count == 0


@pytest.mark.parametrize("name,arch", [("pretrain_base", "switch_base"), ("pretrain_large", "switch_large")])
def test_paper_scale_configs(name, arch):
    cfg = load(name)
    assert cfg.model._name == arch and cfg.model.moe_expert_count == 128
    tokens_per_batch = (cfg.distributed_training.distributed_world_size * cfg.dataset.max_tokens
                        * cfg.optimization.update_freq[0])
    assert tokens_per_batch == 2 ** 20
    assert cfg.optimization.max_update == 550_000
    assert cfg.task.input_length == 512
    assert raw_length_for_input(512, 0.15, 3.0) == 568
    assert example_lengths(568, 0.15, 3.0, final_sentinel=False) == (512, 114)
    assert cfg.optimizer._name == "adafactor" and cfg.optimizer.beta1 is None
    # T5's schedule: 0.01 for 10^4 steps, then 1/sqrt(step)
    assert cfg.optimization.lr[0] == cfg.lr_scheduler.warmup_init_lr == 0.01
    assert cfg.lr_scheduler.warmup_updates == 10_000
    assert cfg.common.bf16


@pytest.mark.parametrize("name,metric", [("finetune_tiny", "rouge2"), ("finetune_tiny_mixture", "acc")])
def test_finetune_configs(name, metric):
    from fairseq_switch.tasks.text_to_text import TextToTextConfig

    cfg = load(name, ["checkpoint.finetune_from_model=/x/checkpoint_best.pt"])
    assert cfg.task._name == "text_to_text" and cfg.model._name in ARCH_MODEL_REGISTRY
    assert cfg.model.dropout == 0.1 and cfg.task.expert_dropout == 0.4  # paper fine-tuning
    assert cfg.checkpoint.best_checkpoint_metric == metric and cfg.checkpoint.maximize_best_checkpoint_metric
    assert cfg.dataset.validate_interval_updates == 200
    # every validation can become checkpoint_best (fairseq updates the best score only when it saves)
    assert cfg.checkpoint.save_interval_updates == cfg.dataset.validate_interval_updates
    assert set(cfg.task) <= set(TextToTextConfig.__dataclass_fields__) | {"_name"}  # no stray task keys
    if name.endswith("mixture"):
        assert cfg.task.mixture == "bbc-topic,spam" and cfg.task.eval_metric == "acc"
    # without the pretrained checkpoint fairseq stops ("does not exist") instead of training from scratch
    assert "SET_checkpoint.finetune_from_model" in load(name).checkpoint.finetune_from_model


def test_one_finetuning_recipe_with_one_decode():
    """The fine-tuning commands of docs/finetuning.md and compare_finetune.sh run config/finetune_tiny.yaml, and their
    fairseq-generate decodes as validation does (its eval_generate_args), with an explicit length limit."""
    import json

    cfg = load("finetune_tiny")
    gen = json.loads(cfg.task.eval_generate_args)
    flags = f"--beam {gen['beam']} --max-len-a {gen['max_len_a']} --max-len-b {gen['max_len_b']}"
    section = (CONFIG_DIR.parent / "docs" / "finetuning.md").read_text()
    script = (CONFIG_DIR.parent / "scripts" / "compare_finetune.sh").read_text()
    for where, text in (("docs/finetuning.md", section), ("compare_finetune.sh", script)):
        assert "--config-name finetune_tiny " in text, where
        generates = [ln for ln in text.splitlines() if "--gen-subset test" in ln]
        assert generates and all(flags in ln for ln in generates), (where, flags, generates)
        assert "fairseq-train " not in text, where  # no second recipe
    assert "model.moe_expert_count=0" in section  # the dense twin, next to the Switch command
    # validation at every validate_interval_updates only, not also at each epoch end
    assert cfg.dataset.validate_interval > 1000


@pytest.mark.parametrize("name,task", [("distill_tiny", "span_corruption"), ("distill_tiny_summaries", "text_to_text")])
def test_distillation_configs_make_the_table6_rows(name, task):
    from fairseq_switch.criterions.switch_distillation import SwitchDistillationConfig
    from fairseq_switch.models.switch_transformer import SwitchConfig
    from fairseq_switch.tasks.config_checks import check_model_cfg
    from fairseq_switch.tasks.switch_task import StudentInitConfig

    rows = {}
    for row in ("none", "init", "mix"):
        cfg = load(name, [f"distill={row}", "criterion.teacher_path=/x/teacher.pt"])
        assert cfg.task._name == task and cfg.model._name == "t5_tiny" and cfg.criterion._name == "switch_distillation"
        assert set(cfg.criterion) <= set(SwitchDistillationConfig.__dataclass_fields__) | {"_name"}
        # the task builds the model and initialises the student: the options are the task's alone
        assert {"student_init_from", "student_ffn_init"} <= set(StudentInitConfig.__dataclass_fields__)
        assert not {"student_init_from", "student_ffn_init"} & (set(SwitchConfig.__dataclass_fields__) | set(cfg.model))
        check_model_cfg(cfg.model)  # no model key left that nothing reads
        rows[row] = (cfg.criterion.distill_weight, cfg.task.student_init_from)
    assert rows == {"none": (0.0, None), "init": (0.0, "/x/teacher.pt"), "mix": (0.25, "/x/teacher.pt")}
    # the default is the paper's recipe; without a teacher fairseq stops with "no such checkpoint file"
    cfg = load(name)
    assert cfg.criterion.distill_weight == 0.25 and "SET_criterion.teacher_path" in cfg.criterion.teacher_path
    # a config written when they were model options is told where they went
    with pytest.raises(ValueError, match=r"model.student_ffn_init is a task option: set task.student_ffn_init"):
        check_model_cfg(load(name, ["+model.student_ffn_init=mean"]).model)


@pytest.mark.parametrize(
    "base,group,arch", [("pretrain_tiny", "tiny", "switch_tiny"), ("pretrain_base", "base", "switch_base")]
)
def test_multilingual_group_turns_a_pretraining_config_multilingual(base, group, arch):
    from fairseq_switch.tasks.multilingual_span_corruption import MultilingualSpanCorruptionConfig

    plain, cfg = load(base), load(base, [f"+multilingual={group}", "model.moe_expert_count=0"])
    assert cfg.task._name == "multilingual_span_corruption" and cfg.task.language_alpha == 0.3
    assert set(cfg.task) <= set(MultilingualSpanCorruptionConfig.__dataclass_fields__) | {"_name"}
    # everything else is the pretraining recipe, untouched
    assert cfg.model._name == arch and cfg.task.input_length == plain.task.input_length
    for section in ("optimizer", "optimization", "lr_scheduler", "criterion", "dataset"):
        assert cfg[section] == plain[section], section
    assert cfg.common.log_format == "json" and cfg.model.moe_expert_count == 0


def test_probe_group_adds_the_zero_shot_probe_to_pretraining():
    from fairseq_switch.tasks.span_corruption import SpanCorruptionConfig

    plain, cfg = load("pretrain_tiny"), load("pretrain_tiny", ["+probe=classification"])
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(cfg.task, resolve=False)["probe"]
    assert raw == "${hydra:runtime.cwd}/data/downstream/bbc-topic,${hydra:runtime.cwd}/data/downstream/spam"
    assert cfg.task.probe_points == 0 and set(cfg.task) <= set(SpanCorruptionConfig.__dataclass_fields__) | {"_name"}
    for section in ("model", "optimizer", "optimization", "criterion", "dataset"):
        assert cfg[section] == plain[section], section
