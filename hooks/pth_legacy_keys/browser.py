"""The web page's API (web/, in Pyodide): check a file, and plan its fix as pieces the page
assembles into a download, without a thread (Pyodide has none) and without writing a file.

The page mounts the files a person drops (WORKERFS: reads go to File.slice), so `path` is a
local path here as anywhere.  The fixed file is described, never built: `fix_plan` answers a
list of pieces, new bytes or ranges of the original, which the page hands to `new Blob(...)`
as bytes and `file.slice(offset, offset + length)`, so a 2 GB checkpoint never passes through
WebAssembly's memory.  Before answering, the plan is checked as `fix` checks the file it
writes (writer.py, engine._rewrite): every copied zip record against its CRC, read in bounded
chunks, and the new file, read through the pieces as a stranger's file, must be the intended
one with nothing left to rename.  What fails gives the line `fix` would print, and no plan.

Nothing here imports writer.py (it starts a thread) or anything the CLI's check does not.
"""

import bisect
import os
import zlib

from .byte_source import is_url
from .checkpoint import SourceRange
from .engine import examine_safely, planned, read_file, require_read_back, status_of
from .errors import CheckpointError, FixAbandoned, Refused
from .inspection import inspect_file
from .rename import DEFAULT_FAMILIES, DIRECTIONS, LEGACY
from .report import FileReport
from .status import Status
from .torch_route import read

CHUNK = 1 << 20  # bytes of the original read at a time to check a copied range's CRC


def local_path(path):
    """`path` as the name of a local file, whatever it says: a dropped file named
    `http://host/x.pth` must be read where it was mounted, never fetched."""
    path = os.fspath(path)
    return os.path.join(".", path) if is_url(path) else path


def check(path, to=LEGACY):
    """What `pth-legacy-keys check --to TO PATH` and `inspect PATH` say about the file: a dict
    of plain values (strings, numbers, lists, dicts), ready for json.dumps.

    status        check's word: ok, needs-fix, cannot-convert, not-checked, refused, error, skipped
    line          check's line for the file (FileReport.line()); verdict: what follows the name
    warnings      check's warning lines (an incompatible vocoder)
    report        check's JSON entry for the file (FileReport.to_json())
    inspect       inspect's JSON entry (Inspection.to_json()); inspect_lines: its text lines
    """
    from .engine import scan

    path = local_path(path)
    report = scan(path, to)
    inspection = inspect_file(path)
    return {
        "path": report.path,
        "to": to,
        "status": str(report.status),
        "line": report.line(),
        "verdict": report.verdict(),
        "warnings": report.warning_lines(),
        "report": _plain(report.to_json()),
        "inspect": _plain(inspection.to_json()),
        "inspect_lines": list(inspection.text_lines()),
    }


def fix_plan(path, to=LEGACY):
    """How to write the fixed file, as `pth-legacy-keys fix --to TO` would, checked as fix checks it.

    None: nothing to rename (the file is fine as it is).  A dict {"status", "reason", "line"}:
    the file cannot be fixed (cannot-convert, refused, error ...), with the line fix prints.
    Else a list of pieces, in order: {"bytes": bytes} (new bytes) or {"offset": o, "length": n}
    (that range of the original file); together they are exactly the bytes fix writes."""
    report, pieces = plan_fix(path, to)
    if report.status == Status.FIXED:
        return pieces
    if report.status == Status.OK:
        return None
    return {"status": str(report.status), "reason": report.reason, "line": report.line()}


