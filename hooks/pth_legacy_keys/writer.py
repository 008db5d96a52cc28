"""Write a checkpoint with a new pickle, copying every other byte, and swap it in atomically.

The zip is laid out exactly as torch's writer (caffe2's PyTorchStreamWriter over
miniz) lays it out: records in their original order, each record's data aligned
by an `FB` padding extra field, sizes and CRC in a data descriptor, zip64 extras
where a size or offset needs them, zero times and versions.  So renaming keys one
way and back gives back the `torch.save` file byte for byte, and torch's mmap loader,
which may compute record offsets from these rules, finds every tensor.
"""

import os
import stat
import struct
import zlib

from .container import (
    CENTRAL_HEADER, CENTRAL_SIG, END_RECORD, END_SIG, LOCAL_HEADER, LOCAL_SIG, U16_MAX, U32_MAX,
    ZIP64_END_RECORD, ZIP64_END_SIG, ZIP64_EXTRA_ID, ZIP64_LOCATOR, ZIP64_LOCATOR_SIG, file_identity,
)
from .errors import CheckpointError, FixAbandoned, Refused

DATA_DESCRIPTOR_SIG = 0x08074B50
FLAG_DESCRIPTOR_UTF8 = 0x0808  # what torch writes for a record with data
FLAG_UTF8 = 0x0800  # ... and for an empty one
ZIP64_MADE_BY, ZIP64_NEEDED = 0x031E, 0x002D  # miniz's constants in the zip64 end record
COPY_CHUNK = 1 << 20


class _Output:
    """An unbuffered file we append to, tracking the offset ourselves."""

    def __init__(self, fd):
        self.fd = fd
        self.position = 0

    def write(self, data):
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.position += len(data)

    def copy_from(self, source, offset, length):
        """Append `length` bytes of the file object `source` from `offset`."""
        copied = _copy_file_range(source.fileno(), self.fd, offset, length)
        self.position += copied
        source.seek(offset + copied)
        remaining = length - copied
        while remaining:
            chunk = source.read(min(COPY_CHUNK, remaining))
            if not chunk:
                raise CheckpointError("the file shrank while it was being copied")
            self.write(chunk)
            remaining -= len(chunk)


def _copy_file_range(source_fd, target_fd, offset, length):
    """Copy in the kernel where it can (Linux); return how much was copied."""
    if not hasattr(os, "copy_file_range"):
        return 0
    copied = 0
    try:
        while copied < length:
            n = os.copy_file_range(source_fd, target_fd, length - copied, offset + copied)
            if n == 0:
                break
            copied += n
    except OSError:
        if copied:
            raise
        return 0
    return copied


def write_zip(source, checkpoint, new_pickle, out):
    """Write `checkpoint`'s records to `out` with `new_pickle` as its pickle record."""
    central = []
    for record in checkpoint.records:
        is_pickle = record is checkpoint.pickle_record
        size = len(new_pickle) if is_pickle else record.size
        crc = zlib.crc32(new_pickle) if is_pickle else record.crc
        name = record.name.encode("utf-8")
        offset = out.position
        big_size, big_offset = size >= U32_MAX, offset >= U32_MAX
        zip64 = big_size or big_offset
        # The local zip64 extra is written before the data, when miniz's compressed size is still 0.
        local_zip64 = _zip64_extra(((size, 0) if big_size else ()) + ((offset,) if big_offset else ()))
        data_start = offset + LOCAL_HEADER.size + len(name) + len(local_zip64) + 4
        extra = local_zip64 + _alignment_padding(data_start, checkpoint.alignment, record.name, len(local_zip64))
        flags = FLAG_DESCRIPTOR_UTF8 if size else FLAG_UTF8
        out.write(LOCAL_HEADER.pack(LOCAL_SIG, 0, flags, 0, 0, 0, 0, 0, 0, len(name), len(extra))
                  + name + extra)
        if is_pickle:
            out.write(new_pickle)
        else:
            out.copy_from(source, record.data_offset, size)
        if size:
            if zip64:
                out.write(struct.pack("<IIQQ", DATA_DESCRIPTOR_SIG, crc, size, size))
            else:
                out.write(struct.pack("<IIII", DATA_DESCRIPTOR_SIG, crc, size, size))
        central_zip64 = _zip64_extra(((size, size) if big_size else ()) + ((offset,) if big_offset else ()))
        central.append(CENTRAL_HEADER.pack(
            CENTRAL_SIG, 0, 0, flags, 0, 0, 0, crc, min(size, U32_MAX), min(size, U32_MAX),
            len(name), len(central_zip64), 0, 0, 0, 0, min(offset, U32_MAX),
        ) + name + central_zip64)
    central_offset = out.position
    directory = b"".join(central)
    count = len(central)
    zip64_end_offset = central_offset + len(directory)
    out.write(
        directory
        + ZIP64_END_RECORD.pack(ZIP64_END_SIG, ZIP64_END_RECORD.size - 12, ZIP64_MADE_BY, ZIP64_NEEDED,
                                0, 0, count, count, len(directory), central_offset)
        + ZIP64_LOCATOR.pack(ZIP64_LOCATOR_SIG, 0, zip64_end_offset, 1)
        + END_RECORD.pack(END_SIG, 0, 0, min(count, U16_MAX), min(count, U16_MAX),
                          min(len(directory), U32_MAX), min(central_offset, U32_MAX), 0)
    )


