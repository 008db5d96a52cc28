"""The LFS test server (support.lfs_server) works: objects pushed by the real git-lfs client can be read
back through the Batch API and a Range GET on the presigned href, and the servers' logs count both.

Only urllib from the standard library talks to the servers here: no project code.
"""

import hashlib
import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest

LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy


def payload(seed, size):
    """`size` bytes that differ at every offset a test reads (a counter run through sha256)."""
    blocks = (hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(size // 32 + 1))
    return b"".join(blocks)[:size]


FILES = {"voice.pth": payload("voice", 300_000), "models/other.pth": payload("other", 450_123)}


def batch_download(lfs_url, obj, headers=None):
    body = json.dumps({"operation": "download", "transfers": ["basic"],
                       "objects": [{"oid": obj.oid, "size": obj.size}]}).encode()
    request = urllib.request.Request(f"{lfs_url}/objects/batch", data=body, method="POST", headers={
        "Accept": LFS_MEDIA_TYPE, "Content-Type": LFS_MEDIA_TYPE, **(headers or {})})
    with OPENER.open(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def ranged_get(href, headers, first, last):
    request = urllib.request.Request(href, headers={**headers, "Range": f"bytes={first}-{last}"})
    with OPENER.open(request, timeout=30) as response:
        return response.status, response.headers.get("Content-Range"), response.read()


@pytest.mark.parametrize("lfs_server", ["anonymous", "token"], indirect=True)
def test_pushed_objects_read_back_by_batch_and_range(lfs_server, tmp_path):
    repo = lfs_server.make_lfs_repository(tmp_path / "repo", FILES)
    assert set(repo.objects) == set(FILES)
    assert (repo.remote / "HEAD").exists()

    obj = repo.objects["models/other.pth"]
    status, answer = batch_download(repo.lfs_url, obj, lfs_server.auth_headers())
    assert status == 200
    (entry,) = answer["objects"]
    assert (entry["oid"], entry["size"]) == (obj.oid, obj.size)
    download = entry["actions"]["download"]
    href = urllib.parse.urlsplit(download["href"])
    # the object is on another host than the LFS endpoint, with no credential needed there
    assert (href.hostname, href.port) == (lfs_server.storage_host, lfs_server.storage_port)
    assert lfs_server.storage_host != lfs_server.lfs_host

    first, last = 123_456, 123_456 + 4095
    status, content_range, data = ranged_get(download["href"], download.get("header", {}), first, last)
    assert status == 206
    assert content_range == f"bytes {first}-{last}/{obj.size}"
    assert data == FILES["models/other.pth"][first:last + 1]

    counts = lfs_server.counts()
    assert (counts.batch, counts.batch_download, counts.batch_upload, counts.batch_refused) == (1, 1, 0, 0)
    assert counts.lfs_requests == 1
    assert (counts.storage_gets, counts.ranged_gets) == (1, 1)
    assert counts.ranged_bytes == [4096]
    assert counts.ranges == [f"bytes={first}-{last}"]
    assert counts.ranged_statuses == [206]
    assert counts.storage_requests_with_authorization == 0
    assert counts.secret_sent_to_storage == 0
    assert counts.secret_sent_to_lfs == (1 if lfs_server.requires_token else 0)
    assert counts.server_storage_requests >= 1  # giftless looked the object up in the storage

    lfs_server.reset_counts()
    assert lfs_server.counts().batch == 0


def test_push_really_uploaded_through_the_servers(lfs_server, tmp_path):
    """The push's own requests: one upload batch, one presigned PUT per object, as the server logs say."""
    lfs_server.reset_counts()
    # make_lfs_repository resets the counts when it returns; read what the push did before that
    lfs_log, storage_log = lfs_server.access_logs()
    repo = lfs_server.make_lfs_repository(tmp_path / "repo", {"a.pth": payload("a", 200_000), "b.txt": b"plain"})
    assert set(repo.objects) == {"a.pth"}  # only *.pth went to LFS
    lfs_after, storage_after = lfs_server.access_logs()
    assert "/objects/batch" in lfs_after[len(lfs_log):]
    assert f"PUT /{lfs_server.bucket}/" in storage_after[len(storage_log):]


def test_batch_without_the_token_is_refused(lfs_server_with_token, tmp_path):
    server = lfs_server_with_token
    assert server.requires_token and server.token
    repo = server.make_lfs_repository(tmp_path / "repo", {"voice.pth": FILES["voice.pth"]})
    obj = repo.objects["voice.pth"]

    with pytest.raises(urllib.error.HTTPError) as refused:
        batch_download(repo.lfs_url, obj)
    assert refused.value.code in (401, 403)
    with pytest.raises(urllib.error.HTTPError) as wrong:
        batch_download(repo.lfs_url, obj, {"Authorization": "Bearer " + server.token[:-4] + "AAAA"})
    assert wrong.value.code in (401, 403)
    status, _ = batch_download(repo.lfs_url, obj, {"Authorization": "Bearer " + server.token})
    assert status == 200

    counts = server.counts()
    assert (counts.batch, counts.batch_refused) == (3, 2)
    assert counts.storage_gets == 0


def test_token_sent_to_storage_is_seen(lfs_server_with_token, tmp_path):
    """The storage log tells a client that sent the LFS token to the storage host."""
    server = lfs_server_with_token
    repo = server.make_lfs_repository(tmp_path / "repo", {"voice.pth": FILES["voice.pth"]})
    obj = repo.objects["voice.pth"]
    _, answer = batch_download(repo.lfs_url, obj, server.auth_headers())
    href = answer["objects"][0]["actions"]["download"]["href"]
    status, _, data = ranged_get(href, server.auth_headers(), 0, 9)
    # moto checks no signature: it serves the bytes; the log is what tells
    assert (status, data) == (206, FILES["voice.pth"][:10])
    counts = server.counts()
    assert counts.secret_sent_to_storage == 1
    assert counts.storage_requests_with_authorization == 1


def test_servers_run_on_loopback_only(lfs_servers, lfs_server):
    assert lfs_server.endpoint.startswith("http://127.0.0.1:")
    assert lfs_server.storage_url.startswith("http://127.0.0.2:")
    assert os.path.isdir(lfs_servers.folder)


def test_credential_helper_answers_for_the_lfs_host_only(lfs_server_with_token, tmp_path):
    server = lfs_server_with_token
    repo = server.make_lfs_repository(tmp_path / "repo", {"voice.pth": b"v" * 1000})

    def fill(host, port):
        return subprocess.run(["git", "credential", "fill"], cwd=repo.path, capture_output=True, text=True,
                              input=f"protocol=http\nhost={host}:{port}\n\n", check=False,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""})

    lfs_host = fill(server.lfs_host, server.lfs_port)
    assert lfs_host.returncode == 0, lfs_host.stderr
    assert f"password={server.token}\n" in lfs_host.stdout
    storage_host = fill(server.storage_host, server.storage_port)
    assert server.token not in storage_host.stdout
