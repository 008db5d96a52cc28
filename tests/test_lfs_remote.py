"""`--lfs-pointers remote`: a pointer's object found with the Batch API and read by ranges from
its storage, on two real HTTP servers on loopback (the LFS endpoint, and storage on another
host), which log what they were asked and what they sent.  Every verdict is compared with the
local file's; every bad answer is one line for that file."""

import base64
import hashlib
import json
import os
import subprocess

import pytest
from support.cli_run import LEGACY, PARAMETRIZED, run
from pth_legacy_keys import fix, scan
from pth_legacy_keys.inspection import inspect_file
from pth_legacy_keys.lfs_remote import _derived, endpoint_for, locate, pointer_fields
from support.git import git
from support.http_server import Route, Server

TOKEN = "gh-token-123"


def pointer(data):
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n").encode()


class Lfs:
    """An LFS endpoint (127.0.0.1) whose batch answers point at storage on 127.0.0.2."""

    def __init__(self):
        self.endpoint_server, self.storage = Server(), Server("127.0.0.2")
        self.objects = {}  # oid -> bytes
        self.batch_answer = None  # a function (request) -> (status, headers, body) replacing the real one
        self.endpoint_server.routes["/o/r.git/info/lfs/objects/batch"] = Route(answer=self._batch)

    @property
    def endpoint(self):
        return self.endpoint_server.url("/o/r.git/info/lfs")

    def add(self, data):
        oid = hashlib.sha256(data).hexdigest()
        self.objects[oid] = data
        self.storage.routes[f"/store/{oid}"] = Route(data=data)
        return oid

    def _batch(self, body, headers):
        request = json.loads(body)
        if self.batch_answer is not None:
            return self.batch_answer(request)
        objects = []
        for wanted in request["objects"]:
            data = self.objects.get(wanted["oid"])
            if data is None:
                objects.append({**wanted, "error": {"code": 404, "message": "Object does not exist"}})
            else:
                objects.append({**wanted, "actions": {"download": {
                    "href": self.storage.url(f"/store/{wanted['oid']}?X-Amz-Signature=secret"),
                    "header": {"X-Storage-Key": "for-storage"}}}})
        return 200, {"Content-Type": "application/vnd.git-lfs+json"}, json.dumps(
            {"transfer": "basic", "objects": objects}).encode()

    def batches(self):
        return [entry for entry in self.endpoint_server.log if entry.method == "POST"]

    def close(self):
        self.endpoint_server.close()
        self.storage.close()


@pytest.fixture
def lfs(monkeypatch):
    started = Lfs()
    monkeypatch.setenv("PTH_LEGACY_KEYS_LFS_TOKEN", TOKEN)
    yield started
    started.close()


@pytest.fixture
def repository(tmp_path, lfs):
    """A git repository whose remote's LFS endpoint is `lfs`'s, with pointers in it."""
    folder = tmp_path / "models"
    folder.mkdir()
    git("init", "-q", "-b", "main", cwd=folder)
    git("remote", "add", "origin", lfs.endpoint_server.url("/o/r"), cwd=folder)  # endpoint: /o/r.git/info/lfs
    return folder


def add_pointer(lfs, folder, name, source):
    data = source.read_bytes() if hasattr(source, "read_bytes") else source
    lfs.add(data)
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pointer(data))
    return path


def same_verdict(remote, local):
    assert (remote.status, remote.reason, remote.format) == (local.status, local.reason, local.format)
    assert [(r.old, r.new) for r in remote.renames] == [(r.old, r.new) for r in local.renames]


def test_a_pointers_object_gets_the_local_files_verdict(lfs, repository):
    for name, source in (("a.pth", PARAMETRIZED), ("b.pth", LEGACY)):
        path = add_pointer(lfs, repository, name, source)
        same_verdict(scan(path, lfs_pointers="remote"), scan(source))
    assert len(lfs.batches()) == 2


