"""Where fix and --report write: never out of the repository through a link the repository holds.

A pull request can add a symbolic link where a checkpoint is expected, to a file or a folder
elsewhere on the runner. Reading through it is harmless; fix must not write through it, and a
report must replace whatever is at its path rather than write into a link's target.
"""

import os
import stat
import subprocess
import sys

import pytest
from support.cli_run import LEGACY, PARAMETRIZED, copy_of, run
from support import git

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges on Windows")


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """tmp/repo (a git work tree, the current folder) and tmp/outside/cache.pth beside it."""
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    (repo / "models").mkdir(parents=True)
    git("init", "-q", cwd=repo)
    outside_model = copy_of(outside, PARAMETRIZED, "cache.pth")
    monkeypatch.chdir(repo)
    return repo, outside_model


@pytest.mark.parametrize("how", ["file link", "folder link", "folder link by glob", "folder walked",
                                 "link to a link", "dot-dot after a link", "tracked link, no paths"])
def test_fix_does_not_write_out_of_the_repository_through_its_links(how, layout, capsys):
    repo, outside_model = layout
    before = outside_model.read_bytes()
    if how in ("file link", "tracked link, no paths", "folder walked"):
        os.symlink(outside_model, repo / "models" / "voice.pth")
        args, shown, link = ["models/voice.pth"], os.path.join("models", "voice.pth"), repo / "models" / "voice.pth"
        if how == "tracked link, no paths":
            git("add", "models/voice.pth", cwd=repo)
            args = []
        elif how == "folder walked":
            args = ["models"]
    elif how.startswith("folder"):
        os.symlink(outside_model.parent, repo / "models" / "shared")
        shown, link = os.path.join("models", "shared", "cache.pth"), repo / "models" / "shared"
        args = {"folder link": [shown], "folder link by glob": ["models/shared/*.pth"]}[how]
    elif how == "link to a link":
        os.symlink(outside_model, repo / "models" / "inner.pth")
        os.symlink("inner.pth", repo / "models" / "voice.pth")
        args, shown, link = ["models/voice.pth"], "models/voice.pth", repo / "models" / "voice.pth"
    else:
        (outside_model.parent / "sub").mkdir()
        os.symlink(outside_model.parent / "sub", repo / "models" / "sub")
        args, shown, link = ["models/sub/../cache.pth"], "models/sub/../cache.pth", repo / "models" / "sub"
    code, out = run(capsys, "check", *args)
    assert code == 1 and f"{shown}: 4 parametrized" in out  # reading through the link is fine
    code, out = run(capsys, "fix", *args)
    assert code == 2
    target = os.path.realpath(link)
    assert (f"{shown}: refused: the symbolic link {link} leads out of {repo}, to {target}; fix writes there "
            f"only when you name the file itself: pth-legacy-keys fix -- {outside_model}; "
            "nothing was changed") in out, out
    assert outside_model.read_bytes() == before
    assert set(os.listdir(outside_model.parent)) <= {"cache.pth", "sub"}  # no temporary file was made there
    code, out = run(capsys, "fix", outside_model)  # named by the user: that is the user's choice
    assert code == 0 and f"{outside_model}: fixed" in out


def test_a_link_that_stays_inside_the_repository_is_fixed_where_it_leads(layout, capsys):
    repo, _ = layout
    real = copy_of(repo / "voices", PARAMETRIZED, "real.pth")
    os.symlink("../voices/real.pth", repo / "models" / "voice.pth")
    code, out = run(capsys, "fix", "models/voice.pth")
    assert code == 0 and "models/voice.pth: fixed: renamed 4 keys" in out
    assert os.readlink(repo / "models" / "voice.pth") == "../voices/real.pth"  # the link stays a link
    plain = copy_of(repo / "plain", PARAMETRIZED, "voice.pth")
    assert run(capsys, "fix", plain)[0] == 0
    assert real.read_bytes() == plain.read_bytes()  # written exactly as a file named directly


def test_links_outside_the_repository_are_the_users_own(tmp_path, monkeypatch, capsys):
    """A path through a linked folder above the repository (a home folder on another disk) is
    followed: only links the repository holds are bounded."""
    real_home = tmp_path / "disk" / "home"
    repo = real_home / "repo"
    (repo / "models").mkdir(parents=True)
    git("init", "-q", cwd=repo)
    copy_of(repo / "models", PARAMETRIZED, "voice.pth")
    os.symlink(real_home, tmp_path / "home")
    monkeypatch.chdir(repo)
    code, out = run(capsys, "fix", tmp_path / "home" / "repo" / "models" / "voice.pth")
    assert code == 0 and "fixed: renamed 4 keys" in out


