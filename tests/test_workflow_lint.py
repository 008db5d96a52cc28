"""action.yml and this repository's workflows pass GitHub's schemas and zizmor's security audits."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def tool(name):
    found = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if not found:
        missing = f"{name} is not installed: `pip install -e '.[test]'` installs it from PyPI"
        if os.environ.get("CI") == "true":
            pytest.fail(missing)  # CI installs it: a skip there would pass without linting anything
        pytest.skip(missing)
    return found


def test_the_workflows_are_pages_release_and_self_test():
    assert [w.name for w in WORKFLOWS] == ["pages.yml", "release.yml", "self-test.yml"]
    assert "uses: ./" in (ROOT / ".github" / "workflows" / "self-test.yml").read_text()


@pytest.mark.parametrize("schema, files", [
    ("vendor.github-actions", [ROOT / "action.yml"]),
    ("vendor.github-workflows", WORKFLOWS),
])
def test_files_match_githubs_schemas(schema, files):
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", schema, *map(str, files)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing():
    result = subprocess.run([tool("zizmor"), "--offline", "--no-progress", str(ROOT / "action.yml"),
                             *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr
