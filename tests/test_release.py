"""What .github/workflows/release.yml does on a tag, done here: build the sdist and the wheel from a
copy of the repository, check them with twine, install the wheel in a fresh venv and run it on the
committed fixtures; then the workflow's own shell steps, and the workflow's shape (trigger, pins,
permissions, trusted publishing).

The build is isolated, as in the workflow: it installs pyproject.toml's build requirements
(setuptools) from PyPI. build and twine come with the test extras; under CI=true a missing tool
fails the test instead of skipping it, except in test_supported_pythons.py's runs of the suite,
whose venvs hold only the package and pytest by design.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pth_legacy_keys
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
RELEASE_YML = ROOT / ".github" / "workflows" / "release.yml"
VERSION = pth_legacy_keys.__version__
SHA_PIN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")


def missing(what):
    """Fail under CI=true (CI must not pass by skipping), skip elsewhere and in the supported-Python
    runs (test_supported_pythons.py), which install only the package and pytest."""
    message = f"{what} is missing: `pip install -e '.[test]'` installs it"
    if os.environ.get("CI") == "true" and not os.environ.get("PTH_LEGACY_KEYS_SUPPORTED_PYTHON_RUN"):
        pytest.fail(message)
    pytest.skip(message)


def need_module(name):
    spec = importlib.util.find_spec(name)
    # a bare folder named like the module (a build/ left in the current folder) is no module
    if spec is None or spec.origin in (None, "namespace"):
        missing(f"the Python package {name}")


def need_program(name):
    found = shutil.which(name)
    if not found:
        missing(f"the program {name}")
    return found


def run(argv, **kwargs):
    return subprocess.run([str(a) for a in argv], check=False, capture_output=True, text=True, **kwargs)


def copy_of_repository(target):
    """The files a commit would hold now: tracked files that exist, and new files git does not
    ignore. Nothing from the build or test runs of the working tree (build/, *.egg-info, caches)."""
    git = need_program("git")
    listed = run([git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    for name in sorted(set(filter(None, listed.stdout.split("\0")))):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():  # a tracked file deleted in the work tree is left out
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """`python -m build` of a copy of the repository: {"sdist": path, "wheel": path, "source": copy}."""
    need_module("build")
    source = copy_of_repository(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("dist")
    built = run([sys.executable, "-I", "-m", "build", "--outdir", out, source], cwd=source,
                env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    assert len(list(out.iterdir())) == 2
    return {"wheel": wheels[0], "sdist": sdists[0], "source": source}


# --- the distributions -------------------------------------------------------------------------

def test_twine_check_strict_passes(dist):
    need_module("twine")
    checked = run([sys.executable, "-I", "-m", "twine", "check", "--strict", dist["sdist"], dist["wheel"]],
                  cwd=dist["sdist"].parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2, checked.stdout


def test_the_file_names_carry_the_packages_version(dist):
    assert dist["wheel"].name == f"pth_legacy_keys-{VERSION}-py3-none-any.whl"
    assert dist["sdist"].name == f"pth_legacy_keys-{VERSION}.tar.gz"
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        metadata = wheel.read(f"pth_legacy_keys-{VERSION}.dist-info/METADATA").decode()
    assert "\nName: pth-legacy-keys\n" in metadata
    assert f"\nVersion: {VERSION}\n" in metadata


def test_the_wheel_holds_exactly_the_package_modules(dist):
    modules = {f"pth_legacy_keys/{p.name}"
               for p in (dist["source"] / "hooks" / "pth_legacy_keys").glob("*.py")}
    assert "pth_legacy_keys/cli.py" in modules
    dist_info = f"pth_legacy_keys-{VERSION}.dist-info/"
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = wheel.namelist()
        entry_points = wheel.read(dist_info + "entry_points.txt").decode()
    package = {n for n in names if not n.startswith(dist_info)}
    assert package == modules
    assert not [n for n in names if "test" in n.lower() or n.startswith(("tests/", "hooks/"))]
    assert {n[len(dist_info):] for n in names if n.startswith(dist_info)} >= {
        "METADATA", "WHEEL", "RECORD", "entry_points.txt"}
    assert "pth-legacy-keys = pth_legacy_keys.cli:main" in entry_points


def test_the_sdist_holds_the_readme_and_the_package(dist):
    top = f"pth_legacy_keys-{VERSION}/"
    with tarfile.open(dist["sdist"]) as sdist:
        names = set(sdist.getnames())
        readme = sdist.extractfile(top + "README.md").read()
    assert {top + n for n in ("README.md", "PKG-INFO", "setup.cfg", "pyproject.toml")} <= names
    assert readme == (dist["source"] / "README.md").read_bytes()
    for module in (dist["source"] / "hooks" / "pth_legacy_keys").glob("*.py"):
        assert f"{top}hooks/pth_legacy_keys/{module.name}" in names


def test_the_wheel_installs_in_a_fresh_venv_and_its_cli_works(dist, tmp_path):
    venv = tmp_path / "venv"
    made = run([sys.executable, "-I", "-m", "venv", venv], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    installed = run([bin_dir / "python", "-I", "-m", "pip", "install", "--disable-pip-version-check",
                     "--no-index", "--no-deps", dist["wheel"]], cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    tool = bin_dir / "pth-legacy-keys"

    version = run([tool, "--version"], cwd=tmp_path)
    assert (version.returncode, version.stdout.strip()) == (0, f"pth-legacy-keys {VERSION}")

    # the installed copy, not this checkout's hooks/
    where = run([bin_dir / "python", "-I", "-c", "import pth_legacy_keys; print(pth_legacy_keys.__file__)"])
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr

    checkpoint = tmp_path / "x.pth"
    shutil.copyfile(DATA / "parametrized.bin", checkpoint)
    parametrized = run([tool, "check", checkpoint], cwd=tmp_path)
    assert parametrized.returncode == 1, parametrized.stdout + parametrized.stderr
    assert "parametrized weight-norm keys" in parametrized.stdout

    shutil.copyfile(DATA / "legacy.bin", checkpoint)
    legacy = run([tool, "check", checkpoint], cwd=tmp_path)
    assert legacy.returncode == 0, legacy.stdout + legacy.stderr
    assert "Traceback" not in parametrized.stderr + legacy.stderr


# --- release.yml's own shell steps ---------------------------------------------------------------

def workflow():
    need_module("yaml")
    import yaml

    return yaml.safe_load(RELEASE_YML.read_text())


def steps_to_run(job):
    """The job's run: steps, but not the pip install of build and twine (this venv has them)."""
    steps = workflow()["jobs"][job]["steps"]
    assert any(s.get("name") == "Install build and twine" for s in steps) or job != "build"
    return [s for s in steps if "run" in s and s.get("name") != "Install build and twine"]


