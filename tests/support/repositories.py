"""Repositories the end-to-end tests build: this checkout's files as a hook repository or an
action folder, and model repositories as actions/checkout leaves them for a pull request."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.cli_run import LEGACY, PARAMETRIZED
from support.git import git

ROOT = Path(__file__).resolve().parents[2]


def copy_checkout(folder):
    """Copy this checkout's current files (tracked, and new ones git does not ignore) into
    `folder`; False when this is not a git checkout."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=False)
    if listing.returncode != 0:
        return False
    for name in filter(None, listing.stdout.decode().split("\0")):
        if (ROOT / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)
    return True


@pytest.fixture(scope="session")
def hook_repository(tmp_path_factory):
    """This checkout's current files, committed in a repository of their own: (path, commit)."""
    repository = tmp_path_factory.mktemp("hook-repository")
    if not copy_checkout(repository):
        pytest.skip("the hook repository is built from a git checkout of pth-legacy-keys")
    git("init", "-q", cwd=repository)
    git("add", "-A", cwd=repository)
    git("commit", "-q", "-m", "hooks under test", cwd=repository)
    return repository, git("rev-parse", "HEAD", cwd=repository).stdout.strip()


@pytest.fixture(scope="session")
def action_path(tmp_path_factory):
    """The action as GitHub downloads it for `uses: OWNER/pth-legacy-keys@ref`: this checkout's files,
    copied so that pip's build does not write into the working tree."""
    folder = tmp_path_factory.mktemp("action")
    return folder if copy_checkout(folder) else ROOT


class Link:
    """A symbolic link a pull request adds, where a checkpoint is expected."""

    def __init__(self, target):
        self.target = target


class ModelRepository:
    """main: models/old.pth (legacy) and models/already.pth (parametrized); a pull request adds files.

    Checked out as actions/checkout does for pull_request with fetch-depth: 0: HEAD is the merge
    commit of the pull request into main, detached, and origin/main exists."""

    def __init__(self, path, pr_files):
        self.path = path
        (path / "models").mkdir(parents=True)
        git("init", "-q", cwd=path)
        git("symbolic-ref", "HEAD", "refs/heads/main", cwd=path)
        shutil.copyfile(LEGACY, path / "models/old.pth")
        shutil.copyfile(PARAMETRIZED, path / "models/already.pth")
        git("add", "-A", cwd=path)
        git("commit", "-q", "-m", "base", cwd=path)
        self.base = git("rev-parse", "HEAD", cwd=path).stdout.strip()
        git("checkout", "-q", "-b", "pr", cwd=path)
        for name, content in pr_files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Link):
                os.symlink(content.target, path / name)
            else:
                (path / name).write_bytes(content)
            git("add", "--", name, cwd=path)
        git("commit", "-q", "-m", "pull request", cwd=path)
        git("checkout", "-q", "--detach", "main", cwd=path)
        git("merge", "-q", "--no-ff", "-m", "Merge pr into main", "pr", cwd=path)
        git("update-ref", "refs/remotes/origin/main", "main", cwd=path)
        self.sha = git("rev-parse", "HEAD", cwd=path).stdout.strip()

    def snapshot(self):
        return {p: p.read_bytes() for p in sorted((self.path / "models").iterdir())}

    def status(self):
        return git("status", "--porcelain", cwd=self.path).stdout
