"""A byte source over HTTP: a remote checkpoint read by `Range` requests, a block at a time.

A check reads a zip's first bytes, its end records, its central directory and its pickle:
for a 55 MB model, three requests of at most BLOCK bytes each.  Reads are rounded out to
whole blocks, the blocks are kept, and the blocks one read misses are asked for in one
request.  A server that ignores `Range` (200 and the whole body) still gives the right
answer: the body is kept in a temporary file and read from there (`streamed`).

What is sent where: `headers` (a token) go to the URL's own host only, never along a
redirect (urllib's unredirected headers); a redirect must stay on HTTP(S) and may not go
from HTTPS to plain HTTP; certificates are always verified (the system's store, or
SSL_CERT_FILE); proxies come from the environment, as in other Python tools.  Messages name
the host, never a URL's query (a presigned URL's signature) nor a header.
"""

import functools
import http.client
import os
import re
import socket
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from .errors import CheckpointError

BLOCK = 64 << 10  # bytes per cached block: a zip's end records and directory, or its pickle
TIMEOUT = 30.0  # seconds to connect, and between bytes of an answer
MAX_REDIRECTS = 5
RETRIES = 2  # more attempts after a 429 or 503 that says when to come back
MAX_RETRY_AFTER = 10  # seconds we wait for that; a longer wait fails the file now
STREAM_CHUNK = 1 << 20
MAX_STREAMED = 2 << 30  # bytes of a file kept whole when its server ignores Range (or it must be hashed)
MIN_RATE = 256 << 10  # bytes a second an answer must keep up, on average, after TIMEOUT
READ_CHUNK = 64 << 10  # read at a time, so that a deadline is checked between reads
ERROR_BODY = 64 << 10  # bytes of an error's body read (and dropped) before closing it
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
UNSATISFIABLE = re.compile(r"bytes \*/(\d+)")
URL_TOKEN_VARIABLE = "PTH_LEGACY_KEYS_URL_TOKEN"


class RemoteError(CheckpointError):
    """A remote file could not be read: HTTP, TLS or the network said no."""


def url_source(url):
    """An HttpSource for a URL given as a PATH, with the token in PTH_LEGACY_KEYS_URL_TOKEN
    (if set) as a Bearer token for that URL's host."""
    if origin_of(url) is None:
        raise RemoteError("a malformed URL")
    if has_userinfo(url):
        raise RemoteError("a URL with a user name or password in it: put a token in "
                          f"{URL_TOKEN_VARIABLE} instead")
    token = os.environ.get(URL_TOKEN_VARIABLE)
    return HttpSource(url, {"Authorization": f"Bearer {token}"} if token else (),
                      hint="" if token else f" (a token for it goes in {URL_TOKEN_VARIABLE})")


def has_userinfo(url):
    """Whether `url` holds a user name or password (or cannot be read well enough to tell)."""
    try:
        return "@" in urllib.parse.urlsplit(url).netloc
    except ValueError:
        return True


def without_userinfo(url):
    """`url` as it may be shown: a user name or password in it replaced by *** (found by plain
    string work: a URL too malformed for urlsplit must not be shown whole either)."""
    start = url.find("://") + 3 if "://" in url else 0
    end = min((i for i in (url.find(c, start) for c in "/?#") if i >= 0), default=len(url))
    netloc = url[start:end]
    if "@" not in netloc:
        return url
    return url[:start] + "***@" + netloc.rsplit("@", 1)[1] + url[end:]