def test_outside_a_repository_the_current_folder_is_the_boundary(tmp_path, monkeypatch, capsys):
    work, outside = tmp_path / "work", tmp_path / "outside"
    outside_model = copy_of(outside, PARAMETRIZED, "cache.pth")
    work.mkdir()
    os.symlink(outside_model, work / "voice.pth")
    monkeypatch.chdir(work)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # the test's own folders are no repository
    code, out = run(capsys, "fix", "voice.pth")
    assert code == 2 and f"leads out of {work}" in out


def test_the_report_replaces_a_link_at_its_path_and_never_writes_through_it(layout, capsys):
    repo, outside_model = layout
    before = outside_model.read_bytes()
    os.symlink(outside_model, repo / "report.json")
    copy_of(repo / "models", LEGACY, "voice.pth")
    code, _ = run(capsys, "check", "--report", "report.json", "models/voice.pth")
    assert code == 0
    assert outside_model.read_bytes() == before
    assert not os.path.islink(repo / "report.json")
    assert b'"status": "ok"' in (repo / "report.json").read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(repo / "report.json").st_mode) == 0o666 & ~umask


def test_a_report_that_cannot_be_written_leaves_nothing_behind(layout, capsys):
    repo, _ = layout
    copy_of(repo / "models", LEGACY, "voice.pth")
    (repo / "report.json").mkdir()
    code = __import__("pth_legacy_keys.cli", fromlist=["main"]).main(
        ["check", "--report", "report.json", "models/voice.pth"])
    assert code == 2
    assert "cannot write the report report.json" in capsys.readouterr().err
    assert sorted(os.listdir(repo)) == [".git", "models", "report.json"]


def test_fix_does_not_write_into_the_repositorys_own_git_folder(layout, capsys):
    """A tracked link into .git (an LFS object, a pack) leads out of the work tree."""
    repo, _ = layout
    lfs_object = copy_of(repo / ".git" / "lfs" / "objects" / "ab" / "cd", PARAMETRIZED, "abcd1234")
    before = lfs_object.read_bytes()
    os.symlink(os.path.join("..", ".git", "lfs", "objects", "ab", "cd", "abcd1234"), repo / "models" / "voice.pth")
    code, out = run(capsys, "fix", "models/voice.pth")
    assert code == 2 and "refused: the symbolic link" in out
    assert lfs_object.read_bytes() == before


def test_the_command_in_a_refusal_names_the_very_target(tmp_path, monkeypatch, capsys):
    """Run as printed, in bash, it fixes the file the link led to, whatever its name."""
    repo, outside = tmp_path / "repo", tmp_path / "we ird\ndir"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    target = copy_of(outside, PARAMETRIZED, os.fsdecode(b"x\xff'.pth"))
    os.symlink(target, repo / "voice.pth")
    monkeypatch.chdir(repo)
    code, out = run(capsys, "fix", "voice.pth")
    assert code == 2
    command = out.split("name the file itself: ", 1)[1].split("; nothing was changed", 1)[0]
    assert command.startswith("pth-legacy-keys fix -- $'")
    script = command.replace("pth-legacy-keys fix -- ", "printf '%s' ", 1)
    printed = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    assert printed == os.fsencode(str(target))


def test_the_report_is_not_written_through_a_linked_folder_of_the_repository(layout, capsys):
    repo, outside_model = layout
    os.symlink(outside_model.parent, repo / "reports")
    copy_of(repo / "models", LEGACY, "voice.pth")
    code = __import__("pth_legacy_keys.cli", fromlist=["main"]).main(
        ["check", "--report", "reports/r.json", "models/voice.pth"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "checked 1 file: 1 ok\n"
    assert captured.err.startswith("pth-legacy-keys: cannot write the report reports/r.json: the symbolic link ")
    assert os.listdir(outside_model.parent) == ["cache.pth"]


@pytest.mark.parametrize("spelling", [".GIT", ".Git", ".g\u200cit", ".git.", "GIT~1"])
def test_fix_does_not_write_into_anything_a_file_system_may_take_for_git(spelling, layout, capsys):
    """macOS file systems ignore case and some invisible characters: `.GIT` there is `.git`."""
    repo, _ = layout
    target = copy_of(repo / spelling / "lfs", PARAMETRIZED, "object")
    before = target.read_bytes()
    os.symlink(os.path.join("..", spelling, "lfs", "object"), repo / "models" / "voice.pth")
    code, out = run(capsys, "fix", "models/voice.pth")
    assert code == 2 and "refused: the symbolic link" in out
    assert target.read_bytes() == before
