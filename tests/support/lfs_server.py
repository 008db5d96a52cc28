"""A real Git LFS server for the tests: giftless on 127.0.0.1, its objects in moto's S3 server on 127.0.0.2.

The fixtures (registered in tests/conftest.py):

- `lfs_server`: a session-wide `LfsServer` whose LFS endpoint lets anyone read and write. With
  `@pytest.mark.parametrize("lfs_server", ["token"], indirect=True)` it is the one that needs a token.
- `lfs_server_with_token`: a session-wide `LfsServer` whose LFS endpoint answers 403 to a request without
  the credential `LfsServer.token` (send it as HTTP Basic `_jwt:<token>`, see `basic_auth`, or as
  `Authorization: Bearer <token>`). Its storage is the same moto server: presigned URLs need no token.
- `lfs_servers`: the session's `LfsServers`, which starts the above on first use and stops them at the end.

Both LFS servers hand out download hrefs that are presigned S3 URLs on ANOTHER host (127.0.0.2:port),
as GitHub's and the Hugging Face Hub's LFS do, and moto answers a `Range` GET on them with 206 and
Content-Range. Every request either server sees is logged by a WSGI middleware (support/lfs_server_wsgi.py)
as JSON lines; `LfsServer.counts()` reads those, so a test counts requests from the servers' side:

    repo = lfs_server.make_lfs_repository(tmp_path / "repo", {"model.pth": data})  # pushed for real
    ...  # the code under test reads repo.objects["model.pth"] through repo.lfs_url
    counts = lfs_server.counts()
    assert counts.batch == 1 and counts.ranged_gets == 1 and counts.ranged_bytes == [4096]

The servers run in their own virtual environment, made on first use from tests/support/lfs_servers.txt
in ~/.cache/pth-legacy-keys-test-servers/ (or $XDG_CACHE_HOME's), under a lock so that two test
processes can start at once. Without git-lfs, or if the servers cannot be installed or started, the
tests that use these fixtures fail under CI=true and are skipped (saying why) elsewhere.
"""

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.git import git
from support.interpreters import find_python

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "lfs_servers.txt"
SERVER_SCRIPT = HERE / "lfs_server_wsgi.py"
LFS_HOST = "127.0.0.1"
STORAGE_HOST = "127.0.0.2"  # another host than the LFS endpoint's, as a CDN or a bucket is
BUCKET = "lfs-objects"
ORGANIZATION = "tests"
TOKEN_USER = "_jwt"  # giftless takes a JWT as the password of this HTTP Basic user, or as a Bearer token
MODES = ("anonymous", "token")
# giftless's boto3 puts this in its User-Agent (AWS_SDK_UA_APP_ID): its own HEADs of objects on the
# storage host are told apart from a client's requests by it
SERVER_UA_APP_ID = "giftless-lfs-test-server"

PORT_POLLS = 600  # readiness: this many polls of the port file and the port, POLL_SECONDS apart
POLL_SECONDS = 0.05
INSTALL_TIMEOUT = 900  # seconds for making the servers' virtual environment
IN_FLIGHT_POLLS = 200  # counts(): polls (POLL_SECONDS apart) for requests still being answered

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class LfsServerUnavailable(Exception):
    """git-lfs is missing, or the servers could not be installed or started."""


