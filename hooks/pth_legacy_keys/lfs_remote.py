"""Git LFS objects read where they are stored: the Batch API, then HTTP ranges (http_source).

A checkout without LFS content leaves pointers (lfs_pointer.py) where checkpoints should be.
With `--lfs-pointers remote`, the pointers are gathered, the repository's LFS server is asked
where each object can be downloaded (one Batch API request for up to 100 objects), and each
object is then read by ranges like any URL: a check costs a few blocks of it, not the object.

The endpoint is found as git-lfs finds it (docs/api/server-discovery.md): `lfs.url`, then
`remote.<remote>.lfsurl`, in git's configuration and then in `.lfsconfig`, else the remote's
URL with `.git/info/lfs` (an SSH remote, `git@host:owner/repo`, maps to its HTTPS form; no ssh
is run).  Credentials: PTH_LEGACY_KEYS_LFS_TOKEN (HTTP Basic, user `x-access-token`, as
actions/checkout sends a token), else, if the server answers 401, `git credential fill`, never
interactive.  Credentials of either kind go only to the LFS endpoint of the
repository we run in, as its own git configuration names it: a pull
request can name any server in a `.lfsconfig`, or in `.gitmodules` for a submodule's remote,
and must not receive the job's token that way.  An object from any other server is read whole
and must have the sha256 its pointer names: that server could serve other bytes to ranges
than to git-lfs.  A download href gets exactly the headers the server gave for it.
"""

import base64
import functools
import http.client
import json
import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request

from .http_source import (TIMEOUT, RemoteError, discard, has_userinfo, host_of, network_error, open_within, opener,
                          origin_of, read_body, without_userinfo)
from .lfs_pointer import MAX_POINTER_BYTES, POINTER

BATCH_SIZE = 100  # objects per Batch API request, as git-lfs sends them
MAX_BATCH_ANSWER = 16 << 20  # bytes of JSON we read from one answer
TOKEN_VARIABLE = "PTH_LEGACY_KEYS_LFS_TOKEN"
MEDIA_TYPE = "application/vnd.git-lfs+json"
POINTER_FIELDS = re.compile(rb"oid sha256:([0-9a-f]{64})\nsize ([0-9]{1,20})\n")
SCP_LIKE = re.compile(r"(?:[^@/]+@)?([^:/]+):(?!//)(.+)")  # git@host:owner/repo.git


class Download:
    """Where one object can be read: `href` with exactly `header`; `size` bytes, `oid` its sha256."""

    __slots__ = ("oid", "size", "href", "header", "whole")

    def __init__(self, oid, size, href, header, whole=False):
        self.oid, self.size, self.href, self.header = oid, size, href, header
        self.whole = whole  # read whole and hashed: the server is not the repository's own

    def __reduce__(self):  # handed to worker processes
        return Download, (self.oid, self.size, self.href, self.header, self.whole)


def pointer_fields(data):
    """(oid, size) of the Git LFS pointer `data` (a whole file), or None if it is not one."""
    if len(data) > MAX_POINTER_BYTES or POINTER.fullmatch(data) is None:
        return None
    oid, size = POINTER_FIELDS.search(data).groups()
    return oid.decode(), int(size)


def locate(paths):
    """{real path: Download, or the reason (str) it cannot be read remotely} for each of
    `paths` that is a Git LFS pointer; other paths are left out."""
    pointers = {}  # real path -> (oid, size)
    for path in paths:
        fields = _read_pointer(path)
        if fields:
            pointers[os.path.realpath(path)] = fields
    found = {}
    by_endpoint = {}
    endpoints = {}  # folder -> (endpoint, top, trusted): a few git calls per folder, not per pointer
    for path, fields in pointers.items():
        folder = os.path.dirname(path)
        if folder not in endpoints:
            try:
                endpoint, top = endpoint_for(folder, with_top=True)
                endpoints[folder] = endpoint, top, _same_endpoint(endpoint) in trusted_endpoints(top)
            except (RemoteError, ValueError, http.client.HTTPException) as exc:
                endpoints[folder] = _reason(exc)
        endpoint = endpoints[folder]
        if isinstance(endpoint, str):
            found[path] = endpoint
            continue
        by_endpoint.setdefault(endpoint, {}).setdefault(fields, []).append(path)
    for (endpoint, top, trusted), objects in by_endpoint.items():
        client = _BatchClient(endpoint, trusted=trusted, folder=top)
        objects = list(objects.items())  # ((oid, size), [paths]): each object asked for once
        for start in range(0, len(objects), BATCH_SIZE):
            found.update(client.downloads(objects[start:start + BATCH_SIZE]))
    return found


def _reason(exc):
    return str(exc) if isinstance(exc, RemoteError) else f"a malformed LFS URL ({type(exc).__name__})"


