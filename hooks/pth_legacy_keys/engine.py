"""Check or fix one file: read it, plan the renames, and (for fix) write and check the result.

Nothing here knows a format: the format unit that read a file (checkpoint.Checkpoint.unit)
renames its keys and describes the new file; writer.py turns that into a file.
"""

import os
import struct

from .patterns import is_pattern
from .errors import CheckpointError, FixAbandoned, NotACheckpoint
from .regular_file import require_regular_file
from .rename import DEFAULT_FAMILIES, DIRECTIONS, FAMILIES, LEGACY, plan, shown_name
from .report import FileReport
from .rvc import vocoder
from .status import Status
from .symlinks import require_no_link_out
from .byte_source import is_url, open_source
from .torch_route import read, read_checkpoint

LFS_POINTER_CHOICES = ("error", "skip", "remote")


def scan(path, to=LEGACY, *, lfs_pointers="error", families=None, lfs_objects=None):
    """Report what `fix` would rename in `path`, without changing it.

    `lfs_pointers`: what a Git LFS pointer gets: an error, a warning ("skip"), or its object
    read from the LFS server by ranges ("remote"; `lfs_objects` is lfs_remote.locate()'s answer
    for it, asked for here when not given).
    """
    return _run(path, to, lfs_pointers, families, write=False, lfs_objects=lfs_objects)


def fix(path, to=LEGACY, *, lfs_pointers="error", families=None, verify=False, root=None, lfs_objects=None):
    """Rename the keys of `path` to the `to` names in place, if any need it.

    `families` names the parametrizations converted (weight-norm, spectral-norm); by default
    both towards legacy names, weight norm only towards parametrized ones (rename.DEFAULT_FAMILIES).  With
    `verify`, torch loads the original and the rewrite, and every tensor must be bit-equal
    under the renames before the rewrite replaces the original (see verify.py).  A symbolic
    link inside `root` (default: symlinks.writing_root()) is written through only when it
    leads to a file inside `root`.  A Git LFS pointer with `lfs_pointers="remote"` whose object
    needs a fix gets the object, downloaded, checked against its pointer and fixed, in its place.
    """
    return _run(path, to, lfs_pointers, families, write=True, compare_with_torch=verify, root=root,
                lfs_objects=lfs_objects)


def _run(path, to, lfs_pointers, families, write, compare_with_torch=False, root=None, lfs_objects=None):
    if to not in DIRECTIONS:
        raise ValueError(f"to must be one of {DIRECTIONS}, not {to!r}")
    if families is None and to in DIRECTIONS:
        families = DEFAULT_FAMILIES[to]
    if not families or set(families) - set(FAMILIES):
        raise ValueError(f"families must be some of {FAMILIES}, not {families!r}")
    if lfs_pointers not in LFS_POINTER_CHOICES:
        raise ValueError(f"lfs_pointers must be one of {LFS_POINTER_CHOICES}, not {lfs_pointers!r}")
    report = FileReport(_shown_path(path), Status.OK, to)
    report.rewrites = write
    if write and is_url(report.path):
        report.status, report.reason = Status.ERROR, "fix cannot write to a URL: download the file, fix it there"
        return report

    def examine(real_path):
        lfs_object = lfs_object_of(real_path, lfs_pointers, lfs_objects)
        checkpoint = read_file(report, real_path, for_rewrite=write and lfs_object is None, lfs_object=lfs_object)
        renames = planned(report, checkpoint, to, families)
        report.status = status_of(renames)
        if report.status == Status.NEEDS_FIX and write:
            require_no_link_out(path, root, to)
            if lfs_object is not None:
                report.verified = _fix_lfs_object(real_path, lfs_object, report, to, families, compare_with_torch)
            else:
                report.verified = _rewrite(real_path, checkpoint, renames, to, families, compare_with_torch)
            report.status = Status.FIXED

    return examine_safely(report, examine, lfs_pointers)


def planned(report, checkpoint, to, families):
    """Plan the renames of a checkpoint just read, and say in `report` what they are (and what
    holds whatever they are: an incompatible vocoder); return the plan."""
    report.format = checkpoint.format
    found = vocoder(checkpoint.root)
    if found:
        report.warnings.append(found.warning())
    renames = plan(checkpoint.root, to, families)
    report.renames, report.param_names = renames.renames, renames.param_names
    report.modules, report.problems = renames.modules, renames.problems
    report.families = renames.families
    return renames


def status_of(renames):
    """The status `check` gives a file with this plan: cannot-convert, needs-fix or ok."""
    if renames.problems:
        return Status.CANNOT_CONVERT
    if renames.renames or renames.param_names:
        return Status.NEEDS_FIX
    return Status.OK


