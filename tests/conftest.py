import os
import shutil

import pytest

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


@pytest.fixture
def fixture_copy(tmp_path):
    """Copy a committed torch-made checkpoint from tests/data into tmp_path."""

    def copy(name, new_name=None):
        target = tmp_path / (new_name or name)
        shutil.copyfile(os.path.join(DATA, name), target)
        return target

    return copy