def test_the_token_goes_to_the_endpoint_and_the_storage_gets_only_its_header(lfs, repository):
    path = add_pointer(lfs, repository, "a.pth", PARAMETRIZED)
    assert scan(path, lfs_pointers="remote").status == "needs-fix"
    [batch] = lfs.batches()
    assert batch.authorization == "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert json.loads(batch.body) == {"operation": "download", "transfers": ["basic"], "hash_algo": "sha256",
                                      "objects": [{"oid": hashlib.sha256(PARAMETRIZED.read_bytes()).hexdigest(),
                                                   "size": PARAMETRIZED.stat().st_size}]}
    reads = lfs.storage.log
    assert reads and all(entry.authorization == "" and entry.headers.get("X-Storage-Key") == "for-storage"
                         for entry in reads)
    assert all(TOKEN not in json.dumps(entry.headers) for entry in reads)


def test_the_token_never_goes_to_an_endpoint_a_pull_request_names(lfs, repository):
    """A pull request can add a .lfsconfig naming any server: it gets the batch request (git-lfs
    would ask it too), never the job's token, which is for the remote's own host."""
    elsewhere = Server("127.0.0.2")
    try:
        elsewhere.routes["/steal/objects/batch"] = Route(answer=lambda body, headers: (404, {}, b""))
        (repository / ".lfsconfig").write_text(f"[lfs]\n\turl = {elsewhere.url('/steal')}\n")
        path = add_pointer(lfs, repository, "a.pth", PARAMETRIZED)
        report = scan(path, lfs_pointers="remote")
    finally:
        elsewhere.close()
    assert report.status == "not-checked" and "answered HTTP 404" in report.reason
    assert [entry.authorization for entry in elsewhere.log] == [""]
    assert TOKEN not in json.dumps([entry.headers for entry in elsewhere.log])


def test_one_batch_request_for_many_pointers_and_one_per_hundred(lfs, repository, capsys):
    data = PARAMETRIZED.read_bytes()
    paths = [add_pointer(lfs, repository, f"same{i}.pth", data) for i in range(3)]  # one object, three pointers
    for i in range(1, 101):
        variant = data + b"\0" * i  # bytes after the archive: refused, but another object all the same
        paths.append(add_pointer(lfs, repository, f"v{i:03}.pth", variant))
    code, out = run(capsys, "check", "--lfs-pointers", "remote", *paths)
    assert code == 2 and out.count(": 4 parametrized weight-norm keys") == 3
    assert out.count("refused: the zip end record is not the last 22 bytes") == 100
    objects = [len(json.loads(entry.body)["objects"]) for entry in lfs.batches()]
    assert objects == [100, 1]  # 101 objects, each asked for once, 100 per request


def test_objects_are_read_at_once_not_one_after_another(lfs, repository, capsys):
    """Each object's read waits at a barrier for three others: read one after another, they
    would break it (and the server would answer 500)."""
    import threading

    barrier = threading.Barrier(4, timeout=20)
    data = PARAMETRIZED.read_bytes()
    paths = [add_pointer(lfs, repository, f"m{i:02}.pth", data + b"\0" * i) for i in range(1, 9)]
    for route in lfs.storage.routes.values():
        route.barrier = barrier
    code, out = run(capsys, "check", "--lfs-pointers", "remote", *paths)
    assert out.count("refused: the zip end record is not the last 22 bytes") == 8, out
    assert [entry.status for entry in lfs.storage.log] == [206] * 8


def test_the_command_line_says_what_reading_cost(lfs, repository, capsys):
    path = add_pointer(lfs, repository, "a.pth", PARAMETRIZED)
    code, out = run(capsys, "check", "-v", "--lfs-pointers", "remote", path)
    assert code == 1 and out.startswith(f"{path}: 4 parametrized weight-norm keys")
    assert "read remotely: 1 request, 3,537 bytes" in out
    # The fix it names reads the object too (a plain `fix` would find only the pointer), and works.
    hint = out.splitlines()[-1]
    assert hint == f"to fix them: pth-legacy-keys fix --lfs-pointers remote -- {path}"
    code, fixed = run(capsys, *hint.removeprefix("to fix them: pth-legacy-keys ").split(" "))
    assert code == 0 and "fixed" in fixed
    code, out = run(capsys, "check", "--lfs-pointers", "remote", path)
    assert code == 0  # the fixed object is in the work tree now, where the pointer was
    copy_of_pointer = add_pointer(lfs, repository, "b.pth", PARAMETRIZED)
    code, out = run(capsys, "inspect", "--lfs-pointers", "remote", copy_of_pointer)
    assert code == 0 and "weight-norm" in out and "remote     1 request" in out
    assert inspect_file(copy_of_pointer, lfs_pointers="remote").status == "needs-fix"  # check's word for PARAMETRIZED


