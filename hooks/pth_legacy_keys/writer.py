"""Turn a rewrite's pieces into a local file, and swap it in atomically.

A format unit describes the new file as pieces: new bytes, or ranges of the source
(checkpoint.Rewrite).  Here they become a temporary file beside the original, in one pass:
each range is read from the source and written, a few MiB at a time, and a second thread
checks exactly the bytes handed to the kernel for it against what they must be: the CRC the
format promises for them (a zip record's, so a record damaged in the source is refused), or,
where the format stores no checksum, the source's own bytes read again.  The copy never goes
through copy_file_range, which has written zeros without an error on some kernels and
filesystems; bytes written with write() are in the file as they were handed over, so the CRC
computed while writing is as good a check as reading the file back, at half the cost.  The
file is fsynced, read back as a stranger's file by the caller (container, key bytes, renames),
and only then renamed over the original.
"""

import os
import stat
import threading
import zlib
from queue import SimpleQueue

from .byte_source import FileSource, file_identity
from .checkpoint import SourceRange
from .errors import CheckpointError, FixAbandoned, Refused

COPY_CHUNK = 1 << 20  # read and written at a time
BUFFERS = 4  # chunks between the copy and the check: at most BUFFERS * COPY_CHUNK bytes in memory
SMALL = 64 << 10  # writes below this are gathered, and handed to the kernel together
GATHERED = 256  # ... this many at most (IOV_MAX is at least 1024 wherever writev exists)
BACKLOG = 8 << 20  # bytes of small writes that may wait for their check
PAGE = 1 << 16  # a multiple of the page size and of a filesystem block (see _Disk)
WRITEBACK_STEP = 8 << 20  # how much is written before the disk is told to start on it


class _Output:
    """The new file, appended to; what is written for a copied range goes to the checks too,
    exactly as it is handed to the kernel.  Small writes (a record's header, a small record) are
    gathered and handed over together: one system call for many records."""

    def __init__(self, fd, checks):
        self.fd = fd
        self.position = 0
        self._checks = checks
        self._piece = None  # the SourceRange being written, if any
        self._done = 0  # bytes of it written so far
        self._gathered = []  # small writes not yet handed to the kernel
        self._buffers = SimpleQueue()  # free chunk buffers, reused: no fresh pages to fault in per chunk
        for _ in range(BUFFERS):
            self._buffers.put(bytearray(COPY_CHUNK))

    def write(self, data):
        view = memoryview(data)
        if len(view) < SMALL:
            if type(data) is not bytes:
                view = memoryview(bytes(view))  # its own copy: the chunk buffer it came from is reused
            self._gathered.append(view)
            if len(self._gathered) >= GATHERED:
                self.flush()
        else:
            self.flush()
            self._write_all([view])
        self.position += len(view)
        if self._piece is not None:
            self._checks.add(self._piece, self._done, view)
            self._done += len(view)

    def flush(self):
        """Hand the gathered small writes to the kernel."""
        gathered, self._gathered = self._gathered, []
        self._write_all(gathered)
        self._checks.catch_up(BACKLOG)  # what waits for its check stays bounded, like the chunk buffers

    def _write_all(self, views):
        """Hand `views` to the kernel, whole and in order."""
        while views:
            if len(views) > 1 and hasattr(os, "writev"):
                written = os.writev(self.fd, views)
            else:
                written = os.write(self.fd, views[0])
            done = 0
            while done < len(views) and written >= len(views[done]):
                written -= len(views[done])
                done += 1
            views = views[done:]
            if written:
                views[0] = views[0][written:]

    def copy_from(self, source, offset, length):
        """Append `length` bytes of `source` (a byte source) from `offset`, a chunk at a time."""
        if length < SMALL:  # read as its own bytes, and gathered with the writes around it
            try:
                data = source.read(offset, length)
            except CheckpointError:
                raise CheckpointError("the file shrank while it was being copied") from None
            return self.write(data)
        while length:
            n = min(COPY_CHUNK, length)
            buffer = self._buffers.get()  # free again once the checks are done with it
            if hasattr(source, "fileno") and hasattr(os, "preadv"):
                view = memoryview(buffer)[:os.preadv(source.fileno(), [memoryview(buffer)[:n]], offset)]
            else:
                view = memoryview(source.read(offset, n))
            if len(view) != n:
                self._buffers.put(buffer)
                raise CheckpointError("the file shrank while it was being copied")
            self.write(view)
            self._checks.then(lambda buffer=buffer: self._buffers.put(buffer))
            offset, length = offset + n, length - n

    def begin(self, piece):
        """What is written from now to end() is `piece`."""
        self._piece, self._done = piece, 0

    def end(self):
        self._checks.add(self._piece, self._done, None)  # the piece is complete
        self._piece = None


