import pytest

from . import ep_harness as H


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A dictionary with sentinels (all the expert-parallel harness needs: its batches are built in memory)."""
    d = tmp_path_factory.mktemp("ep_data")
    H.write_dictionary(str(d))
    return str(d)