class HttpSource:
    """The resource at `url`, as a byte source (a context manager).

    `headers` are sent with every request to `url`'s host and to no other; `size`, when the
    caller knows it (a Git LFS pointer's), must be the resource's, and bounds every read; with
    `sha256` too, the resource is read whole first (never more than `size` bytes) and must have
    that hash.  `requests`, `received` and `streamed` say what reading it cost.
    """

    def __init__(self, url, headers=(), size=None, timeout=None, sha256=None, hint=""):
        self.url = url
        self.host = host_of(url)
        self.requests = 0
        self.received = 0
        self.streamed = False
        self._headers = dict(headers)
        self._timeout = TIMEOUT if timeout is None else timeout
        self._hint = hint  # added to a 401 or 403: what the user can do
        self._opener = opener()
        self._blocks = {}
        self._spool = None
        self._version = None  # the first answer's ETag or Last-Modified
        self._versioned = False
        self.size = size  # bounds what a first answer may send, when known
        if sha256 is not None:
            self._keep_verified(sha256)
        else:
            self._fetch(0, BLOCK)  # learns the size

    def _keep_verified(self, sha256):
        """Read the whole resource into a temporary file; it must hash to `sha256`."""
        if self.size > MAX_STREAMED:
            raise RemoteError(f"{self.host} is not the repository's own server, and an object of {self.size:,} "
                              f"bytes is more than the {MAX_STREAMED >> 30} GiB read whole to check its sha256")
        spool = _spool_for(self.size, self.host)
        try:
            if self.save(spool) != sha256:
                raise RemoteError(f"{self.host} serves bytes that are not the object the pointer names "
                                  "(another sha256)")
            spool.flush()
        except BaseException:
            spool.close()
            raise
        self._spool, self.streamed = spool, True

    def read(self, offset, n):
        """Exactly `n` bytes from `offset`."""
        if offset < 0 or n < 0 or offset + n > self.size:
            raise CheckpointError("truncated: the file ends before a record it lists")
        if self._spool is not None:
            self._spool.seek(offset)
            return self._spool.read(n)
        if not n:
            return b""
        first, last = offset // BLOCK, (offset + n - 1) // BLOCK
        missing = [index for index in range(first, last + 1) if index not in self._blocks]
        if missing:
            self._fetch(missing[0] * BLOCK, min((missing[-1] + 1) * BLOCK, self.size))
            if self._spool is not None:
                return self.read(offset, n)
        data = b"".join(self._blocks[index] for index in range(first, last + 1))
        start = offset - first * BLOCK
        return data[start:start + n]

    def save(self, out):
        """Write the whole resource to the binary file `out`, never more than its size; return
        its sha256 (hex), as a Git LFS pointer names it."""
        import hashlib

        digest = hashlib.sha256()
        with self._get("bytes=0-") as answer:
            self._note_version(answer)
            if answer.status not in (200, 206):
                raise RemoteError(f"{self.host} answered HTTP {answer.status} to a download")
            total = self._stream(answer, self.size, [out.write, digest.update])
        if total != self.size:
            raise RemoteError(f"{self.host} ended the download after {total:,} of {self.size:,} bytes")
        return digest.hexdigest()

    def _stream(self, answer, limit, sinks):
        """Hand the answer's body, at most `limit` bytes, to each of `sinks`, within a deadline;
        return how many bytes there were.  A body longer than `limit` is an error."""
        pace = _Pace(self._timeout, self.host)
        total = 0
        while True:
            chunk = _read_some(answer, min(STREAM_CHUNK, limit - total + 1))
            if not chunk:
                return total
            total += len(chunk)
            self.received += len(chunk)
            if total > limit:
                raise RemoteError(f"{self.host} sent more than the {limit:,} bytes the file may have")
            for sink in sinks:
                sink(chunk)
            pace.check(total)

    def whole_sha256(self):
        """The sha256 of the whole resource when every byte of it has been read anyway (a small
        file, or a server that ignored Range); None otherwise."""
        import hashlib

        if self._spool is not None:
            digest = hashlib.sha256()
            self._spool.seek(0)
            for chunk in iter(lambda: self._spool.read(STREAM_CHUNK), b""):
                digest.update(chunk)
            return digest.hexdigest()
        if self.size is None or any(i not in self._blocks for i in range(-(-self.size // BLOCK))):
            return None
        return hashlib.sha256(b"".join(self._blocks[i] for i in range(-(-self.size // BLOCK)))).hexdigest()

    def identity(self):
        """What tells this version of the resource from another: its URL, ETag (or
        Last-Modified) and size.  There is no inode and no mtime to compare."""
        return ("http", self.url, self._version, self.size)

    def transfer(self):
        """What reading it cost, for reports."""
        return {"requests": self.requests, "bytes": self.received, "streamed": self.streamed}

    def close(self):
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # -- requests ------------------------------------------------------------------------

    def _fetch(self, start, end):
        """Ask for bytes [start, end) and keep them as blocks (or the whole body, if the
        server sends it all)."""
        with self._get(f"bytes={start}-{end - 1}") as answer:
            self._note_version(answer)
            if answer.status == 206:
                self._keep_range(answer, start, end)
            elif answer.status == 200:
                self._keep_whole(answer)
            elif answer.status == 416 and UNSATISFIABLE.fullmatch(answer.headers.get("Content-Range", "")) and (
                    self.size is None and start == 0):
                self.size = int(UNSATISFIABLE.fullmatch(answer.headers["Content-Range"]).group(1))
                if self.size:
                    raise RemoteError(f"{self.host} refused the range 0-{end - 1} of a {self.size:,}-byte file")
            else:
                raise RemoteError(f"{self.host} answered HTTP {answer.status} to a range request")

    def _keep_range(self, answer, start, end):
        found = CONTENT_RANGE.fullmatch(answer.headers.get("Content-Range", "").strip())
        if not found or found.group(3) == "*":
            raise RemoteError(f"{self.host} answered a range request without a usable Content-Range")
        first, last, total = int(found.group(1)), int(found.group(2)), int(found.group(3))
        if self.size is None:
            self.size = total
        elif total != self.size:
            raise RemoteError(f"{self.host} serves {total:,} bytes where {self.size:,} were expected")
        expected_last = min(end, self.size) - 1
        if total != self.size or first != start or last != expected_last:
            raise RemoteError(f"{self.host} answered bytes {first}-{last}/{total} where "
                              f"{start}-{expected_last}/{self.size} were asked for")
        data = self._read_exactly(answer, last - first + 1)  # never more, whatever follows
        for at in range(0, len(data), BLOCK):
            self._blocks[(start + at) // BLOCK] = data[at:at + BLOCK]

    def _keep_whole(self, answer):
        """The server ignored `Range`: keep its whole body (at most MAX_STREAMED bytes, or the
        size known) in a temporary file."""
        length = answer.headers.get("Content-Length", "")
        expected = self.size if self.size is not None else (int(length) if length.isdigit() else None)
        if expected is not None and expected > MAX_STREAMED:
            raise RemoteError(f"{self.host} ignores Range, and the file ({expected:,} bytes) is larger than the "
                              f"{MAX_STREAMED >> 30} GiB read whole")
        spool = _spool_for(expected or 0, self.host)
        try:
            self._stream(answer, MAX_STREAMED if expected is None else expected, [spool.write])
            spool.flush()
            if expected is not None and spool.tell() != expected:
                raise RemoteError(f"{self.host} sent {spool.tell():,} bytes where {expected:,} were expected")
        except BaseException:
            spool.close()
            raise
        self.size, self._spool, self.streamed = spool.tell(), spool, True
        self._blocks.clear()

    def _read_exactly(self, answer, n):
        parts = []
        self._stream(_Limited(answer, n), n, [parts.append])
        data = b"".join(parts)
        if len(data) != n:
            raise RemoteError(f"{self.host} ended its answer after {len(data):,} of {n:,} bytes")
        return data

    def _note_version(self, answer):
        version = answer.headers.get("ETag") or answer.headers.get("Last-Modified")
        if not self._versioned:
            self._version, self._versioned = version, True
        elif version != self._version:
            raise RemoteError(f"the file at {self.host} changed while it was being read")

    def _get(self, byte_range):
        """The answer to a GET with `byte_range`, after redirects and bounded retries."""
        for attempt in range(RETRIES + 1):
            request = urllib.request.Request(self.url, headers={"Range": byte_range, "Accept-Encoding": "identity"})
            for name, value in self._headers.items():
                request.add_unredirected_header(name, value)  # to this host only, never along a redirect
            self.requests += 1
            try:
                return open_within(self._opener, request, self._timeout)
            except urllib.error.HTTPError as exc:
                if exc.code == 416:
                    return exc  # an empty file has no byte 0: _fetch reads its size from the answer
                wait = _retry_after(exc)
                discard(exc)
                if wait is None or attempt == RETRIES:
                    raise RemoteError(_http_error(exc, self.host) + (self._hint if exc.code in (401, 403) else "")) from None
                time.sleep(wait)
            except urllib.error.URLError as exc:
                raise RemoteError(network_error(exc.reason, self.host, self._timeout)) from None
            except (OSError, ValueError, http.client.HTTPException) as exc:  # timeouts, resets, bad URLs or answers
                raise RemoteError(network_error(exc, self.host, self._timeout)) from None
        raise AssertionError("unreachable")


def open_within(opener, request, timeout):
    """`opener.open(request)`, its answer's status line and headers (redirects' too) within
    twice `timeout` seconds in all: the socket timeout alone lets a server send a header byte
    every few seconds for ever.  An answer cut off is an error, never an empty answer."""
    thread = threading.get_ident()
    timer = threading.Timer(2 * timeout, _Connections.cut_all, [thread])
    timer.daemon = True
    timer.start()
    try:
        answer = opener.open(request, timeout=timeout)
    except BaseException:
        if _Connections.was_cut(thread):
            raise RemoteError(f"{host_of(request.full_url)} did not send its answer within {2 * timeout:g} s") from None
        raise
    finally:
        timer.cancel()
    if _Connections.was_cut(thread):
        answer.close()
        raise RemoteError(f"{host_of(request.full_url)} did not send its answer within {2 * timeout:g} s")
    return answer


class _Connections:
    """The sockets each thread's open_within has connected, so that its timer can cut them."""

    _lock = threading.Lock()
    _open = {}  # thread id -> [socket]
    _cut = set()  # threads whose sockets were cut

    @classmethod
    def add(cls, sock):
        with cls._lock:
            cls._open.setdefault(threading.get_ident(), []).append(sock)

    @classmethod
    def was_cut(cls, thread):
        """Whether `thread`'s sockets were cut (and forget them: the next open starts afresh)."""
        with cls._lock:
            cls._open.pop(thread, None)
            if thread in cls._cut:
                cls._cut.discard(thread)
                return True
            return False

    @classmethod
    def cut_all(cls, thread):
        with cls._lock:
            sockets = cls._open.pop(thread, [])
            cls._cut.add(thread)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _HTTPConnection(http.client.HTTPConnection):
    def connect(self):
        super().connect()
        _Connections.add(self.sock)


class _HTTPSConnection(http.client.HTTPSConnection):
    def connect(self):
        super().connect()
        _Connections.add(self.sock)


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, request):
        return self.do_open(_HTTPConnection, request)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, context):
        super().__init__(context=context)
        self._ssl_context = context

    def https_open(self, request):
        return self.do_open(_HTTPSConnection, request, context=self._ssl_context)


def read_body(answer, limit, host, timeout=None):
    """An answer's whole body, if it is at most `limit` bytes (else None), within the deadline
    a file's reads have."""
    pace, parts, total = _Pace(TIMEOUT if timeout is None else timeout, host), [], 0
    while True:
        chunk = _read_some(answer, min(READ_CHUNK, limit - total + 1))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        total += len(chunk)
        if total > limit:
            return None
        pace.check(total)


class _Pace:
    """An answer's body must come at MIN_RATE on average once `timeout` has passed: after t
    seconds, at least (t - timeout) * MIN_RATE bytes.  (read1 hands back whatever has come, so
    this is checked at every byte a trickling server sends.)"""

    def __init__(self, timeout, host):
        self.start, self.timeout, self.host = time.monotonic(), timeout, host

    def check(self, received):
        if time.monotonic() - self.start > self.timeout + received / MIN_RATE:
            raise RemoteError(f"{self.host} sends too slowly (less than {MIN_RATE >> 10} KiB/s)")


def _spool_for(size, host):
    """A temporary file for `size` bytes, if the disk has room for them."""
    import shutil

    folder = tempfile.gettempdir()
    if shutil.disk_usage(folder).free < size + (64 << 20):
        raise RemoteError(f"not enough free disk space in {folder} to read {size:,} bytes from {host}")
    return tempfile.TemporaryFile(prefix="pth-legacy-keys-")


class _Limited:
    """An answer read no further than its first `n` bytes (what a range asked for)."""

    def __init__(self, answer, n):
        self.answer, self.left = answer, n

    def read(self, size):
        data = _read_some(self.answer, min(size, self.left)) if self.left else b""
        self.left -= len(data)
        return data


def _read_some(answer, n):
    """Up to `n` bytes, whatever has come: read() would wait for all `n`, however slowly they
    come, and no deadline could be checked meanwhile."""
    return answer.read1(n) if hasattr(answer, "read1") else answer.read(n)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, kept on HTTP(S), never from HTTPS down to HTTP, at most MAX_REDIRECTS."""

    max_redirections = MAX_REDIRECTS

    def http_error_302(self, request, answer, code, message, headers):
        target = headers.get("Location") or headers.get("URI")
        if target:
            scheme = urllib.parse.urlsplit(urllib.parse.urljoin(request.full_url, target)).scheme.lower()
            if scheme not in ("http", "https"):
                raise RemoteError(f"{host_of(request.full_url)} redirects to a {scheme} URL, which is not HTTP")
            if request.full_url.lower().startswith("https:") and scheme == "http":
                raise RemoteError(f"{host_of(request.full_url)} redirects from HTTPS to plain HTTP")
            if has_userinfo(urllib.parse.urljoin(request.full_url, target)):
                raise RemoteError(f"{host_of(request.full_url)} redirects to a URL with a user name or password")
        return super().http_error_302(request, answer, code, message, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


# What the opener is made from: certificates and proxies, as the environment says at the time.
_SETTINGS = ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
             "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")


def opener():
    """urllib's opener with our redirects, for the certificates and proxies the environment names."""
    return _opener(*(os.environ.get(name) for name in _SETTINGS))


@functools.lru_cache(maxsize=4)
def _opener(*settings):
    """urllib's opener with our redirects; made once for each `settings` (_SETTINGS' values)."""
    context = ssl.create_default_context()  # verifies certificates; honours SSL_CERT_FILE
    return urllib.request.build_opener(_Redirects, _HTTPHandler, _HTTPSHandler(context))


def discard(error):
    """Read what is left of an error's short body, then close it: the server sees its answer
    taken, not a connection cut in the middle of it."""
    try:
        error.read(ERROR_BODY)
    except (OSError, ValueError):
        pass
    error.close()




def _retry_after(error):
    """Seconds to wait before asking again, for a 429 or 503 that says; None: do not retry."""
    if error.code not in (429, 503):
        return None
    value = (error.headers.get("Retry-After") or "").strip()
    if value.isdigit() and int(value) <= MAX_RETRY_AFTER:
        return int(value)
    return None


def _http_error(error, host):
    if 300 <= error.code < 400:
        return f"{host} redirects too many times, or in a loop"
    reason = " ".join(str(error.reason or "").split())[:80]
    if error.code in (429, 503):
        return f"{host} answered HTTP {error.code} {reason} (try again later)".rstrip()
    return f"{host} answered HTTP {error.code} {reason}".rstrip()


def network_error(reason, host, timeout):
    if isinstance(reason, RemoteError):
        return str(reason)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"{host} did not answer within {timeout:g} s"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS: the certificate of {host} is not trusted ({reason.verify_message})"
    if isinstance(reason, ssl.SSLError):
        return f"TLS with {host} failed ({reason.reason or reason})"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve {host}"
    if isinstance(reason, ConnectionRefusedError):
        return f"{host} refused the connection"
    if isinstance(reason, OSError) and reason.strerror:
        return f"cannot read from {host}: {reason.strerror}"
    if isinstance(reason, OSError):
        return f"{host} closed the connection without an answer"
    # Not the exception's text: http.client's quotes the URL, whose query may be a signature.
    return f"cannot read from {host}: a malformed URL or answer ({type(reason).__name__})"


def host_of(url):
    """host[:port] of `url`: what messages name (never its user name, password, path or query)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname or "?", parts.port
    except ValueError:
        return "an unreadable host"
    return f"{host}:{port}" if port else host


def origin_of(url):
    """(scheme, host, port) of `url`, the port spelled out; None for a URL that has none."""
    try:
        parts = urllib.parse.urlsplit(url)
        scheme, host, port = parts.scheme.lower(), (parts.hostname or "").rstrip("."), parts.port
    except ValueError:
        return None
    if scheme not in ("http", "https") or not host:
        return None
    return scheme, host, port or {"http": 80, "https": 443}[scheme]