def test_without_remote_a_pointer_is_still_not_checked_and_nothing_is_asked(lfs, repository, capsys):
    path = add_pointer(lfs, repository, "a.pth", PARAMETRIZED)
    code, out = run(capsys, "check", path)
    assert code == 2 and "not checked: Git LFS pointer" in out
    assert lfs.endpoint_server.log == [] and lfs.storage.log == []


@pytest.mark.parametrize("answer, said", [
    (lambda request: (401, {}, b""), "answered HTTP 401 (set PTH_LEGACY_KEYS_LFS_TOKEN, or a git credential"),
    (lambda request: (403, {}, b""), "answered HTTP 403"),
    (lambda request: (404, {}, b""), "answered HTTP 404"),
    (lambda request: (500, {}, b""), "answered HTTP 500"),
    (lambda request: (200, {}, b"<html>"), "sent a batch answer that is not JSON"),
    (lambda request: (200, {}, b"[" + b" " * (17 << 20) + b"]"), "sent a batch answer over 16 MiB"),
    (lambda request: (200, {}, b'{"objects": 3}'), "sent a batch answer without a list of objects"),
    (lambda request: (200, {}, b"[" * 100_000), "sent a batch answer that is not JSON"),
    (lambda request: (200, {}, b'{"transfer": "ssh", "objects": []}'), "chose a transfer other than basic"),
    (lambda request: (200, {}, b'{"objects": []}'), "did not answer for object"),
    (lambda request: (200, {}, json.dumps({"objects": [{**request["objects"][0], "size": 1}]}).encode()),
     "with another size than the pointer's"),
    (lambda request: (200, {}, json.dumps({"objects": [{**request["objects"][0], "error": {
        "code": 404, "message": "Object\ndoes not exist"}}]}).encode()), "(error 404: Object does not exist)"),
    (lambda request: (200, {}, json.dumps({"objects": [{**request["objects"][0], "actions": {"download": {
        "href": "file:///etc/passwd"}}}]}).encode()), "gave no HTTP(S) download"),
    (lambda request: (200, {}, json.dumps({"objects": [{**request["objects"][0], "actions": {"download": {
        "href": "http://127.0.0.2:1/x", "header": {"X": "a\r\nInjected: 1"}}}}]}).encode()), "malformed header"),
])
def test_a_bad_batch_answer_is_one_line_for_that_pointer(lfs, repository, capsys, answer, said):
    lfs.batch_answer = answer
    path = add_pointer(lfs, repository, "a.pth", PARAMETRIZED)
    code, out = run(capsys, "check", "--lfs-pointers", "remote", path)
    assert code == 2
    [line] = [line for line in out.splitlines() if line.startswith(str(path))]
    assert line.startswith(f"{path}: not checked: Git LFS pointer whose object could not be found") and said in line
    assert TOKEN not in out


def test_storage_serving_another_size_is_one_line(lfs, repository):
    path = add_pointer(lfs, repository, "a.pth", PARAMETRIZED)
    [oid] = lfs.objects
    lfs.storage.routes[f"/store/{oid}"] = Route(data=PARAMETRIZED.read_bytes() + b"x")
    report = scan(path, lfs_pointers="remote")
    assert report.status == "not-checked" and "serves 3,538 bytes where 3,537 were expected" in report.reason


def test_fix_downloads_only_the_objects_that_need_it_and_puts_them_in_place(lfs, repository, capsys):
    needs = add_pointer(lfs, repository, "needs.pth", PARAMETRIZED)
    fine = add_pointer(lfs, repository, "fine.pth", LEGACY)
    os.chmod(needs, 0o640)
    code, out = run(capsys, "fix", "--lfs-pointers", "remote", needs, fine)
    assert code == 0, out
    assert fine.read_bytes() == pointer(LEGACY.read_bytes())  # untouched: nothing to fix
    assert scan(needs).status == "ok" and needs.read_bytes()[:4] == b"PK\x03\x04"
    assert oct(needs.stat().st_mode & 0o777) == oct(0o640)
    fixed_locally = repository / "local.pth"
    fixed_locally.write_bytes(PARAMETRIZED.read_bytes())
    assert fix(fixed_locally).status == "fixed" and needs.read_bytes() == fixed_locally.read_bytes()
    whole = [entry for entry in lfs.storage.log if entry.range == "bytes=0-"]
    assert len(whole) == 1 and whole[0].path.startswith("/store/" + hashlib.sha256(PARAMETRIZED.read_bytes()).hexdigest())
    assert sorted(os.listdir(repository)) == [".git", "fine.pth", "local.pth", "needs.pth"]