class _Checks:
    """Checks, in a thread, the bytes written for each copied range (see the module docstring)."""

    def __init__(self, source):
        self.source = source
        self.error = None
        self._queue = SimpleQueue()
        self._stopped = False
        self._added = 0  # bytes queued (counted by the thread that writes only)
        self._checked = 0  # bytes checked (counted by the checking thread only)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def add(self, piece, done, view):
        """`view` (None: the end of `piece`) was written as `piece`'s bytes from `done` on."""
        self._queue.put((piece, done, view))
        self._added += 0 if view is None else len(view)

    def then(self, action):
        """Run `action()` once what was added so far has been checked (it frees a chunk buffer)."""
        self._queue.put((None, 0, action))

    def catch_up(self, limit):
        """Wait until no more than `limit` bytes wait for their check."""
        if self._added - self._checked > limit and self._thread.is_alive():
            caught_up = threading.Event()
            self.then(caught_up.set)
            caught_up.wait()

    def finish(self):
        """Wait for every check; raise the first failure."""
        self._end()
        if self.error is not None:
            raise self.error

    def stop(self):
        """Give up on the checks (the write failed)."""
        self._stopped = True
        self._end()

    def _end(self):
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self):
        crc = 0
        for piece, done, view in iter(self._queue.get, None):
            if piece is None:
                view()  # see then()
                continue
            if not (self._stopped or self.error):
                try:
                    crc = self._check(piece, done, view, crc)
                except BaseException as exc:  # reported by finish(), in the thread that writes
                    self.error = exc
            self._checked += 0 if view is None else len(view)

    def _check(self, piece, done, view, crc):
        """Check `view`, written as `piece` from `done` on (None: its end); return the CRC so far."""
        if view is None:
            if done != piece.length:
                raise FixAbandoned(_not_copied(piece))
            if piece.crc is not None and crc != piece.crc:
                if _crc(self.source, piece.offset, piece.length) != piece.crc:
                    raise Refused(f"{piece.what} does not match its CRC")
                raise FixAbandoned(_not_copied(piece))
            return 0
        if done + len(view) > piece.length:
            raise FixAbandoned(_not_copied(piece))
        if piece.crc is not None:
            return zlib.crc32(view, crc)
        if view != self.source.read(piece.offset + done, len(view)):
            raise FixAbandoned(_not_copied(piece))
        return crc


def _not_copied(piece):
    return f"{piece.what} {'were' if piece.plural else 'was'} not copied intact"


def _crc(source, offset, length):
    crc = 0
    for step in range(0, length, COPY_CHUNK):
        crc = zlib.crc32(source.read(offset + step, min(COPY_CHUNK, length - step)), crc)
    return crc


def _write_pieces(pieces, source, out, checks, disk):
    """Write `pieces` to `out`, copying ranges of `source`; `disk` starts writing them meanwhile."""
    written_back = 0
    for piece in pieces:
        if type(piece) is not SourceRange:
            out.write(piece)
            continue
        if checks.error is not None:
            return  # a range already failed its check: finish() says which
        out.begin(piece)
        out.copy_from(source, piece.offset, piece.length)
        out.end()
        whole_pages = out.position - out.position % PAGE  # not the page the next write goes on
        if whole_pages - written_back >= WRITEBACK_STEP:
            out.flush()
            disk.start_writing(written_back, whole_pages - written_back)
            written_back = whole_pages
    out.flush()


def replace_atomically(path, identity, pieces, read_back, last_check=None):
    """Write `pieces` (a Rewrite's, ranges of `path`) beside `path` and swap them in, or leave
    `path` untouched.

    `identity` is the file_identity() of `path` as it was read; if the file is not that file
    any more, nothing is written or swapped.  Every copied range is checked as it is written
    (see _Checks); `read_back(temporary_path)` must raise if the new file is not what was
    meant; `last_check(temporary_path)`, if given, runs once every other check has passed.
    The new file is fsynced, and keeps the old one's owner, group and permission bits, or
    is not swapped in.
    """
    before = os.stat(path)
    _check_unchanged(before, identity)
    if not stat.S_IMODE(before.st_mode) & 0o222:
        raise FixAbandoned("the file is read-only")
    remove_stale_temporaries(path)
    fd, temporary = create_temporary(path)

    def prepare():
        try:
            _write_and_check(path, identity, pieces, fd, temporary, before, read_back)
            if last_check is not None:
                last_check(temporary)
        finally:
            os.close(fd)
        if not hasattr(os, "fchmod"):
            os.chmod(temporary, stat.S_IMODE(before.st_mode))
        _check_unchanged(os.stat(path), identity)

    _swap_in(temporary, path, prepare)


