"""`--output github`: annotations a contributor's file name cannot forge, the job summary, the outputs."""

import json
import os
import shutil
import subprocess

import pytest
from support.cli_run import LEGACY, PARAMETRIZED, copy_of, run
from pth_legacy_keys import github
from pth_legacy_keys.cli import main
from pth_legacy_keys.github import escape_data, escape_property, fix_command, job_summary, publish
from pth_legacy_keys.report import FileReport
from support import LFS_POINTER, parse_file_command


@pytest.fixture
def github_files(tmp_path, monkeypatch):
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    monkeypatch.chdir(tmp_path)
    return summary, outputs


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
        ("::error file=models/new.pth,title=parametrized weight-norm keys::4 parametrized weight-norm keys in "
         "2 modules (e.g. 0.parametrizations.weight.original0); older loaders ignore these keys without an "
         "error. Fix: pth-legacy-keys fix -- models/new.pth (or the fix-pth-legacy-keys pre-commit hook)"),
        "checked 2 files: 1 ok, 1 needs-fix",
    ]
    text = summary.read_text()
    assert "| File | Status | Keys | Example key |" in text
    assert "| `models/new.pth` | needs-fix | 4 | `0.parametrizations.weight.original0` |" in text
    assert "| `models/old.pth` | ok |  |  |" in text
    assert "pth-legacy-keys fix -- models/new.pth" in text and "id: fix-pth-legacy-keys" in text
    assert parse_file_command(outputs.read_text()) == {
        "checked": "2", "offending": "1", "offending-files": "models/new.pth",
        "offending-files-json": '["models/new.pth"]', "offending-files-complete": "true", "modified": "false",
        "report": "report.json"}
    assert json.loads((tmp_path / "report.json").read_text())["files"][0]["path"] == "models/new.pth"


def test_fix_sets_modified_and_notices_each_file(tmp_path, github_files, capsys):
    _, outputs = github_files
    copy_of(tmp_path, PARAMETRIZED, "voice.pth")
    code, out = run(capsys, "fix", "--output", "github", "voice.pth")
    assert code == 0
    assert out.splitlines()[0] == "::notice file=voice.pth,title=fixed::fixed: renamed 4 keys to legacy names"
    assert parse_file_command(outputs.read_text())["modified"] == "true"
    assert parse_file_command(outputs.read_text())["offending"] == "0"


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
    assert parse_file_command(outputs.read_text())["offending"] == "3"


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
    _code, out = run(capsys, "check", "--output", "github", *names)
    errors = [line for line in out.splitlines() if line.startswith("::error")]
    assert len(errors) == 10
    assert errors[-1] == ("::error title=pth-legacy-keys::3 more files; the job summary and the JSON document "
                          "(`--output json` or `--report FILE`) list them")
    _code, out = run(capsys, "check", "--output", "github", "--report", "r.json", *names)
    assert out.splitlines()[9] == ("::error title=pth-legacy-keys::3 more files; the job summary and the JSON "
                                   "report (the `report` output) list them")
    assert all(f"| `{name}` | needs-fix |" in summary.read_text() for name in names)
    assert parse_file_command(outputs.read_text())["offending-files"].splitlines() == names


def test_summary_shows_the_file_s_words_as_code_spans():
    """The status is our word, plain; the name and the reason are the file's, as code (see
    test_job_summary_markdown for how GitHub's Markdown renders them)."""
    report = FileReport("a|b<script>.pth", "error")
    report.reason = "not a PyTorch checkpoint"
    text = job_summary("check", "legacy", [report])
    assert "| `a\\|b<script>.pth` | error: `not a PyTorch checkpoint` |" in text


def test_summary_shortens_a_megabyte_key(tmp_path):
    """A hostile key of a megabyte must not make the job summary a megabyte long."""
    from pth_legacy_keys import scan
    from support.hand_made import state_dict_of

    key = "x" * 1_000_000 + ".parametrizations.weight.original"
    path = state_dict_of(tmp_path / "model.pth", [key + "0", key + "1"])
    report = scan(path)
    assert report.status in ("needs-fix", "cannot-convert"), report.reason
    text = job_summary("check", "legacy", [report])
    assert len(text) < 2000 and "999,874 characters" in text