def test_fix_keeps_the_pointer_when_the_download_is_not_its_object(lfs, repository, monkeypatch):
    """The range reads see the real object; the whole download gets a forged one of the same size."""
    path = add_pointer(lfs, repository, "a.pth", PARAMETRIZED)
    original = path.read_bytes()
    [oid] = lfs.objects
    served = lfs.storage.routes[f"/store/{oid}"]
    real, forged = served.data, bytearray(served.data)
    forged[-30] ^= 1
    answer = Server._answer

    def forging(self, handler):
        served.data = bytes(forged) if handler.headers.get("Range") == "bytes=0-" else real
        return answer(self, handler)

    monkeypatch.setattr(Server, "_answer", forging)
    report = fix(path, lfs_pointers="remote")
    assert report.status == "error" and "does not match its pointer's sha256" in report.reason
    assert path.read_bytes() == original
    assert sorted(os.listdir(path.parent)) == [".git", "a.pth"]


@pytest.mark.parametrize("remote, endpoint", [
    ("https://github.com/o/r", "https://github.com/o/r.git/info/lfs"),
    ("https://github.com/o/r.git", "https://github.com/o/r.git/info/lfs"),
    ("https://github.com/o/r/", "https://github.com/o/r.git/info/lfs"),
    ("git@github.com:o/r.git", "https://github.com/o/r.git/info/lfs"),
    ("ssh://git@git.example.com:2222/o/r", "https://git.example.com/o/r.git/info/lfs"),
    ("https://huggingface.co/user/model", "https://huggingface.co/user/model.git/info/lfs"),
])
def test_the_endpoint_is_derived_from_the_remote_as_git_lfs_does(remote, endpoint):
    assert _derived(remote) == endpoint


def git_lfs_endpoint(folder):
    """The download endpoint the real git-lfs client would use here (`git lfs env`)."""
    env = subprocess.run(["git", "lfs", "env"], cwd=folder, capture_output=True, text=True, check=True).stdout
    [line] = [line for line in env.splitlines() if line.startswith("Endpoint=")]
    return line.split("=", 1)[1].split(" (auth=", 1)[0].rstrip("/")


def test_the_endpoint_is_the_one_git_lfs_uses(tmp_path):
    """Each configuration git-lfs reads, in its order of precedence, against `git lfs env`."""
    folder = tmp_path / "repo"
    folder.mkdir()
    git("init", "-q", "-b", "main", cwd=folder)
    git("remote", "add", "origin", "git@github.com:o/r.git", cwd=folder)
    steps = [
        lambda: None,
        lambda: (folder / ".lfsconfig").write_text("[remote \"origin\"]\n\tlfsurl = https://lfs.example.com/cfg-remote\n"),
        lambda: git("config", "remote.origin.lfsurl", "https://lfs.example.com/remote", cwd=folder),
        lambda: (folder / ".lfsconfig").write_text("[lfs]\n\turl = https://lfs.example.com/from-lfsconfig\n"),
        lambda: git("config", "lfs.url", "https://lfs.example.com/lfs-url/", cwd=folder),
        lambda: git("remote", "add", "upstream", "https://example.org/u/v", cwd=folder),
    ]
    seen = []
    for step in steps:
        step()
        assert endpoint_for(folder) == git_lfs_endpoint(folder)
        seen.append(endpoint_for(folder))
    assert len(set(seen)) == 5  # every step but the second remote changed the answer
    git("config", "lfs.url", "/srv/lfs", cwd=folder)
    with pytest.raises(Exception, match="is not an HTTP"):
        endpoint_for(folder)