@functools.lru_cache(maxsize=64)
def trusted_endpoints(start):
    """The LFS endpoints credentials may go to for a repository at `start`: those of the
    outermost repository around it (a submodule's remote comes from .gitmodules, a file of the
    work tree; the outermost one's configuration no file of the work tree can change), as git's
    own configuration names them (lfs.url, remote.<remote>.lfsurl, the remote's URL); never
    .lfsconfig.  The whole endpoint counts, not only its host: on a shared host (github.com)
    another repository's endpoint is another party's."""
    top = _git(start, "rev-parse", "--show-toplevel")
    while top:
        outer = _git(top, "rev-parse", "--show-superproject-working-tree")
        if not outer:
            break
        top = outer
    if top is None:
        return frozenset()
    remote = _remote_name(top)
    named = [_git(top, "config", "--get", key) for key in ("lfs.url", f"remote.{remote}.lfsurl")]
    url = _git(top, "config", "--get", f"remote.{remote}.url")
    if url:
        named.append(_derived(url))
    return frozenset(filter(None, (_same_endpoint(value) for value in named if value)))


def _same_endpoint(url):
    """What makes two spellings of an endpoint the same: its origin and its path."""
    origin = origin_of(url)
    if origin is None:
        return None
    path = urllib.parse.urlsplit(url).path.rstrip("/")
    return origin + (path,)


def _read_pointer(path):
    try:
        with open(path, "rb") as f:
            return pointer_fields(f.read(MAX_POINTER_BYTES + 1))
    except OSError:
        return None  # examined later, which says what is wrong with it


# -- the endpoint -----------------------------------------------------------------------


def endpoint_for(folder, with_top=False):
    """The LFS endpoint of the git repository `folder` is in, as git-lfs would use it; with
    `with_top`, (endpoint, the repository's top folder)."""
    top = _git(folder, "rev-parse", "--show-toplevel")
    if top is None:
        raise RemoteError("a Git LFS pointer outside a git repository: no LFS server to ask")
    remote = _remote_name(top)
    url = _git(top, "config", "--get", f"remote.{remote}.url")
    endpoint = _configured_endpoint(top, remote)
    if endpoint is None:
        if not url:
            raise RemoteError(f"no LFS endpoint: the repository has no remote '{remote}' and no lfs.url")
        endpoint = _http_endpoint(_derived(url), f"the remote '{remote}'")
    return (endpoint, top) if with_top else endpoint


def _configured_endpoint(top, remote):
    """lfs.url, then remote.<remote>.lfsurl, each from git's configuration and then .lfsconfig."""
    for key in ("lfs.url", f"remote.{remote}.lfsurl"):
        for where in ((), ("--file", os.path.join(top, ".lfsconfig"))):
            value = _git(top, "config", *where, "--get", key)
            if value:
                return _http_endpoint(value, f"{key} ({without_userinfo(value)})")
    return None


def _remote_name(top):
    """The remote git-lfs would take: the current branch's, the only one, or origin."""
    branch = _git(top, "symbolic-ref", "--quiet", "--short", "HEAD")
    tracked = branch and _git(top, "config", "--get", f"branch.{branch}.remote")
    if tracked:
        return tracked
    remotes = (_git(top, "remote") or "").split()
    return remotes[0] if len(remotes) == 1 else "origin"


def _derived(url):
    """The LFS endpoint git-lfs derives from a remote's URL."""
    scp = SCP_LIKE.fullmatch(url) if "://" not in url else None
    if scp:
        url = f"https://{scp.group(1)}/{scp.group(2).lstrip('/')}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("ssh", "git+ssh", "ssh+git", "git"):
        parts = parts._replace(scheme="https", netloc=parts.hostname or "")
    path = parts.path.rstrip("/")
    path = path if path.endswith(".git") else path + ".git"
    return urllib.parse.urlunsplit(parts._replace(path=path + "/info/lfs", query="", fragment=""))


def _http_endpoint(url, source):
    """`url` as an endpoint: HTTP(S), without the user name or password it may hold (a CI
    token in a remote's URL is git's business, not ours)."""
    if origin_of(url) is None:
        raise RemoteError(f"the LFS endpoint from {source} is not an HTTP(S) URL")
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])).rstrip("/")


