import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A dictionary with sentinels (all the expert-parallel harness needs: its batches are built in memory)."""
    from . import ep_harness as H  # imports torch and the plugin: only where needed

    d = tmp_path_factory.mktemp("ep_data")
    H.write_dictionary(str(d))
    return str(d)


@pytest.fixture(scope="session")
def pretrain_data(tmp_path_factory):
    """Moby-Dick through prepare_pretraining_data.py (vocab 600): (folder, the script's stdout)."""
    out = tmp_path_factory.mktemp("pretrain") / "bin"
    cmd = [sys.executable, str(ROOT / "scripts" / "prepare_pretraining_data.py"), "--out", str(out),
           "--vocab-size", "600", "--valid-words", "4000", "--test-words", "2000",
           str(ROOT / "data" / "moby_dick" / "moby_dick.txt")]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out, res.stdout