def test_a_pointer_outside_a_repository_is_one_line(tmp_path):
    path = tmp_path / "a.pth"
    path.write_bytes(pointer(PARAMETRIZED.read_bytes()))
    env_ceiling = {"GIT_CEILING_DIRECTORIES": str(tmp_path)}
    report = subprocess.run(["git", "rev-parse"], cwd=tmp_path, capture_output=True, env={**os.environ, **env_ceiling})
    if report.returncode == 0:
        pytest.skip("tmp_path is inside a git repository here")
    found = locate([str(path)])
    assert found == {str(path): "a Git LFS pointer outside a git repository: no LFS server to ask"}


def test_pointer_fields_take_only_the_spec_form():
    data = PARAMETRIZED.read_bytes()
    assert pointer_fields(pointer(data)) == (hashlib.sha256(data).hexdigest(), len(data))
    assert pointer_fields(pointer(data) + b"\n") is None
    assert pointer_fields(b"version https://git-lfs.github.com/spec/v1\noid sha256:xyz\nsize 3\n") is None


def test_a_submodules_server_gets_no_credential_and_its_objects_are_read_whole(lfs, repository, tmp_path):
    """A pull request names a submodule's remote in .gitmodules: its LFS server is not the
    repository's, so it gets no token, and its objects must hash to their pointers' oids."""
    elsewhere = Lfs.__new__(Lfs)
    elsewhere.endpoint_server, elsewhere.storage = Server("127.0.0.2"), lfs.storage
    elsewhere.objects, elsewhere.batch_answer = lfs.objects, None
    elsewhere.endpoint_server.routes["/o/r.git/info/lfs/objects/batch"] = Route(answer=elsewhere._batch)
    try:
        sub = tmp_path / "sub"
        sub.mkdir()
        git("init", "-q", "-b", "main", cwd=sub)
        add_pointer(lfs, sub, "voice.pth", PARAMETRIZED)
        git("add", "-A", cwd=sub)
        git("commit", "-q", "-m", "s", cwd=sub)
        git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "vendor", cwd=repository)
        git("remote", "set-url", "origin", elsewhere.endpoint_server.url("/o/r"), cwd=repository / "vendor")
        report = scan(repository / "vendor" / "voice.pth", lfs_pointers="remote")
    finally:
        elsewhere.endpoint_server.close()
    assert report.status == "needs-fix", report.reason
    [batch] = [entry for entry in elsewhere.endpoint_server.log if entry.method == "POST"]
    assert batch.authorization == "" and lfs.batches() == []
    assert [entry.range for entry in lfs.storage.log] == ["bytes=0-"]  # read whole, and hashed


def test_a_server_the_work_tree_names_cannot_pass_other_bytes_off_as_the_object(lfs, repository):
    """.lfsconfig names another server (another port: another origin) that serves other bytes of
    the same size: the object is read whole from it and must hash to the pointer's oid."""
    path = add_pointer(lfs, repository, "a.pth", PARAMETRIZED)
    [oid] = lfs.objects
    fake = Lfs()
    try:
        other = bytearray(PARAMETRIZED.read_bytes())
        other[-40] ^= 1
        fake.objects[oid] = bytes(other)
        fake.storage.routes[f"/store/{oid}"] = Route(data=bytes(other))
        (repository / ".lfsconfig").write_text(f"[lfs]\n\turl = {fake.endpoint}\n")
        report = scan(path, lfs_pointers="remote")
        ranges = [entry.range for entry in fake.storage.log]
    finally:
        fake.close()
    assert report.status == "not-checked"
    assert "serves bytes that are not the object the pointer names" in report.reason
    assert ranges == ["bytes=0-"] and lfs.batches() == []


def test_a_small_object_with_other_bytes_is_caught_by_its_hash(lfs, repository):
    """Read whole anyway (one block), an object is hashed, whoever serves it."""
    path = add_pointer(lfs, repository, "a.pth", PARAMETRIZED)
    [oid] = lfs.objects
    other = bytearray(PARAMETRIZED.read_bytes())
    other[-40] ^= 1
    lfs.storage.routes[f"/store/{oid}"] = Route(data=bytes(other))
    report = scan(path, lfs_pointers="remote")
    assert report.status == "not-checked" and "another sha256" in report.reason


