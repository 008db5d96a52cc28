"""Every failing check ends with what to do next, and what it says works: the command printed is
run here, as a user would paste it, and must leave nothing to fix."""

import os
import shlex
import shutil
import subprocess

import pytest
from support import git
from support.cli_run import LEGACY, PARAMETRIZED, copy_of, run
from support.hand_made import hand_made_checkpoint, system_payload
from pth_legacy_keys.cli import main


def hint_lines(out):
    return [line for line in out.splitlines() if line.startswith(("to fix them: ", "  (or: "))]


def run_pasted(capsys, command):
    """Run a printed `pth-legacy-keys ...` command as the shell would split it."""
    words = shlex.split(command)
    assert words[0] == "pth-legacy-keys"
    return run(capsys, *words[1:])


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("quiet", [False, True])
def test_a_failing_check_ends_with_the_fix_command_and_that_command_works(here, capsys, quiet):
    names = ["voice.pth", "it's a model.pth", "-dash.pth", "ok.pth"]
    for name in names[:3]:
        copy_of(here / "models", PARAMETRIZED, name)
    copy_of(here / "models", LEGACY, "ok.pth")
    code, out = run(capsys, "check", *(["-q"] if quiet else []), "models")
    assert code == 1
    [hint] = hint_lines(out)
    assert out.splitlines()[-1] == hint
    command = hint.removeprefix("to fix them: ")
    assert shlex.split(command)[:3] == ["pth-legacy-keys", "fix", "--"]
    assert sorted(shlex.split(command)[3:]) == sorted(os.path.join("models", n) for n in names[:3])
    code, out = run_pasted(capsys, command)
    assert code == 0 and out.endswith("examined 3 files: 3 fixed\n")
    assert run(capsys, "check", "models") == (0, "checked 4 files: 4 ok\n")


def test_a_passing_check_prints_no_hint(here, capsys):
    copy_of(here, LEGACY, "ok.pth")
    assert run(capsys, "check", "ok.pth") == (0, "checked 1 file: 1 ok\n")


def test_only_files_that_need_a_fix_are_named(here, capsys):
    copy_of(here, PARAMETRIZED, "voice.pth")
    hand_made_checkpoint(here / "evil.pth", system_payload(here / "MARKER"))
    code, out = run(capsys, "check", "voice.pth", "evil.pth")
    assert code == 2
    assert hint_lines(out) == ["to fix them: pth-legacy-keys fix -- voice.pth"]


@pytest.mark.parametrize("to, only, source, expected_options", [
    ("parametrized", None, LEGACY, ["--to", "parametrized"]),
    ("parametrized", "weight-norm,spectral-norm", LEGACY, ["--to", "parametrized", "--only", "weight-norm,spectral-norm"]),
    ("legacy", "weight-norm", PARAMETRIZED, ["--only", "weight-norm"]),
    ("legacy", "spectral-norm,weight-norm", PARAMETRIZED, []),  # both: legacy's default, in any order
])
def test_the_fix_command_repeats_the_direction_and_families_asked_for(here, capsys, to, only, source,
                                                                      expected_options):
    copy_of(here, source, "model.pth")
    options = ["--to", to] + (["--only", only] if only else [])
    code, out = run(capsys, "check", *options, "model.pth")
    assert code == 1
    [hint] = hint_lines(out)
    assert shlex.split(hint.removeprefix("to fix them: ")) == ["pth-legacy-keys", "fix", *expected_options, "--",
                                                               "model.pth"]
    assert run_pasted(capsys, hint.removeprefix("to fix them: "))[0] == 0
    assert run(capsys, "check", *options, "model.pth")[0] == 0


def test_many_files_repeat_the_selection_instead_of_naming_them(here, capsys):
    for i in range(21):
        copy_of(here / "models", PARAMETRIZED, f"voice{i:02}.pth")
    code, out = run(capsys, "check", "models")
    assert hint_lines(out) == ["to fix them: pth-legacy-keys fix -- models"]
    git("init", "-q", cwd=here)
    git("add", ".", cwd=here)
    git("commit", "-qm", "models", cwd=here)
    code, out = run(capsys, "check")
    assert hint_lines(out) == ["to fix them: pth-legacy-keys fix"]
    code, out = run(capsys, "check", "--changed-since", "HEAD", "models")
    assert code == 0 and hint_lines(out) == []
    commit = git("rev-parse", "HEAD", cwd=here).stdout.strip()
    git("commit", "-q", "--allow-empty", "-m", "later", cwd=here)
    code, out = run(capsys, "check", "--changed-since", "HEAD~1", "models")
    # the commit HEAD~1 names now, not the words: after the next commit they would name another
    assert hint_lines(out) == [f"to fix them: pth-legacy-keys fix --changed-since={commit} -- models"] or code == 0
    (here / "list.txt").write_text("models\n")
    code, out = run(capsys, "check", "--files-from", "list.txt")
    assert hint_lines(out) == ["to fix them: pth-legacy-keys fix --files-from=list.txt"]
    assert run_pasted(capsys, hint_lines(out)[0].removeprefix("to fix them: "))[0] == 0
    assert run(capsys, "check")[0] == 0


