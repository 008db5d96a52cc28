"""A real HTTP server on loopback for remote reads: it serves files by `Range` (or ignores
`Range`, as some servers do) and misbehaves on request, and logs what it was asked and what
it sent, so tests count requests and bytes from the server's side."""

import re
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class Route:
    """What the server does for one path."""

    data: bytes = b""
    ranges: bool = True  # honour Range (206); False: 200 and the whole body
    status: int = 0  # answer this status (with `headers`) instead of the file
    headers: dict = field(default_factory=dict)
    fail_times: int = -1  # with `status`: fail this many times, then serve the file (-1: always)
    redirect: str = ""  # answer 302 to this URL
    extra: bytes = b""  # bytes sent after what was asked for, beyond the Content-Range
    etags: list = field(default_factory=list)  # the ETag of each answer in turn (the file changing)
    answer: object = None  # for POST: answer(request body, log entry) -> (status, headers, body)
    barrier: object = None  # a threading.Barrier each GET waits at: proof that requests come at once
    endless: bool = False  # answer 200 with a body that never ends (no Content-Length)
    trickle: float = 0  # answer 206, one byte every `trickle` seconds
    on_get: object = None  # on_get(handler) runs before each GET is answered


@dataclass
class Logged:
    method: str
    path: str
    range: str
    status: int
    sent: int  # body bytes
    authorization: str
    headers: dict = field(default_factory=dict)
    body: bytes = b""  # a POST's


class Server:
    """A threading HTTP(S) server on `host`, serving `routes` ({path: Route})."""

    def __init__(self, host="127.0.0.1", certificate=None):
        self.routes = {}
        self.log = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's name)
                server._answer(self)

            def do_POST(self):  # noqa: N802
                server._answer_post(self)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if certificate is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*certificate)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path):
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests(self, path=None):
        return [entry for entry in self.log if path is None or entry.path == path]

    def _record(self, handler, status, sent, body=b""):
        with self._lock:
            self.log.append(Logged(handler.command, handler.path, handler.headers.get("Range", ""), status, sent,
                                   handler.headers.get("Authorization", ""), dict(handler.headers.items()), body))

    def _answer_post(self, handler):
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        route = self.routes.get(handler.path.split("?", 1)[0])
        if route is None or route.answer is None:
            return self._send(handler, 404, {}, b"not here")
        status, headers, answer = route.answer(body, handler.headers)
        return self._send(handler, status, headers, answer, request_body=body)

    def _answer(self, handler):
        route = self.routes.get(handler.path.split("?", 1)[0])
        if route is None:
            return self._send(handler, 404, {}, b"not here")
        if route.on_get is not None:
            route.on_get(handler)
        if route.endless or route.trickle:
            return self._stream_forever(handler, route)
        if route.barrier is not None:
            try:
                route.barrier.wait()
            except threading.BrokenBarrierError:
                return self._send(handler, 500, {}, b"not enough requests at once")
        if route.redirect:
            return self._send(handler, 302, {"Location": route.redirect}, b"")
        if route.status and route.fail_times != 0:
            route.fail_times -= 1
            return self._send(handler, route.status, route.headers, b"no")
        headers = {"ETag": route.etags.pop(0) if len(route.etags) > 1 else (route.etags or ['"v1"'])[0]}
        data = route.data
        asked = RANGE.fullmatch(handler.headers.get("Range", ""))
        if not route.ranges or not asked:
            return self._send(handler, 200, headers, data)
        start = int(asked.group(1))
        end = min(int(asked.group(2)) if asked.group(2) else len(data) - 1, len(data) - 1)
        if start >= len(data):
            return self._send(handler, 416, {"Content-Range": f"bytes */{len(data)}"}, b"")
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        body = data[start:end + 1]
        return self._send(handler, 206, headers, body, extra=route.extra)

    def _stream_forever(self, handler, route):
        """A body that never ends: 1 MiB chunks as fast as the client takes them, or one byte
        every `route.trickle` seconds (what a client's deadline must stop)."""
        import time

        self._record(handler, 200 if route.endless else 206, -1)
        handler.send_response(200 if route.endless else 206)
        if route.trickle:
            handler.send_header("Content-Range", f"bytes 0-65535/{1 << 20}")
            handler.send_header("Content-Length", "65536")
        handler.end_headers()
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                handler.wfile.write(chunk if route.endless else b"\0")
                handler.wfile.flush()
                if route.trickle:
                    time.sleep(route.trickle)
        except OSError:
            pass  # the client gave up: what it must do

    def _send(self, handler, status, headers, body, extra=b"", request_body=b""):
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body) + len(extra)))
        self._record(handler, status, len(body) + len(extra), request_body)  # before the client has the answer
        handler.end_headers()
        try:
            handler.wfile.write(body + extra)
        except OSError:
            pass  # the client stopped reading: it may, once it has what it asked for


class HeaderTrickle:
    """A server that answers with a status line and then one header byte at a time, for ever:
    in time for every socket timeout, never done."""

    def __init__(self, host="127.0.0.1", every=0.05):
        self.socket = socket.socket()
        self.socket.bind((host, 0))
        self.socket.listen(8)
        self.host, self.port = self.socket.getsockname()
        self.every = every
        self._stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path):
        return f"http://{self.host}:{self.port}{path}"

    def _serve(self):
        while not self._stopped.is_set():
            try:
                client, _ = self.socket.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(client,), daemon=True).start()

    def _trickle(self, client):
        try:
            client.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not self._stopped.wait(self.every):
                client.sendall(b"a")
        except OSError:
            pass
        finally:
            client.close()

    def close(self):
        self._stopped.set()
        self.socket.close()


class Stalling:
    """A server that accepts connections and never answers."""

    def __init__(self, host="127.0.0.1"):
        self.socket = socket.socket()
        self.socket.bind((host, 0))
        self.socket.listen(8)
        self.host, self.port = self.socket.getsockname()

    def url(self, path):
        return f"http://{self.host}:{self.port}{path}"

    def close(self):
        self.socket.close()


def self_signed_certificate(folder, host="127.0.0.1"):
    """(certificate, key) files for `host`, made by the openssl command."""
    certificate, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={host}", "-addext", f"subjectAltName=IP:{host}",
                    "-keyout", str(key), "-out", str(certificate)], check=True, capture_output=True)
    return str(certificate), str(key)
