"""The README's snippets work as pasted: its .pre-commit-config.yaml snippets validate and run
under pre-commit and prek, and its workflow snippets run the action, each against a clone of this
checkout at the tag the snippet names (made here), with `OWNER` pointing at that clone."""

import os
import re
import shlex
import shutil
import subprocess

import pytest
from support.cli_run import PARAMETRIZED
from support.git import git
from support.repositories import ROOT, ModelRepository
from support.runners import require_runner
from pth_legacy_keys import __version__

yaml = pytest.importorskip("yaml", reason="pyyaml comes with the test extra: pip install -e '.[test]'")
from support.action_runner import run_action, runner_lines  # noqa: E402 (needs yaml)

README = (ROOT / "README.md").read_text()
HOOK_REPOSITORY_URL = "https://github.com/OWNER/pth-legacy-keys"
ACTION = "OWNER/pth-legacy-keys"
YAML_BLOCKS = re.findall(r"```yaml\n(.*?)```", README, re.S)
PRE_COMMIT_CONFIGS = [block for block in YAML_BLOCKS if HOOK_REPOSITORY_URL in block]
WORKFLOWS = [block for block in YAML_BLOCKS if f"uses: {ACTION}@" in block]


def test_the_readme_has_the_snippets_and_one_owner_placeholder():
    assert len(PRE_COMMIT_CONFIGS) >= 2  # the hooks, and the pre-commit.ci configuration
    assert len(WORKFLOWS) >= 2  # the check on pull requests, and committing a fix back
    owners = set(re.findall(r"github\.com/([^/\s]+)/pth-legacy-keys", README))
    owners |= set(re.findall(r"uses: ([^/\s]+)/pth-legacy-keys@", README))
    assert owners == {"OWNER"}
    assert "`OWNER`" in README  # where the placeholder is explained


@pytest.fixture(scope="session")
def tagged_clone(hook_repository, tmp_path_factory):
    """The hook repository with the tags the README names (its release and the Action's major)."""
    repository, sha = hook_repository
    clone = tmp_path_factory.mktemp("tagged") / "pth-legacy-keys"
    git("clone", "-q", str(repository), str(clone), cwd=repository.parent)
    for tag in (f"v{__version__}", f"v{__version__.split('.')[0]}"):
        git("tag", tag, sha, cwd=clone)
    return clone


def config_for(snippet, clone):
    config = yaml.safe_load(snippet)
    [entry] = [repo for repo in config["repos"] if repo["repo"] == HOOK_REPOSITORY_URL]
    assert entry["rev"] == f"v{__version__}", "the snippet names the version being released"
    return snippet.replace(HOOK_REPOSITORY_URL, str(clone)), config