def test_a_list_from_standard_input_cannot_be_repeated_so_every_file_is_named(here, capsys, monkeypatch):
    import io
    import sys

    for i in range(21):
        copy_of(here, PARAMETRIZED, f"voice{i:02}.pth")
    names = "".join(f"voice{i:02}.pth\n" for i in range(21))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(names.encode())))
    code, out = run(capsys, "check", "--files-from", "-")
    [hint] = hint_lines(out)
    assert shlex.split(hint)[6:] == [f"voice{i:02}.pth" for i in range(21)]


def test_a_hook_names_the_fix_hook_and_how_to_get_the_command(here, capsys):
    copy_of(here, PARAMETRIZED, "my voice.pth")
    code, out = run(capsys, "check", "--hook", "--", "my voice.pth")
    assert code == 1
    assert hint_lines(out) == [
        "to fix them: pre-commit run --hook-stage manual fix-pth-legacy-keys --files 'my voice.pth'",
        "  (or: pip install pth-legacy-keys && pth-legacy-keys fix -- 'my voice.pth')",
    ]
    assert run_pasted(capsys, hint_lines(out)[1].split(" && ")[1].rstrip(")"))[0] == 0


def test_a_hook_with_many_files_names_every_file_and_no_other(here, capsys):
    """--all-files, or a bare fix, would rewrite files this check never saw (say, one committed
    with --no-verify): pre-commit named these files, and the hint names them all."""
    names = [f"voice{i:02}.pth" for i in range(45)]
    for name in names:
        copy_of(here, PARAMETRIZED, name)
    code, out = run(capsys, "check", "--hook", "--", *names)
    assert hint_lines(out) == [
        f"to fix them: pre-commit run --hook-stage manual fix-pth-legacy-keys --files {' '.join(names)}",
        f"  (or: pip install pth-legacy-keys && pth-legacy-keys fix -- {' '.join(names)})"]


def test_nothing_was_changed_is_said_only_by_fix(here, capsys):
    hand_made_checkpoint(here / "evil.pth", system_payload(here / "MARKER"))
    for command, said in (("check", False), ("inspect", False), ("fix", True)):
        code, out = run(capsys, command, "evil.pth")
        assert code == 2
        assert ("nothing was changed" in out) is said, (command, out)


def test_github_annotations_and_summary_end_with_the_fix(here, capsys, monkeypatch):
    yaml = pytest.importorskip("yaml", reason="pyyaml comes with the test extra: pip install -e '.[test]'")

    copy_of(here, LEGACY, "model.pth")
    summary = here / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code, out = run(capsys, "check", "--output", "github", "--to", "parametrized", "--only",
                    "weight-norm,spectral-norm", "model.pth")
    assert code == 1
    [annotation] = [line for line in out.splitlines() if line.startswith("::error ")]
    assert annotation.endswith("Fix: pth-legacy-keys fix --to parametrized --only weight-norm%2Cspectral-norm "
                               "-- model.pth (or the fix-pth-legacy-keys pre-commit hook)".replace("%2C", ","))
    text = summary.read_text()
    assert "pth-legacy-keys fix --to parametrized --only weight-norm,spectral-norm -- model.pth" in text
    snippet = text.split("```yaml\n")[1].split("```")[0]
    [hook] = yaml.safe_load(snippet)["repos"][0]["hooks"]
    assert hook == {"id": "fix-pth-legacy-keys", "stages": ["manual"],
                    "args": ["--to", "parametrized", "--only", "weight-norm,spectral-norm", "--"]}
    # The hook, given those args and the file, fixes it.
    assert main(["fix", "--hook", *hook["args"], "model.pth"]) == 0


@pytest.mark.parametrize("names", [["v[1].pth", "v1.pth"], ["*.pth", "other.pth"], ["?.pth", "a.pth"],
                                   ["=eq.pth", "ls.pth"]])