# -- code spans ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, span", [
    ("models/new.pth", "`models/new.pth`"),
    ("a`b", "``a`b``"),  # the fence is longer than any run of backticks inside
    ("x```y", "````x```y````"),
    ("`", "`` ` ``"),  # padded: a backtick at an end would join the fence
    (" lead", "`  lead `"),  # padded: CommonMark strips one space from each end
    ("   ", "`   `"),  # all spaces: CommonMark keeps them as they are
    ("a|b", "`a\\|b`"),  # GFM splits a table row on every unescaped |
    ("a\nb", "`a\\nb`"),  # one line
    ("", ""),
])
def test_code_span(text, span):
    assert github.code_span(text) == span


# -- offending-files: one name per line, quoted as git quotes paths ------------------------------

C_UNESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


def unquote(line):
    """A line of offending-files back to the file name: git's C-style unquoting, to bytes, then
    os.fsdecode (so undecodable bytes come back as the lone surrogates the tool saw)."""
    if not line.startswith('"'):
        return line
    assert len(line) >= 2 and line.endswith('"'), line
    body, data, index = line[1:-1], bytearray(), 0
    while index < len(body):
        char = body[index]
        assert char != '"', f"unescaped quote in {line!r}"
        if char != "\\":
            data += char.encode("utf-8")
            index += 1
        elif body[index + 1] in C_UNESCAPES:
            data.append(C_UNESCAPES[body[index + 1]])
            index += 2
        else:
            digits = body[index + 1:index + 4]
            assert len(digits) == 3 and set(digits) <= set("01234567"), line
            data.append(int(digits, 8))
            index += 4
    return os.fsdecode(bytes(data))


QUOTED = [
    ("models/new.pth", "models/new.pth"),
    ("café 模型.pth", "café 模型.pth"),  # like git with core.quotePath=false: UTF-8 as is
    ("say \"hi\".pth", '"say \\"hi\\".pth"'),
    ("a\\b.pth", '"a\\\\b.pth"'),
    ("a\nb.pth", '"a\\nb.pth"'),
    ('"a\\nb.pth"', '"\\"a\\\\nb.pth\\""'),  # the name the unquoted a\nb.pth would have been mistaken for
    ("\a\b\t\v\f\r.pth", '"\\a\\b\\t\\v\\f\\r.pth"'),
    ("esc\x1b[31m del\x7f.pth", '"esc\\033[31m del\\177.pth"'),
    ("nel\x85 ls\u2028.pth", '"nel\\302\\205 ls\\342\\200\\250.pth"'),  # line breaks to some readers
    ("bad\udcff\udc80.pth", '"bad\\377\\200.pth"'),  # os.fsdecode's undecodable bytes: the bytes
]


@pytest.mark.parametrize("name, line", QUOTED)
def test_quoted_name(name, line):
    assert github.quoted_name(name) == line
    assert unquote(line) == name


def test_offending_files_name_each_file_on_exactly_one_line(tmp_path):
    """Every name reads back from its own line, and from offending-files-json; the plain ones as is."""
    pytest.importorskip("yaml", reason="action_runner needs pyyaml, which comes with the test extra")
    from support import parse_file_command

    names = [name for name, _ in QUOTED] + ["", '"', "\\", "ok.pth", ' "x'] + [f"models/{i}.pth" for i in range(3)]
    reports = [FileReport(name, "error") for name in names] + [FileReport("fine.pth", "ok")]
    for report in reports:
        report.reason = "not a PyTorch checkpoint"
    environ = {"GITHUB_OUTPUT": str(tmp_path / "outputs.txt")}
    github.publish("check", "legacy", reports, "report.json", environ=environ)
    outputs = parse_file_command((tmp_path / "outputs.txt").read_text(encoding="utf-8"))
    lines = outputs["offending-files"].split("\n")
    assert [unquote(line) for line in lines] == names
    assert lines[names.index("models/new.pth")] == "models/new.pth"
    assert json.loads(outputs["offending-files-json"]) == names
    assert outputs["offending-files-json"].isascii() and outputs["offending"] == str(len(names))


