"""Which files a run examines, and what it says about the ones it did not: a named folder or glob
that matches nothing fails (a typo must not pass CI), an empty selection passes, a bare check
says how many untracked checkpoints it left out, and a walk outside git passes by other tools'
folders, saying so with -v."""

import os

import pytest
from support import git
from support.cli_run import LEGACY, PARAMETRIZED, copy_of, run

NO_MATCH = "matched no checkpoint (a folder is walked for *.pth, *.pt, *.ckpt, *.safetensors, any case)"


@pytest.fixture
def outside_git(tmp_path, monkeypatch):
    """A folder no git repository holds (pytest's tmp_path may lie in one; the ceiling stops git
    from looking above it, and our own .git search is given a folder without one)."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.chdir(folder)
    assert not any((parent / ".git").exists() for parent in [folder, *folder.parents])
    return folder


@pytest.mark.parametrize("command", ["check", "fix", "inspect"])
@pytest.mark.parametrize("named", ["empty", "models/*.pht", "empty/**/*.pth"])
def test_a_folder_or_glob_that_matches_no_checkpoint_fails(outside_git, capsys, command, named):
    (outside_git / "empty").mkdir()
    (outside_git / "empty" / "notes.txt").write_text("no checkpoint here")
    copy_of(outside_git / "models", PARAMETRIZED, "voice.pth")
    code, out = run(capsys, command, "models", named)
    assert code == 2
    assert out == ""  # nothing examined: the run stops before any file is touched
    assert (outside_git / "models" / "voice.pth").read_bytes() == PARAMETRIZED.read_bytes()


def test_the_no_match_error_is_one_line_naming_each_path(outside_git, capsys):
    from pth_legacy_keys.cli import main

    (outside_git / "empty").mkdir()
    assert main(["check", "empty", "typo*.pth"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"pth-legacy-keys: empty, typo*.pth: {NO_MATCH}\n"


def test_the_action_gets_the_no_match_error_as_an_annotation(outside_git, capsys):
    code, out = run(capsys, "check", "--output", "github", "modles/*.pth")
    assert code == 2
    assert out == "::error title=pth-legacy-keys::modles/*.pth: matched no checkpoint (a folder is walked for *.pth, " \
                  "*.pt, *.ckpt, *.safetensors, any case)\n"


def test_a_missing_file_is_an_error_line_of_its_own(outside_git, capsys):
    code, out = run(capsys, "check", "missing.pth")
    assert code == 2
    assert out.splitlines()[0].startswith("missing.pth: error: ")


@pytest.mark.parametrize("command", ["check", "fix"])
def test_an_empty_path_list_examines_nothing_and_passes(outside_git, capsys, command):
    copy_of(outside_git, PARAMETRIZED, "voice.pth")
    (outside_git / "list.txt").write_text("\n")
    assert run(capsys, command, "--files-from", "list.txt") == (0, f"{'checked' if command == 'check' else 'examined'} 0 files\n")


def test_changed_since_leaving_nothing_passes(tmp_path, capsys, monkeypatch):
    """A pull request that touches no model must pass, whatever folder the workflow names."""
    git("init", "-q", cwd=tmp_path)
    git("commit", "-q", "--allow-empty", "-m", "start", cwd=tmp_path)
    copy_of(tmp_path / "models", PARAMETRIZED, "voice.pth")
    git("add", ".", cwd=tmp_path)
    git("commit", "-qm", "model", cwd=tmp_path)
    (tmp_path / "README").write_text("docs only")
    git("add", ".", cwd=tmp_path)
    git("commit", "-qm", "docs", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "check", "--changed-since", "HEAD~1", "models") == (0, "checked 0 files\n")
    assert run(capsys, "check", "--changed-since", "HEAD~2", "models")[0] == 1  # the model's own commit


def test_a_folder_named_like_a_checkpoint_is_an_error_unless_a_slash_says_walk_it(outside_git, capsys):
    folder = outside_git / "models.pth"
    folder.mkdir()
    copy_of(folder, PARAMETRIZED, "voice.pth")
    code, out = run(capsys, "check", "models.pth")
    assert code == 2
    assert out.splitlines()[0] == "models.pth: error: is a folder, not a file"
    code, out = run(capsys, "check", f"models.pth{os.sep}")
    assert code == 1
    assert out.splitlines()[0].startswith(f"models.pth{os.sep}voice.pth: 4 parametrized weight-norm keys")


def test_a_bare_check_says_how_many_untracked_checkpoints_it_left_out(tmp_path, capsys, monkeypatch):
    copy_of(tmp_path, LEGACY, "tracked.pth")
    git("init", "-q", cwd=tmp_path)
    git("add", "tracked.pth", cwd=tmp_path)
    copy_of(tmp_path / "new", PARAMETRIZED, "voice.pth")
    copy_of(tmp_path / "new", PARAMETRIZED, "Other.PT")
    (tmp_path / ".gitignore").write_text("ignored/\n")
    copy_of(tmp_path / "ignored", PARAMETRIZED, "x.pth")  # ignored on purpose: not counted
    (tmp_path / "new" / "notes.txt").write_text("not a checkpoint")
    monkeypatch.chdir(tmp_path)
    code, out = run(capsys, "check")
    assert code == 0  # the untracked parametrized files were not checked: the note is how the user learns it
    assert out.splitlines() == [
        "checked 1 file: 1 ok",
        "left out 2 checkpoints that git does not track (git ls-files --others lists them): name them to "
        "check them, or git add them",
    ]
    # Named, they are checked.
    assert run(capsys, "check", "new")[0] == 1
    git("add", "new", cwd=tmp_path)
    code, out = run(capsys, "check")
    assert code == 1 and "left out" not in out


def test_a_walk_outside_git_passes_by_other_tools_folders_and_says_so(outside_git, capsys):
    copy_of(outside_git / "models", LEGACY, "voice.pth")
    (outside_git / ".venv").mkdir()
    (outside_git / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (outside_git / ".venv" / "distutils-precedence.pth").write_text("import os\n")
    (outside_git / "env" / "conda-meta").mkdir(parents=True)  # a conda environment, whatever its name
    for name in ("node_modules", "__pycache__", ".tox", ".hg", "site-packages"):
        copy_of(outside_git / name, PARAMETRIZED, "model.pth")
    copy_of(outside_git / "env", PARAMETRIZED, "model.pth")
    code, out = run(capsys, "check", ".")
    assert (code, out) == (0, "checked 1 file: 1 ok\n")
    code, out = run(capsys, "check", "-v", ".")
    assert code == 0
    assert out.splitlines()[:8] == [
        f"{name}: left out: {reason} (name it to examine it)" for name, reason in [
            (".hg", "a version-control folder"), (".tox", "a cache"), (".venv", "a virtual environment"),
            ("__pycache__", "a cache"), ("env", "a virtual environment"), ("node_modules", "npm's packages"),
            ("site-packages", "a virtual environment")]
    ] + [f"{os.path.join('models', 'voice.pth')}: ok (legacy names)"]
    # Named, a left-out folder is walked: the user asked for it.
    assert run(capsys, "check", "node_modules")[0] == 1
    assert run(capsys, "check")[0] == 0  # the bare check (no git here) walks as `.` does


def test_in_git_a_tool_folder_is_walked_when_git_tracks_files_in_it(tmp_path, capsys, monkeypatch):
    """A pull request could hide a checkpoint in a folder named `venv`: in a repository, only a
    folder git tracks nothing in is left out."""
    copy_of(tmp_path / "venv", PARAMETRIZED, "hidden.pth")
    copy_of(tmp_path / ".venv", PARAMETRIZED, "local.pth")
    git("init", "-q", cwd=tmp_path)
    git("add", "venv", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out = run(capsys, "check", "-v", ".")
    assert code == 1
    assert f"{os.path.join('venv', 'hidden.pth')}: 4 parametrized weight-norm keys" in out
    assert ".venv: left out: a virtual environment (name it to examine it)" in out
    assert "local.pth" not in out


def test_submodules_that_are_not_checked_out_are_said_and_warned_about_on_github(tmp_path, capsys, monkeypatch):
    library = tmp_path / "library"
    copy_of(library, PARAMETRIZED, "voice.pth")
    git("init", "-q", cwd=library)
    git("add", "-A", cwd=library)
    git("commit", "-qm", "model", cwd=library)
    project = tmp_path / "project"
    copy_of(project, LEGACY, "own.pth")
    git("init", "-q", cwd=project)
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(library), "vendor", cwd=project)
    git("add", "-A", cwd=project)
    git("commit", "-qm", "base", cwd=project)
    clone = tmp_path / "clone"
    git("clone", "-q", str(project), str(clone), cwd=tmp_path)  # as actions/checkout does by default
    monkeypatch.chdir(clone)
    code, out = run(capsys, "check")
    assert code == 0
    assert out.splitlines() == ["checked 1 file: 1 ok", "left out 1 submodule that is not checked out: git "
                                "submodule update --init --recursive checks them out"]
    code, out = run(capsys, "check", "--output", "github")
    assert "::warning title=pth-legacy-keys::left out 1 submodule that is not checked out" in out
    git("-c", "protocol.file.allow=always", "submodule", "update", "-q", "--init", cwd=clone)
    code, out = run(capsys, "check")
    assert code == 1 and "left out" not in out


def test_an_empty_path_is_a_usage_error_not_a_folder(outside_git, capsys):
    from pth_legacy_keys.cli import main

    assert main(["check", ""]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "pth-legacy-keys: an empty PATH names no file (a variable left unset?)\n")


def test_a_pattern_is_a_pattern_even_where_a_file_has_that_very_name(outside_git, capsys):
    """Else the same PATH would name the file `v[1].pth` until a pull request adds `v1.pth`, which the
    pattern matches instead: the README's `[[]` names it literally."""
    copy_of(outside_git, PARAMETRIZED, "v[1].pth")
    assert run(capsys, "check", "--", "v[1].pth")[0] == 2  # matches no checkpoint: v1.pth is not there
    copy_of(outside_git, LEGACY, "v1.pth")
    assert run(capsys, "check", "--", "v[1].pth") == (0, "checked 1 file: 1 ok\n")  # the pattern: v1.pth
    code, out = run(capsys, "check", "--", "v[[]1].pth")
    assert code == 1 and out.startswith("v[1].pth: 4 parametrized weight-norm keys")


def test_a_name_as_long_as_the_file_system_allows_can_be_fixed(outside_git, capsys):
    name = "a" * 251 + ".pth"  # 255 bytes: the temporary file beside it must not be longer
    copy_of(outside_git, PARAMETRIZED, name)
    code, out = run(capsys, "fix", name)
    assert code == 0 and out.endswith("examined 1 file: 1 fixed\n"), out
    assert sorted(os.listdir(outside_git)) == [name]  # no temporary file left
    assert run(capsys, "check", name)[0] == 0