def _alignment_padding(data_start, alignment, name, other_extra_bytes):
    """The `FB` extra field that moves a record's data from `data_start` to a multiple of `alignment`,
    as caffe2's getPadding writes it: b"FB", the padding's length (16 bits), that many b"Z".

    Both that length and the header's extra-field length are 16 bits.  torch's writer truncates
    them past 65,535 bytes yet writes every padding byte, so its own reader then takes padding for
    data: torch.save with a 1 MiB .storage_alignment makes a file torch.load cannot read.  Such
    a file, or any whose alignment needs that much padding, we refuse to write.
    """
    if type(alignment) is not int or alignment < 1:
        raise Refused(f"the archive's .storage_alignment {alignment!r} is not a positive number")
    padding = -data_start % alignment
    if other_extra_bytes + 4 + padding > U16_MAX:
        raise Refused(f"its .storage_alignment of {alignment} needs {padding:,} bytes of padding before "
                      f"record '{name}', more than a zip extra field holds (torch's own writer makes "
                      "files torch cannot load at such an alignment)")
    return b"FB" + struct.pack("<H", padding) + b"Z" * padding


def _zip64_extra(values):
    if not values:
        return b""
    return struct.pack(f"<HH{len(values)}Q", ZIP64_EXTRA_ID, 8 * len(values), *values)


def write_legacy(source, checkpoint, new_pickle, out):
    """The legacy format: the bytes before and after the main pickle are copied as they are."""
    out.copy_from(source, 0, checkpoint.pickle_start)
    out.write(new_pickle)
    tail = checkpoint.pickle_start + len(checkpoint.pickle)
    out.copy_from(source, tail, checkpoint.file_size - tail)


def write_safetensors(source, checkpoint, new_header, out):
    """safetensors: a new length and header, then the tensor bytes as they are."""
    out.write(new_header)
    data_start = checkpoint.header.data_start
    out.copy_from(source, data_start, checkpoint.file_size - data_start)


def replace_atomically(path, identity, write, verify):
    """Write a new version of `path` beside it and swap it in, or leave `path` untouched.

    `identity` is the file_identity() of `path` as it was read; if the file is not that
    file any more, nothing is written or swapped.  `write(out)` fills an `_Output`;
    `verify(temporary_path)` must raise if the result is not what was meant.  The new
    file keeps the old one's owner, group and permission bits, or is not swapped in.
    """
    import tempfile  # only fix needs it: keep a check's start-up short

    folder = os.path.dirname(path) or "."
    before = os.stat(path)
    _check_unchanged(before, identity)
    if not stat.S_IMODE(before.st_mode) & 0o222:
        raise FixAbandoned("the file is read-only")
    remove_stale_temporaries(path)
    fd, temporary = tempfile.mkstemp(prefix=_temporary_prefix(path) + f"{os.getpid()}.", suffix=".tmp",
                                     dir=folder)

    def prepare():
        try:
            write(_Output(fd))
            _keep_owner(fd, before)
            if hasattr(os, "fchmod"):
                os.fchmod(fd, stat.S_IMODE(before.st_mode))  # after fchown, which may clear set-id bits
            # The disk write and our reading-back are independent: let them overlap.
            with _FsyncInBackground(fd):
                verify(temporary)
        finally:
            os.close(fd)
        if not hasattr(os, "fchmod"):
            os.chmod(temporary, stat.S_IMODE(before.st_mode))
        _check_unchanged(os.stat(path), identity)

    _swap_in(temporary, path, prepare)