def run_step(step, workspace, runner_temp, tag):
    bash = need_program("bash")
    env = {**os.environ, "GITHUB_REF_NAME": tag, "RUNNER_TEMP": str(runner_temp),
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    script = runner_temp / "step.sh"
    script.write_text(step["run"])
    # what GitHub runs for a step with no shell: of its own
    return run([bash, "-e", script], cwd=workspace, env=env)


def test_the_workflows_build_and_check_steps_pass_here(tmp_path):
    need_module("build")
    need_module("twine")
    workspace = copy_of_repository(tmp_path / "workspace")
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir()
    steps = steps_to_run("build") + steps_to_run("check")
    assert len(steps) == 4, [s.get("name") for s in steps]
    for step in steps:
        result = run_step(step, workspace, runner_temp, f"v{VERSION}")
        assert result.returncode == 0, f"{step.get('name')}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    assert sorted(p.name for p in (workspace / "dist").iterdir()) == [
        f"pth_legacy_keys-{VERSION}-py3-none-any.whl", f"pth_legacy_keys-{VERSION}.tar.gz"]


def test_a_tag_that_is_not_the_packages_version_stops_the_release(tmp_path):
    (step,) = [s for s in steps_to_run("build") if s.get("name") == "The tag names the package's version"]
    workspace = copy_of_repository(tmp_path / "workspace")
    result = run_step(step, workspace, tmp_path, "v99.0.0")
    assert result.returncode == 1
    assert f'tag v99.0.0, but hooks/pth_legacy_keys/__init__.py says __version__ = "{VERSION}"' in result.stdout