def unavailable(reason):
    """Fail under CI=true (CI must not pass by skipping), skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"LFS test server unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"LFS test server unavailable: {reason}")


# ---------------------------------------------------------------- the servers' virtual environment

SERVER_PYTHON = "3.11"  # the Python lfs_servers.txt's pins were verified on (joserfc needs >= 3.11, PyYAML 6.0.1 < 3.13)


def server_python():
    """Python 3.11, to make the servers' venv with whatever Python runs the tests: this one,
    one on PATH, or the one `uv python find` knows."""
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    found = find_python(SERVER_PYTHON)  # its real path, not a shim's: one cache key for it
    if found is None:
        raise LfsServerUnavailable(f"the LFS test servers need Python {SERVER_PYTHON}, and none was found "
                                   "(on PATH, by `uv python find`, or by pyenv)")
    return found


def cache_root():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pth-legacy-keys-test-servers"


def server_venv():
    """The servers' virtual environment, made once per (requirements, interpreter) under a lock.

    Returns its python. A venv is only used once its `.ready` marker exists; a half-made one (a run
    killed while installing) is removed and made again.
    """
    try:
        import fcntl
    except ImportError:
        raise LfsServerUnavailable("the servers' venv lock needs fcntl (POSIX)") from None
    python = server_python()
    version = subprocess.run([python, "-c", "import sys; print(sys.implementation.name, sys.version)"],
                             capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(REQUIREMENTS.read_bytes() + version.encode()).hexdigest()[:16]
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / key
    venv_python = venv / "bin" / "python"
    ready = venv / ".ready"
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other process, if any, finishes its install first
        if ready.exists():
            return venv_python
        shutil.rmtree(venv, ignore_errors=True)
        log = root / f"{key}.install.log"
        with open(log, "w") as out:
            steps = [[python, "-m", "venv", str(venv)],
                     [str(venv_python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                      "--only-binary", ":all:", "-r", str(REQUIREMENTS)]]
            for step in steps:
                out.write(f"$ {' '.join(step)}\n")
                out.flush()
                try:
                    code = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          timeout=INSTALL_TIMEOUT, check=False).returncode
                except subprocess.TimeoutExpired:
                    code = "timeout"
                if code != 0:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise LfsServerUnavailable(f"making the servers' venv failed ({code}); {log}:\n{tail}")
        ready.write_text(REQUIREMENTS.read_text())
        return venv_python


# ---------------------------------------------------------------- processes

class ServerProcess:
    """One server (giftless or moto) run by lfs_server_wsgi.py, with its logs in `folder`."""

    def __init__(self, python, kind, name, host, folder, env):
        self.kind, self.name, self.host = kind, name, host
        self.port_file = folder / f"{name}.port"
        self.request_log = folder / f"{name}.requests.jsonl"
        self.stderr_log = folder / f"{name}.stderr.log"
        self.request_log.touch()
        with open(self.stderr_log, "w") as stderr:
            self.process = subprocess.Popen(
                [str(python), str(SERVER_SCRIPT), kind, host, str(self.port_file), str(self.request_log)],
                stdin=subprocess.DEVNULL, stdout=stderr, stderr=subprocess.STDOUT, env=env, cwd=folder)
        self.port = None

    def wait_until_ready(self):
        """Poll for the port file, then for the port to accept a connection: PORT_POLLS polls at most."""
        for _ in range(PORT_POLLS):
            if self.process.poll() is not None:
                raise LfsServerUnavailable(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.port is None and self.port_file.exists():
                self.port = int(self.port_file.read_text())
            if self.port is not None:
                with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1):
                    return self
            time.sleep(POLL_SECONDS)
        raise LfsServerUnavailable(f"{self.name} did not listen within {PORT_POLLS * POLL_SECONDS:.0f} s:\n"
                                   f"{self.log_tail()}")

    def log_tail(self, size=3000):
        return self.stderr_log.read_text(errors="replace")[-size:] if self.stderr_log.exists() else ""

    def access_log(self):
        """The server's own (werkzeug's) access log and messages, colour codes taken out."""
        return _ANSI.sub("", self.stderr_log.read_text(errors="replace"))

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def read_requests(path, offset=0):
    """The requests logged in `path` from byte `offset` on: start and end records merged by id."""
    requests, pending = {}, set()
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    for line in data.split(b"\n")[:-1]:  # the part after the last newline is a line being written
        record = json.loads(line)
        if record.pop("event") == "start":
            requests[record["id"]] = record
            pending.add(record["id"])
        elif record["id"] in requests:
            record.pop("time")
            requests[record["id"]].update(record)
            pending.discard(record["id"])
    return [requests[key] for key in sorted(requests)], pending


# ---------------------------------------------------------------- what a test gets

@dataclass
class LfsCounts:
    """What the servers logged since the last reset, counted from their side.

    `batch`: POSTs to .../objects/batch (`batch_download` and `batch_upload` by their "operation");
    `batch_refused`: those answered 401 or 403; `lfs_requests`: every request to the LFS endpoint.
    `storage_gets`: GETs of an object on the storage host, `ranged_gets` those with a Range header;
    `get_bytes` / `ranged_bytes`: the body bytes served for each (in order: an error's body too); `storage_puts`: uploads.
    `storage_requests_with_authorization`: storage requests with an Authorization header (presigned
    URLs need none); `secret_sent_to_storage`: storage requests carrying the LFS token anywhere (header
    or query): a client must send it to the LFS host only; `secret_sent_to_lfs`: LFS requests with it.
    All storage figures leave out the LFS server's own calls to the storage (giftless HEADs an object
    before it answers a download batch): those are `server_storage_requests`.
    """

    batch: int = 0
    batch_download: int = 0
    batch_upload: int = 0
    batch_refused: int = 0
    lfs_requests: int = 0
    storage_gets: int = 0
    ranged_gets: int = 0
    storage_puts: int = 0
    get_bytes: list = field(default_factory=list)
    ranged_bytes: list = field(default_factory=list)
    ranges: list = field(default_factory=list)  # the Range headers of the ranged GETs
    ranged_statuses: list = field(default_factory=list)  # their answers' status codes (206, 416, ...)
    storage_requests_with_authorization: int = 0
    secret_sent_to_storage: int = 0
    secret_sent_to_lfs: int = 0
    server_storage_requests: int = 0


@dataclass
class LfsObject:
    oid: str
    size: int


@dataclass
class LfsRepository:
    """A repository made by `make_lfs_repository`: its work tree, its bare remote, and what is on the server."""

    path: Path
    remote: Path
    lfs_url: str  # the repository's LFS endpoint; POST {lfs_url}/objects/batch
    objects: dict  # file name -> LfsObject


class LfsServer:
    """One giftless endpoint (anonymous or token-protected) and the shared storage server."""

    def __init__(self, servers, giftless, mode, token):
        self._servers = servers
        self._giftless = giftless
        self.mode = mode
        self.requires_token = mode == "token"
        self.token = token if self.requires_token else None
        self.lfs_host, self.lfs_port = giftless.host, giftless.port
        self.endpoint = f"http://{self.lfs_host}:{self.lfs_port}"  # the LFS server's base URL
        self.storage_host, self.storage_port = servers.moto.host, servers.moto.port
        self.storage_url = f"http://{self.storage_host}:{self.storage_port}"
        self.bucket = BUCKET
        self._offsets = (0, 0)
        self._repositories = 0

    # credentials ----------------------------------------------------------
    @property
    def basic_auth(self):
        """(user, password) for HTTP Basic, or None when no credential is required."""
        return (TOKEN_USER, self.token) if self.token else None

    def auth_headers(self):
        """{"Authorization": "Basic ..."} for the LFS endpoint, or {} when no credential is required."""
        if not self.token:
            return {}
        return {"Authorization": "Basic " + base64.b64encode(f"{TOKEN_USER}:{self.token}".encode()).decode()}

    def lfs_url(self, repository):
        """The LFS endpoint of `repository` (the Batch API is at lfs_url(...) + "/objects/batch")."""
        return f"{self.endpoint}/{ORGANIZATION}/{repository}.git/info/lfs"

    # repositories -----------------------------------------------------------
    def make_lfs_repository(self, path, files, track="*.pth", keep_credential_helper=True):
        """Commit `files` ({name: bytes}) in a new repository at `path` with git-lfs tracking `track`,
        and `git push` it to a bare remote whose LFS server is this one, so the objects are on the server.

        The repository's local config has lfs.url set to its LFS endpoint and, when a token is
        required, a credential helper that gives `_jwt` / the token for the LFS host (only: asked for
        another host it answers nothing), and none of the user's helpers; with
        `keep_credential_helper=False` that helper is removed once the push is done.
        Returns an LfsRepository. The counts are reset afterwards: they start at zero for what follows.
        """
        path = Path(path)
        self._repositories += 1
        name = f"{path.name}-{self._repositories}-{os.getpid()}"
        remote = self._servers.folder / "remotes" / f"{self.mode}-{name}.git"
        remote.parent.mkdir(exist_ok=True)
        lfs_url = self.lfs_url(name)
        env = {"GIT_TERMINAL_PROMPT": "0", "GIT_LFS_SKIP_SMUDGE": "0"}
        git("init", "-q", "--bare", str(remote), cwd=remote.parent, env=env)
        path.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "-b", "main", cwd=path, env=env)
        git("lfs", "install", "--local", cwd=path, env=env)
        git("config", "lfs.url", lfs_url, cwd=path, env=env)
        git("config", "lfs.locksverify", "false", cwd=path, env=env)  # giftless has no locking API
        if self.token:
            git("config", f"lfs.{lfs_url}.access", "basic", cwd=path, env=env)
            git("config", "credential.helper", "", cwd=path, env=env)  # none of the user's helpers
            helper = (f"!f() {{ test \"$1\" = get || exit 0; case \"$(cat)\" in *host={self.lfs_host}:{self.lfs_port}*) "
                      f"printf 'username={TOKEN_USER}\\npassword={self.token}\\n';; esac; }}; f")
            git("config", "--add", "credential.helper", helper, cwd=path, env=env)
        git("remote", "add", "origin", str(remote), cwd=path, env=env)
        (path / ".gitattributes").write_text(f"{track} filter=lfs diff=lfs merge=lfs -text\n")
        for file_name, data in files.items():
            target = path / file_name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        git("add", "-A", cwd=path, env=env)
        git("commit", "-q", "-m", "LFS files", cwd=path, env=env)
        git("push", "-q", "origin", "main", cwd=path, env=env)
        if self.token and not keep_credential_helper:
            git("config", "--unset-all", "credential.helper", cwd=path, env=env)
        objects = {}
        for file_name, data in files.items():
            pointer = git("show", f"HEAD:{file_name}", cwd=path, env=env).stdout
            if pointer.startswith("version https://git-lfs.github.com/spec/v1"):
                oid = re.search(r"^oid sha256:([0-9a-f]{64})$", pointer, re.MULTILINE).group(1)
                assert oid == hashlib.sha256(data).hexdigest()
                objects[file_name] = LfsObject(oid, len(data))
        self.reset_counts()
        return LfsRepository(path, remote, lfs_url, objects)

    # counts -----------------------------------------------------------------
    def reset_counts(self):
        """Count from now on (waits for requests still being answered, so they are not counted later)."""
        self._wait_idle()
        self._offsets = (self._giftless.request_log.stat().st_size, self._servers.moto.request_log.stat().st_size)

    def requests(self):
        """(LFS requests, storage requests) since the last reset: the middleware's records, as dicts."""
        self._wait_idle()
        lfs, _ = read_requests(self._giftless.request_log, self._offsets[0])
        storage, _ = read_requests(self._servers.moto.request_log, self._offsets[1])
        return lfs, storage

    def counts(self):
        """LfsCounts since the last reset, once no request on either server is still being answered."""
        lfs, storage = self.requests()
        counts = LfsCounts(lfs_requests=len(lfs))
        for request in lfs:
            counts.secret_sent_to_lfs += request["secret_seen"]
            if request["method"] == "POST" and request["path"].endswith("/objects/batch"):
                counts.batch += 1
                counts.batch_download += request.get("operation") == "download"
                counts.batch_upload += request.get("operation") == "upload"
                counts.batch_refused += request.get("status") in (401, 403)
        for request in storage:
            if f"app/{SERVER_UA_APP_ID}" in request.get("user_agent", ""):
                counts.server_storage_requests += 1
                continue
            object_request = request["path"].strip("/").count("/") >= 1  # /bucket/key, not /bucket
            counts.storage_requests_with_authorization += request["authorization_scheme"] is not None
            counts.secret_sent_to_storage += request["secret_seen"]
            if request["method"] == "GET" and object_request:
                counts.storage_gets += 1
                counts.get_bytes.append(request.get("bytes"))
                if request["range"] is not None:
                    counts.ranged_gets += 1
                    counts.ranged_bytes.append(request.get("bytes"))
                    counts.ranges.append(request["range"])
                    counts.ranged_statuses.append(request.get("status"))
            elif request["method"] == "PUT" and object_request:
                counts.storage_puts += 1
        return counts

    def access_logs(self):
        """(giftless's, moto's) own access logs, as text."""
        return self._giftless.access_log(), self._servers.moto.access_log()

    def _wait_idle(self):
        for _ in range(IN_FLIGHT_POLLS):
            pending = read_requests(self._giftless.request_log)[1] | read_requests(self._servers.moto.request_log)[1]
            if not pending:
                return
            time.sleep(POLL_SECONDS)
        raise AssertionError(f"requests still being answered after {IN_FLIGHT_POLLS * POLL_SECONDS:.0f} s")


