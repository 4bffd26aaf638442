"""fairseq_switch.logs: JSON metric records in fairseq-train and Hydra line formats, parameter counts."""

from fairseq_switch.logs import json_records, logged_arg, model_params, param_counts

PLAIN = [
    "2026-11-25 20:10:00 | INFO | fairseq_cli.train | num. shared model params: 920,832 (num. trained: 920,832)",
    "2026-11-25 20:10:00 | INFO | fairseq_cli.train | num. expert model params: 2107392 (num. trained: 2107392)",
    '2026-11-25 20:10:05 | INFO | train_inner | {"epoch": 1, "update": 0.123, "loss": "9.1", "nll_loss": "8.9", '
    '"wall": "12", "num_updates": "100"}',
    '2026-11-25 20:10:09 | INFO | valid | {"epoch": 1, "valid_loss": "7.9", "valid_nll_loss": "7.7", '
    '"valid_neg_log_perplexity": "-5.3", "valid_num_updates": "200", "valid_best_loss": "7.9"}',
    '2026-11-25 20:10:10 | INFO | train | {"epoch": 1, "train_loss": "8.5", "train_train_wall": "10", '
    '"train_wall": "14", "train_num_updates": "200"}',
    "2026-11-25 20:10:10 | INFO | fairseq_cli.train | end of epoch 1 (average epoch stats below)",
]

HYDRA = [
    "[2026-11-25 20:10:00,001][fairseq_cli.train][INFO] - num. model params: 3,580,245 (num. trained: 3,580,245)",
    '[2026-11-25 20:10:05,123][train_inner][INFO] - {"epoch": 1, "update": 0.123, "loss": "9.1", "nll_loss": "8.9", '
    '"wall": "12", "num_updates": "100"}',
    '[2026-11-25 20:10:09,456][valid][INFO] - {"epoch": 1, "valid_loss": "7.9", "valid_nll_loss": "7.7", '
    '"valid_neg_log_perplexity": "-5.3", "valid_num_updates": "200", "valid_best_loss": "7.9"}',
    '[2026-11-25 20:10:10,000][train][INFO] - {"epoch": 1, "train_loss": "8.5", "train_train_wall": "10", '
    '"train_wall": "14", "train_num_updates": "200"}',
    "[2026-11-25 20:10:10,001][fairseq_cli.train][INFO] - end of epoch 1 (average epoch stats below)",
]

TRAIN_INNER = {"epoch": 1, "update": 0.123, "loss": 9.1, "nll_loss": 8.9, "wall": 12.0, "num_updates": 100.0}
VALID = {"epoch": 1, "loss": 7.9, "nll_loss": 7.7, "neg_log_perplexity": -5.3, "num_updates": 200.0, "best_loss": 7.9}
TRAIN = {"epoch": 1, "loss": 8.5, "train_wall": 10.0, "wall": 14.0, "num_updates": 200.0}


def test_plain_fairseq_train_format():
    assert json_records(PLAIN, "train_inner") == [TRAIN_INNER]
    assert json_records(PLAIN, "valid") == [VALID]
    assert json_records(PLAIN, "train") == [TRAIN]


def test_hydra_format_gives_the_same_records():
    assert json_records(HYDRA, "train_inner") == [TRAIN_INNER]
    assert json_records(HYDRA, "valid") == [VALID]
    assert json_records(HYDRA, "train") == [TRAIN]


def test_unknown_tag_non_json_and_broken_lines_are_skipped():
    lines = PLAIN + HYDRA + [
        "2026-11-25 20:10:11 | INFO | valid | not json",
        "[2026-11-25 20:10:11,000][valid][INFO] - {broken",
        '[2026-11-25 20:10:11,000][valid][INFO] - ["a list"]',
    ]
    assert json_records(lines, "valid") == [VALID, VALID]
    assert json_records(lines, "test") == []


def test_non_numeric_strings_are_kept():
    line = '[2026-11-25 20:10:05,123][valid][INFO] - {"valid_loss": "inf", "valid_note": "x", "valid_n": 3}'
    assert json_records([line], "valid") == [{"loss": float("inf"), "note": "x", "n": 3}]


def test_param_counts():
    assert param_counts(PLAIN) == {"shared": 920832, "expert": 2107392, "total": 3028224}
    assert model_params(PLAIN) == 3028224
    assert param_counts(HYDRA) == {"model": 3580245, "total": 3580245}
    assert model_params(["num. model params: 1234 (num. trained: 1234)"]) == 1234
    assert model_params(["nothing here"]) is None


def test_logged_arg():
    ns = "2026-11-25 | INFO | fairseq_cli.train | Namespace(arch='switch_tiny', moe_expert_count=8, moe_freq=2)"
    dct = "[x][fairseq_cli.train][INFO] - {'model': {'_name': 'switch_tiny', 'moe_expert_count': 32, 'moe_freq': 2}}"
    assert logged_arg([ns], "moe_expert_count") == "8"
    assert logged_arg([ns], "arch") == "switch_tiny"
    assert logged_arg([dct], "moe_expert_count") == "32"
    assert logged_arg([ns], "moe_expert_dropout") is None
