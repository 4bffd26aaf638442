"""scripts/install.sh refuses, in one line and before installing anything, a Python outside 3.10-3.12 and a
system torch older than the oldest tested (TORCH=system)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def install(tmp_path, **env):
    venv = tmp_path / "venv"
    full = {**os.environ, "VENV": str(venv), **env}
    proc = subprocess.run(["bash", "scripts/install.sh"], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=300)
    return proc, venv


def fake_python(tmp_path, version):
    """A `python` that reports `version` and would fail at anything else."""
    path = tmp_path / "python-fake"
    path.write_text(f'#!/bin/sh\ncase "$*" in *version_info*) echo {version};; *) exit 99;; esac\n')
    path.chmod(0o755)
    return str(path)


def test_python_outside_the_range_is_refused_in_one_line(tmp_path):
    for version in ("3.9", "3.13"):
        proc, venv = install(tmp_path, PYTHON=fake_python(tmp_path, version))
        assert proc.returncode == 1 and not venv.exists()
        assert proc.stderr.strip().splitlines() == [
            f"error: {tmp_path}/python-fake is Python {version}; fairseq-switch supports Python 3.10-3.12, the "
            "versions its stack (fairseq 0.12, fairscale 0.4.13) is checked on"]


def test_missing_python_and_unknown_torch_mode(tmp_path):
    proc, _ = install(tmp_path, PYTHON="python-nowhere")
    assert proc.returncode == 1 and "python-nowhere not found" in proc.stderr
    proc, _ = install(tmp_path, TORCH="cuda")
    assert proc.returncode == 1 and proc.stderr.startswith("error: TORCH=cuda: use TORCH=system")


def test_system_torch_older_than_the_floor_is_refused(tmp_path):
    """A venv that sees the system packages (here: a fake torch 2.4.1 on PYTHONPATH) is made, and the check stops
    the install before pip runs."""
    fake = tmp_path / "site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('__version__ = "2.4.1+cu121"\n')
    proc, venv = install(tmp_path, PYTHON=sys.executable, TORCH="system", PYTHONPATH=str(tmp_path / "site"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: TORCH=system found torch 2.4.1+cu121; fairseq-switch needs torch >= 2.11 (the oldest it is tested on)")
    assert not (venv / ".fairseq_switch_installed").exists()
    assert "[install] fairseq" not in proc.stdout
