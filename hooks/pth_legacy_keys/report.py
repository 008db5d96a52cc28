"""What we found in each file, and how it is shown: one-line text or a JSON document."""

from .rename import FAMILIES, LEGACY, SHOWN_NAME_LIMIT, shown_name
from .status import Status, exit_code

SCHEMA_VERSION = 1  # check's and fix's documents
# inspect's own: 2 made its status check's word (needs-fix, cannot-convert), grouped its metadata by
# the tool that wrote it and replaced loads_in_legacy_rvc by verdicts (docs/inspect.md).
INSPECT_SCHEMA_VERSION = 2
NOTHING_CHANGED = "nothing was changed"
KIND = {"legacy": "parametrized", "parametrized": "legacy"}  # the key kind each direction renames


def encodable(text):
    """`text` with lone surrogates (a pickle may hold them) spelled out, so it can be written as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def console_line(text):
    """`text` as a line of text output: encodable, and never a workflow command. GitHub's runner
    reads a line that starts (after blanks) with `::` as a command, and `##[` anywhere in a line
    (its older syntax); a file's name, key or git's own message can hold either. The first `:` of
    such a line and the `[` of every `##[` are spelled as escapes."""
    text = no_legacy_commands(encodable(text), "\\x5b")
    stripped = text.lstrip()
    if stripped.startswith("::"):
        at = len(text) - len(stripped)
        text = f"{text[:at]}\\x3a{stripped[1:]}"
    return text


def no_legacy_commands(text, bracket):
    """`text` with the `[` of each `##[` written as `bracket` (an escape in the output's syntax)."""
    return text.replace("##[", "##" + bracket) if "##[" in text else text


def counted(count, noun):
    """"1 file", "2 files": `count` and `noun`, plural where it must be."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def printable(text):
    """`text` with control characters spelled out, so that a file name is always one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Outcome:
    """What examining one file came to: its status, and the reason where it is not a plain one.
    `examine_safely` fills these in for every way a file can fail."""

    def __init__(self, path, status=Status.OK):
        self.path = path
        self.status = Status(status)
        self.reason = None
        self.lfs_pointer = False
        self.rewrites = False  # fix: the file would have been rewritten, had nothing been wrong
        self.fix_abandoned = False  # fix threw its rewrite away: the file is as it was
        self.transfer = None  # a remote file's: {"requests", "bytes", "streamed"} (http_source)

    @property
    def exit_code(self):
        return self.status.exit_code

    @property
    def read_from_lfs(self):
        """Whether this was a Git LFS pointer's object, read from its server (not a URL named)."""
        from .byte_source import is_url

        return self.transfer is not None and not is_url(self.path)

    @property
    def unchanged_after_a_problem(self):
        """Whether the verdict must say so: fix did not touch the file because something was wrong
        (a check changes nothing anyway, so saying it there would only be noise)."""
        return self.rewrites and (self.status in (Status.REFUSED, Status.CANNOT_CONVERT) or self.fix_abandoned)


class FileReport(Outcome):
    """What `scan` or `fix` found in one file."""

    def __init__(self, path, status=Status.OK, to=LEGACY):
        super().__init__(path, status)
        self.to = to
        self.format = None  # "zip" or "legacy" once the container was read
        self.renames = []  # rename.Rename of state-dict keys
        self.param_names = []  # rename.Rename of optimizer param_names
        self.modules = 0
        self.families = {}  # "weight-norm" / "spectral-norm" -> modules renamed
        self.problems = []  # rename.Problem
        self.warnings = []  # what the user must know whatever the keys are: an incompatible vocoder
        self.verified = None  # fix --verify: how many tensors torch found bit-equal

    def __repr__(self):
        return (f"FileReport(path={self.path!r}, status={self.status!r}, to={self.to!r}, "
                f"renames={len(self.renames)}, problems={len(self.problems)}, reason={self.reason!r})")

    def key_kind(self):
        """"parametrized weight-norm", "legacy spectral-norm" ...: what the renamed keys are."""
        families = " and ".join(family for family in FAMILIES if self.families.get(family)) or "weight-norm"
        return f"{KIND[self.to]} {families}"

    def line(self):
        """The one line shown for this file."""
        return f"{printable(self.path)}: {printable(self.verdict())}"

    def verdict(self):
        """What the line says after the file's name."""
        said = self._verdict()
        return f"{said}; {NOTHING_CHANGED}" if self.unchanged_after_a_problem else said

    def _verdict(self):
        if self.status == Status.NEEDS_FIX:
            noun = "key" if len(self.renames) == 1 else "keys"
            modules = "module" if self.modules == 1 else "modules"
            return (f"{len(self.renames)} {self.key_kind()} {noun} in "
                    f"{self.modules} {modules} (e.g. {shown_name(self.renames[0].old)})")
        if self.status == Status.FIXED:
            noun = "key" if len(self.renames) == 1 else "keys"
            checked = "" if self.verified is None else f" (verified: {self.verified} tensors bit-equal)"
            return f"fixed: renamed {len(self.renames)} {noun} to {self.to} names{checked}"
        if self.status == Status.CANNOT_CONVERT:
            first = self.problems[0]
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            return f"cannot convert {shown_name(first.module)}: {first.reason}{more}"
        if self.status == Status.OK:
            return f"ok ({self.to} names)"
        if self.status == Status.SKIPPED:
            return f"warning: not checked: {self.reason}" if self.lfs_pointer else f"skipped: {self.reason}"
        if self.status == Status.NOT_CHECKED:
            return f"not checked: {self.reason}"
        return f"{self.status}: {self.reason}"  # refused, error

    def warning_lines(self):
        return [f"{printable(self.path)}: warning: {printable(warning)}" for warning in self.warnings]

    def details(self):
        """The extra lines `-v` shows, one at a time: every rename and every problem."""
        shown = shortener()
        for r in self.renames + self.param_names:
            yield printable(f"    {r.where or '<top>'}: {shown(r.old)} -> {shown(r.new)}")
        for p in self.problems:
            yield printable(f"    cannot convert {p.where or '<top>'}: {shown(p.module)}: {p.reason}")
        if self.transfer:
            yield transfer_line(self.transfer)

    def to_json(self):
        shown = shortener()
        return {
            "path": self.path,
            "status": self.status,
            "format": self.format,
            "modules": self.modules,
            "families": dict(self.families),
            "renames": [{"dict": r.where, "old": shown(r.old), "new": shown(r.new)} for r in self.renames],
            "param_names": [{"list": r.where, "old": shown(r.old), "new": shown(r.new)} for r in self.param_names],
            "problems": [{"dict": p.where, "module": shown(p.module), "reason": p.reason} for p in self.problems],
            "reason": self.reason,
            "warnings": list(self.warnings),
            "verified_tensors": self.verified,
            "remote": self.transfer,
        }


def transfer_line(transfer):
    """-v's line on what reading a remote file cost."""
    requests = transfer["requests"]
    said = f"    read remotely: {requests} request{'s' if requests != 1 else ''}, {transfer['bytes']:,} bytes"
    return said + (" (the server ignored Range: the whole file was streamed)" if transfer["streamed"] else "")


def shortener():
    """shown_name, made once per name object: the thousands of renames that share one long key
    (through the pickle's memo) share its one shortened spelling too."""
    made = {}

    def shown(name):
        if len(name) <= SHOWN_NAME_LIMIT:
            return name
        found = made.get(id(name))
        if found is None:
            found = made[id(name)] = (name, shown_name(name))  # holding the name keeps its id its own
        return found[1]

    return shown


def status_counts(statuses):
    """How many files have each status, every status listed, in Status's order."""
    return {status.value: statuses.count(status) for status in Status}


def summary(command, statuses):
    """The closing line, from the files' statuses."""
    parts = [f"{n} {status}" for status, n in status_counts(statuses).items() if n]
    files = "file" if len(statuses) == 1 else "files"
    verb = "checked" if command == "check" else "examined"
    return f"{verb} {len(statuses)} {files}" + (": " + ", ".join(parts) if parts else "")


def text_lines(report, verbosity):
    """The text output's lines for one file: none for a fine file unless -v (a skipped one is
    shown, with its reason: it was not checked), every rename with -v
    (those one at a time: a hostile file can have a hundred thousand)."""
    fine = report.status == Status.OK and not report.warnings
    lines = [report.line()] + report.warning_lines() if verbosity > 0 or not fine else []
    if verbosity > 0:
        from itertools import chain

        return chain(lines, report.details())
    return lines


def write_json(out, command, to, reports, version):
    """Write check's or fix's JSON document to the text file `out`."""
    statuses = [report.status for report in reports]
    _write_document(out, version, command=command, to=to, exit_code=exit_code(statuses),
                    summary=status_counts(statuses), files=[report.to_json() for report in reports])


def write_inspections(out, inspections, version):
    """`inspect --output json`: one document, a `files` entry per file (inspection.Inspection.to_json)."""
    _write_document(out, version, schema_version=INSPECT_SCHEMA_VERSION, command="inspect",
                    exit_code=max((i.exit_code for i in inspections), default=0),
                    files=[inspection.to_json() for inspection in inspections])


def render_json(command, to, reports, version):
    """write_json's document as a string."""
    return _rendered(write_json, command, to, reports, version)


def render_inspections(inspections, version):
    """write_inspections' document as a string."""
    return _rendered(write_inspections, inspections, version)


def _rendered(write, *args):
    import io

    text = io.StringIO()
    write(text, *args)
    return text.getvalue()


def _write_document(out, version, **fields):
    """The document, written a piece at a time: with a hundred thousand renames it is tens of
    megabytes, and built as one string it was held in memory two or three times over."""
    import json  # only the JSON output needs it: keep start-up short for hooks

    document = {"schema_version": SCHEMA_VERSION, "tool": "pth-legacy-keys", "version": version, **fields}
    # ASCII: the strings come from the file and may hold lone surrogates, which UTF-8 cannot carry.
    # Strict JSON (RFC 8259): JSON.parse, jq and Go refuse a whole document for one NaN or Infinity,
    # so a float that is not finite raises ValueError here; values from a file reach the document
    # already spelled as strings (inspection.json_value).
    for chunk in json.JSONEncoder(indent=2, ensure_ascii=True, allow_nan=False).iterencode(document):
        # `##[` is only ever inside a string (the encoder writes each string as one chunk), where
        # \u005b is the same `[` to a JSON reader and no command to a CI log reader.
        out.write(no_legacy_commands(chunk, "\\u005b"))