def plan_fix(path, to=LEGACY, families=None):
    """(report, pieces): `fix`'s FileReport for the file (status fixed when the plan passed
    every check, its line what fix prints), and fix_plan's list of pieces (None without one)."""
    if to not in DIRECTIONS:
        raise ValueError(f"to must be one of {DIRECTIONS}, not {to!r}")
    families = DEFAULT_FAMILIES[to] if families is None else tuple(families)
    report = FileReport(local_path(path), Status.OK, to)
    report.rewrites = True  # as fix's report: a problem says the file was not changed
    plans = []

    def examine(real_path):
        checkpoint = read_file(report, real_path, for_rewrite=True)
        renames = planned(report, checkpoint, to, families)
        report.status = status_of(renames)
        if report.status == Status.NEEDS_FIX:
            plans.append(_checked_pieces(real_path, checkpoint, renames, to, families))
            report.status = Status.FIXED

    examine_safely(report, examine)
    return report, (plans[0] if plans and report.status == Status.FIXED else None)


def _checked_pieces(path, checkpoint, renames, to, families):
    """The rewrite's pieces for the page, once they have passed fix's checks (engine._rewrite)."""
    unit = checkpoint.unit
    rewrite = unit.write(checkpoint, unit.rename(checkpoint, renames.new_text.values()))
    from .byte_source import FileSource

    with FileSource(path) as source:
        if source.identity() != checkpoint.identity:
            raise FixAbandoned("the file changed while it was being fixed")
        for piece in rewrite.pieces:
            if type(piece) is SourceRange:
                if piece.offset < 0 or piece.offset + piece.length > source.size:
                    raise CheckpointError("the file shrank while it was being copied")
                if piece.crc is not None and source_crc(source, piece.offset, piece.length) != piece.crc:
                    raise Refused(f"{piece.what} does not match its CRC")
        pieces_source = PiecesSource(rewrite.pieces, source)
        try:
            written = read(pieces_source, for_rewrite=True)
        except CheckpointError as exc:
            raise FixAbandoned(f"the rewritten file did not read back ({exc})") from None
        if pieces_source.size != rewrite.size:
            raise FixAbandoned("the rewritten file did not read back as intended")
        require_read_back(written, checkpoint, rewrite, to, families)
    return [{"offset": piece.offset, "length": piece.length} if type(piece) is SourceRange
            else {"bytes": bytes(piece)} for piece in rewrite.pieces]


def source_crc(source, offset, length):
    """The CRC-32 of `length` bytes of `source` from `offset`, read CHUNK bytes at a time."""
    crc = 0
    for step in range(0, length, CHUNK):
        crc = zlib.crc32(source.read(offset + step, min(CHUNK, length - step)), crc)
    return crc


class PiecesSource:
    """The file a rewrite's pieces describe, as a byte source: new bytes, and ranges read from
    `source` (the original) only when they are asked for."""

    def __init__(self, pieces, source):
        self._pieces = tuple(pieces)
        self._source = source
        self._starts = []
        position = 0
        for piece in self._pieces:
            self._starts.append(position)
            position += piece.length if type(piece) is SourceRange else len(piece)
        self.size = position

    def read(self, offset, n):
        """Exactly `n` bytes from `offset`, from the pieces they fall in."""
        if offset < 0 or n < 0 or offset + n > self.size:
            raise CheckpointError("truncated: the file ends before a record it lists")
        if n == 0:
            return b""
        out = []
        at = bisect.bisect_right(self._starts, offset) - 1
        while n > 0:
            piece, start = self._pieces[at], self._starts[at]
            inside = offset - start
            if type(piece) is SourceRange:
                take = min(n, piece.length - inside)
                out.append(self._source.read(piece.offset + inside, take))
            else:
                take = min(n, len(piece) - inside)
                out.append(bytes(piece[inside:inside + take]))
            offset, n, at = offset + take, n - take, at + 1
        return out[0] if len(out) == 1 else b"".join(out)

    def identity(self):
        return ("pieces", self._source.identity(), self.size)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        pass


def _plain(value):
    """`value` with str subclasses (Status) as plain strings and tuples as lists: what JSON and
    Pyodide's conversion to JavaScript take without surprises."""
    if isinstance(value, str):
        return str.__str__(value) if type(value) is not str else value
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