def _write_and_check(path, identity, pieces, fd, temporary, before, read_back):
    with FileSource(path) as source:
        # Copy from the very file that was read, not from one that replaced it since.
        if source.identity() != identity:
            raise FixAbandoned("the file changed while it was being fixed")
        checks = _Checks(source)
        disk = _Disk(fd, checks)
        try:
            _write_pieces(pieces, source, _Output(fd, checks), checks, disk)
            if checks.error is not None:
                checks.finish()  # raises it
            _keep_owner(fd, before)
            if hasattr(os, "fchmod"):
                os.fchmod(fd, stat.S_IMODE(before.st_mode))  # after fchown, which may clear set-id bits
            # The disk write, the last checks and our reading-back are independent: let them overlap.
            disk.fsync()  # in the checks' thread, after the last check
            try:
                read_back(temporary)
            except CheckpointError:
                checks.finish()  # a bad copy explains a bad reading-back best
                raise
            checks.finish()
        except BaseException:
            checks.stop()
            raise
        disk.raise_error()


def create_temporary(path):
    """A new file beside `path`, named for it and for this process (see remove_stale_temporaries)."""
    folder = os.path.dirname(path) or "."
    flags = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
             | getattr(os, "O_BINARY", 0))
    while True:
        name = f"{_temporary_prefix(path)}{os.getpid()}.{os.urandom(6).hex()}.tmp"
        try:
            return os.open(os.path.join(folder, name), flags, 0o600), os.path.join(folder, name)
        except FileExistsError:
            continue


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


def move_into_place(temporary, path, fill, identity):
    """Run `fill()`, which writes the file `temporary` (from create_temporary(path)), then let it
    replace `path` with `path`'s owner, group and permission bits, fsynced, if `path` is still
    the file whose file_identity() is `identity`.  Any failure removes `temporary` and leaves
    `path` as it was."""

    def prepare():
        fill()
        before = os.stat(path)
        _check_unchanged(before, identity)
        fd = os.open(temporary, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            _keep_owner(fd, before)
            if hasattr(os, "fchmod"):
                os.fchmod(fd, stat.S_IMODE(before.st_mode))
            os.fsync(fd)
        finally:
            os.close(fd)

    _swap_in(temporary, path, prepare)


def write_new_file(path, fill):
    """Write `path` as a new file, atomically: `fill(f)` writes UTF-8 text to a temporary file
    beside it, which then replaces `path`. A symbolic link at `path` is replaced, never written
    through; a failure leaves whatever was at `path` as it was."""
    folder = os.path.dirname(path) or "."
    while True:  # a name taken (by chance, or by someone else) is never opened: try another
        temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            # O_EXCL: never opens an existing file or follows a link; 0o666 lets the umask decide, as open() does.
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue

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


# A file's name may take all 255 bytes a file system allows; the temporary file beside it adds
# about 40: a longer name is stood for by its digest, so that every file can be fixed.
TEMPORARY_NAME_ROOM = 150


def _temporary_prefix(path):
    name = os.path.basename(path)
    if len(os.fsencode(name)) > TEMPORARY_NAME_ROOM:
        import hashlib

        name = hashlib.sha256(os.fsencode(name)).hexdigest()
    return f".{name}.pth-legacy-keys-"


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


class _Disk:
    """Has the disk write the new file, in the checks' thread: each range as soon as the copy has
    written it (so that the fsync at the end has little left to wait for), then all of it, with
    fsync."""

    def __init__(self, fd, checks):
        self.fd = fd
        self.error = None
        self._checks = checks

    def start_writing(self, offset, length):
        self._checks.then(lambda: self._advise(offset, length))

    def fsync(self):
        """fsync the file once what was asked before is done; raise_error() says how it went."""
        self._checks.then(self._fsync)

    def raise_error(self):
        """Raise what the fsync raised (call it once the checks have finished)."""
        if self.error is not None:
            raise self.error

    def _advise(self, offset, length):
        if hasattr(os, "posix_fadvise"):
            try:  # Linux writes back dirty pages it is told are not needed (and keeps them cached)
                os.posix_fadvise(self.fd, offset, length, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass  # only advice

    def _fsync(self):
        try:
            os.fsync(self.fd)
        except OSError as exc:
            self.error = exc


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
