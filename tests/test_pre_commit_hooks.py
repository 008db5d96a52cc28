"""The hooks as users get them: the manifest, its file patterns, and real commits under pre-commit and prek.

The end-to-end tests build the hook repository from this checkout (a commit of its current
files), point a model repository's .pre-commit-config.yaml at it, and run `git commit` with the
hook installed, so pre-commit and prek install the hook environment themselves, from PyPI.
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from support.cli_run import LEGACY, PARAMETRIZED, copy_of, run
from pth_legacy_keys.cli import main
from support import LFS_POINTER, git
from support.runners import require_runner

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / ".pre-commit-hooks.yaml"
HOOK_IDS = ["check-pth-legacy-keys", "fix-pth-legacy-keys"]
PRE_COMMIT_CI_ENVIRONMENT_CAP = 250 * 2 ** 20


def manifest():
    yaml = pytest.importorskip("yaml", reason="pyyaml comes with the test extra: pip install -e '.[test]'")
    return {hook["id"]: hook for hook in yaml.safe_load(MANIFEST.read_text())}


# -- the manifest --------------------------------------------------------------------------


@pytest.mark.parametrize("runner", ["pre-commit", "prek"])
def test_manifest_is_valid(runner):
    result = subprocess.run(require_runner(runner) + ["validate-manifest", str(MANIFEST)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_manifest_declares_both_hooks_with_the_mode_in_the_entry():
    hooks = manifest()
    assert list(hooks) == HOOK_IDS
    assert hooks["check-pth-legacy-keys"]["entry"] == "pth-legacy-keys check --hook"
    assert hooks["fix-pth-legacy-keys"]["entry"] == "pth-legacy-keys fix --hook"
    for hook in hooks.values():
        assert hook["args"] == ["--"]  # the file names pre-commit appends are never options
        assert hook["language"] == "python"
        # Not binary: an LFS pointer is text and must be reported. Symlinks too: loaders read through them.
        assert hook["types"] == [] and hook["types_or"] == ["file", "symlink"]
        assert hook["stages"] == ["pre-commit", "pre-merge-commit", "pre-push", "manual"]
        assert hook["minimum_pre_commit_version"] == "3.2.0"
        assert hook["description"]


def test_args_cannot_turn_a_check_into_a_fix(tmp_path, capsys):
    """pre-commit appends args and file names to `entry`: a stray `fix` is only a missing file."""
    path = copy_of(tmp_path, PARAMETRIZED, "voice.pth")
    before = path.read_bytes()
    code, out = run(capsys, "check", "--hook", "fix", "--", path)
    assert code == 2 and "fix: error: no such file" in out
    assert path.read_bytes() == before


def hook_command(hook_id, args=None):
    """What pre-commit runs: entry, then args (the manifest's unless the user gives their own)."""
    hook = manifest()[hook_id]
    return hook["entry"].split()[1:] + (hook["args"] if args is None else args)


@pytest.mark.parametrize("hook_id", HOOK_IDS)
def test_a_file_named_like_an_option_is_a_file(hook_id, tmp_path, monkeypatch, capsys):
    """Every option that would name a file, a list or a revision, spelled as a checkpoint name."""
    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "outside" / "victim.pth"
    names = ["--report=" + str(victim), "--changed-since=:/x.pth", "--files-from=list.pth", "--to=x.pth",
             "-q.pth", "--hook.pth", "--.pth"]
    for name in names:
        copy_of(tmp_path, PARAMETRIZED, name)
    code, out = run(capsys, *hook_command(hook_id), *names)
    verdict = "4 parametrized" if hook_id.startswith("check") else "fixed"
    assert code == (1 if hook_id.startswith("check") else 0), out
    for name in names:
        assert f"{name}: {verdict}" in out
    assert not victim.exists()


@pytest.mark.parametrize("args", [[], ["--to", "legacy"], ["-v"]])
def test_users_args_without_the_separator_stop_the_hook(args, tmp_path, capsys):
    path = copy_of(tmp_path, PARAMETRIZED, "voice.pth")
    before = path.read_bytes()
    for hook_id in HOOK_IDS:
        assert main([*hook_command(hook_id, args), str(path)]) == 2
        assert "as a hook, the file names must follow --" in capsys.readouterr().err
    assert path.read_bytes() == before


@pytest.mark.parametrize("option", [["--report", "r.json"], ["--changed-since", "HEAD"], ["--files-from", "l"],
                                    ["--output", "json"]])
def test_options_that_name_files_or_revisions_are_not_hook_options(option, tmp_path, capsys):
    path = copy_of(tmp_path, PARAMETRIZED, "voice.pth")
    assert main([*hook_command("check-pth-legacy-keys", [*option, "--"]), str(path)]) == 2
    assert f"{option[0]}: not an option of the hook" in capsys.readouterr().err


@pytest.mark.parametrize("name, matches", [
    ("voice.pth", True), ("G_2333.PTH", True), ("model.pt", True), ("last.ckpt", True),
    ("models/deep/D_1.Pth", True), ("easy-install.pth", True),
    ("model.safetensors", True), ("shards/model-00001-of-00002.SafeTensors", True),
    ("notes.txt", False), ("voice.pth.bak", False), ("pth", False), ("model.safetensors.index.json", False),
])
def test_hook_files_pattern(name, matches):
    """The hooks and the CLI's own default file set (a folder walked, a repository) agree."""
    from pth_legacy_keys.discover import CHECKPOINT_NAME

    for hook in manifest().values():
        assert bool(re.search(hook["files"], name)) is matches
    assert bool(CHECKPOINT_NAME.fullmatch(name)) is matches


@pytest.mark.parametrize("content", [PARAMETRIZED.read_bytes(), LFS_POINTER.encode(), b"./src\n"])
def test_hook_types_select_binary_checkpoints_and_text_pointers_alike(tmp_path, content):
    identify = pytest.importorskip("identify.identify", reason="identify comes with pre-commit")
    path = tmp_path / "voice.pth"
    path.write_bytes(content)
    link = tmp_path / "linked.pth"
    link.symlink_to(path.name)
    for tags in (identify.tags_from_path(str(path)), identify.tags_from_path(str(link))):
        for hook in manifest().values():
            assert set(hook["types"]) <= tags and set(hook["types_or"]) & tags


def test_path_configuration_file_matches_but_is_skipped_by_content(tmp_path, capsys):
    path = tmp_path / "easy-install.pth"
    path.write_text("./setuptools-80.0-py3.egg\nimport sys; sys.__plen = len(sys.path)\n")
    assert re.search(manifest()["check-pth-legacy-keys"]["files"], path.name)
    code, out = run(capsys, "check", "-v", path)
    assert code == 0
    assert f"{path}: skipped: a Python path-configuration file" in out


def test_readme_mentions_every_hook_id():
    readme = (ROOT / "README.md").read_text()
    for hook_id in manifest():
        assert hook_id in readme


def test_every_args_the_docs_suggest_ends_with_the_separator():
    """Advice users copy into their config must keep file names from being read as options."""
    from pth_legacy_keys.github import job_summary
    from pth_legacy_keys.report import FileReport

    needing_fix = FileReport("models/voice.pth", "needs-fix", to="parametrized")
    texts = [(ROOT / "README.md").read_text(), job_summary("check", "parametrized", [needing_fix])]
    suggested = [args for text in texts for args in re.findall(r"args: \[([^\]]*)\]", text)]
    assert len(suggested) >= 3
    for args in suggested:
        assert args.split(", ")[-1] == "--", args


# -- end to end: git commit with the hooks installed -----------------------------------------


def model_repository(path, hook_repository, hook_id, runner, homes):
    repository, sha = hook_repository
    path.mkdir()
    git("init", "-q", cwd=path)
    (path / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {repository}\n    rev: {sha}\n    hooks:\n      - id: {hook_id}\n")
    installed = subprocess.run(require_runner(runner) + ["install"], cwd=path, capture_output=True,
                               text=True, env={**os.environ, **homes})
    assert installed.returncode == 0, installed.stdout + installed.stderr
    git("add", ".pre-commit-config.yaml", cwd=path)
    return path


def commit(path, homes, message="add model"):
    return git("commit", "-m", message, cwd=path, env=homes, check=False)


@pytest.fixture
def torch_models():
    pytest.importorskip("torch", reason="torch==2.13.0 makes the RVC models and loads the results")
    from support import rvc_model
    import torch

    def save(path, parametrized):
        torch.save(rvc_model.rvc_inference_file(rvc_model.build(parametrized=parametrized)), path)
        return path

    def loads_strictly_in_legacy_code(path):
        model = rvc_model.inference_model(parametrized=False)
        result = model.load_state_dict(torch.load(path, weights_only=True)["weight"], strict=True)
        return result.missing_keys == [] and result.unexpected_keys == []

    def save_safetensors(path, parametrized):
        safetensors_torch = pytest.importorskip("safetensors.torch")
        weights = rvc_model.rvc_inference_file(rvc_model.build(parametrized=parametrized))["weight"]
        safetensors_torch.save_file(weights, str(path))
        return path

    save.loads_strictly_in_legacy_code = loads_strictly_in_legacy_code
    save.safetensors = save_safetensors
    return save


RUNNERS = ["pre-commit", "prek"]


@pytest.mark.parametrize("runner", RUNNERS)
def test_commit_of_parametrized_model_is_blocked(runner, tmp_path, hook_repository, runner_homes, torch_models):
    repo = model_repository(tmp_path / "voices", hook_repository, "check-pth-legacy-keys", runner, runner_homes)
    model = torch_models(repo / "voice.pth", parametrized=True)
    weights = torch_models.safetensors(repo / "voice.safetensors", parametrized=True)
    before = model.read_bytes(), weights.read_bytes()
    git("add", "voice.pth", "voice.safetensors", cwd=repo)
    result = commit(repo, runner_homes)
    assert result.returncode != 0
    assert "voice.pth: 48 parametrized weight-norm keys in 24 modules" in result.stdout + result.stderr
    assert "voice.safetensors: 48 parametrized weight-norm keys in 24 modules" in result.stdout + result.stderr
    assert git("rev-list", "--all", cwd=repo).stdout == ""  # nothing was committed
    assert (model.read_bytes(), weights.read_bytes()) == before


@pytest.mark.parametrize("runner", RUNNERS)
def test_fix_hook_rewrites_then_the_re_added_model_commits(runner, tmp_path, hook_repository, runner_homes,
                                                          torch_models):
    repo = model_repository(tmp_path / "voices", hook_repository, "fix-pth-legacy-keys", runner, runner_homes)
    model = torch_models(repo / "voice.pth", parametrized=True)
    git("add", "voice.pth", cwd=repo)
    result = commit(repo, runner_homes)
    assert result.returncode != 0  # files were modified by the hook
    assert "voice.pth: fixed: renamed 48 keys to legacy names" in result.stdout + result.stderr
    assert git("status", "--porcelain", "voice.pth", cwd=repo).stdout == "AM voice.pth\n"
    assert torch_models.loads_strictly_in_legacy_code(model)
    git("add", "voice.pth", cwd=repo)
    assert commit(repo, runner_homes).returncode == 0
    assert git("status", "--porcelain", cwd=repo).stdout == ""


@pytest.mark.parametrize("runner", RUNNERS)
def test_legacy_model_passes_both_hooks_untouched(runner, tmp_path, hook_repository, runner_homes,
                                                  torch_models):
    for hook_id in HOOK_IDS:
        repo = model_repository(tmp_path / hook_id, hook_repository, hook_id, runner, runner_homes)
        model = torch_models(repo / "voice.pth", parametrized=False)
        os.utime(model, ns=(1_600_000_000_000_000_000,) * 2)
        before = model.read_bytes()
        git("add", "voice.pth", cwd=repo)
        result = commit(repo, runner_homes)
        assert result.returncode == 0, result.stdout + result.stderr
        assert model.read_bytes() == before
        assert os.stat(model).st_mtime_ns == 1_600_000_000_000_000_000


@pytest.mark.parametrize("runner", RUNNERS)
def test_files_named_like_options_cannot_turn_off_the_check(runner, tmp_path, hook_repository, runner_homes):
    """Names a pull request could add: one that would make the check compare against a commit of
    the attacker's choosing (`:/text` is the newest commit whose message holds the text), so
    that nothing looks changed; one that would write the report over a file outside the repository."""
    repo = model_repository(tmp_path / "voices", hook_repository, "check-pth-legacy-keys", runner, runner_homes)
    victim = tmp_path / "outside" / "victim.pth"
    victim.parent.mkdir()
    victim.write_bytes(b"not ours")
    git("commit", "-q", "--no-verify", "-m", "bypass.pth", cwd=repo)
    names = ["--changed-since=:/bypass.pth", f"--report={victim}", "voice.pth"]
    for name in names:
        copy_of(repo, PARAMETRIZED, name)
    git("add", "--", *names, cwd=repo)
    blocked = commit(repo, runner_homes)
    output = blocked.stdout + blocked.stderr
    assert blocked.returncode != 0, output
    for name in names:
        assert f"{name}: 4 parametrized weight-norm keys" in output
    assert victim.read_bytes() == b"not ours"


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_symlinked_checkpoint_is_checked_through_the_link(runner, tmp_path, hook_repository, runner_homes):
    """A pull request can ship the model as a link to a file the hook's pattern does not match."""
    repo = model_repository(tmp_path / "voices", hook_repository, "check-pth-legacy-keys", runner, runner_homes)
    copy_of(repo / "data", PARAMETRIZED, "blob.bin")
    (repo / "voice.pth").symlink_to(os.path.join("data", "blob.bin"))
    git("add", "voice.pth", "data/blob.bin", cwd=repo)
    blocked = commit(repo, runner_homes)
    assert blocked.returncode != 0
    assert "voice.pth: 4 parametrized weight-norm keys" in blocked.stdout + blocked.stderr


@pytest.mark.parametrize("runner", RUNNERS)
def test_users_args_must_end_with_the_separator(runner, tmp_path, hook_repository, runner_homes):
    repo = model_repository(tmp_path / "voices", hook_repository, "check-pth-legacy-keys", runner, runner_homes)
    config = repo / ".pre-commit-config.yaml"
    config.write_text(config.read_text() + "        args: [--to, legacy]\n")
    git("add", ".pre-commit-config.yaml", cwd=repo)
    copy_of(repo, LEGACY, "voice.pth")
    git("add", "voice.pth", cwd=repo)
    stopped = commit(repo, runner_homes)
    assert stopped.returncode != 0
    assert "as a hook, the file names must follow --" in stopped.stdout + stopped.stderr
    config.write_text(config.read_text().replace("args: [--to, legacy]", "args: [--to, legacy, --]"))
    git("add", ".pre-commit-config.yaml", cwd=repo)
    passed = commit(repo, runner_homes)
    assert passed.returncode == 0, passed.stdout + passed.stderr


@pytest.mark.parametrize("runner", RUNNERS)
def test_hook_environment_is_small_and_torch_free(runner, tmp_path, hook_repository, runner_homes):
    """Measured on a cold home: what pre-commit.ci would install (it caps an environment at 250 MiB)."""
    home_variable = "PRE_COMMIT_HOME" if runner == "pre-commit" else "PREK_HOME"
    cold = {home_variable: str(tmp_path / "cold-home")}
    repo = model_repository(tmp_path / "voices", hook_repository, "check-pth-legacy-keys", runner, cold)
    copy_of(repo, LEGACY, "voice.pth")
    git("add", "voice.pth", cwd=repo)
    started = time.monotonic()
    result = subprocess.run(require_runner(runner) + ["run", "--all-files"], cwd=repo, capture_output=True,
                            text=True, env={**os.environ, **cold})
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Passed" in result.stdout  # the hook ran on the file, in an environment it built
    environments = [p for p in Path(cold[home_variable]).rglob("pyvenv.cfg")]
    assert environments, "no hook environment was created"
    for environment in environments:
        size = sum(f.stat().st_size for f in environment.parent.rglob("*") if f.is_file())
        assert size < PRE_COMMIT_CI_ENVIRONMENT_CAP
        assert not list(environment.parent.rglob("torch/__init__.py"))
        print(f"{runner}: cold install and run {seconds:.1f} s, environment {size / 2 ** 20:.1f} MiB")


# -- Git LFS ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def git_lfs():
    if subprocess.run(["git", "lfs", "version"], capture_output=True).returncode != 0:
        if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
            subprocess.run(["apt-get", "install", "-y", "-q", "git-lfs"], capture_output=True,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if subprocess.run(["git", "lfs", "version"], capture_output=True).returncode != 0:
            pytest.skip("git-lfs is not installed and could not be installed (Debian package git-lfs)")


@pytest.mark.parametrize("runner", RUNNERS)
def test_lfs_tracked_model_is_checked_by_content_and_a_pointer_fails(runner, tmp_path, hook_repository,
                                                                      runner_homes, git_lfs, torch_models):
    repo = model_repository(tmp_path / "voices", hook_repository, "check-pth-legacy-keys", runner, runner_homes)
    git("lfs", "install", "--local", cwd=repo)
    git("lfs", "track", "*.pth", cwd=repo)
    git("add", ".gitattributes", cwd=repo)
    torch_models(repo / "voice.pth", parametrized=True)
    git("add", "voice.pth", cwd=repo)
    assert "pointer" not in (repo / "voice.pth").read_text(errors="replace")[:100]
    blocked = commit(repo, runner_homes)
    assert blocked.returncode != 0
    assert "voice.pth: 48 parametrized weight-norm keys" in blocked.stdout + blocked.stderr

    torch_models(repo / "voice.pth", parametrized=False)
    git("add", "voice.pth", cwd=repo)
    assert commit(repo, runner_homes).returncode == 0
    assert git("lfs", "ls-files", cwd=repo).stdout.strip().endswith("voice.pth")

    clone = tmp_path / "clone"
    git("clone", "-q", str(repo), str(clone), cwd=tmp_path, env={"GIT_LFS_SKIP_SMUDGE": "1"})
    assert (clone / "voice.pth").read_bytes().startswith(b"version https://git-lfs.github.com/spec/v1")
    result = subprocess.run(require_runner(runner) + ["run", "--all-files"], cwd=clone, capture_output=True,
                            text=True, env={**os.environ, **runner_homes})
    assert result.returncode != 0
    assert "voice.pth: not checked: Git LFS pointer; fetch the real file (git lfs pull)" in result.stdout