def _git(folder, *arguments):
    try:
        done = subprocess.run(["git", *arguments], cwd=folder, capture_output=True, timeout=30,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout.decode("utf-8", "replace").strip()
    return text if done.returncode == 0 and text else None


# -- the Batch API ----------------------------------------------------------------------


class _BatchClient:
    """Batch API requests to one endpoint, with its credentials."""

    def __init__(self, endpoint, trusted, folder):
        self.endpoint = endpoint
        self.folder = folder  # the repository, whose credential helpers `git credential` asks
        self.host = host_of(endpoint)
        self.trusted = trusted  # the repository's own server: credentials may go there, ranges are believed
        token = os.environ.get(TOKEN_VARIABLE) if trusted else None
        self.authorization = _basic("x-access-token", token) if token else None
        self.asked_git = not trusted  # no credential of any kind for a server the work tree names

    def downloads(self, objects):
        """{path: Download or reason} for `objects`, [((oid, size), [paths])], in one request."""
        wanted = dict(objects)
        body = {"operation": "download", "transfers": ["basic"], "hash_algo": "sha256",
                "objects": [{"oid": oid, "size": size} for oid, size in wanted]}
        try:
            answer = self._post(body)
            objects = _objects(answer, self.host)
        except RemoteError as exc:
            return {path: str(exc) for paths in wanted.values() for path in paths}
        found = {}
        for (oid, size), paths in wanted.items():
            result = _download(objects.get(oid), oid, size, self.host, whole=not self.trusted)
            for path in paths:
                found[path] = result
        return found

    def _post(self, body):
        data = json.dumps(body).encode()
        while True:
            request = urllib.request.Request(self.endpoint + "/objects/batch", data=data, method="POST",
                                             headers={"Accept": MEDIA_TYPE, "Content-Type": MEDIA_TYPE})
            if self.authorization:
                request.add_unredirected_header("Authorization", self.authorization)
            try:
                with open_within(opener(), request, TIMEOUT) as answer:
                    raw = read_body(answer, MAX_BATCH_ANSWER, self.host)
            except urllib.error.HTTPError as exc:
                discard(exc)
                # giftless, like some servers, says 403 to a request without credentials
                if (exc.code == 401 or exc.code == 403 and not self.authorization) and not self.asked_git:
                    self.asked_git = True
                    self.authorization = _git_credential(self.endpoint, self.folder) or self.authorization
                    if self.authorization:
                        continue
                raise RemoteError(f"the LFS server {self.host} answered HTTP {exc.code}" + _hint(exc.code, self.trusted)) from None
            except urllib.error.URLError as exc:
                raise RemoteError(f"the LFS server: {network_error(exc.reason, self.host, TIMEOUT)}") from None
            except (OSError, ValueError, http.client.HTTPException) as exc:
                raise RemoteError(f"the LFS server: {network_error(exc, self.host, TIMEOUT)}") from None
            if raw is None:
                raise RemoteError(f"the LFS server {self.host} sent a batch answer over {MAX_BATCH_ANSWER >> 20} MiB")
            try:
                return json.loads(raw)
            except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the stack
                raise RemoteError(f"the LFS server {self.host} sent a batch answer that is not JSON") from None


def _hint(code, trusted):
    if code not in (401, 403):
        return ""
    if not trusted:
        return " (it is not the repository's own LFS server, so it gets no credentials)"
    return " (set PTH_LEGACY_KEYS_LFS_TOKEN, or a git credential for it)"


def _objects(answer, host):
    """{oid: object} from a batch answer, checked for the shape the API gives."""
    objects = answer.get("objects") if isinstance(answer, dict) else None
    if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
        raise RemoteError(f"the LFS server {host} sent a batch answer without a list of objects")
    if answer.get("transfer", "basic") != "basic":
        raise RemoteError(f"the LFS server {host} chose a transfer other than basic")
    return {o.get("oid"): o for o in objects if isinstance(o.get("oid"), str)}


def _download(found, oid, size, host, whole=False):
    """The Download for one object of a batch answer, or the reason there is none."""
    if found is None:
        return f"the LFS server {host} did not answer for object {oid[:12]}"
    error = found.get("error")
    if error is not None:
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        said = " ".join(str(message).split())[:100] if message else "no message"
        return f"the LFS server {host} has no object {oid[:12]} (error {code}: {said})"
    if found.get("size") != size:
        return f"the LFS server {host} describes object {oid[:12]} with another size than the pointer's"
    action = (found.get("actions") or {}).get("download") if isinstance(found.get("actions"), dict) else None
    href = action.get("href") if isinstance(action, dict) else None
    header = action.get("header", {}) if isinstance(action, dict) else None
    if not isinstance(href, str) or origin_of(href) is None or has_userinfo(href):
        return f"the LFS server {host} gave no HTTP(S) download for object {oid[:12]}"
    if not isinstance(header, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in header.items()):
        return f"the LFS server {host} gave a malformed header for object {oid[:12]}"
    if any(not _is_header_field(k) or any(c in v for c in "\r\n\0") for k, v in header.items()):
        return f"the LFS server {host} gave a malformed header for object {oid[:12]}"
    return Download(oid, size, href, dict(header), whole)


def _is_header_field(name):
    return bool(re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name))


def _basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _git_credential(endpoint, folder):
    """HTTP Basic from `git credential fill` for `endpoint`, as the repository at `folder` is
    configured, asked never interactively; None."""
    parts = urllib.parse.urlsplit(endpoint)
    query = f"protocol={parts.scheme}\nhost={parts.netloc}\npath={parts.path.lstrip('/')}\n\n"
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never", "GIT_ASKPASS": "",
           "SSH_ASKPASS": ""}
    try:
        done = subprocess.run(["git", "credential", "fill"], input=query.encode(), capture_output=True,
                              timeout=30, env=env, cwd=folder)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    fields = dict(line.split("=", 1) for line in done.stdout.decode("utf-8", "replace").splitlines() if "=" in line)
    if "password" not in fields:
        return None
    return _basic(fields.get("username", ""), fields["password"])
