"""A static HTTP server on loopback for the web page's tests: it serves a folder (web/dist) as
GitHub Pages would, with the MIME types a browser insists on (JavaScript modules, WebAssembly),
and no special headers (Pages cannot send COOP/COEP, so the page must not need them). It logs
every request, so a test can also count requests from the server's side."""

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# A browser refuses a module script or WebAssembly.instantiateStreaming served with the wrong type;
# mimetypes' answer depends on the machine's /etc/mime.types, so these are spelled out.
MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".zip": "application/zip",
    ".whl": "application/zip",
    ".tar": "application/x-tar",
    ".py": "text/x-python; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    "": "application/octet-stream",
}


class StaticServer:
    """Serve `root` on http://127.0.0.1:<free port>/ from a daemon thread; `log` holds
    (method, path) of every request, in order."""

    def __init__(self, root, host="127.0.0.1"):
        self.root = Path(root)
        self.log = []
        self._lock = threading.Lock()
        server = self

        class Handler(SimpleHTTPRequestHandler):
            extensions_map = MIME_TYPES

            def send_head(self):
                with server._lock:
                    server.log.append((self.command, self.path))
                return super().send_head()

            def end_headers(self):
                # the tests rebuild the page between runs: never let a cached copy answer
                self.send_header("Cache-Control", "no-store")
                super().end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((host, 0), partial(Handler, directory=str(self.root)))
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def origin(self):
        return f"http://{self.host}:{self.port}"

    def url(self, path="/"):
        return self.origin + "/" + path.lstrip("/")

    def requests(self):
        with self._lock:
            return list(self.log)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
