"""`--output github`: workflow-command annotations, a job summary and step outputs.

Every file name and key comes from a contributor, so everything written to the log is
escaped as workflow-command data or properties: a name cannot start a command of its own.
In the job summary every such text is a Markdown code span, so that no name can make a link,
emphasis or HTML in a summary readers trust; in the step outputs names are quoted as git quotes
paths, so that each name is exactly one line and no two names share a line.
"""

import json
import os
import re
import unicodedata
import uuid

from .rename import shown_name
from . import __version__
from .byte_source import is_url
from .commands import FIX_A_URL, FIX_HOOK, fix_command, fix_options, name_bytes, shell_word
from .report import encodable, printable, summary
from .status import Status

MAX_ANNOTATIONS = 10  # GitHub shows at most this many of one kind per step
LFS_HINT = ("in a workflow, `lfs-pointers: remote` (the action's default) reads its object from the LFS "
            "server, or check out with `lfs: true` (actions/checkout)")

# GitHub drops a step's job summary over 1 MiB: stay well under it, whatever the files' names.
SUMMARY_BUDGET = 900_000  # bytes of UTF-8
FIX_COMMAND_BUDGET = 100_000  # of those, for the file names of the fix command
CELL_TEXT_LIMIT = 300  # characters of one name or reason in a cell; the rest becomes a count
MAX_WARNINGS_SHOWN = 3  # per file, in its row
MORE_FILES_ROOM = 1_000  # bytes kept for the row that says how many files were left out
# GitHub keeps at most 1 MB of a job's outputs: the two lists of names share this much of it.
OUTPUT_LIST_BUDGET = 800_000

# Characters that git writes as C escapes (in quoted names) instead of octal.
C_ESCAPES = {"\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f", "\r": "\\r",
             '"': '\\"', "\\": "\\\\"}


def escape_data(text):
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text):
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def publish(command, to, reports, report_path=None, environ=os.environ, families=None, lfs_pointers="error",
            notes=()):
    """Append the summary and the outputs where GitHub asks for them; return the log text and
    what could not be written (one line each). `families` (the parametrizations asked for; None:
    the direction's default) and `lfs_pointers` are repeated by the fix commands shown; `notes`
    (what the run left out) become warnings."""
    # --lfs-pointers remote only where a file to fix was an LFS object read by it: what the fix needs.
    fixing = (families, lfs_pointers if any(r.read_from_lfs for r in reports if r.status == Status.NEEDS_FIX)
              else "error")
    lines = (_annotations(reports, report_path, fixing)
             + [f"::warning title=pth-legacy-keys::{escape_data(note)}" for note in notes]
             + [escape_data(summary(command, [r.status for r in reports]))])
    problems = []
    for variable, what, text in (
        ("GITHUB_STEP_SUMMARY", "the job summary", lambda: job_summary(command, to, reports, report_path, fixing)),
        ("GITHUB_OUTPUT", "the step outputs", lambda: _step_outputs(reports, report_path)),
    ):
        path = environ.get(variable)
        if path:
            try:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(encodable(text()))
            except OSError as exc:
                problems.append(f"cannot write {what} to {path} (${variable}): {exc.strerror or exc}")
    return encodable("\n".join(lines)), problems


def _annotation(report, fixing=(None, "error")):
    """(kind, title, message) for one file, or None when it needs no annotation. `fixing`:
    (families, lfs_pointers) for the fix command."""
    if report.status == Status.NEEDS_FIX:
        why = ("older loaders ignore these keys without an error" if report.to == "legacy"
               else "this repository keeps the parametrized names")
        fix = (FIX_A_URL if is_url(report.path) else
               f"{fix_command(report.to, [report.path], *fixing)} (or the {FIX_HOOK} pre-commit hook)")
        return "error", f"{report.key_kind()} keys", f"{report.verdict()}; {why}. Fix: {fix}"
    if report.status == Status.NOT_CHECKED:
        # The reason says what went wrong (a remote read that failed, for one); the hint what to do.
        return "error", "Git LFS pointer, not checked", f"{report.reason}; {LFS_HINT}"
    if report.lfs_pointer:
        return "warning", "Git LFS pointer, not checked", f"{report.reason}; {LFS_HINT}"
    if report.status.needs_attention:
        titles = {Status.CANNOT_CONVERT: "cannot convert", Status.REFUSED: "refused", Status.ERROR: "unreadable"}
        return "error", f"checkpoint {titles[report.status]}", report.verdict()
    if report.status == Status.SKIPPED:
        return "warning", "not a checkpoint", report.reason
    if report.status == Status.FIXED:
        return "notice", "fixed", report.verdict()
    return None


