"""Check or fix one file: read it, plan the renames, and (for fix) write and check the result.

Nothing here knows a format: the format unit that read a file (checkpoint.Checkpoint.unit)
renames its keys and describes the new file; writer.py turns that into a file.
"""

import os
import struct

from .patterns import is_pattern
from .errors import CheckpointError, FixAbandoned
from .regular_file import require_regular_file
from .rename import DIRECTIONS, FAMILIES, LEGACY, plan, shown_name
from .report import FileReport
from .rvc import vocoder
from .status import Status
from .symlinks import require_no_link_out
from .byte_source import is_url, open_source
from .torch_route import read, read_checkpoint

LFS_POINTER_CHOICES = ("error", "skip")


def scan(path, to=LEGACY, *, lfs_pointers="error", families=FAMILIES):
    """Report what `fix` would rename in `path`, without changing it."""
    return _run(path, to, lfs_pointers, families, write=False)


def fix(path, to=LEGACY, *, lfs_pointers="error", families=FAMILIES, verify=False, root=None):
    """Rename the keys of `path` to the `to` names in place, if any need it.

    `families` limits the parametrizations converted (weight norm, spectral norm).  With
    `verify`, torch loads the original and the rewrite, and every tensor must be bit-equal
    under the renames before the rewrite replaces the original (see verify.py).  A symbolic
    link inside `root` (default: symlinks.writing_root()) is written through only when it
    leads to a file inside `root`.
    """
    return _run(path, to, lfs_pointers, families, write=True, compare_with_torch=verify, root=root)


def _run(path, to, lfs_pointers, families, write, compare_with_torch=False, root=None):
    if to not in DIRECTIONS:
        raise ValueError(f"to must be one of {DIRECTIONS}, not {to!r}")
    if not families or set(families) - set(FAMILIES):
        raise ValueError(f"families must be some of {FAMILIES}, not {families!r}")
    if lfs_pointers not in LFS_POINTER_CHOICES:
        raise ValueError(f"lfs_pointers must be one of {LFS_POINTER_CHOICES}, not {lfs_pointers!r}")
    report = FileReport(os.fspath(path), Status.OK, to)
    if write and is_url(report.path):
        report.status, report.reason = Status.ERROR, "fix cannot write to a URL: download the file, fix it there"
        return report

    def examine(real_path):
        checkpoint = read_file(report, real_path, for_rewrite=write)
        report.format = checkpoint.format
        found = vocoder(checkpoint.root)
        if found:
            report.warnings.append(found.warning())
        renames = plan(checkpoint.root, to, families)
        report.renames, report.param_names = renames.renames, renames.param_names
        report.modules, report.problems = renames.modules, renames.problems
        report.families = renames.families
        if renames.problems:
            report.status = Status.CANNOT_CONVERT
        elif renames.renames or renames.param_names:
            if write:
                require_no_link_out(path, root, to)
                report.verified = _rewrite(real_path, checkpoint, renames, to, families, compare_with_torch)
                report.status = Status.FIXED
            else:
                report.status = Status.NEEDS_FIX

    return examine_safely(report, examine, lfs_pointers)


def read_file(outcome, path, for_rewrite=False):
    """Read the checkpoint at `path`, a local file or an http(s) URL; what a remote read cost
    goes to `outcome.transfer`."""
    with open_source(path) as source:
        try:
            return read(source, for_rewrite=for_rewrite)
        finally:
            outcome.transfer = source.transfer() if hasattr(source, "transfer") else None


def examine_safely(report, examine, lfs_pointers="error"):
    """Run `examine(real path)` for `report.path`; turn every way a file can fail into
    `report.status` and `report.reason`, so that one bad file never stops the others."""
    path = report.path
    if "\0" in path:
        report.status, report.reason = Status.ERROR, "the name holds a NUL byte, which no file's name can"
        return report
    try:
        if is_url(path):
            examine(path)
        else:
            # A symlinked checkpoint is fixed where it lives; the link stays a link.
            real_path = os.path.realpath(path)
            require_regular_file(os.stat(real_path).st_mode)
            examine(real_path)
    except CheckpointError as exc:
        report.status, report.reason = exc.status(lfs_pointers), str(exc)
        report.lfs_pointer = getattr(exc, "is_lfs_pointer", False)
        report.fix_abandoned = isinstance(exc, FixAbandoned)
    except OSError as exc:
        report.status, report.reason = Status.ERROR, _os_error_reason(exc)
    except (MemoryError, RecursionError) as exc:
        report.status, report.reason = Status.ERROR, f"too large to examine ({type(exc).__name__})"
    except (ValueError, struct.error, ArithmeticError) as exc:
        # A number from the file that some check did not bound (int() of 5,000 digits, a size for a
        # 16-bit field ...) is still only this file's problem: one line, and the next file is examined.
        report.status = Status.ERROR
        report.reason = f"malformed content ({_exception_name(exc)}: {shown_name(str(exc))})"
    return report


def _exception_name(exc):
    kind = type(exc)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def _rewrite(path, checkpoint, renames, to, families, compare_with_torch):
    """Write the renamed file beside `path`, check it, and swap it in; return how many tensors
    torch compared (None without `compare_with_torch`)."""
    if compare_with_torch:
        from . import verify

        missing = verify.torch_missing()
        if missing:
            raise FixAbandoned(f"{missing}")
    from .writer import replace_atomically  # only here: a check's start-up needs no writer and no thread

    unit = checkpoint.unit
    rewrite = unit.write(checkpoint, unit.rename(checkpoint, renames.new_text.values()))
    compared = []

    def read_back(written_path):
        """Read our own output as a stranger's file: it must be the intended one, fully converted.
        (Its copied bytes were checked as they were written: see writer.py.)"""
        try:
            written = read_checkpoint(written_path, for_rewrite=True)
        except CheckpointError as exc:
            raise FixAbandoned(f"the rewritten file did not read back ({exc})") from None
        again = plan(written.root, to, families)
        if (written.unit is not unit or written.key_bytes != rewrite.key_bytes
                or written.size != rewrite.size or unit.kept(written) != unit.kept(checkpoint)
                or again.renames or again.param_names or again.problems):
            raise FixAbandoned("the rewritten file did not read back as intended")

    def compare(written_path):
        """Last, once the rewrite has passed every check of ours: torch's comparison."""
        names = {r.old: r.new for r in renames.renames + renames.param_names}
        compared.append(verify.compare(path, written_path, unit, names))

    replace_atomically(path, checkpoint.identity, rewrite.pieces, read_back,
                       compare if compare_with_torch else None)
    return compared[0] if compared else None


def _os_error_reason(exc):
    if isinstance(exc, FileNotFoundError):
        pattern = is_pattern(os.fsdecode(exc.filename or ""))
        return "no such file, and no file matches it as a pattern" if pattern else "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not a file"
    return exc.strerror or str(exc)
