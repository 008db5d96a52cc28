"""The torch-free core works on every supported Python: the suite runs there without torch.

Each interpreter gets a fresh virtual environment with the package installed from this
checkout (no runtime dependencies) and pytest; the tests that need torch skip themselves.
"""

import os
import shutil
import subprocess
import tempfile

import pytest
from support.interpreters import find_python

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NESTED = "PTH_LEGACY_KEYS_SUPPORTED_PYTHON_RUN"
VERSIONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]


@pytest.mark.skipif(bool(os.environ.get(NESTED)), reason="already inside a supported-Python run")
@pytest.mark.parametrize("version", VERSIONS)
def test_suite_passes_without_torch(version, tmp_path, request):
    python = find_python(version)
    if python is None:
        missing = f"Python {version} was not found (on PATH, by `uv python find`, or by pyenv)"
        if os.environ.get("CI") == "true":
            pytest.fail(missing)  # CI has them all: a skip there would pass without testing that Python
        pytest.skip(missing)
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    venv_python = str(venv / "bin" / "python")
    install = subprocess.run([venv_python, "-m", "pip", "install", "-q", ROOT, "pytest", "pytest-xdist"],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    assert subprocess.run([venv_python, "-c", "import torch"], capture_output=True).returncode != 0

    basetemp = tempfile.mkdtemp(prefix=f"pth-{version}-")
    request.addfinalizer(lambda: shutil.rmtree(basetemp, ignore_errors=True))
    run = subprocess.run(
        # Its own basetemp: pytest prunes old numbered folders of the user's, and another session's
        # (this one's, or a sibling run's) could be among them. A short one: tests bind unix sockets
        # there, whose paths may hold 108 bytes at most.
        [venv_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", basetemp,
         os.path.join(ROOT, "tests")],
        # Without CI=true: this venv holds the package and pytest alone, by design, so the tests of
        # the tools CI installs (pre-commit, zizmor ...) skip here, as they run in the outer suite.
        cwd=tmp_path, capture_output=True, text=True,
        env={**{k: v for k, v in os.environ.items() if k != "CI"}, NESTED: "1"},
    )
    tail = run.stdout[-3000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    summary = run.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, tail
    installed = subprocess.run([venv_python, "-c", "import pth_legacy_keys; print(pth_legacy_keys.__file__)"],
                               capture_output=True, text=True, cwd=tmp_path).stdout
    assert installed.startswith(str(venv)), installed  # the installed package, not the checkout's
