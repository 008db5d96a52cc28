"""The command line as a user drives it: paths, discovery, output, exit codes."""

import io
import json
import os
import shutil
import subprocess
import sys

import pytest
from support.cli_run import copy_of
from support import git
from pth_legacy_keys import __version__, fix, scan
from pth_legacy_keys.cli import main

PARAMETRIZED_KEYS = [
    "0.parametrizations.weight.original0", "0.parametrizations.weight.original1",
    "1.parametrizations.weight.original0", "1.parametrizations.weight.original1",
]


def test_check_reports_file_count_and_example_key(fixture_copy, capsys):
    path = fixture_copy("parametrized.bin")
    assert main(["check", str(path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: 4 parametrized weight-norm keys in 2 modules (e.g. {PARAMETRIZED_KEYS[0]})",
        "checked 1 file: 1 needs-fix",
        f"to fix them: pth-legacy-keys fix -- {path}",
    ]


def test_check_of_legacy_file_is_quiet_and_passes(fixture_copy, capsys):
    path = fixture_copy("legacy.bin")
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out == "checked 1 file: 1 ok\n"
    assert main(["check", "-q", str(path)]) == 0
    assert capsys.readouterr().out == ""


def test_verbose_lists_every_rename(fixture_copy, capsys):
    path = fixture_copy("parametrized.bin")
    assert main(["check", "-v", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    legacy = {"original0": "weight_g", "original1": "weight_v"}
    expected = [f"    <top>: {key} -> {key.split('parametrizations')[0]}{legacy[key[-9:]]}"
                for key in PARAMETRIZED_KEYS]
    assert lines[1:5] == expected


@pytest.mark.parametrize("name", ["parametrized.bin", "parametrized_legacy_format.bin"])
def test_fix_then_check_passes(fixture_copy, capsys, name):
    path = fixture_copy(name)
    assert main(["fix", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{path}: fixed: renamed 4 keys to legacy names"
    assert main(["check", str(path)]) == 0
    assert main(["check", "--to", "parametrized", str(path)]) == 1


def test_explicit_file_is_examined_whatever_its_name(fixture_copy):
    path = fixture_copy("parametrized.bin", "weights.bin")
    assert main(["check", str(path)]) == 1


def test_folder_is_walked_for_checkpoint_names_only(fixture_copy, tmp_path, capsys):
    models = tmp_path / "models"
    (models / "deep").mkdir(parents=True)
    fixture_copy("parametrized.bin", "models/deep/G_2333.PTH")
    fixture_copy("legacy.bin", "models/voice.ckpt")
    fixture_copy("parametrized.bin", "models/ignored.bin")
    assert main(["check", "-v", str(models)]) == 1
    lines = capsys.readouterr().out.splitlines()
    examined = [line.split(": ")[0] for line in lines if not line.startswith((" ", "checked", "to fix them: "))]
    assert examined == [str(models / "voice.ckpt"), str(models / "deep" / "G_2333.PTH")] or \
        sorted(examined) == sorted([str(models / "voice.ckpt"), str(models / "deep" / "G_2333.PTH")])


def test_no_path_means_tracked_checkpoints_of_the_repository(fixture_copy, tmp_path, monkeypatch, capsys):
    git("init", "-q", cwd=tmp_path)
    fixture_copy("parametrized.bin", "tracked.pth")
    fixture_copy("legacy.bin", "model.pt")
    fixture_copy("parametrized.bin", "untracked.pth")
    git("add", "tracked.pth", "model.pt", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["check", "-v"]) == 1
    out = capsys.readouterr().out
    assert "tracked.pth: 4 parametrized" in out and "model.pt: ok" in out
    assert "untracked.pth: " not in out
    assert out.splitlines()[-3:] == [
        "checked 2 files: 1 ok, 1 needs-fix",
        "left out 1 checkpoint that git does not track (git ls-files --others lists it): name it to check it, "
        "or git add it",
        "to fix them: pth-legacy-keys fix -- tracked.pth"]


def test_no_path_outside_git_walks_the_current_folder(fixture_copy, tmp_path, monkeypatch, capsys):
    fixture_copy("parametrized.bin", "a.pth")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert main(["check"]) == 1
    assert capsys.readouterr().out.startswith("a.pth: 4 parametrized")


def test_json_output_schema(fixture_copy, tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00\x01 binary garbage")
    good = fixture_copy("parametrized.bin")
    assert main(["check", "--output", "json", str(good), str(bad)]) == 2
    document = json.loads(capsys.readouterr().out)
    assert document["schema_version"] == 1 and document["tool"] == "pth-legacy-keys"
    assert document["version"] == __version__
    assert (document["command"], document["to"], document["exit_code"]) == ("check", "legacy", 2)
    assert document["summary"]["needs-fix"] == 1 and document["summary"]["error"] == 1
    first, second = document["files"]
    assert first["path"] == str(good) and first["status"] == "needs-fix" and first["format"] == "zip"
    assert [r["old"] for r in first["renames"]] == PARAMETRIZED_KEYS
    assert first["renames"][0] == {"dict": "", "old": PARAMETRIZED_KEYS[0], "new": "0.weight_g"}
    assert first["modules"] == 2 and first["problems"] == [] and first["reason"] is None
    assert second["status"] == "error" and "not a PyTorch checkpoint" in second["reason"]


def test_exit_code_is_the_worst_of_all_files(fixture_copy, tmp_path):
    legacy = fixture_copy("legacy.bin")
    parametrized = fixture_copy("parametrized.bin")
    assert main(["check", str(legacy)]) == 0
    assert main(["check", str(legacy), str(parametrized)]) == 1
    assert main(["check", str(parametrized), str(tmp_path / "missing.pth")]) == 2


def test_python_api(fixture_copy):
    path = fixture_copy("parametrized.bin")
    report = scan(path)
    assert report.status == "needs-fix" and report.exit_code == 1
    assert [r.old for r in report.renames] == PARAMETRIZED_KEYS
    assert fix(path).status == "fixed"
    assert scan(path).status == "ok"
    assert scan(path, to="parametrized").status == "needs-fix"
    with pytest.raises(ValueError):
        scan(path, to="sideways")


def test_version_help_and_module_entry_point(fixture_copy):
    path = fixture_copy("parametrized.bin")
    version = subprocess.run([sys.executable, "-m", "pth_legacy_keys", "--version"],
                             capture_output=True, text=True)
    assert version.stdout.strip() == f"pth-legacy-keys {__version__}"
    run = subprocess.run([sys.executable, "-m", "pth_legacy_keys", "check", str(path)],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "4 parametrized weight-norm keys" in run.stdout
    usage = subprocess.run([sys.executable, "-m", "pth_legacy_keys", "check", "--to", "sideways"],
                           capture_output=True, text=True)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr
    helped = subprocess.run([sys.executable, "-m", "pth_legacy_keys", "fix", "--help"],
                            capture_output=True, text=True)
    assert "exit codes" in helped.stdout and "--lfs-pointers" in helped.stdout


# What a hook run of check or fix need not load: each costs more start-up than reading a model's
# pickle (typing, shutil with bz2 and lzma), or belongs to another path (json: --output json;
# subprocess: git discovery and links; pickletools and shlex: refusals; torch: --verify; ssl and
# urllib: URLs); and a check writes nothing (the writer and its thread).
NOT_LOADED_BY_A_HOOK_RUN = ("typing", "shutil", "json", "subprocess", "pickletools", "torch", "dataclasses",
                            "ssl", "urllib.request", "pth_legacy_keys.http_source")
NOT_LOADED_BY_A_CHECK = ("pth_legacy_keys.writer", "threading", "queue")
NOT_LOADED_BY_A_FIX = ("shlex",)  # only a check that fails quotes names, for the command that fixes them


@pytest.mark.parametrize("command", ["check", "fix"])
def test_a_hook_run_loads_only_what_it_needs(fixture_copy, command):
    path = fixture_copy("parametrized.bin", "model.pth")
    unneeded = NOT_LOADED_BY_A_HOOK_RUN + (NOT_LOADED_BY_A_CHECK if command == "check" else NOT_LOADED_BY_A_FIX)
    probe = ("import sys; from pth_legacy_keys.cli import main; code = main(sys.argv[1:]); "
             f"print(sorted(set({unneeded!r}) & set(sys.modules)), code)")
    run = subprocess.run([sys.executable, "-c", probe, command, "--hook", "--", str(path)],
                         capture_output=True, text=True, cwd=path.parent, env={**os.environ, "COLUMNS": "50"})
    assert run.stdout.splitlines()[-1] == f"[] {1 if command == 'check' else 0}", run.stdout + run.stderr


def test_help_is_as_wide_as_argparse_makes_it(monkeypatch, capsys):
    """The formatter is told the width shutil.get_terminal_size() would give argparse."""
    import argparse

    from pth_legacy_keys.cli import build_parser

    shown = []
    for columns in ("50", "120"):
        monkeypatch.setenv("COLUMNS", columns)
        with pytest.raises(SystemExit):
            main(["fix", "--help"])
        ours = capsys.readouterr().out
        plain = build_parser()
        for parser in [plain, *plain._subparsers._group_actions[0].choices.values()]:
            parser.formatter_class = (argparse.HelpFormatter if parser.formatter_class.__name__.startswith("_Wrap")
                                      else argparse.RawDescriptionHelpFormatter)
        with pytest.raises(SystemExit):
            plain.parse_args(["fix", "--help"])
        assert capsys.readouterr().out == ours
        shown.append(ours)
    assert shown[0] != shown[1]  # the width was not ignored


def test_files_from_a_list_and_from_standard_input(fixture_copy, tmp_path, monkeypatch, capsys):
    first = fixture_copy("parametrized.bin", "a.pth")
    second = fixture_copy("legacy.bin", "b.pth")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{first}\n\n{second}\n")
    assert main(["check", "-v", "--files-from", str(listing)]) == 1
    out = capsys.readouterr().out
    assert f"{first}: 4 parametrized" in out and f"{second}: ok" in out
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(f"{second}\n".encode())))
    assert main(["check", "--files-from", "-"]) == 0
    assert capsys.readouterr().out == "checked 1 file: 1 ok\n"


def test_an_empty_files_from_list_examines_nothing(tmp_path, fixture_copy, monkeypatch, capsys):
    fixture_copy("parametrized.bin", "a.pth")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.txt").write_text("\n")
    assert main(["check", "--files-from", "empty.txt"]) == 0
    assert capsys.readouterr().out == "checked 0 files\n"


def test_globs_are_expanded_when_no_file_has_that_name(fixture_copy, tmp_path, monkeypatch, capsys):
    fixture_copy("parametrized.bin", "models/v1/a.pth")
    fixture_copy("parametrized.bin", "models/v2/deep/b.pth")
    fixture_copy("parametrized.bin", "models/v2/c.bin")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "-v", "models/**/*.pth"]) == 1
    examined = [line.split(": ")[0] for line in capsys.readouterr().out.splitlines()
                if not line.startswith((" ", "checked", "to fix them: "))]
    assert examined == [os.path.join("models", "v1", "a.pth"), os.path.join("models", "v2", "deep", "b.pth")]


def test_a_pattern_or_folder_that_matches_nothing_fails(fixture_copy, tmp_path, monkeypatch, capsys):
    """A typo in a workflow's `paths:` must not turn into a green "checked 0 files"."""
    fixture_copy("parametrized.bin", "models/a.pth")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "model/*.pth"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("pth-legacy-keys: model/*.pth: matched no checkpoint")
    (tmp_path / "empty").mkdir()
    assert main(["check", "empty"]) == 2  # named, and nothing in it to check: a typo or a wrong folder
    assert capsys.readouterr().err.startswith("pth-legacy-keys: empty: matched no checkpoint")


def test_each_odd_line_of_a_path_list_gets_one_clean_line(fixture_copy, tmp_path, monkeypatch, capsys):
    legacy = fixture_copy("legacy.bin", "ok.pth")
    undecodable = os.fsdecode(b"\xff.pth")
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"a\0b.pth\r\n" + os.fsencode(str(legacy)) + b"\r\n\n   \n\xff.pth\n")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--files-from", str(listing)]) == 2
    assert capsys.readouterr().out.splitlines() == [
        "a\\x00b.pth: error: the name holds a NUL byte, which no file's name can",
        "\\udcff.pth: error: no such file",
        "checked 3 files: 1 ok, 2 error",
    ]
    if sys.platform != "win32":
        copy_of(tmp_path, fixture_copy("parametrized.bin"), undecodable)  # that very name, as bytes
        assert main(["check", "--files-from", str(listing)]) == 2
        assert "\\udcff.pth: 4 parametrized" in capsys.readouterr().out


def test_changed_since_keeps_only_files_changed_after_a_revision(fixture_copy, tmp_path, monkeypatch, capsys):
    git("init", "-q", "-b", "main", cwd=tmp_path)
    fixture_copy("parametrized.bin", "old.pth")
    git("add", "old.pth", cwd=tmp_path)
    git("commit", "-q", "-m", "base", cwd=tmp_path)
    git("checkout", "-q", "-b", "topic", cwd=tmp_path)
    fixture_copy("parametrized.bin", "new.pth")
    git("add", "new.pth", cwd=tmp_path)
    git("commit", "-q", "-m", "topic", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--changed-since", "main"]) == 1
    out = capsys.readouterr().out
    assert "new.pth: 4 parametrized" in out and "old.pth" not in out
    assert main(["check", "--changed-since", "no-such-revision"]) == 2
    assert "cannot list the files changed since no-such-revision" in capsys.readouterr().err


@pytest.mark.parametrize("revision", ["--output=x.txt", "-p", "--no-index", "HEAD:old.pth"])
def test_a_revision_is_never_an_option_and_must_name_a_commit(revision, fixture_copy, tmp_path, monkeypatch,
                                                              capsys):
    git("init", "-q", "-b", "main", cwd=tmp_path)
    fixture_copy("parametrized.bin", "old.pth")
    git("add", "old.pth", cwd=tmp_path)
    git("commit", "-q", "-m", "base", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["check", f"--changed-since={revision}"]) == 2
    assert capsys.readouterr().err == (f"pth-legacy-keys: cannot list the files changed since {revision}: "
                                       f"{revision!r} does not name a commit here\n")
    assert sorted(os.listdir(tmp_path)) == [".git", "old.pth"]


def test_changed_since_takes_any_revision_git_takes(fixture_copy, tmp_path, monkeypatch, capsys):
    git("init", "-q", "-b", "main", cwd=tmp_path)
    fixture_copy("parametrized.bin", "old.pth")
    git("add", "old.pth", cwd=tmp_path)
    git("commit", "-q", "-m", "the base", cwd=tmp_path)
    git("tag", "-a", "-m", "annotated", "v1", cwd=tmp_path)
    fixture_copy("parametrized.bin", "new.pth")
    git("add", "new.pth", cwd=tmp_path)
    git("commit", "-q", "-m", "topic", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    for revision in (":/the base", "v1", "HEAD~1", "main~1"):
        assert main(["check", "--changed-since", revision]) == 1
        out = capsys.readouterr().out
        assert "new.pth: 4 parametrized" in out and "old.pth" not in out


ADD_SUBMODULE = ("-c", "protocol.file.allow=always", "submodule", "add", "-q")  # from a local path


def repository(fixture_copy, folder, files, commit=True):
    """A new git repository at `folder` (in tmp_path) holding `files`, {name: fixture}, added
    and, with `commit`, committed."""
    folder.mkdir()
    git("init", "-q", "-b", "main", cwd=folder)
    for name, fixture in files.items():
        fixture_copy(fixture, f"{folder.name}/{name}")
        git("add", name, cwd=folder)
    if commit:
        git("commit", "-q", "-m", "files", cwd=folder)
    return folder


def test_checkpoints_in_checked_out_submodules_are_examined(fixture_copy, tmp_path, monkeypatch, capsys):
    library = repository(fixture_copy, tmp_path / "library", {"voice.pth": "parametrized.bin"})
    project = repository(fixture_copy, tmp_path / "project", {"own.pth": "legacy.bin"}, commit=False)
    git(*ADD_SUBMODULE, str(library), "vendor", cwd=project)
    git(*ADD_SUBMODULE, str(library), "unused", cwd=project)
    git("submodule", "deinit", "-q", "-f", "unused", cwd=project)  # not checked out: nothing to examine
    git("commit", "-q", "-m", "base", cwd=project)
    monkeypatch.chdir(project)
    assert main(["check", "-v"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in out
            if not line.startswith((" ", "checked", "to fix them: ", "left out"))] == [
        "own.pth", os.path.join("vendor", "voice.pth")]
    # The one that is not checked out is said, with how to get it: a clone without submodules must not pass silently.
    assert ("left out 1 submodule that is not checked out: git submodule update --init --recursive checks them "
            "out") in out
    # A submodule whose commit changed counts as changed with all its files.
    git("tag", "base", cwd=project)
    assert main(["check", "--changed-since", "base"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "checked 0 files"
    git("commit", "-q", "--allow-empty", "-m", "more", cwd=library)
    git("-c", "protocol.file.allow=always", "submodule", "update", "-q", "--remote", "vendor", cwd=project)
    git("commit", "-q", "-am", "newer voices", cwd=project)
    assert main(["check", "--changed-since", "base"]) == 1
    assert f"{os.path.join('vendor', 'voice.pth')}: 4 parametrized" in capsys.readouterr().out


def test_report_file_holds_the_json_document(fixture_copy, tmp_path, capsys):
    path = fixture_copy("parametrized.bin")
    report = tmp_path / "report.json"
    assert main(["check", "--report", str(report), str(path)]) == 1
    assert capsys.readouterr().out.startswith(f"{path}: 4 parametrized")
    document = json.loads(report.read_text())
    assert document["files"][0]["path"] == str(path) and document["files"][0]["status"] == "needs-fix"


def test_control_characters_in_file_names_are_spelled_out(fixture_copy, capsys):
    path = fixture_copy("parametrized.bin", "evil\n::error::x.pth")
    assert main(["check", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(str(path).replace("\n", "\\n") + ": 4 parametrized")
    assert len(lines) == 3
    assert lines[2] == f"to fix them: pth-legacy-keys fix -- $'{path.parent}/evil\\x0a::error::x.pth'"


def test_parallel_jobs_keep_the_order_and_the_verdicts(fixture_copy, tmp_path, capsys):
    names = [f"m{i:02d}.pth" for i in range(12)]
    for i, name in enumerate(names):
        fixture_copy("parametrized.bin" if i % 3 else "legacy.bin", name)
    (tmp_path / "m05.pth").write_bytes(b"\x00 not a checkpoint")
    paths = [str(tmp_path / name) for name in names]
    assert main(["check", "-v", "--jobs", "1", *paths]) == 2
    serial = capsys.readouterr().out
    assert main(["check", "-v", "--jobs", "4", *paths]) == 2
    assert capsys.readouterr().out == serial
    assert main(["fix", "--jobs", "3", *paths]) == 2
    assert capsys.readouterr().out.count("fixed: renamed 4 keys") == 7
    with pytest.raises(SystemExit):
        main(["check", "--jobs", "0", *paths])


def test_text_output_streams_each_file_before_the_next_is_examined(fixture_copy, monkeypatch, capsys):
    """Reports are not kept for the text output, so memory stays flat over thousands of files."""
    from pth_legacy_keys import cli

    paths = [str(fixture_copy("parametrized.bin", f"m{i}.pth")) for i in range(3)]
    seen_before_each_scan = []
    real_scan = cli.scan

    def scan_and_look(path, *args, **kwargs):
        seen_before_each_scan.append(capsys.readouterr().out)
        return real_scan(path, *args, **kwargs)

    monkeypatch.setattr(cli, "scan", scan_and_look)
    assert main(["check", "--jobs", "1", *paths]) == 1
    assert seen_before_each_scan[0] == ""
    assert seen_before_each_scan[1].startswith(f"{paths[0]}: 4 parametrized")
    assert seen_before_each_scan[2].startswith(f"{paths[1]}: 4 parametrized")


@pytest.mark.parametrize("output", ["text", "json"])
def test_a_reader_that_goes_away_ends_the_run_without_a_traceback(tmp_path, output):
    """`pth-legacy-keys check ... | head -c 10`: the pipe closes under us."""
    paths = [copy_of(tmp_path, name=f"m{i}.pth") for i in range(200)]
    child = subprocess.Popen([sys.executable, "-m", "pth_legacy_keys", "check", "-v", "--jobs", "1",
                              "--output", output, *map(str, paths)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.read(10)
    child.stdout.close()  # as head does once it has its bytes
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=120) == 2
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


@pytest.mark.parametrize("output", ["text", "github"])
def test_a_console_that_cannot_encode_a_name_gets_escapes_not_a_crash(output, fixture_copy, tmp_path):
    """A Windows runner's console is cp1252: fix must not rewrite a file and then die printing its name."""
    path = fixture_copy("parametrized.bin", "模型.pth")
    environment = {**os.environ, "PYTHONIOENCODING": "cp1252", "PYTHONUTF8": "0"}
    environment.pop("GITHUB_STEP_SUMMARY", None)
    environment.pop("GITHUB_OUTPUT", None)
    result = subprocess.run([sys.executable, "-m", "pth_legacy_keys", "fix", "--output", output, "--", str(path)],
                            capture_output=True, env=environment, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr
    escaped = str(path).replace("模型", "\\u6a21\\u578b").encode("cp1252")
    assert escaped in result.stdout
    assert main(["check", str(path)]) == 0


def test_a_file_named_like_a_pattern_does_not_switch_the_pattern_off(fixture_copy, tmp_path, monkeypatch, capsys):
    """A pull request could add `models/*.pth` itself, so that the pattern named only that file."""
    fixture_copy("legacy.bin", "models/*.pth")
    fixture_copy("parametrized.bin", "models/evil.pth")
    fixture_copy("parametrized.bin", "models/deeper/evil.pth")
    monkeypatch.chdir(tmp_path)
    for pattern in ("models/*.pth", "models/**/*.pth"):
        assert main(["check", pattern]) == 1
        out = capsys.readouterr().out
        assert os.path.join("models", "evil.pth") + ": 4 parametrized" in out
        assert ("deeper" in out) is ("**" in pattern)
    assert main(["check", "--hook", "--", "models/*.pth"]) == 0  # git named that very file
    assert capsys.readouterr().out == "checked 1 file: 1 ok\n"


def test_patterns_and_folder_walks_see_hidden_names_and_version_control_folders(fixture_copy, tmp_path,
                                                                               monkeypatch, capsys):
    """In a repository, whatever a pull request adds: even in a folder named like another
    version-control system's (outside git, a walk leaves those out: test_selection)."""
    hidden = [os.path.join("models", ".hidden.pth"), os.path.join("models", ".dir", "x.pth"),
              os.path.join("models", ".svn", "x.pth"), os.path.join("models", ".hg", "x.pth")]
    for name in hidden:
        fixture_copy("parametrized.bin", name)
    git("init", "-q", cwd=tmp_path)
    git("add", "-A", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    for paths in (["models"], ["models/**/*.pth"], ["models/*.pth", "models/*/*.pth"]):
        assert main(["check", "-q", *paths]) == 1
        out = capsys.readouterr().out
        assert sorted(line.split(": ")[0] for line in out.splitlines()[:-1]) == sorted(hidden), paths


def test_linked_folders_are_entered_once_so_loops_end(fixture_copy, tmp_path, monkeypatch, capsys):
    """Two links to `.` made Python's glob endless; a link to / would walk the machine."""
    fixture_copy("parametrized.bin", "models/voice.pth")
    for name in ("l1", "l2"):
        os.symlink(".", tmp_path / "models" / name)
    os.symlink("/", tmp_path / "models" / "root")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no repository: the folder is the root
    assert main(["check", "models/**/*.pth"]) == 2
    assert capsys.readouterr().out.splitlines() == [
        f"{os.path.join('models', 'root')}: error: is a folder, not a file",
        f"{os.path.join('models', 'voice.pth')}: 4 parametrized weight-norm keys in 2 modules "
        "(e.g. 0.parametrizations.weight.original0)", "checked 2 files: 1 needs-fix, 1 error",
        f"to fix them: pth-legacy-keys fix -- {os.path.join('models', 'voice.pth')}"]


def test_a_repository_git_cannot_list_fails_rather_than_being_walked(fixture_copy, tmp_path, monkeypatch, capsys):
    git("init", "-q", cwd=tmp_path)
    fixture_copy("parametrized.bin", "models/.svn/evil.pth")
    git("add", "-A", cwd=tmp_path)
    (tmp_path / ".gitmodules").write_text('[submodule "x"\n\tpath = = =\n')  # a bad config line
    git("add", ".gitmodules", cwd=tmp_path)
    git("update-index", "--add", "--cacheinfo", "160000," + "1" * 40 + ",sm", cwd=tmp_path)  # a submodule entry
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 2
    assert capsys.readouterr().err.startswith("pth-legacy-keys: cannot list the repository's files: ")


def test_a_named_path_missing_fails_with_changed_since_too(fixture_copy, tmp_path, monkeypatch, capsys):
    git("init", "-q", "-b", "main", cwd=tmp_path)
    fixture_copy("legacy.bin", "models/old.pth")
    git("add", "-A", cwd=tmp_path)
    git("commit", "-q", "-m", "base", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--changed-since", "HEAD", "models/nwe.pth"]) == 2
    assert "models/nwe.pth: error: no such file" in capsys.readouterr().out
    assert main(["check", "--changed-since", "HEAD", "modles/**/*.pth"]) == 2
    assert "modles/**/*.pth: matched no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("value_option", ["--changed-since", "--report", "--files-from", "--to", "--jobs", "--output",
                                          "--lfs-pointers"])
def test_an_option_given_dashdash_as_its_value_is_a_usage_error(value_option, fixture_copy, capsys):
    """Python 3.9-3.12's argparse makes `--report=--` an empty list: a traceback, or an option ignored."""
    path = fixture_copy("legacy.bin")
    with pytest.raises(SystemExit) as stopped:
        main(["check", f"{value_option}=--", str(path)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: argument" in err


def test_text_output_never_starts_a_workflow_command(fixture_copy, tmp_path, monkeypatch, capsys):
    """A CI log reads a line starting with `::` as a command: a file's name must not start one."""
    monkeypatch.chdir(tmp_path)
    fixture_copy("parametrized.bin", "::error title=x::forged.pth")
    assert main(["check", "::error title=x::forged.pth"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("\\x3a:error title=x::forged.pth: 4 parametrized")
    assert not any(line.lstrip().startswith(("::", "##[")) for line in out.splitlines())


def test_a_long_vocoder_field_is_shortened_in_every_output(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    path = tmp_path / "voice.pth"
    torch.save({"weight": {"dec.conv_pre.weight": torch.zeros(2)}, "config": [1], "vocoder": "x" * 1_000_000},
               path)
    for argv in (["check", "-v"], ["inspect"], ["inspect", "--output", "json"]):
        main([*argv, str(path)])
        out = capsys.readouterr().out
        assert "characters]" in out and len(out) < 5_000, argv


WORKER_WRAPPER = """
import multiprocessing, sys
if __name__ == "__main__":  # as in the console script, which a spawned worker imports again
    if sys.argv[1] == "no-fork":  # as on Windows
        multiprocessing.get_all_start_methods = lambda: ["spawn"]
    else:
        multiprocessing.set_start_method(sys.argv[1])  # the default on macOS, and forkserver from 3.14
    from pth_legacy_keys.cli import main
    sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("start_method", ["spawn", "forkserver", "no-fork"])
def test_worker_processes_never_import_the_examined_folders_code(start_method, fixture_copy, tmp_path):
    """A spawned worker is `python -c ...` with the current folder first on sys.path: a repository's
    own `multiprocessing/` package would run in it."""
    repo = tmp_path / "repo"
    for i in range(9):
        fixture_copy("parametrized.bin", f"repo/models/m{i}.pth")
    marker = tmp_path / "ran"
    hostile = repo / "multiprocessing"
    hostile.mkdir()
    (hostile / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WORKER_WRAPPER)
    result = subprocess.run([sys.executable, str(wrapper), start_method, "check", "-j", "2", "models"],
                            cwd=repo, capture_output=True, text=True, check=False)
    assert result.returncode == 1, result.stderr
    assert "checked 9 files: 9 needs-fix" in result.stdout
    assert not marker.exists()


def test_linked_folders_inside_the_repository_are_walked_and_links_out_are_reported(fixture_copy, tmp_path,
                                                                                    monkeypatch, capsys):
    """A pull request can put the model behind `models/voices -> ../store`: loaders read through it."""
    repo = tmp_path / "repo"
    fixture_copy("parametrized.bin", "repo/store/new_voice.pth")
    fixture_copy("legacy.bin", "repo/models/ok.pth")
    git("init", "-q", cwd=repo)
    (tmp_path / "outside").mkdir()
    os.symlink(os.path.join("..", "store"), repo / "models" / "voices")
    os.symlink(str(tmp_path / "outside"), repo / "models" / "elsewhere")
    os.symlink(".", repo / "models" / "loop")
    monkeypatch.chdir(repo)
    voices, elsewhere = os.path.join("models", "voices", "new_voice.pth"), os.path.join("models", "elsewhere")
    for paths in (["models"], ["models/**/*.pth"], ["models/*"], ["models/*/*.pth"]):
        assert main(["check", *paths]) == 2, paths
        out = capsys.readouterr().out
        assert f"{voices}: 4 parametrized" in out, paths
        assert f"{elsewhere}: error: is a folder, not a file" in out, paths
        assert "loop" not in out


def test_patterns_match_names_as_fnmatch_and_double_stars_as_any_depth():
    """Each name as Python's fnmatch says (glob's own rules, hidden names included); `**` any
    number of whole names, none included."""
    from pth_legacy_keys.patterns import _states

    def matches(pattern, path):
        parts = pattern.split("/")
        return len(parts) in _states(parts, path.split("/"))

    assert matches("*.pth", ".hidden.pth") and matches("[!]]*", "a") and not matches("[!]]*", "]")
    assert not matches("[z-a].pth", "z.pth") and not matches("*.pth", "a/b.pth")
    for path in ("x.pth", "a/x.pth", "a/b/c/x.pth"):
        assert matches("**/*.pth", path) and matches("**", path)
    assert matches("a/**/x.pth", "a/x.pth") and matches("a/**/x.pth", "a/b/c/x.pth")
    assert not matches("a/**/x.pth", "b/x.pth") and not matches("a/*/x.pth", "a/x.pth")
    assert _states(["models", "*.pth"], ["models"]) and not _states(["models", "*.pth"], ["other"])


def test_a_pattern_that_is_not_one_is_a_missing_file(fixture_copy, tmp_path, monkeypatch, capsys):
    fixture_copy("parametrized.bin", "models/z.pth")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "models/[z-a].pth"]) == 2
    assert "models/[z-a].pth: matched no checkpoint" in capsys.readouterr().err


def test_a_thousand_nested_folders_are_walked_without_recursion(fixture_copy, tmp_path, monkeypatch, capsys):
    """Deeper than Python's recursion limit: os.walk recursed until Python 3.12."""
    folder = "models"
    for _ in range(1100):  # one at a time: os.makedirs and pathlib recurse too
        os.mkdir(tmp_path / folder)
        folder = os.path.join(folder, "a")
    deep = os.path.join(os.path.dirname(folder), "x.pth")
    shutil.copyfile(fixture_copy("parametrized.bin"), tmp_path / deep)
    monkeypatch.chdir(tmp_path)
    try:
        for paths in (["models"], ["models/**/*.pth"]):
            assert main(["check", "-q", *paths]) == 1
            assert capsys.readouterr().out.startswith(f"{deep}: 4 parametrized")
    finally:  # bottom up: shutil.rmtree, which pytest cleans up with, recurses as deep as the tree
        os.unlink(tmp_path / deep)
        folder = os.path.dirname(deep)
        while folder:
            os.rmdir(tmp_path / folder)
            folder = os.path.dirname(folder)


def test_a_hook_examines_each_name_as_a_file(fixture_copy, tmp_path, monkeypatch, capsys):
    fixture_copy("parametrized.bin", "store/x.pth")
    os.symlink("store", tmp_path / "dir.pth")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--hook", "--", "dir.pth"]) == 2
    assert capsys.readouterr().out.startswith("dir.pth: error: is a folder, not a file")


def test_changed_since_sees_a_submodule_moved_under_ignore_all(fixture_copy, tmp_path, monkeypatch, capsys):
    """A pull request's .gitmodules can say `ignore = all`, which git diff honours by default."""
    library = repository(fixture_copy, tmp_path / "library", {"v.pth": "legacy.bin"})
    project = repository(fixture_copy, tmp_path / "project", {}, commit=False)
    git(*ADD_SUBMODULE, str(library), "voices", cwd=project)
    git("commit", "-q", "-m", "base", cwd=project)
    git("tag", "base", cwd=project)
    fixture_copy("parametrized.bin", "library/v.pth")
    git("commit", "-q", "-am", "parametrized", cwd=library)
    git("-c", "protocol.file.allow=always", "submodule", "update", "-q", "--remote", "voices", cwd=project)
    git("config", "-f", ".gitmodules", "submodule.voices.ignore", "all", cwd=project)
    git("add", "-A", cwd=project)
    git("commit", "-q", "-m", "move the submodule quietly", cwd=project)
    monkeypatch.chdir(project)
    assert main(["check", "--changed-since", "base"]) == 1
    assert f"{os.path.join('voices', 'v.pth')}: 4 parametrized" in capsys.readouterr().out


def test_changed_since_sees_a_tracked_links_changed_target(fixture_copy, tmp_path, monkeypatch, capsys):
    git("init", "-q", "-b", "main", cwd=tmp_path)
    fixture_copy("legacy.bin", "blobs/4f2a9c")
    (tmp_path / "models").mkdir()
    os.symlink(os.path.join("..", "blobs", "4f2a9c"), tmp_path / "models" / "voice.pth")
    git("add", "-A", cwd=tmp_path)
    git("commit", "-q", "-m", "base", cwd=tmp_path)
    fixture_copy("parametrized.bin", "blobs/4f2a9c")
    git("commit", "-q", "-am", "only the blob", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--changed-since", "HEAD~1"]) == 1
    assert f"{os.path.join('models', 'voice.pth')}: 4 parametrized" in capsys.readouterr().out


def test_no_output_line_holds_a_legacy_workflow_command(fixture_copy, tmp_path, monkeypatch, capsys):
    """GitHub's runner reads `##[` anywhere in a line as its older command syntax."""
    name = "models/x##[stop-commands]pwn.pth"
    fixture_copy("parametrized.bin", name)
    monkeypatch.chdir(tmp_path)
    code = main(["check", "--hook", "-v", "--", name])
    captured = capsys.readouterr()
    assert code == 1 and "models/x##\\x5bstop-commands]pwn.pth: 4 parametrized" in captured.out
    assert main(["check", "--output", "json", "--", name.replace("[", "[[]")]) == 1  # `[` starts a pattern
    text = capsys.readouterr().out
    assert "##[" not in text and json.loads(text)["files"][0]["path"] == name
    assert main(["check", "--changed-since", "x##[error]y"]) == 2
    err = capsys.readouterr().err
    assert "##[" not in err and "x##\\x5berror]y" in err


@pytest.mark.parametrize("command", ["check", "fix", "inspect"])
def test_a_bad_option_shows_the_subcommands_usage(capsys, command):
    with pytest.raises(SystemExit) as exited:
        main([command, "--bogus", "x.pth"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: pth-legacy-keys {command} [-h]")
    assert err.endswith(f"pth-legacy-keys {command}: error: unrecognized arguments: --bogus\n")


def test_help_says_torch_is_needed_only_for_verify(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "needs no torch (only fix --verify loads files with torch)" in out
    with pytest.raises(SystemExit):
        main(["fix", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "pip install torch safetensors --extra-index-url https://download.pytorch.org/whl/cpu" in out


@pytest.mark.parametrize("argv", [["check", "--only=##[error]x", "f.pth"], ["check", "--to", "##[x", "f.pth"],
                                  ["##[error]x"], ["check", "-j", "##[x"], ["check", "--bogus=##[x"]])
def test_a_usage_error_never_carries_a_workflow_command(argv, capsys):
    """A workflow may pass a pull request's text as an argument: its error line must not be a command."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "##[" not in err and "##\\x5b" in err