def test_offending_files_quote_names_as_git_does(tmp_path):
    """The same lines as `git ls-files` (core.quotePath=false); undecodable bytes as git writes
    them with its default core.quotePath=true."""
    names = ["plain.pth", "café.pth", 'say "hi".pth', "back\\slash.pth", "a\nb.pth", '"a\\nb.pth"',
             "tab\there.pth", "cr\r.pth", "bell\a.pth", "esc\x1b.pth", "del\x7f.pth", "\x01\x1f.pth"]
    undecodable = ["bad\udcff.pth", "\udc80\udcfe.pth"]
    for name in names + undecodable:
        (tmp_path / name).write_bytes(b"")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "--", *names, *undecodable], cwd=tmp_path, check=True)

    def ls_files(quote_path, only):
        listing = subprocess.run(["git", "-c", f"core.quotePath={quote_path}", "ls-files", "--", *only],
                                 cwd=tmp_path, capture_output=True, check=True).stdout
        return sorted(listing.decode("utf-8").splitlines())

    assert ls_files("false", names) == sorted(github.quoted_name(name) for name in names)
    assert ls_files("true", undecodable) == sorted(github.quoted_name(name) for name in undecodable)


SHELL_NAMES = ["models/voice.pth", "a b.pth", "it's.pth", "--report=x.pth", "-q.pth", "$(touch pwned).pth",
               "a\nb.pth", "\x1b[31mred.pth", "back\\slash.pth", "tab\t'quote'.pth", "模型.pth",
               os.fsdecode(b"\xff\xfe.pth"), "`x`.pth", "\u2028.pth"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_fix_command_gives_the_shell_back_exactly_each_name(tmp_path):
    """The command a summary or annotation suggests: run by bash, its words are the very names
    (each made a pattern of that name alone where it holds `[`, `*` or `?`: test_fix_hints runs that)."""
    from pth_legacy_keys.commands import literal_path

    command = fix_command("legacy", SHELL_NAMES)
    assert command.startswith("pth-legacy-keys fix -- ")
    script = command.replace("pth-legacy-keys fix -- ", "printf '%s\\0' ", 1)
    result = subprocess.run(["bash", "-c", script], capture_output=True, cwd=tmp_path, check=False)
    assert result.returncode == 0
    assert result.stdout.split(b"\0")[:-1] == [os.fsencode(literal_path(name)) for name in SHELL_NAMES]
    assert os.listdir(tmp_path) == []  # nothing in a name was run
    assert "\n" not in command and "\x1b" not in command


def test_long_lists_of_names_stop_whole_and_say_they_are_incomplete(tmp_path):
    """GitHub keeps at most 1 MB of a job's outputs: the lists stop at a whole name and say so."""
    pytest.importorskip("yaml", reason="action_runner needs pyyaml, which comes with the test extra")
    from support import parse_file_command

    names = [f"models/{i:06}-" + "x" * 200 + ".pth" for i in range(5_000)]
    reports = [FileReport(name, "error") for name in names]
    output = tmp_path / "output"
    publish("check", "legacy", reports, environ={"GITHUB_OUTPUT": str(output)})
    values = parse_file_command(output.read_text())
    listed = values["offending-files"].split("\n")
    assert values["offending"] == "5000" and values["offending-files-complete"] == "false"
    assert 1_000 < len(listed) < 5_000 and listed == names[:len(listed)]
    assert json.loads(values["offending-files-json"]) == listed
    assert sum(len(value.encode()) for value in values.values()) < 1_000_000
    short = tmp_path / "short"
    publish("check", "legacy", reports[:3], environ={"GITHUB_OUTPUT": str(short)})
    assert parse_file_command(short.read_text())["offending-files-complete"] == "true"


def test_a_summary_that_cannot_be_written_is_one_line_after_the_results(tmp_path, monkeypatch, capsys):
    """fix has already rewritten files by then: say what was done, then what could not be written."""
    copy_of(tmp_path, PARAMETRIZED, "voice.pth")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "no-such-folder" / "summary.md"))
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "outputs.txt"))
    assert main(["fix", "--output", "github", "voice.pth"]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.out.splitlines()[-1] == "examined 1 file: 1 fixed"
    assert captured.err.splitlines() == [
        f"pth-legacy-keys: cannot write the job summary to {tmp_path / 'no-such-folder' / 'summary.md'} "
        "($GITHUB_STEP_SUMMARY): No such file or directory"]
    assert "modified=true" in (tmp_path / "outputs.txt").read_text()


def test_annotations_spell_out_control_characters_from_the_file(tmp_path, github_files, capsys):
    """A name or a global from the file may hold an escape code or a vertical tab: never raw in a log."""
    name = "red\x1b[31m\x0bvoice.pth"
    copy_of(tmp_path, PARAMETRIZED, name)
    code, out = run(capsys, "check", "--output", "github", name)
    assert code == 1
    assert "\x1b" not in out and "\x0b" not in out
    assert "file=red\\x1b[31m\\x0bvoice.pth," in out