def make_token(secret, subject="pth-legacy-keys-tests", scopes=("obj:*",), lifetime=24 * 3600):
    """An HS256 JWT (made with the standard library) that giftless's JWT provider accepts."""
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({"sub": subject, "scopes": list(scopes), "exp": int(time.time()) + lifetime}).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


class LfsServers:
    """Starts moto once and a giftless per mode on first use; `close()` stops them and removes their files."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="pth-legacy-keys-lfs-"))
        self.secret = base64.urlsafe_b64encode(os.urandom(24)).decode()  # the user tokens' signing key
        self.token = make_token(self.secret)
        self.moto = None
        self.python = None
        self.error = None
        self._servers = {}
        self._processes = []
        self.start_seconds = {}

    def env(self):
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("AWS_", "GIFTLESS_", "MOTO_", "PYTHON", "VIRTUAL_ENV"))}
        env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
                    "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
                    "NO_PROXY": "127.0.0.1,127.0.0.2,localhost", "no_proxy": "127.0.0.1,127.0.0.2,localhost",
                    "LFS_TEST_SECRET": self.token, "PYTHONUNBUFFERED": "1"})
        return env

    def server(self, mode):
        """The LfsServer for `mode` ("anonymous" or "token"), started on first use."""
        assert mode in MODES, mode
        if self.error is not None:
            raise LfsServerUnavailable(self.error)
        try:
            if mode not in self._servers:
                self._servers[mode] = self._start(mode)
        except LfsServerUnavailable as error:
            self.error = str(error)
            raise
        return self._servers[mode]

    def _start(self, mode):
        check_git_lfs()
        started = time.monotonic()
        if self.python is None:
            self.python = server_venv()
            self.start_seconds["venv"] = time.monotonic() - started
        if self.moto is None:
            self.moto = self._spawn("moto", "moto", STORAGE_HOST, self.env())
            self._create_bucket()
        config = self.folder / f"giftless-{mode}.yaml"
        config.write_text(json.dumps(self._giftless_config(mode), indent=1))  # JSON is YAML
        env = {**self.env(), "GIFTLESS_CONFIG_FILE": str(config), "AWS_SDK_UA_APP_ID": SERVER_UA_APP_ID}
        giftless = self._spawn("giftless", f"giftless-{mode}", LFS_HOST, env)
        self.start_seconds[mode] = time.monotonic() - started
        return LfsServer(self, giftless, mode, self.token)

    def _spawn(self, kind, name, host, env):
        process = ServerProcess(self.python, kind, name, host, self.folder, env)
        self._processes.append(process)
        return process.wait_until_ready()

    def _create_bucket(self):
        request = urllib.request.Request(f"http://{STORAGE_HOST}:{self.moto.port}/{BUCKET}", method="PUT")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=30) as response:
                response.read()
        except (OSError, urllib.error.HTTPError) as error:
            raise LfsServerUnavailable(f"creating the bucket failed: {error}\n{self.moto.log_tail()}") from None

    def _giftless_config(self, mode):
        if mode == "token":
            providers = [{"factory": "giftless.auth.jwt:factory",
                          "options": {"algorithm": "HS256", "private_key": self.secret}}]
        else:
            providers = ["giftless.auth.allow_anon:read_write"]
        return {
            "LEGACY_ENDPOINTS": False,
            "AUTH_PROVIDERS": providers,
            "TRANSFER_ADAPTERS": {"basic": {
                "factory": "giftless.transfer.basic_external:factory",
                "options": {"storage_class": "giftless.storage.amazon_s3:AmazonS3Storage",
                            "storage_options": {"bucket_name": BUCKET,
                                                "endpoint": f"http://{STORAGE_HOST}:{self.moto.port}"},
                            "action_lifetime": 3600}}},
            # signs the verify action's header: a key of its own, not the users' tokens' one
            "PRE_AUTHORIZED_ACTION_PROVIDER": {
                "factory": "giftless.auth.jwt:factory",
                "options": {"algorithm": "HS256", "private_key": base64.b64encode(os.urandom(24)).decode(),
                            "default_lifetime": 600, "key_id": "giftless-internal-jwt-key"}},
        }

    def close(self):
        for process in reversed(self._processes):
            process.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def check_git_lfs():
    try:
        result = subprocess.run(["git", "lfs", "version"], capture_output=True, text=True, timeout=60,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise LfsServerUnavailable(f"git lfs version: {error}") from None
    if result.returncode != 0:
        raise LfsServerUnavailable("git-lfs is not installed (`git lfs version` failed; apt-get install git-lfs): "
                                   + (result.stderr or result.stdout).strip().splitlines()[0])


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def lfs_servers():
    """The session's LfsServers: starts servers on first use, stops them and removes their files at the end."""
    servers = LfsServers()
    try:
        yield servers
    finally:
        servers.close()


def _server(servers, mode):
    try:
        return servers.server(mode)
    except LfsServerUnavailable as error:
        unavailable(str(error))


@pytest.fixture(scope="session")
def lfs_server(request, lfs_servers):
    """An LfsServer; anonymous read-write unless parametrized indirectly with "token"."""
    return _server(lfs_servers, getattr(request, "param", "anonymous"))


@pytest.fixture(scope="session")
def lfs_server_with_token(lfs_servers):
    """An LfsServer whose LFS endpoint refuses (403) requests without `token`."""
    return _server(lfs_servers, "token")
