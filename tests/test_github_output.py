"""`--output github`: annotations a contributor's file name cannot forge, the job summary, the outputs."""

import json

import pytest
from helpers import LEGACY, PARAMETRIZED, copy_of, run

from pth_legacy_keys.github import escape_data, escape_property, job_summary

LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 3\n"


@pytest.fixture
def github_files(tmp_path, monkeypatch):
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    monkeypatch.chdir(tmp_path)
    return summary, outputs


def parse_outputs(text):
    """GitHub's GITHUB_OUTPUT syntax: name=value, or name<<DELIMITER ... DELIMITER."""
    outputs, lines = {}, iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value = []
            for inner in lines:
                if inner == delimiter:
                    break
                value.append(inner)
            outputs[name] = "\n".join(value)
        else:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs


def test_escaping_follows_the_workflow_command_rules():
    assert escape_data("50%\r\n::error::x") == "50%25%0D%0A::error::x"
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"


def test_annotations_summary_and_outputs_for_a_check(tmp_path, github_files, capsys):
    summary, outputs = github_files
    copy_of(tmp_path, PARAMETRIZED, "models/new.pth")
    copy_of(tmp_path, LEGACY, "models/old.pth")
    code, out = run(capsys, "check", "--output", "github", "--report", "report.json", "models")
    assert code == 1
    assert out.splitlines() == [
        "::error file=models/new.pth,title=parametrized weight-norm keys::4 parametrized weight-norm keys in "
        "2 modules (e.g. 0.parametrizations.weight.original0); older loaders ignore these keys without an "
        "error. Fix: pth-legacy-keys fix models/new.pth",
        "checked 2 files: 1 ok, 1 needs-fix",
    ]
    text = summary.read_text()
    assert "| File | Status | Keys | Example key |" in text
    assert "| models/new.pth | needs-fix | 4 | 0.parametrizations.weight.original0 |" in text
    assert "| models/old.pth | ok |  |  |" in text
    assert "pth-legacy-keys fix models/new.pth" in text and "id: fix-pth-legacy-keys" in text
    assert parse_outputs(outputs.read_text()) == {
        "checked": "2", "offending": "1", "offending-files": "models/new.pth", "modified": "false",
        "report": "report.json"}
    assert json.loads((tmp_path / "report.json").read_text())["files"][0]["path"] == "models/new.pth"


def test_fix_sets_modified_and_notices_each_file(tmp_path, github_files, capsys):
    _, outputs = github_files
    copy_of(tmp_path, PARAMETRIZED, "voice.pth")
    code, out = run(capsys, "fix", "--output", "github", "voice.pth")
    assert code == 0
    assert out.splitlines()[0] == "::notice file=voice.pth,title=fixed::fixed: renamed 4 keys to legacy names"
    assert parse_outputs(outputs.read_text())["modified"] == "true"
    assert parse_outputs(outputs.read_text())["offending"] == "0"


def test_a_file_name_cannot_forge_a_workflow_command(tmp_path, github_files, capsys):
    summary, outputs = github_files
    names = ["evil%0A::error::forged.pth", "evil\n::error::forged.pth", "a,title=x::y.pth"]
    for name in names:
        copy_of(tmp_path, PARAMETRIZED, name)
    code, out = run(capsys, "check", "--output", "github", *names)
    assert code == 1
    lines = out.splitlines()
    assert not [line for line in lines if line.startswith("::") and not line.startswith("::error file=")]
    assert "file=evil%250A%3A%3Aerror%3A%3Aforged.pth," in out
    assert "file=evil%0A%3A%3Aerror%3A%3Aforged.pth," in out
    assert "file=a%2Ctitle=x%3A%3Ay.pth," in out
    assert "evil\\n::error::forged.pth" in summary.read_text()  # one table row, control character spelled out
    assert parse_outputs(outputs.read_text())["offending"] == "3"


def test_lfs_pointer_fails_with_the_checkout_hint(tmp_path, github_files, capsys):
    (tmp_path / "voice.pth").write_text(LFS_POINTER)
    code, out = run(capsys, "check", "--output", "github", "voice.pth")
    assert code == 2
    assert out.splitlines()[0].startswith("::error file=voice.pth,title=Git LFS pointer%2C not checked::")
    assert "`lfs: true`" in out
    code, out = run(capsys, "check", "--output", "github", "--lfs-pointers", "skip", "voice.pth")
    assert code == 0 and out.startswith("::warning file=voice.pth,")


def test_at_most_ten_annotations_of_a_kind(tmp_path, github_files, capsys):
    summary, outputs = github_files
    names = [f"m{i:02d}.pth" for i in range(12)]
    for name in names:
        copy_of(tmp_path, PARAMETRIZED, name)
    code, out = run(capsys, "check", "--output", "github", *names)
    errors = [line for line in out.splitlines() if line.startswith("::error")]
    assert len(errors) == 10
    assert errors[-1] == "::error title=pth-legacy-keys::3 more files; the job summary lists every file"
    assert all(f"| {name} | needs-fix |" in summary.read_text() for name in names)
    assert parse_outputs(outputs.read_text())["offending-files"].splitlines() == names


def test_summary_escapes_markdown():
    from pth_legacy_keys.report import FileReport

    report = FileReport("a|b<script>.pth", "error")
    report.reason = "not a PyTorch checkpoint"
    text = job_summary("check", "legacy", [report])
    assert "| a\\|b\\<script\\>.pth | error: not a PyTorch checkpoint |" in text


def test_summary_shortens_a_megabyte_key(tmp_path):
    """A hostile key of a megabyte must not make the job summary a megabyte long."""
    from pth_legacy_keys import scan
    from test_robustness import state_dict_of

    key = "x" * 1_000_000 + ".parametrizations.weight.original"
    path = state_dict_of(tmp_path / "model.pth", [key + "0", key + "1"])
    report = scan(path)
    assert report.status in ("needs-fix", "cannot-convert"), report.reason
    text = job_summary("check", "legacy", [report])
    assert len(text) < 2000 and "999,874 characters" in text
