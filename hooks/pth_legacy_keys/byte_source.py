"""Where a checkpoint's bytes come from: `size`, `read(offset, n)` and `identity()`.

The readers see nothing else, so the same reading runs on a local file (here), an HTTP
resource read by ranges or a browser `File` (neither has an inode or an mtime: their
identity is whatever tells one version of the bytes from another, an ETag, a last-modified
time and a size).
"""

import os

from .errors import CheckpointError
from .regular_file import open_regular


class FileSource:
    """A local regular file, opened once for unbuffered reading (a context manager)."""

    def __init__(self, path):
        self._file = open_regular(path)
        status = os.fstat(self._file.fileno())
        self.size = status.st_size
        self._identity = file_identity(status)
        if not hasattr(os, "pread"):
            import threading

            self._lock = threading.Lock()

    def read(self, offset, n):
        """Exactly `n` bytes from `offset`: one system call for exactly the bytes needed."""
        if hasattr(os, "pread"):
            data = os.pread(self._file.fileno(), n, offset)
        else:  # Windows: a seek and a read, which two threads must not interleave
            with self._lock:
                self._file.seek(offset)
                data = self._file.read(n)
        if len(data) != n:
            raise CheckpointError("truncated: the file ends before a record it lists")
        return data

    def identity(self):
        """What the file was when it was opened; see file_identity."""
        return self._identity

    def fileno(self):
        """The open file's descriptor, for the writer's copy (preadv into its own buffers)."""
        return self._file.fileno()

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class BytesSource:
    """Bytes already in memory, as a source (tests, or a page that was handed a whole file)."""

    def __init__(self, data, identity=None):
        self._data = bytes(data)
        self.size = len(self._data)
        self._identity = identity if identity is not None else ("bytes", self.size, hash(self._data))

    def read(self, offset, n):
        if offset < 0 or offset + n > self.size:
            raise CheckpointError("truncated: the file ends before a record it lists")
        return self._data[offset:offset + n]

    def identity(self):
        return self._identity

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        pass


def is_url(path):
    """Whether a PATH names a remote file (http:// or https://) rather than a local one."""
    return isinstance(path, str) and path[:8].lower().startswith(("http://", "https://"))


def open_source(path):
    """The byte source for a PATH: a local file, or, for an http(s) URL, the remote file read
    by ranges (http_source.py)."""
    if is_url(path):
        from .http_source import url_source  # only here: urllib and ssl would slow every local run

        return url_source(path)
    return FileSource(path)


class ReadAhead:
    """`source` read through a window of `window` bytes: many small reads close together (the
    local headers and data descriptors of a zip's small records) cost one read of the source.
    A read the window cannot hold goes to the source as it is, and fails as it would."""

    def __init__(self, source, window=4096):
        self.source = source
        self.size = source.size
        self._window = window
        self._start = 0
        self._data = b""

    def read(self, offset, n):
        start = self._start
        if start <= offset and offset + n <= start + len(self._data):
            return self._data[offset - start:offset - start + n]
        if n >= self._window or offset + n > self.size:
            return self.source.read(offset, n)
        self._start, self._data = offset, self.source.read(offset, min(self._window, self.size - offset))
        return self._data[:n]


def file_identity(status):
    """What changes when a local file is replaced or rewritten (an os.stat result): compared
    before a fix copies from the file and again before it swaps the result in."""
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
