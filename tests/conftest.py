import pytest
from helpers import DATA, copy_of


@pytest.fixture
def fixture_copy(tmp_path):
    """Copy a committed torch-made checkpoint from tests/data into tmp_path, optionally renamed."""
    return lambda name, new_name=None: copy_of(tmp_path, DATA / name, new_name)
