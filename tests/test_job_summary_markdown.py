"""The job summary as GitHub renders it: cmark-gfm (the `cmarkgfm` bindings), with its table and
autolink extensions.

Every file name, key and reason comes from a contributor. In the rendered summary none of them
may become a link (GFM autolinks bare URLs, www. and e-mail addresses), emphasis or HTML, or
break the table; each must read back exactly, as report.printable spells it, from its <code>.
And the summary must stay under GitHub's 1 MiB limit whatever the files are.
"""

import html.parser
from pathlib import Path

import pytest
from support.cli_run import PARAMETRIZED, copy_of, run
from pth_legacy_keys import github
from pth_legacy_keys.github import SUMMARY_BUDGET, code_span, job_summary
from pth_legacy_keys.rename import Problem, Rename, shown_name
from pth_legacy_keys.report import FileReport, printable

cmarkgfm = pytest.importorskip("cmarkgfm", reason="cmarkgfm comes with the test extra: pip install -e '.[test]'")
# Imported only now: the suite also runs where nothing but pytest is installed (test_supported_pythons).
hypothesis = pytest.importorskip("hypothesis", reason="hypothesis comes with the test extra: pip install -e '.[test]'")
st = hypothesis.strategies

MIB = 1024 * 1024
COLUMNS = 4  # File | Status | Keys | Example key
TABLE_TAGS = {"table", "thead", "tbody", "tr", "th", "td", "code"}
SUMMARY_TAGS = TABLE_TAGS | {"h3", "p", "strong", "pre"}  # strong: our counts line; pre: the fix command

HOSTILE = [
    "http://evil.example/login.pth", "https://evil.example", "see www.evil.example/x.pth",
    "mail admin@evil.example now", "<script>alert(1)</script>.pth", "<img src=x onerror=alert(1)>",
    "<http://evil.example>", "[click](http://e)", "![x](http://e/x.png)", "[ref]: http://e",
    "**bold** __strong__ *em* _em_ ~~gone~~", "&amp; &lt;b&gt; &#x41; &copy", "a`b", "``x``",
    "`" * 7 + "y" + "`" * 3, "`", "```", "`edge`", " ", "   ", "  lead.pth", "trail.pth  ", " both ",
    "a|b||c", "\\|", "a\\", "\\`", "line\nbreak\r\ttab\x00", "bad\udcff.pth", "x\u2028y\x85z",
    "# heading", "- item", "> quote", ":smile: @octocat #1", "模型 café.pth",
]


class RenderedSummary(html.parser.HTMLParser):
    """The tags of the rendered HTML, and each body row of its table as cells of code texts.

    convert_charrefs (the default) gives the data html-unescaped: the text a reader sees."""

    def __init__(self, markdown):
        super().__init__()
        self.tags, self.table_tags, self.rows = [], set(), []
        self.in_table = self.in_body = False
        self.code = None
        self.feed(cmarkgfm.markdown_to_html_with_extensions(
            markdown, options=cmarkgfm.Options.CMARK_OPT_UNSAFE,  # raw HTML passes: a test would see it
            extensions=["table", "autolink", "strikethrough", "tagfilter", "tasklist"]))
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if self.in_table:
            self.table_tags.add(tag)
        self.in_table |= tag == "table"
        self.in_body |= tag == "tbody"
        if self.in_body and tag == "tr":
            self.rows.append([])
        elif self.in_body and tag == "td":
            self.rows[-1].append([])
        elif self.in_body and tag == "code":
            self.code = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.in_table = self.in_body = False
        elif tag == "code" and self.code is not None:
            self.rows[-1][-1].append(self.code)
            self.code = None

    def handle_data(self, data):
        if self.code is not None:
            self.code += data


def rendered(markdown):
    summary = RenderedSummary(markdown)
    assert "a" not in summary.tags, "a link"
    assert summary.table_tags <= TABLE_TAGS, summary.table_tags - TABLE_TAGS
    assert set(summary.tags) <= SUMMARY_TAGS, set(summary.tags) - SUMMARY_TAGS
    assert summary.tags.count("strong") == 1  # the counts line, nothing else
    assert all(len(row) == COLUMNS for row in summary.rows)
    return summary


def hostile_reports(text):
    """A report of each kind whose every contributor-given string is `text`."""
    error = FileReport(text, "error")
    error.reason = text
    needs_fix = FileReport(text, "needs-fix")
    needs_fix.renames = [Rename("", text, text)]
    needs_fix.warnings = [text, text]
    cannot_convert = FileReport(text, "cannot-convert")
    cannot_convert.problems = [Problem("", text, text)]
    return [error, needs_fix, cannot_convert]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_renders_as_inert_code_that_reads_back_exactly(text):
    summary = rendered(job_summary("check", "legacy", hostile_reports(text)))
    shown = printable(text)
    assert summary.rows == [
        [[shown], [shown], [], []],  # error: the reason
        [[shown], [shown, shown], [], [shown]],  # needs-fix: two warnings; the example key
        [[shown], [shown, shown], [], []],  # cannot-convert: the module and the problem's reason
    ]