def _annotations(reports, report_path=None, fixing=(None, "error")):
    by_kind = {"error": [], "warning": [], "notice": []}
    for report in reports:
        found = [_annotation(report, fixing)] + [("warning", "will not load in legacy RVC software", warning)
                                         for warning in report.warnings]
        for kind, title, message in filter(None, found):
            # Spelled out like the text output: a file's raw control characters (an escape code,
            # a vertical tab other readers take for a line break) never reach the log.
            by_kind[kind].append(f"::{kind} file={escape_property(_annotated_name(report.path))},"
                                 f"title={escape_property(title)}::{escape_data(printable(message))}")
    lines = []
    for kind, annotations in by_kind.items():
        if len(annotations) > MAX_ANNOTATIONS:
            more = len(annotations) - (MAX_ANNOTATIONS - 1)
            annotations = annotations[:MAX_ANNOTATIONS - 1] + [
                f"::{kind} title=pth-legacy-keys::{more} more files; the job summary and "
                f"{where_every_file_is(report_path)} list them"]
        lines.extend(annotations)
    return lines


def _annotated_name(path):
    """The name GitHub links an annotation to: as is where the workflow-command escapes carry it
    (CR and LF have theirs), spelled out where a raw control character would reach the log."""
    return path if path.replace("\r", "").replace("\n", "").isprintable() else printable(path)


# -- the job summary ------------------------------------------------------------------------------


def code_span(text):
    """`text` as a Markdown code span for a GFM table cell: shown literally, never a link (GFM
    autolinks bare URLs, www. and e-mail addresses in plain text), emphasis, HTML or entity.

    Control characters are spelled out (report.printable), so the row stays one line. The fence
    is one backtick longer than the longest run of backticks inside, so none of them closes it.
    A space pads content that starts or ends with a backtick (it would join the fence) or a space
    (CommonMark strips one space from each side of a code span; all-space content is kept as is).
    `|` becomes `\\|`: GFM splits table rows on `|` even inside code spans, and in a cell `\\|`
    renders as `|`, also in a code span.
    """
    text = printable(text)
    if not text:
        return ""
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    if text.strip(" ") and (text[0] in "` " or text[-1] in "` "):
        text = f" {text} "
    return fence + text.replace("|", "\\|") + fence


def cell_text(text):
    """`text` as a code span, shortened to CELL_TEXT_LIMIT characters around a count of the rest:
    a file name or a reason of a megabyte must not make the summary a megabyte."""
    return code_span(shown_name(text, limit=CELL_TEXT_LIMIT))


def _status_cell(report):
    """The status (our word, plain), then the reason, problem and warnings (the file's words, code)."""
    cell = report.status
    if report.reason:
        cell += f": {cell_text(report.reason)}"
    if report.problems:
        cell += f": {cell_text(report.problems[0].module)}: {cell_text(report.problems[0].reason)}"
    for warning in report.warnings[:MAX_WARNINGS_SHOWN]:
        cell += f"; warning: {cell_text(warning)}"
    if len(report.warnings) > MAX_WARNINGS_SHOWN:
        cell += f"; and {len(report.warnings) - MAX_WARNINGS_SHOWN:,} more warnings"
    return cell


def _row(report):
    keys = str(len(report.renames)) if report.renames else ""
    example = cell_text(shown_name(report.renames[0].old)) if report.renames else ""
    return f"| {cell_text(report.path)} | {_status_cell(report)} | {keys} | {example} |"


def _size(lines):
    """Bytes that `lines` take in the summary file (encodable: as publish writes them)."""
    return sum(len(encodable(line).encode("utf-8")) + 1 for line in lines)


def _rows_within(reports, budget, report_path):
    """One table row per report while they fit in `budget` bytes; then one row that says how
    many files were left out and where they all are."""
    used = 0
    for shown, report in enumerate(reports):
        row = _row(report)
        used += _size([row])
        if used > budget:
            yield (f"| … | {len(reports) - shown:,} more files, left out to keep this summary under "
                   f"GitHub's 1 MiB limit: {where_every_file_is(report_path)} lists every file | | |")
            return
        yield row


def _paths_within(paths, budget):
    """The first `paths` whose shell-quoted names fit in `budget` bytes."""
    taken, used = [], 0
    for path in paths:
        used += len(encodable(shell_word(path)).encode("utf-8")) + 1
        if used > budget:
            break
        taken.append(path)
    return taken


def _fix_section(to, to_fix, report_path, fixing=(None, "error")):
    """How to fix the files locally: the command (its names within FIX_COMMAND_BUDGET), the hook."""
    named = _paths_within([path for path in to_fix if not is_url(path)], FIX_COMMAND_BUDGET)
    install = "To fix them locally, install pth-legacy-keys (`pip install pth-legacy-keys`) and run"
    if named:
        parts = [f"{install}:", "", "```sh", fix_command(to, named, *fixing), "```", ""]
    else:  # only URLs, or a name longer than FIX_COMMAND_BUDGET, which no file system allows
        parts = [(f"{install} `{fix_command(to, [], *fixing)} FILE ...` "
                  f"on the files that {where_every_file_is(report_path)} lists,"), ""]
    if named and len(named) < len(to_fix):
        parts += [(f"(the command names the first {len(named):,} of the {len(to_fix):,} files to fix; "
                   f"{where_every_file_is(report_path)} lists them all)"), ""]
    # a flow sequence: `weight-norm,spectral-norm` would be two items unless quoted; --hook needs the --
    hook_args = [json.dumps(option) if "," in option else option for option in fix_options(to, *fixing)] + ["--"]
    return parts + [
        f"or with the fix hook in `.pre-commit-config.yaml`, run "
        f"`pre-commit run --hook-stage manual {FIX_HOOK} --all-files`:", "", "```yaml",
        "repos:", "  - repo: https://github.com/OWNER/pth-legacy-keys", f"    rev: v{__version__}",
        "    hooks:", f"      - id: {FIX_HOOK}", "        stages: [manual]",
        *([] if hook_args == ["--"] else [f"        args: [{', '.join(hook_args)}]"]),
        "```", "",
    ]


