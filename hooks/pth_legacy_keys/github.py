"""`--output github`: workflow-command annotations, a job summary and step outputs.

Every file name and key comes from a contributor, so everything written to the log is
escaped as workflow-command data or properties: a name cannot start a command of its own.
"""

import os
import shlex
import uuid

from .rename import shown_name
from .report import STATUS_EXIT_CODES, encodable, printable, summary

MAX_ANNOTATIONS = 10  # GitHub shows at most this many of one kind per step
NEEDS_ATTENTION = tuple(status for status, code in STATUS_EXIT_CODES.items() if code)  # "offending"
LFS_HINT = ("this is a Git LFS pointer, not the checkpoint: check out with `lfs: true` "
            "(actions/checkout) so that the real file is examined")


def escape_data(text):
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text):
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def publish(command, to, reports, report_path=None, environ=os.environ):
    """Return the log text; append the summary and the outputs where GitHub asks for them."""
    lines = _annotations(reports) + [escape_data(summary(command, [r.status for r in reports]))]
    summary_file = environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        with open(summary_file, "a", encoding="utf-8") as f:
            f.write(encodable(job_summary(command, to, reports)))
    output_file = environ.get("GITHUB_OUTPUT")
    if output_file:
        with open(output_file, "a", encoding="utf-8") as f:
            f.write(encodable(_step_outputs(reports, report_path)))
    return encodable("\n".join(lines))


def _annotation(report):
    """(kind, title, message) for one file, or None when it needs no annotation."""
    if report.status == "needs-fix":
        why = ("older loaders ignore these keys without an error" if report.to == "legacy"
               else "this repository keeps the parametrized names")
        return ("error", f"{report.key_kind()} keys",
                f"{report.verdict()}; {why}. Fix: {fix_command(report.to, [report.path])}")
    if report.status == "not-checked":
        return "error", "Git LFS pointer, not checked", LFS_HINT
    if report.lfs_pointer:
        return "warning", "Git LFS pointer, not checked", LFS_HINT
    if report.status in NEEDS_ATTENTION:
        titles = {"cannot-convert": "cannot convert", "refused": "refused", "error": "unreadable"}
        return "error", f"checkpoint {titles[report.status]}", report.verdict()
    if report.status == "skipped":
        return "warning", "not a checkpoint", report.reason
    if report.status == "fixed":
        return "notice", "fixed", report.verdict()
    return None


def _annotations(reports):
    by_kind = {"error": [], "warning": [], "notice": []}
    for report in reports:
        found = [_annotation(report)] + [("warning", "will not load in legacy RVC software", warning)
                                         for warning in report.warnings]
        for kind, title, message in filter(None, found):
            by_kind[kind].append(f"::{kind} file={escape_property(report.path)},"
                                 f"title={escape_property(title)}::{escape_data(message)}")
    lines = []
    for kind, annotations in by_kind.items():
        if len(annotations) > MAX_ANNOTATIONS:
            more = len(annotations) - (MAX_ANNOTATIONS - 1)
            annotations = annotations[:MAX_ANNOTATIONS - 1] + [
                f"::{kind} title=pth-legacy-keys::{more} more files; the job summary lists every file"]
        lines.extend(annotations)
    return lines


def escape_markdown(text):
    text = printable(text)
    return "".join("\\" + c if c in "\\`*_[]<>|~&" else c for c in text)


def job_summary(command, to, reports):
    rows = ["| File | Status | Keys | Example key |", "|---|---|---|---|"]
    for report in reports:
        status = report.status if not report.reason else f"{report.status}: {report.reason}"
        if report.problems:
            status += f": {shown_name(report.problems[0].module)}: {report.problems[0].reason}"
        for warning in report.warnings:
            status += f"; warning: {warning}"
        keys = str(len(report.renames)) if report.renames else ""
        example = shown_name(report.renames[0].old) if report.renames else ""
        rows.append(f"| {escape_markdown(report.path)} | {escape_markdown(status)} | {keys} "
                    f"| {escape_markdown(example)} |")
    to_fix = [report.path for report in reports if report.status == "needs-fix"]
    parts = [f"### pth-legacy-keys {command} ({to} names)", "", *rows, "",
             f"**{escape_markdown(summary(command, [r.status for r in reports]))}**", ""]
    if to_fix:
        parts += [
            "To fix them locally, install pth-legacy-keys and run:", "", "```sh", fix_command(to, to_fix), "```", "",
            "or let pre-commit do it on every commit (`.pre-commit-config.yaml`):", "", "```yaml",
            "repos:", "  - repo: https://github.com/OWNER/pth-legacy-keys", "    rev: v0.1.0",
            "    hooks:", "      - id: fix-pth-legacy-keys",
            *([] if to == "legacy" else [f"        args: [--to, {to}]"]),
            "```", "",
        ]
    return "\n".join(parts) + "\n"


def fix_command(to, paths):
    direction = "" if to == "legacy" else " --to parametrized"
    return f"pth-legacy-keys fix{direction} " + " ".join(shlex.quote(printable(path)) for path in paths)


def discovery_failed(message):
    """The annotation for files that could not even be listed (a shallow clone, a bad revision)."""
    hint = ""
    if "changed since" in message:
        hint = " (changed-only needs the base commit: check out with fetch-depth: 0)"
    return f"::error title=pth-legacy-keys::{escape_data(message + hint)}"


def _step_outputs(reports, report_path):
    offending = [printable(r.path) for r in reports if r.status in NEEDS_ATTENTION]
    delimiter = f"ghadelimiter_{uuid.uuid4()}"
    return "".join([
        f"checked={len(reports)}\n",
        f"offending={len(offending)}\n",
        f"offending-files<<{delimiter}\n" + "".join(f"{path}\n" for path in offending) + f"{delimiter}\n",
        f"modified={'true' if any(r.status == 'fixed' for r in reports) else 'false'}\n",
        f"report={report_path or ''}\n",
    ])