def require_read_back(written, checkpoint, rewrite, to, families):
    """Raise FixAbandoned unless `written`, the rewrite read back as a stranger's file, is the
    intended one: the same format and kept bytes, the new key bytes, fully converted."""
    unit = checkpoint.unit
    again = plan(written.root, to, families)
    if (written.unit is not unit or written.key_bytes != rewrite.key_bytes
            or written.size != rewrite.size or unit.kept(written) != unit.kept(checkpoint)
            or again.renames or again.param_names or again.problems):
        raise FixAbandoned("the rewritten file did not read back as intended")


def _shown_path(path):
    """The path as reports name it: a URL without a user name or password it may hold."""
    path = os.fspath(path)
    if not is_url(path):
        return path
    from .http_source import without_userinfo

    return without_userinfo(path)


def read_file(outcome, path, for_rewrite=False, lfs_object=None):
    """Read the checkpoint at `path`, a local file or an http(s) URL, or, for a Git LFS pointer,
    its object (`lfs_object`: an lfs_remote.Download); what a remote read cost goes to
    `outcome.transfer`."""
    if lfs_object is not None:
        from .http_source import HttpSource, RemoteError

        try:
            source = HttpSource(lfs_object.href, lfs_object.header, lfs_object.size,
                                sha256=lfs_object.oid if lfs_object.whole else None)
        except RemoteError as exc:
            raise NotACheckpoint(f"Git LFS pointer whose object could not be read ({exc})", is_lfs_pointer=True) from None
    else:
        source = open_source(path)
    with source:
        try:
            checkpoint = read(source, for_rewrite=for_rewrite)
        except CheckpointError:
            _require_the_object(source, lfs_object)  # a verdict on other bytes is no verdict on the object
            raise
        finally:
            outcome.transfer = source.transfer() if hasattr(source, "transfer") else None
        _require_the_object(source, lfs_object)
        return checkpoint


def _require_the_object(source, lfs_object):
    """When every byte of a pointer's object was read anyway, they must hash to its oid."""
    if lfs_object is not None and source.whole_sha256() not in (None, lfs_object.oid):
        raise NotACheckpoint("Git LFS pointer whose object could not be read (its server serves bytes that "
                             "are not the object the pointer names: another sha256)", is_lfs_pointer=True)


def lfs_object_of(real_path, lfs_pointers, lfs_objects):
    """The lfs_remote.Download for a pointer at `real_path` when its object is to be read
    remotely; None for any other file.  A pointer whose object cannot be found fails here."""
    if lfs_pointers != "remote" or is_url(real_path):
        return None
    if lfs_objects is None:
        from .lfs_remote import locate

        lfs_objects = locate([real_path])
    found = lfs_objects.get(real_path)
    if isinstance(found, str):
        raise NotACheckpoint(f"Git LFS pointer whose object could not be found ({found})", is_lfs_pointer=True)
    return found


def _fix_lfs_object(path, lfs_object, report, to, families, compare_with_torch):
    """Download the object of the pointer at `path`, check it against the pointer, fix it,
    and put it where the pointer was (so that `git add` stores a new LFS object); return what
    --verify compared.  Any failure leaves the pointer as it was."""
    import shutil

    from .byte_source import file_identity
    from .http_source import HttpSource
    from .lfs_remote import pointer_fields
    from .writer import create_temporary, move_into_place

    identity = file_identity(os.stat(path))  # the pointer as it is now: the swap-in checks it still is
    with open(path, "rb") as f:
        if pointer_fields(f.read(2048)) != (lfs_object.oid, lfs_object.size):
            raise FixAbandoned("the file changed while it was being fixed")
    if shutil.disk_usage(os.path.dirname(path) or ".").free < 2 * lfs_object.size + (64 << 20):
        raise FixAbandoned(f"not enough free disk space to download and fix its {lfs_object.size:,}-byte object")
    fd, temporary = create_temporary(path)
    verified = []

    def download_and_fix():
        with os.fdopen(fd, "wb") as out, HttpSource(lfs_object.href, lfs_object.header, lfs_object.size) as source:
            digest = source.save(out)
            ranges, download = report.transfer or {"requests": 0, "bytes": 0}, source.transfer()
            report.transfer = {**download, "requests": ranges["requests"] + download["requests"],
                               "bytes": ranges["bytes"] + download["bytes"]}
        if digest != lfs_object.oid:
            raise FixAbandoned("the Git LFS object downloaded does not match its pointer's sha256")
        fixed = fix(temporary, to, families=families, verify=compare_with_torch, root=os.path.dirname(temporary))
        if fixed.status != Status.FIXED:
            raise FixAbandoned(f"the Git LFS object: {fixed.verdict()}")
        verified.append(fixed.verified)

    move_into_place(temporary, path, download_and_fix, identity)
    return verified[0]


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
        require_read_back(written, checkpoint, rewrite, to, families)

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