# --- release.yml's shape -----------------------------------------------------------------------

def test_only_a_v_tag_triggers_a_release():
    w = workflow()
    triggers = w.get("on", w.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers == {"push": {"tags": ["v*"]}}


def uses_lines():
    return [line.strip() for line in RELEASE_YML.read_text().splitlines()
            if re.match(r"\s*(- )?uses:", line)]


def all_uses():
    w = workflow()
    for name, job in w["jobs"].items():
        if "uses" in job:
            yield name, job["uses"]
        for step in job.get("steps", []):
            if "uses" in step:
                yield name, step["uses"]


def test_every_action_is_pinned_by_a_full_commit_sha_with_its_version_in_a_comment():
    used = list(all_uses())
    assert len(used) >= 6
    for job, uses in used:
        assert SHA_PIN.match(uses), f"{job}: {uses} is not pinned by a 40-hex commit SHA"
    lines = uses_lines()
    assert len(lines) == len(used)
    for line in lines:
        assert re.fullmatch(r"(- )?uses: \S+@[0-9a-f]{40}\s+# v\d+\.\d+\.\d+", line), line


def test_an_action_has_the_same_pin_here_as_in_the_other_workflows_and_action_yml():
    pins = {}
    for path in [ROOT / "action.yml", *sorted((ROOT / ".github" / "workflows").glob("*.yml"))]:
        for action, sha in re.findall(r"uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40})", path.read_text()):
            pins.setdefault(action, set()).add(sha)
    assert {action: shas for action, shas in pins.items() if len(shas) > 1} == {}


def test_only_the_publish_job_may_get_an_oidc_token_and_only_the_tag_job_may_write():
    w = workflow()
    assert w["permissions"] in ({}, {"contents": "read"})
    expected = {
        "build": {"contents": "read"},
        "check": {"contents": "read"},
        "publish": {"id-token": "write"},
        "major-tag": {"contents": "write"},
    }
    assert {name: job.get("permissions") for name, job in w["jobs"].items()} == expected
    assert [name for name, job in w["jobs"].items() if "id-token" in job["permissions"]] == ["publish"]


def test_the_publish_step_is_trusted_publishing_from_the_pypi_environment():
    w = workflow()
    publish = w["jobs"]["publish"]
    environment = publish["environment"]
    assert (environment if isinstance(environment, str) else environment["name"]) == "pypi"
    assert set(publish["needs"]) == {"build", "check"}
    (step,) = [s for s in publish["steps"] if s.get("uses", "").startswith("pypa/gh-action-pypi-publish@")]
    inputs = step.get("with", {})
    assert not {"password", "user", "username"} & set(inputs)
    assert "secrets." not in RELEASE_YML.read_text()
    for job in w["jobs"].values():  # and no other job publishes
        if job is not publish:
            assert not [s for s in job["steps"] if "pypi-publish" in s.get("uses", "")]


def test_the_major_tag_moves_after_publishing_with_a_token_that_is_never_persisted():
    w = workflow()
    job = w["jobs"]["major-tag"]
    assert job["needs"] in ("publish", ["publish"])
    script = "\n".join(s["run"] for s in job["steps"] if "run" in s)
    assert 'git tag -f "$major"' in script
    assert 'push -f origin "refs/tags/$major"' in script
    assert [s["env"]["GH_TOKEN"] for s in job["steps"] if "GH_TOKEN" in s.get("env", {})] == [
        "${{ github.token }}"]


def test_no_expression_inside_a_run_script_and_no_persisted_checkout_credentials():
    w = workflow()
    for name, job in w["jobs"].items():
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), f"{name}: {step.get('name')}"
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name


def test_the_changelog_has_a_section_for_the_packages_version():
    """Keep a Changelog: the version being released has its dated section and compare link."""
    import re

    text = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(VERSION)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, re.M), VERSION
    assert re.search(rf"^\[{re.escape(VERSION)}\]: https://github\.com/OWNER/pth-legacy-keys/", text, re.M)
    assert text.index("## [Unreleased]") < text.index(f"## [{VERSION}]")
