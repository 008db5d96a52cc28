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
import os
import re
import socket
import ssl
import tempfile
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
ERROR_BODY = 64 << 10  # bytes of an error's body read (and dropped) before closing it
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
UNSATISFIABLE = re.compile(r"bytes \*/(\d+)")
URL_TOKEN_VARIABLE = "PTH_LEGACY_KEYS_URL_TOKEN"


class RemoteError(CheckpointError):
    """A remote file could not be read: HTTP, TLS or the network said no."""


def url_source(url):
    """An HttpSource for a URL given as a PATH, with the token in PTH_LEGACY_KEYS_URL_TOKEN
    (if set) as a Bearer token for that URL's host."""
    token = os.environ.get(URL_TOKEN_VARIABLE)
    return HttpSource(url, {"Authorization": f"Bearer {token}"} if token else ())


class HttpSource:
    """The resource at `url`, as a byte source (a context manager).

    `headers` are sent with every request to `url`'s host and to no other; `size`, when the
    caller knows it (a Git LFS pointer's), must be the resource's.  `requests`, `received`
    and `streamed` say what reading it cost.
    """

    def __init__(self, url, headers=(), size=None, timeout=None):
        self.url = url
        self.host = host_of(url)
        self.requests = 0
        self.received = 0
        self.streamed = False
        self._headers = dict(headers)
        self._timeout = TIMEOUT if timeout is None else timeout
        self._opener = opener()
        self._blocks = {}
        self._spool = None
        self._version = None  # the first answer's ETag or Last-Modified
        self._versioned = False
        self.size = None
        self._fetch(0, BLOCK)  # learns the size
        if size is not None and size != self.size:
            raise RemoteError(f"{self.host} serves {self.size:,} bytes where {size:,} were expected")

    def read(self, offset, n):
        """Exactly `n` bytes from `offset`."""
        if offset < 0 or n < 0 or offset + n > self.size:
            raise CheckpointError("truncated: the file ends before a record it lists")
        if self._spool is not None:
            return os.pread(self._spool.fileno(), n, offset) if n else b""
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

        digest, total = hashlib.sha256(), 0
        with self._get("bytes=0-") as answer:
            self._note_version(answer)
            if answer.status not in (200, 206):
                raise RemoteError(f"{self.host} answered HTTP {answer.status} to a download")
            while total < self.size:
                chunk = answer.read(min(STREAM_CHUNK, self.size - total))
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                total += len(chunk)
        self.received += total
        if total != self.size:
            raise RemoteError(f"{self.host} ended the download after {total:,} of {self.size:,} bytes")
        return digest.hexdigest()

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
        expected_last = min(end, self.size) - 1
        if total != self.size or first != start or last != expected_last:
            raise RemoteError(f"{self.host} answered bytes {first}-{last}/{total} where "
                              f"{start}-{expected_last}/{self.size} were asked for")
        data = _read_exactly(answer, last - first + 1, self.host)  # never more, whatever follows
        self.received += len(data)
        for at in range(0, len(data), BLOCK):
            self._blocks[(start + at) // BLOCK] = data[at:at + BLOCK]

    def _keep_whole(self, answer):
        """The server ignored `Range`: keep its whole body in a temporary file."""
        length = answer.headers.get("Content-Length")
        expected = self.size if self.size is not None else (int(length) if length and length.isdigit() else None)
        spool = tempfile.TemporaryFile(prefix="pth-legacy-keys-")
        try:
            while True:
                chunk = answer.read(STREAM_CHUNK)
                if not chunk:
                    break
                spool.write(chunk)
                self.received += len(chunk)
                if expected is not None and spool.tell() > expected:
                    raise RemoteError(f"{self.host} sent more bytes than the file holds")
            spool.flush()
            if expected is not None and spool.tell() != expected:
                raise RemoteError(f"{self.host} sent {spool.tell():,} bytes where {expected:,} were expected")
        except BaseException:
            spool.close()
            raise
        self.size, self._spool, self.streamed = spool.tell(), spool, True
        self._blocks.clear()

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
                return self._opener.open(request, timeout=self._timeout)
            except urllib.error.HTTPError as exc:
                if exc.code == 416:
                    return exc  # an empty file has no byte 0: _fetch reads its size from the answer
                wait = _retry_after(exc)
                discard(exc)
                if wait is None or attempt == RETRIES:
                    raise RemoteError(_http_error(exc, self.host)) from None
                time.sleep(wait)
            except urllib.error.URLError as exc:
                raise RemoteError(network_error(exc.reason, self.host, self._timeout)) from None
            except (OSError, ValueError) as exc:  # timeouts, resets, malformed answers
                raise RemoteError(network_error(exc, self.host, self._timeout)) from None
        raise AssertionError("unreachable")


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
    return urllib.request.build_opener(_Redirects, urllib.request.HTTPSHandler(context=context))


def discard(error):
    """Read what is left of an error's short body, then close it: the server sees its answer
    taken, not a connection cut in the middle of it."""
    try:
        error.read(ERROR_BODY)
    except (OSError, ValueError):
        pass
    error.close()


def _read_exactly(answer, n, host):
    data = answer.read(n)
    if len(data) != n:
        raise RemoteError(f"{host} ended its answer after {len(data):,} of {n:,} bytes")
    return data


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
    text = " ".join(str(reason).split())[:120]
    return f"cannot read from {host}: {text or type(reason).__name__}"


def host_of(url):
    """host[:port] of `url`: what messages name (never its path or query)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host
