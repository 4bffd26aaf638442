import contextlib
import io
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_finish(session):
    """Register the plugin if a test module imported fairseq or the expert-parallel harness (whose tests run
    fairseq in this process): only fairseq's own --user-dir import registers, and fairseq skips the package
    once a test module has imported it."""
    if "fairseq" in sys.modules or "tests.ep_harness" in sys.modules:
        from fairseq_switch.plugin import register

        register()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matmuls on 2 OpenMP threads cost ~15 ms each here (vs 0.05 ms on one): a module asks for one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A dictionary with sentinels (all the expert-parallel harness needs: its batches are built in memory)."""
    from . import ep_harness as H  # imports torch and the plugin: only where needed

    d = tmp_path_factory.mktemp("ep_data")
    H.write_dictionary(str(d))
    return str(d)


@pytest.fixture(scope="session")
def pretrain_data(tmp_path_factory):
    """Moby-Dick through prepare_pretraining_data (vocab 600), and its fairseq-preprocess, in this process (a
    subprocess spends seconds importing fairseq again): (folder, its stdout)."""
    from fairseq_switch.lab.corpora.prepare import pretraining
    from fairseq_switch.data import vocab

    from tests.helpers import fairseq_preprocess_in_process

    out = tmp_path_factory.mktemp("pretrain") / "bin"
    argv = ["--out", str(out), "--vocab-size", "600", "--valid-words", "4000", "--test-words", "2000",
            str(ROOT / "data" / "moby_dick" / "moby_dick.txt")]
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout):
        mp.setattr(vocab, "run_fairseq_preprocess", fairseq_preprocess_in_process)
        assert pretraining.main(argv) == 0
    return out, stdout.getvalue()
