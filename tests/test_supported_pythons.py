"""The torch-free core works on every supported Python: the suite runs there without torch.

Each interpreter gets a fresh virtual environment with the package installed from this
checkout (no runtime dependencies) and pytest; the tests that need torch skip themselves.
"""

import os
import shutil
import subprocess
import sys
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


PYTEST_WHEELS = ("pytest", "pluggy", "iniconfig", "packaging", "pygments")


@pytest.mark.skipif(bool(os.environ.get(NESTED)), reason="already inside a supported-Python run")
def test_suite_passes_in_pyodide(tmp_path, tmp_path_factory):
    """Python 3.14, as the web page runs it: Pyodide from web/package-lock.json, under Node. There
    are no processes, threads or sockets there; tests.conftest skips a test for what the platform
    lacks, and every other torch-free test must pass."""
    from importlib.metadata import version

    from support import browser

    shared = tmp_path_factory.getbasetemp()  # shared by one run's pytest-xdist workers, as test_web_page's
    browser.build_page(shared.parent if os.environ.get("PYTEST_XDIST_WORKER") else shared)  # npm ci: Pyodide
    node = shutil.which("node")
    if node is None:
        browser.unavailable("Node.js is not installed: apt-get install -y nodejs npm")
    wheels = tmp_path / "wheels"
    download = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels),
                               *(f"{name}=={version(name)}" for name in PYTEST_WHEELS)],
                              capture_output=True, text=True)
    assert download.returncode == 0, download.stderr[-3000:]
    run = subprocess.run(
        [node, os.path.join(ROOT, "tests", "support", "pyodide_pytest.mjs"),
         os.path.join(ROOT, "web", "node_modules", "pyodide"), str(wheels), ROOT,
         "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-o", "addopts=", "-m", "not slow",
         # 1,100 nested folders: a test of CPython's recursion that MEMFS's own path lookups make
         # quadratic (90 s here, of the run's 110); the walk it tests is the same code on every Python
         "--deselect", "tests/test_cli.py::test_a_thousand_nested_folders_are_walked_without_recursion",
         "/host/repo/tests"],
        capture_output=True, text=True, env={**{k: v for k, v in os.environ.items() if k != "CI"}, NESTED: "1"},
    )
    tail = run.stdout[-3000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    summary = run.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, tail
