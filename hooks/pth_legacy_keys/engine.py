"""Check or fix one file: read it, plan the renames, and (for fix) write and verify."""

import os
import struct

from .container import file_identity, read_checkpoint, record_crc, region_crc
from .patterns import is_pattern
from .errors import CheckpointError, FixAbandoned, Refused
from .pickle_edit import replace_strings
from .regular_file import open_regular, require_regular_file
from .rename import DIRECTIONS, FAMILIES, LEGACY, plan, shown_name
from .report import FileReport
from .rvc import vocoder
from .safetensors_file import replace_keys
from .status import Status
from .symlinks import require_no_link_out, writing_root
from .writer import replace_atomically, write_legacy, write_safetensors, write_zip

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
    return _run(path, to, lfs_pointers, families, write=True, verify=verify, root=root)


def _run(path, to, lfs_pointers, families, write, verify=False, root=None):
    if to not in DIRECTIONS:
        raise ValueError(f"to must be one of {DIRECTIONS}, not {to!r}")
    if not families or set(families) - set(FAMILIES):
        raise ValueError(f"families must be some of {FAMILIES}, not {families!r}")
    if lfs_pointers not in LFS_POINTER_CHOICES:
        raise ValueError(f"lfs_pointers must be one of {LFS_POINTER_CHOICES}, not {lfs_pointers!r}")
    report = FileReport(os.fspath(path), Status.OK, to)

    def examine(real_path):
        checkpoint = read_checkpoint(real_path, locate_all_records=write)
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
                require_no_link_out(path, root or writing_root(), to)
                report.verified = _rewrite(real_path, checkpoint, renames, to, families, verify)
                report.status = Status.FIXED
            else:
                report.status = Status.NEEDS_FIX

    return examine_safely(report, examine, lfs_pointers)


def examine_safely(report, examine, lfs_pointers="error"):
    """Run `examine(real path)` for `report.path`; turn every way a file can fail into
    `report.status` and `report.reason`, so that one bad file never stops the others."""
    path = report.path
    if "\0" in path:
        report.status, report.reason = Status.ERROR, "the name holds a NUL byte, which no file's name can"
        return report
    try:
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


def _rewrite(path, checkpoint, renames, to, families, verify_with_torch):
    """Write the renamed file beside `path`, check it, and swap it in; return how many tensors
    torch compared (None without `verify_with_torch`)."""
    if verify_with_torch:
        from . import verify as torch_verify

        missing = torch_verify.torch_missing()
        if missing:
            raise FixAbandoned(f"{missing}")
    compared = []
    if checkpoint.format == "safetensors":
        new_names = replace_keys(checkpoint.header, renames.new_text.values())
        write_records = write_safetensors
    else:
        new_names = replace_strings(checkpoint.pickle, renames.new_text.values())
        write_records = write_zip if checkpoint.format == "zip" else write_legacy

    def write(out):
        with open_regular(path) as source:
            # Copy from the very file that was read, not from one that replaced it since.
            if file_identity(os.fstat(source.fileno())) != checkpoint.identity:
                raise FixAbandoned("the file changed while it was being fixed")
            write_records(source, checkpoint, new_names, out)

    def verify(written_path):
        """Read our own output as a stranger's file: it must be the intended one, fully converted."""
        try:
            written = read_checkpoint(written_path, locate_all_records=True)
        except CheckpointError as exc:
            raise FixAbandoned(f"the rewritten file did not read back ({exc})") from None
        again = plan(written.root, to, families)
        size_change = len(new_names) - len(_names(checkpoint))
        if (written.format != checkpoint.format or _names(written) != new_names
                or _copied_records(written) != _copied_records(checkpoint)
                or (checkpoint.format != "zip" and written.file_size != checkpoint.file_size + size_change)
                or again.renames or again.param_names or again.problems):
            raise FixAbandoned("the rewritten file did not read back as intended")
        if checkpoint.format == "safetensors":
            _verify_tensor_bytes(checkpoint, written)
        else:
            _verify_copied_bytes(checkpoint, written)
        if verify_with_torch:
            names = {r.old: r.new for r in renames.renames + renames.param_names}
            compared.append(torch_verify.compare(path, written_path, checkpoint.format, names))

    replace_atomically(path, checkpoint.identity, write, verify)
    return compared[0] if compared else None


def _names(checkpoint):
    """The bytes that hold the key names: the main pickle, or safetensors' length and header."""
    return checkpoint.header.raw if checkpoint.format == "safetensors" else checkpoint.pickle


def _verify_copied_bytes(checkpoint, written):
    """Every copied record must hold the bytes its CRC promises: a copy can fail silently."""
    with open_regular(written.path) as output:
        for record in written.records:
            if record.name == checkpoint.pickle_record.name or record_crc(output, record) == record.crc:
                continue
            with open_regular(checkpoint.path) as source:
                original = next(r for r in checkpoint.records if r.name == record.name)
                if record_crc(source, original) != original.crc:
                    raise Refused(f"record '{record.name}' does not match its CRC")
            raise FixAbandoned(f"record '{record.name}' was not copied intact")


def _verify_tensor_bytes(checkpoint, written):
    """safetensors stores no checksums: compare the copied tensor bytes with the original's."""
    length = checkpoint.file_size - checkpoint.header.data_start
    with open_regular(checkpoint.path) as source, open_regular(written.path) as output:
        if region_crc(source, checkpoint.header.data_start, length) != region_crc(
                output, written.header.data_start, length):
            raise FixAbandoned("the tensor bytes were not copied intact")


def _copied_records(checkpoint):
    return [(r.name, r.size, r.crc) for r in checkpoint.records if r.name != checkpoint.pickle_record.name]


def _os_error_reason(exc):
    if isinstance(exc, FileNotFoundError):
        pattern = is_pattern(os.fsdecode(exc.filename or ""))
        return "no such file, and no file matches it as a pattern" if pattern else "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not a file"
    return exc.strerror or str(exc)