def where_every_file_is(report_path):
    """Where a reader finds the files a capped list leaves out: the Action's report, or the CLI's
    own JSON output when there is no report file."""
    if report_path:
        return "the JSON report (the `report` output)"
    return "the JSON document (`--output json` or `--report FILE`)"


def job_summary(command, to, reports, report_path=None, fixing=(None, "error")):
    """The Markdown summary: a row per file (as many as fit in SUMMARY_BUDGET), the counts, the fix."""
    head = [f"### pth-legacy-keys {command} ({to} names)", "",
            "| File | Status | Keys | Example key |", "|---|---|---|---|"]
    to_fix = [report.path for report in reports if report.status == Status.NEEDS_FIX]
    tail = ["", f"**{summary(command, [r.status for r in reports])}**", ""]
    if to_fix:
        tail += _fix_section(to, to_fix, report_path, fixing)
    rows = _rows_within(reports, SUMMARY_BUDGET - _size(head) - _size(tail) - MORE_FILES_ROOM, report_path)
    return "\n".join([*head, *rows, *tail]) + "\n"


def discovery_failed(message):
    """The annotation for files that could not even be listed (a shallow clone, a bad revision)."""
    hint = ""
    if "changed since" in message:
        hint = " (changed-only needs the base commit: check out with fetch-depth: 0)"
    return f"::error title=pth-legacy-keys::{escape_data(message + hint)}"


# -- the step outputs -----------------------------------------------------------------------------


def _needs_escape(char):
    """Characters a quoted name spells out: control characters, the line and paragraph
    separators (line breaks to some readers), and lone surrogates (bytes os.fsdecode could not
    decode)."""
    return unicodedata.category(char) in ("Cc", "Cs") or char in "\u2028\u2029"


def _octal(char):
    """`char` as git spells a byte it quotes: \\ooo for each byte of its file-system encoding,
    which for a lone surrogate from os.fsdecode is the undecodable byte itself."""
    return "".join(f"\\{byte:03o}" for byte in name_bytes(char))


def quoted_name(name):
    """`name` for a list of one name per line, quoted as git quotes paths (core.quotePath=false):
    as is, unless it holds a control character, `"` or `\\`; then in double quotes, with `"` and
    `\\` escaped and control characters as C escapes (\\n, \\t ...) or \\ooo octal bytes. An
    unquoted line never starts with `"`, so every line reads back as exactly one name.

    Any unquoting that reads git's quoted paths reads these. Where git (quotePath=false) leaves a
    character alone, we quote a few more names, for readers that split lines on more than LF: C1
    controls (U+0085 is a line break to some) and U+2028/U+2029 become octal UTF-8 bytes, and bytes
    that are not UTF-8 become octal as with git's default core.quotePath=true, not raw bytes that
    the UTF-8 outputs file could not carry."""
    if not any(_needs_escape(char) or char in '"\\' for char in name):
        return name
    return '"' + "".join(C_ESCAPES.get(char) or (_octal(char) if _needs_escape(char) else char)
                         for char in name) + '"'


def _names_within(names, budget):
    """The first `names` whose quoted lines fit in `budget` bytes: whole names, never a cut one."""
    taken, used = [], 0
    for name in names:
        used += len(quoted_name(name).encode("utf-8")) + len(json.dumps(name)) + 3
        if used > budget:
            break
        taken.append(name)
    return taken


def _step_outputs(reports, report_path):
    offending = [r.path for r in reports if r.status.needs_attention]
    listed = _names_within(offending, OUTPUT_LIST_BUDGET)
    delimiter = f"ghadelimiter_{uuid.uuid4()}"
    # ASCII JSON: a name's undecodable bytes (lone surrogates) are \udcXX escapes, valid JSON text.
    as_json = json.dumps(listed, ensure_ascii=True)
    return "".join([
        f"checked={len(reports)}\n",
        f"offending={len(offending)}\n",
        f"offending-files<<{delimiter}\n" + "".join(f"{quoted_name(path)}\n" for path in listed)
        + f"{delimiter}\n",
        f"offending-files-json={as_json}\n",
        f"offending-files-complete={'true' if len(listed) == len(offending) else 'false'}\n",
        f"modified={'true' if any(r.status == Status.FIXED for r in reports) else 'false'}\n",
        f"report={report_path or ''}\n",
    ])