def _swap_in(temporary, path, prepare):
    """Run `prepare()`, then let `temporary` replace `path`; if anything fails, remove `temporary`
    and leave `path` as it was."""
    try:
        prepare()
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _fsync_folder(os.path.dirname(path) or ".")


def write_new_file(path, fill):
    """Write `path` as a new file, atomically: `fill(f)` writes UTF-8 text to a temporary file
    beside it, which then replaces `path`. A symbolic link at `path` is replaced, never written
    through; a failure leaves whatever was at `path` as it was."""
    import secrets

    folder = os.path.dirname(path) or "."
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never opens an existing file or follows a link; 0o666 lets the umask decide, as open() does.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)

    def prepare():
        with open(fd, "w", encoding="utf-8", newline="\n") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())

    _swap_in(temporary, path, prepare)


def _keep_owner(fd, original):
    """Give the new file (open as `fd`) the owner and group of the file it replaces, as `sed -i`
    does with fchown.  Root fixing another user's file must not hand it to root.

    Where that is not allowed (a user fixing a file it may write but does not own, or whose group
    it is not in), `sed -i` keeps what it can and the file silently changes hands.  We refuse
    instead: the owner would lose the right to change its mode, and the new owner would gain it.
    """
    if not hasattr(os, "fchown"):
        return  # Windows: no owner to hand over; the new file is its writer's, as with any editor's save
    current = os.fstat(fd)
    if (current.st_uid, current.st_gid) == (original.st_uid, original.st_gid):
        return
    try:
        os.fchown(fd, original.st_uid, original.st_gid)
    except PermissionError:
        fixer = _user(current.st_uid)
        if current.st_uid != original.st_uid:
            what = f"belongs to {_user(original.st_uid)}, and a rewrite by {fixer} cannot keep that owner"
        else:
            what = f"has the group {_group(original.st_gid)}, which {fixer} cannot give the rewrite"
        raise FixAbandoned(f"the file {what} (run fix as its owner or as root)") from None


def _user(uid):
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _group(gid):
    try:
        import grp

        return f"gid {gid} ({grp.getgrgid(gid).gr_name})"
    except (ImportError, KeyError):
        return f"gid {gid}"


def _check_unchanged(status, identity):
    if file_identity(status) != identity:
        raise FixAbandoned("the file changed while it was being fixed")


def _temporary_prefix(path):
    return f".{os.path.basename(path)}.pth-legacy-keys-"


def remove_stale_temporaries(path):
    """Delete the temporary files a killed fix of `path` left beside it.

    A temporary file's name carries the process id that wrote it; one whose process is
    gone is stale. Only POSIX can ask whether a process exists without touching it.
    """
    if os.name != "posix":
        return
    folder = os.path.dirname(path) or "."
    prefix = _temporary_prefix(path)
    try:
        names = [name for name in os.listdir(folder) if name.startswith(prefix) and name.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # that process is still running: its file is not ours to delete
        except ProcessLookupError:
            pass
        except OSError:
            continue
        try:
            os.unlink(os.path.join(folder, name))
        except OSError:
            pass


class _FsyncInBackground:
    """fsync `fd` in a thread for the duration of a `with` block; its error is raised at the end."""

    def __init__(self, fd):
        import threading

        self.error = None
        self.thread = threading.Thread(target=self._fsync, args=(fd,), daemon=True)

    def _fsync(self, fd):
        try:
            os.fsync(fd)
        except OSError as exc:
            self.error = exc

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.thread.join()
        if self.error is not None and exc_info[0] is None:
            raise self.error


def _fsync_folder(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