@pytest.mark.parametrize("index", range(len(PRE_COMMIT_CONFIGS)))
def test_each_pre_commit_snippet_is_a_valid_configuration(index, tagged_clone, tmp_path):
    text, _config = config_for(PRE_COMMIT_CONFIGS[index], tagged_clone)
    path = tmp_path / ".pre-commit-config.yaml"
    path.write_text(text)
    result = subprocess.run(require_runner("pre-commit") + ["validate-config", str(path)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning" not in (result.stdout + result.stderr).lower()


def test_the_pre_commit_ci_snippet_skips_the_check_hook_there():
    [config] = [yaml.safe_load(block) for block in PRE_COMMIT_CONFIGS if "ci:" in block]
    assert "check-pth-legacy-keys" in config["ci"]["skip"]
    assert "lfs" in README.lower() and "pre-commit.ci" in README


@pytest.mark.parametrize("runner", ["pre-commit", "prek"])
def test_the_hooks_snippet_checks_on_commit_and_fixes_when_asked(runner, tagged_clone, tmp_path, runner_homes):
    [snippet] = [block for block in PRE_COMMIT_CONFIGS if "ci:" not in block]
    text, config = config_for(snippet, tagged_clone)
    hooks = {hook["id"]: hook for hook in config["repos"][0]["hooks"]}
    assert hooks["fix-pth-legacy-keys"]["stages"] == ["manual"]  # pasting it never runs both
    command = require_runner(runner)
    repo = tmp_path / "voices"
    (repo / "models").mkdir(parents=True)
    git("init", "-q", cwd=repo)
    (repo / ".pre-commit-config.yaml").write_text(text)
    shutil.copyfile(PARAMETRIZED, repo / "models/voice.pth")
    git("add", "-A", cwd=repo)
    env = {**os.environ, **runner_homes}

    checked = subprocess.run(command + ["run", "--all-files"], cwd=repo, capture_output=True, text=True,
                             env=env)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert (repo / "models/voice.pth").read_bytes() == PARAMETRIZED.read_bytes()  # the fixer did not run
    # prek indents a hook's output; pre-commit does not
    [hint] = [line.strip() for line in checked.stdout.splitlines() if line.strip().startswith("to fix them: ")]
    pasted = shlex.split(hint.removeprefix("to fix them: "))
    assert pasted == ["pre-commit", "run", "--hook-stage", "manual", "fix-pth-legacy-keys", "--files",
                      "models/voice.pth"]
    fixed = subprocess.run(command + pasted[1:], cwd=repo, capture_output=True, text=True,
                           env=env)
    assert fixed.returncode == 1 and "files were modified by this hook" in fixed.stdout, fixed.stdout
    assert (repo / "models/voice.pth").read_bytes() != PARAMETRIZED.read_bytes()
    git("add", "-A", cwd=repo)
    again = subprocess.run(command + ["run", "--all-files"], cwd=repo, capture_output=True, text=True,
                           env=env)
    assert again.returncode == 0, again.stdout + again.stderr


def action_step(workflow):
    [job] = yaml.safe_load(workflow)["jobs"].values()
    [step] = [step for step in job["steps"] if step.get("uses", "").startswith(f"{ACTION}@")]
    for other in job["steps"]:
        if other is not step and "uses" in other:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", other["uses"]), other["uses"]  # pinned by SHA
    return step


@pytest.fixture
def action_at_its_tag(tagged_clone, tmp_path):
    """The action as GitHub fetches `uses: OWNER/pth-legacy-keys@REF`: a checkout of REF."""
    def fetch(ref):
        folder = tmp_path / f"action-{ref}"
        git("clone", "-q", "--branch", ref, str(tagged_clone), str(folder), cwd=tmp_path)
        return folder / "action.yml"
    return fetch


def test_the_pull_request_workflow_fails_on_a_parametrized_model(action_at_its_tag, tmp_path):
    [workflow] = [block for block in WORKFLOWS if "pull_request" in block]
    step = action_step(workflow)
    action = action_at_its_tag(step["uses"].split("@")[1])
    repo = ModelRepository(tmp_path / "model-repo", {"models/new.pth": PARAMETRIZED.read_bytes()})
    event = {"number": 1, "pull_request": {"base": {"ref": "main", "sha": repo.base}}}
    result = run_action(action, inputs=step.get("with", {}), workspace=repo.path, event_name="pull_request",
                        base_ref="main", sha=repo.sha, event=event, tmp=tmp_path / "runner")
    assert result.exit_code != 0
    errors = [line for line in runner_lines(result.stdout) if line.startswith("::error file=models/new.pth,")]
    assert errors and "Fix: pth-legacy-keys fix -- models/new.pth" in errors[0]
    assert "pth-legacy-keys fix -- models/new.pth" in result.summary


def test_the_fix_back_workflow_fixes_in_the_workspace(action_at_its_tag, tmp_path):
    [workflow] = [block for block in WORKFLOWS if "mode: fix" in block or "{mode: fix}" in block]
    step = action_step(workflow)
    action = action_at_its_tag(step["uses"].split("@")[1])
    repo = ModelRepository(tmp_path / "model-repo", {"models/new.pth": PARAMETRIZED.read_bytes()})
    result = run_action(action, inputs=step.get("with", {}), workspace=repo.path, event_name="push",
                        sha=repo.sha, tmp=tmp_path / "runner")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.outputs["modified"] == "true"
    assert (repo.path / "models/new.pth").read_bytes() != PARAMETRIZED.read_bytes()
