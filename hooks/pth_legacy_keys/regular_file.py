"""Open a path only if it is a regular file: a FIFO would block, a device never ends."""

import os
import stat

from .errors import CheckpointError


def require_regular_file(mode):
    """Raise unless `mode` (st_mode) is a regular file's.  Opening a FIFO blocks until someone
    writes to it (a folder walk hung on `pipe.pth`); a device or a socket is never a checkpoint."""
    if stat.S_ISDIR(mode):
        raise CheckpointError("is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"not a regular file ({_special_file_kind(mode)})")


def open_regular(path):
    """`path` opened for unbuffered reading, if it is a regular file; never blocks on a FIFO that
    replaced it since it was looked at (O_NONBLOCK, then fstat)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        require_regular_file(os.fstat(fd).st_mode)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def _special_file_kind(mode):
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a special file"