def test_the_token_needs_the_remotes_scheme_host_and_port(lfs, repository):
    """The same host over plain HTTP, or another port, is another origin: no token."""
    git("remote", "set-url", "origin", lfs.endpoint_server.url("/o/r").replace("http://", "https://"),
        cwd=repository)
    (repository / ".lfsconfig").write_text(f"[lfs]\n\turl = {lfs.endpoint}\n")  # http://, same host and port
    path = add_pointer(lfs, repository, "a.pth", PARAMETRIZED)
    assert scan(path, lfs_pointers="remote").status == "needs-fix"
    assert [entry.authorization for entry in lfs.batches()] == [""]


def test_a_remotes_user_name_and_password_are_never_used_nor_shown(lfs, repository, capsys):
    git("remote", "set-url", "origin", lfs.endpoint_server.url("/o/r").replace("http://", "http://ci:S3CRET@"),
        cwd=repository)
    path = add_pointer(lfs, repository, "a.pth", PARAMETRIZED)
    code, out = run(capsys, "check", "-v", "--lfs-pointers", "remote", path)
    assert code == 1 and "S3CRET" not in out
    assert "S3CRET" not in json.dumps([entry.headers for entry in lfs.endpoint_server.log + lfs.storage.log])


def test_fix_leaves_what_reached_the_path_during_the_download(lfs, repository):
    path = add_pointer(lfs, repository, "a.pth", PARAMETRIZED)
    [oid] = lfs.objects

    def user_writes(handler):
        if handler.headers.get("Range") == "bytes=0-":
            path.write_bytes(b"the user's own work")

    lfs.storage.routes[f"/store/{oid}"].on_get = user_writes
    report = fix(path, lfs_pointers="remote")
    assert report.status == "error" and "changed while it was being fixed" in report.reason
    assert path.read_bytes() == b"the user's own work"
    assert sorted(os.listdir(repository)) == [".git", "a.pth"]


def test_another_endpoint_on_the_remotes_host_is_another_party(lfs, repository):
    """On a shared host (github.com) another repository's endpoint belongs to someone else:
    a .lfsconfig naming it gets no token, and its objects are read whole and hashed."""
    path = add_pointer(lfs, repository, "a.pth", PARAMETRIZED)
    [oid] = lfs.objects
    lfs.endpoint_server.routes["/attacker/x.git/info/lfs/objects/batch"] = Route(answer=lfs._batch)
    (repository / ".lfsconfig").write_text(f"[lfs]\n\turl = {lfs.endpoint_server.url('/attacker/x.git/info/lfs')}\n")
    assert scan(path, lfs_pointers="remote").status == "needs-fix"
    assert [entry.authorization for entry in lfs.batches()] == [""]
    assert [entry.range for entry in lfs.storage.log] == ["bytes=0-"]


def test_a_huge_object_from_another_server_is_not_read_whole(lfs, repository):
    fake = Lfs()
    try:
        size = 3 << 30
        oid = "ab" * 32
        fake.objects[oid] = b""
        fake.batch_answer = lambda request: (200, {}, json.dumps({"objects": [{**request["objects"][0], "actions": {
            "download": {"href": fake.storage.url("/huge")}}}]}).encode())
        path = repository / "huge.pth"
        path.write_bytes(f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode())
        (repository / ".lfsconfig").write_text(f"[lfs]\n\turl = {fake.endpoint}\n")
        report = scan(path, lfs_pointers="remote")
        asked = list(fake.storage.log)
    finally:
        fake.close()
    assert report.status == "not-checked" and "more than the 2 GiB read whole to check its sha256" in report.reason
    assert asked == []


def test_the_storages_header_never_follows_a_redirect(lfs, repository):
    """urllib copies a request's headers along a redirect unless they are unredirected: the
    header the batch answer gave for the href goes to the href's host and no further."""
    third = Server("127.0.0.3")
    try:
        path = add_pointer(lfs, repository, "a.pth", PARAMETRIZED)
        [oid] = lfs.objects
        third.routes["/elsewhere"] = Route(data=PARAMETRIZED.read_bytes())
        lfs.storage.routes[f"/store/{oid}"] = Route(redirect=third.url("/elsewhere"))
        assert scan(path, lfs_pointers="remote").status == "needs-fix"
        assert [entry.headers.get("X-Storage-Key") for entry in lfs.storage.log] == ["for-storage"]
        assert third.log and all("X-Storage-Key" not in entry.headers and entry.authorization == ""
                                 for entry in third.log)
    finally:
        third.close()