@hypothesis.given(st.text(alphabet=st.sampled_from("`|\\ *_~<>&#;[]()!:/.@wxh\n\t") | st.characters(), max_size=40))
def test_any_text_in_a_code_span_reads_back_exactly(text):
    markdown = f"| a |\n|---|\n| {code_span(text)} |\n"
    html_rows = RenderedSummary(markdown).rows
    assert html_rows == [[[printable(text)] if text else []]]


def test_plain_summary_renders_as_a_table_with_the_fix_command():
    reports = [FileReport("models/new.pth", "needs-fix"), FileReport("models/old.pth", "ok")]
    reports[0].renames = [Rename("", "dec.parametrizations.weight.original0", "dec.weight_g")]
    summary = rendered(job_summary("check", "legacy", reports))
    assert summary.rows == [[["models/new.pth"], [], [], ["dec.parametrizations.weight.original0"]],
                            [["models/old.pth"], [], [], []]]
    assert "pre" in summary.tags


# -- size: under GitHub's 1 MiB step-summary limit ---------------------------------------------------


def size(text):
    return len(text.encode("utf-8"))


def test_a_megabyte_name_reason_and_key_are_cut_in_their_cells():
    text = "模" * 1_000_000  # 3 MB of UTF-8 each
    reports = hostile_reports(text)
    summary = job_summary("fix", "legacy", reports)
    assert size(summary) < 40_000
    assert "999,760 characters" in summary  # the file name, the reason, the module: 300 shown
    assert "999,840 characters" in summary  # the key: rename.shown_name's 200
    rendered(summary)


def test_a_file_name_of_a_megabyte_gets_no_fix_command():
    """No file system allows it, but job_summary must not make a megabyte summary of it either."""
    name = "x" * 1_000_000
    report = FileReport(name, "needs-fix")
    report.renames = [Rename("", "a.parametrizations.weight.original0", "a.weight_g")]
    summary = job_summary("check", "legacy", [report], report_path="report.json")
    assert size(summary) < 10_000
    assert "`pth-legacy-keys fix -- FILE ...` on the files that the JSON report (the `report` output) lists" in summary
    rendered(summary)


def test_the_longest_path_a_file_system_allows_is_cut_in_its_row(tmp_path, monkeypatch, capsys):
    """Components are at most 255 bytes: a long name is a path of many of them."""
    monkeypatch.chdir(tmp_path)
    name = "/".join(["d" * 250] * 15 + ["model.pth"])  # 3,774 characters
    copy_of(tmp_path, PARAMETRIZED, name)
    summary_file = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary_file))
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    code, _ = run(capsys, "check", "--output", "github", name)
    assert code == 1
    text = summary_file.read_text()
    [row] = [line for line in text.splitlines() if line.startswith("| `ddd")]
    assert len(row) < 800 and "3,534 characters" in row and "model.pth`" in row
    assert f"pth-legacy-keys fix -- {name}" in text  # the command names the whole path
    rendered(text)


def test_a_hundred_thousand_files_stay_under_a_mebibyte_and_say_how_many_more():
    count = 100_000
    reports = [FileReport(f"models/模型-{i:06}-" + "x" * 150 + ".pth", "needs-fix") for i in range(count)]
    for report in reports:
        report.renames = [Rename("", "dec.parametrizations.weight.original0", "dec.weight_g")]
    summary = job_summary("check", "legacy", reports, report_path="report.json")
    assert size(summary) <= SUMMARY_BUDGET < MIB
    rows = [line for line in summary.splitlines() if line.startswith("| `models/")]
    [more] = [line for line in summary.splitlines() if "more files" in line]
    assert f"{count - len(rows):,} more files" in more and "the JSON report (the `report` output) lists every file" in more
    assert 1_000 < len(rows) < count
    [command] = [line for line in summary.splitlines() if line.startswith("pth-legacy-keys fix ")]
    named = command.count(".pth")
    assert size(command) <= github.FIX_COMMAND_BUDGET + 100 and 100 < named < count
    assert f"(the command names the first {named:,} of the {count:,} files to fix;" in summary
    table = rendered(summary)
    assert len(table.rows) == len(rows) + 1


def test_a_megabyte_key_read_from_a_file_is_shortened(tmp_path):
    """The whole route: a key of a megabyte in a real checkpoint, shown in 200 characters."""
    from pth_legacy_keys import scan
    from support.hand_made import state_dict_of

    key = "<a href=http://e>" + "x" * 1_000_000 + ".parametrizations.weight.original"
    path = state_dict_of(tmp_path / "model.pth", [key + "0", key + "1"])
    report = scan(path)
    assert report.status == "needs-fix", report.reason
    summary = job_summary("check", "legacy", [report])
    assert size(summary) < 3_000
    [row] = rendered(summary).rows
    assert row[3] == [shown_name(key + "0")] and "999,891 characters" in row[3][0]


def test_file_names_are_code_in_the_real_summary(tmp_path, monkeypatch, capsys):
    """Through the CLI, with names a pull request could add."""
    monkeypatch.chdir(tmp_path)
    names = ["www.evil.example.pth", "http:", "admin@evil.example.pth", "**x**.pth", "`.pth", "a|b.pth"]
    for name in names:
        copy_of(tmp_path, PARAMETRIZED, name)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    run(capsys, "check", "--output", "github", *names)
    summary = rendered(Path("summary.md").read_text())
    assert [row[0] for row in summary.rows] == [[name] for name in names]
