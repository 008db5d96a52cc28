"""Runs giftless or moto's S3 server under a request-logging WSGI middleware (server side of support.lfs_server).

Not imported by the tests: support.lfs_server runs it as a script with the servers' own virtual
environment's python (the one made from tests/support/lfs_servers.txt), so it uses only the standard
library, werkzeug and the server it starts:

    python lfs_server_wsgi.py {giftless|moto} HOST PORT_FILE REQUEST_LOG

It binds HOST on a free port (port 0), writes the port to PORT_FILE (atomically, once it listens) and
serves until SIGTERM. werkzeug's own access log goes to stderr. REQUEST_LOG gets two JSON lines per
request, written by the middleware: {"event": "start", "id": N, ...} before the application runs, and
{"event": "end", "id": N, "status": ..., "bytes": ...} once the response body has been sent (or the
client went away), so a reader can wait until no request is still in flight. `bytes` counts the
response body's bytes that the application produced. giftless reads its configuration from
GIFTLESS_CONFIG_FILE; LFS_TEST_SECRET, when set, is looked for in each request's headers and query
(the "secret_seen" field) so tests can tell whether a client sent the LFS credential to a host.
"""

import base64
import io
import itertools
import json
import os
import signal
import sys
import threading
import time
import urllib.parse

_MAX_PEEK = 1 << 20  # a batch request's body is read for its "operation" up to this size


class RequestLog:
    """WSGI middleware: a JSON line when a request starts and one when its response has been sent."""

    def __init__(self, app, path, secret=None):
        self.app = app
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the server's life
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.secret = secret or None

    def write(self, record):
        line = json.dumps(record, sort_keys=True) + "\n"
        with self.lock:
            self.file.write(line)
            self.file.flush()

    def __call__(self, environ, start_response):
        request_id = next(self.ids)
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items()
                   if key.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        authorization = headers.get("authorization", "")
        record = {"event": "start", "id": request_id, "time": time.time(), "method": method, "path": path,
                  "query": query, "host": headers.get("host", ""), "range": headers.get("range"),
                  "remote_addr": environ.get("REMOTE_ADDR"), "user_agent": headers.get("user-agent", ""),
                  "authorization_scheme": authorization.split(" ", 1)[0] if authorization else None,
                  "secret_seen": self._secret_in([query, *headers.values()]),
                  "request_bytes": int(environ.get("CONTENT_LENGTH") or 0)}
        if method == "POST" and path.endswith("/objects/batch") and record["request_bytes"] <= _MAX_PEEK:
            body = environ["wsgi.input"].read(record["request_bytes"])
            environ["wsgi.input"] = io.BytesIO(body)
            try:
                payload = json.loads(body)
                record["operation"] = payload.get("operation")
                record["oids"] = [obj.get("oid") for obj in payload.get("objects", [])]
            except (ValueError, AttributeError):
                record["operation"] = None
        self.write(record)
        state = {"status": None, "bytes": 0, "headers": {}}

        def logged_start_response(status, response_headers, exc_info=None):
            state["status"] = int(status.split(" ", 1)[0])
            state["headers"] = {name.lower(): value for name, value in response_headers}
            return start_response(status, response_headers, exc_info)

        def finish(error=None):
            self.write({"event": "end", "id": request_id, "time": time.time(), "status": state["status"],
                        "bytes": state["bytes"], "content_range": state["headers"].get("content-range"),
                        "content_length": state["headers"].get("content-length"), "error": error})

        try:
            body = self.app(environ, logged_start_response)
        except BaseException as error:
            finish(repr(error))
            raise
        return _Counted(body, state, finish)

    def _secret_in(self, values):
        """Whether the secret is in one of `values`, URL-decoded or in HTTP Basic credentials too."""
        if not self.secret:
            return False
        seen = list(values)
        seen += [urllib.parse.unquote_plus(value) for value in values]
        for value in values:
            scheme, _, credentials = value.partition(" ")
            if scheme.lower() == "basic":
                try:
                    seen.append(base64.b64decode(credentials.strip(), validate=True).decode("utf-8", "replace"))
                except ValueError:
                    pass
        return any(self.secret in value for value in seen)


class _Counted:
    """The response body, counting its bytes; `finish` runs once, when the server closes it."""

    def __init__(self, body, state, finish):
        self.body, self.state, self.finish = body, state, finish
        self.done = False

    def __iter__(self):
        try:
            for chunk in self.body:
                self.state["bytes"] += len(chunk)
                yield chunk
        except Exception as error:
            self.close(repr(error))
            raise

    def close(self, error=None):
        if self.done:
            return
        self.done = True
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.finish(error)


def giftless_app():
    from giftless.app import init_app

    return init_app()


def moto_app():
    from moto.server import DomainDispatcherApplication, create_backend_app

    return DomainDispatcherApplication(create_backend_app)


def main(argv):
    kind, host, port_file, log_path = argv
    from werkzeug.serving import make_server

    app = {"giftless": giftless_app, "moto": moto_app}[kind]()
    handler = None
    if kind == "moto":
        from moto.server import MotoRequestHandler as handler
    server = make_server(host, 0, RequestLog(app, log_path, os.environ.get("LFS_TEST_SECRET")),
                         threaded=True, request_handler=handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    with open(port_file + ".tmp", "w", encoding="ascii") as f:
        f.write(str(server.server_port))
    os.replace(port_file + ".tmp", port_file)
    sys.stderr.write(f"{kind} listening on http://{host}:{server.server_port}\n")
    sys.stderr.flush()
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
