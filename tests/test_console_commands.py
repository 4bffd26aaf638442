"""The console commands of setup.py: every target exists, and the dispatcher routes and refuses clearly."""

import importlib
import re
from pathlib import Path

import pytest

from fairseq_switch.lab import cli

ROOT = Path(__file__).resolve().parents[1]


def _targets():
    setup = (ROOT / "setup.py").read_text()
    direct = re.findall(r'"(fairseq-switch-[a-z]+) = ([\w.]+):(\w+)"', setup)
    assert {name for name, _, _ in direct} >= {"fairseq-switch-prepare", "fairseq-switch-report",
                                               "fairseq-switch-convert"}
    routed = [(f"{group} {sub}",) + tuple(target.split(":")) for group, subs in cli.COMMANDS.items()
              for sub, target in subs.items()]
    return direct + routed


@pytest.mark.parametrize("name, module, function", _targets())
def test_every_command_target_is_a_function(name, module, function):
    assert callable(getattr(importlib.import_module(module), function)), name


def test_each_script_is_a_command_target():
    """`python scripts/X.py` and the console command run the same `main`."""
    targets = {f"{m}:{f}" for _, m, f in _targets()}
    for script in ROOT.glob("scripts/*.py"):
        found = re.search(r"from ([\w.]+) import (main)\b", script.read_text())
        if found and not script.name.startswith(("bench_", "check_")):
            assert f"{found[1]}:{found[2]}" in targets, script.name


def test_dispatcher_usage_and_errors(capsys):
    assert cli.run("prepare", ["--help"]) == 0
    assert "pretraining" in capsys.readouterr().out
    assert cli.run("report", []) == 2
    assert cli.run("report", ["scalling"]) == 2
    assert "unknown subcommand 'scalling'; choose one of scaling," in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # the subcommand's own parser answers --help
        cli.run("report", ["scaling", "--help"])
    assert e.value.code == 0 and "usage: fairseq-switch-report scaling" in capsys.readouterr().out
