"""pre-commit and prek as the tests start them: from this test environment, with homes of their own."""

import os
import shutil
import subprocess
import sys

import pytest


def runner_command(name):
    """How to start pre-commit or prek from this test environment, or None."""
    if name == "pre-commit":
        found = subprocess.run([sys.executable, "-m", "pre_commit", "--version"], capture_output=True)
        return [sys.executable, "-m", "pre_commit"] if found.returncode == 0 else None
    beside_python = shutil.which("prek", path=os.path.dirname(sys.executable))
    found = beside_python or shutil.which("prek")
    return [found] if found else None


def require_runner(name):
    command = runner_command(name)
    if command is None:
        missing = f"{name} is not installed: `pip install -e '.[test]'` installs it from PyPI"
        if os.environ.get("CI") == "true":
            pytest.fail(missing)  # CI installs it: a skip there would pass without running a hook
        pytest.skip(missing)
    return command


@pytest.fixture(scope="session")
def runner_homes(tmp_path_factory):
    """Where pre-commit and prek keep their hook environments: fresh for this test session."""
    home = tmp_path_factory.mktemp("runner-homes")
    return {"PRE_COMMIT_HOME": str(home / "pre-commit"), "PREK_HOME": str(home / "prek")}