def test_the_command_names_exactly_the_files_whatever_their_names(here, capsys, names):
    """A name with `[`, `*` or `?` is a pattern to the CLI: the command makes it match that file
    alone. A name that starts with `=` is quoted (zsh would expand it to a command's path)."""
    hostile, bystander = names
    copy_of(here, PARAMETRIZED, hostile)
    copy_of(here, LEGACY, bystander)  # a pattern that matched it too would say "1 ok" beside "1 fixed"
    code, out = run(capsys, "check", ".")
    [hint] = hint_lines(out)
    command = hint.removeprefix("to fix them: ")
    for shell in ("bash", "zsh"):
        if shutil.which(shell):
            echoed = subprocess.run([shell, "-c", command.replace("pth-legacy-keys fix -- ", "printf '%s\\n' ", 1)],
                                    capture_output=True, text=True, cwd=here)
            assert echoed.returncode == 0 and echoed.stdout.count("\n") == 1, (shell, echoed)
    code, out = run_pasted(capsys, command)
    assert out.endswith("examined 1 file: 1 fixed\n"), out
    assert (here / bystander).read_bytes() == LEGACY.read_bytes()
    assert (here / hostile).read_bytes() != PARAMETRIZED.read_bytes()


def test_a_url_gets_no_fix_command_that_fix_would_refuse(here, capsys, monkeypatch):
    from pth_legacy_keys import cli

    monkeypatch.setattr(cli, "scan", lambda path, **options: _needing_fix(path))
    code, out = run(capsys, "check", "https://example.invalid/voice.pth", "--")
    assert hint_lines(out) == []
    assert out.splitlines()[-1] == "to fix a URL: download the file and run pth-legacy-keys fix on the copy"


def _needing_fix(path):
    from pth_legacy_keys.rename import Rename
    from pth_legacy_keys.report import FileReport

    report = FileReport(path, "needs-fix")
    report.renames, report.modules = [Rename("", "0.parametrizations.weight.original0", "0.weight_g")], 1
    return report


def test_a_check_of_lfs_objects_gives_a_fix_that_reads_them_too(here, capsys):
    """(test_lfs_remote runs it against a server: the hint names --lfs-pointers remote only then.)"""
    from pth_legacy_keys.commands import fix_hint

    assert fix_hint(["m/voice.pth"], "legacy", None, "remote", False, None) == [
        "to fix them: pth-legacy-keys fix --lfs-pointers remote -- m/voice.pth"]
    assert fix_hint(["m/voice.pth"], "legacy", None, "remote", True, None)[1] == (
        "  (or: pip install pth-legacy-keys && pth-legacy-keys fix --lfs-pointers remote -- m/voice.pth)")


def test_a_path_list_that_cannot_be_read_again_is_not_repeated(here, capsys):
    names = [f"v{i:02}.pth" for i in range(21)]
    for name in names:
        copy_of(here, PARAMETRIZED, name)
    (here / "-l.txt").write_text("".join(f"{name}\n" for name in names))
    code, out = run(capsys, "check", "--files-from=-l.txt")
    assert hint_lines(out) == ["to fix them: pth-legacy-keys fix --files-from=-l.txt"]
    assert run_pasted(capsys, hint_lines(out)[0].removeprefix("to fix them: "))[0] == 0


def test_a_name_that_looks_like_an_option_stays_a_file_for_pre_commit(here, capsys, hook_repository,
                                                                       runner_homes):
    """A pull request's `-cevil/x.pth` after `--files` would be pre-commit's -c: a configuration
    the pull request brings (`evil/x.pth`), whose hook would run as the fix. The hint writes `./`."""
    from support.runners import require_runner

    repository, sha = hook_repository
    marker = here / "PWNED"
    git("init", "-q", cwd=here)
    (here / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {repository}\n    rev: {sha}\n    hooks:\n      - id: check-pth-legacy-keys\n"
        "      - id: fix-pth-legacy-keys\n        stages: [manual]\n")
    copy_of(here / "-cevil", PARAMETRIZED, "x.pth")
    (here / "evil").mkdir()
    (here / "evil" / "x.pth").write_text(
        "repos: [{repo: local, hooks: [{id: fix-pth-legacy-keys, name: x, entry: \"touch " + str(marker)
        + "\", language: system, always_run: true, pass_filenames: false, stages: [manual]}]}]\n")
    git("add", "-A", cwd=here)
    env = {**os.environ, **runner_homes}
    checked = subprocess.run(require_runner("pre-commit") + ["run", "--all-files"], cwd=here, capture_output=True,
                             text=True, env=env)
    [hint] = [line for line in checked.stdout.splitlines() if line.startswith("to fix them: ")]
    assert hint == "to fix them: pre-commit run --hook-stage manual fix-pth-legacy-keys --files ./-cevil/x.pth"
    fixed = subprocess.run(require_runner("pre-commit") + shlex.split(hint.removeprefix("to fix them: "))[1:],
                           cwd=here, capture_output=True, text=True, env=env)
    assert not marker.exists(), fixed.stdout
    assert "files were modified by this hook" in fixed.stdout, fixed.stdout
    assert (here / "-cevil" / "x.pth").read_bytes() != PARAMETRIZED.read_bytes()
