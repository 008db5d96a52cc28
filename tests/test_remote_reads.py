"""Checkpoints read by URL: HTTP Range requests to a real server on loopback, which counts
what it was asked for and what it sent; every verdict compared with the local file's."""

import json
import os
import random

import pytest
from support.cli_run import LEGACY, LEGACY_FORMAT, PARAMETRIZED, run
from pth_legacy_keys import fix, http_source, scan
from pth_legacy_keys.byte_source import is_url
from pth_legacy_keys.http_source import BLOCK, HttpSource, RemoteError
from pth_legacy_keys.inspection import inspect_file
from support.http_server import HeaderTrickle, Route, Server, Stalling, self_signed_certificate
from support.lfs import LFS_POINTER
from support.pickle_ops import PROTO2, global_, text
from support.zip_bytes import build_zip, zip_records


@pytest.fixture
def server():
    started = Server()
    yield started
    started.close()


@pytest.fixture
def other_host():
    """A second server on another loopback address: another host, as a CDN is."""
    started = Server("127.0.0.2")
    yield started
    started.close()


def serve(server, name, data, **route):
    server.routes[f"/{name}"] = Route(data=data, **route)
    return server.url(f"/{name}")


def same_verdict(remote, local):
    assert (remote.status, remote.reason, remote.format) == (local.status, local.reason, local.format)
    assert [(r.where, r.old, r.new) for r in remote.renames] == [(r.where, r.old, r.new) for r in local.renames]
    assert [(p.module, p.reason) for p in remote.problems] == [(p.module, p.reason) for p in local.problems]


def hostile_files():
    """Files a pull request could serve: each must get exactly the local file's verdict."""
    data = PARAMETRIZED.read_bytes()
    system = PROTO2 + global_("posix", "system") + b"(" + text("touch /tmp/pwned") + b"tR."
    records = zip_records(PARAMETRIZED)
    return {
        "runs-code.pth": build_zip([(n, system if n.endswith("data.pkl") else d) for n, d in records]),
        "bare-pickle.pth": system,
        "truncated.pth": data[:len(data) // 2],
        "comment-after-end.pth": data + b"junk",
        "random.pth": random.Random(7).randbytes(3000),
        "pointer.pth": LFS_POINTER.encode(),
        "empty.pth": b"",
        "path-config.pth": b"import os; os.system('x')\n",
    }


@pytest.mark.parametrize("fixture", [PARAMETRIZED, LEGACY, LEGACY_FORMAT], ids=lambda p: p.name)
def test_a_url_gets_the_local_files_verdict(server, fixture):
    url = serve(server, "model.pth", fixture.read_bytes())
    same_verdict(scan(url), scan(fixture))


@pytest.mark.parametrize("name", sorted(hostile_files()))
def test_hostile_bytes_served_remotely_get_the_local_verdict(server, tmp_path, name):
    data = hostile_files()[name]
    local = tmp_path / name
    local.write_bytes(data)
    remote = scan(serve(server, name, data))
    same_verdict(remote, scan(local))
    assert remote.status in ("refused", "error", "not-checked", "skipped")
    assert not os.path.exists("/tmp/pwned")


def test_a_55_mb_rvc_model_costs_at_most_three_requests_and_256_kib(server, full_size_rvc_model):
    """What a check reads of it: its first block, its end records and central directory, and
    its pickle; counted by the server."""
    data = full_size_rvc_model.read_bytes()
    assert len(data) > 50_000_000
    remote = scan(serve(server, "voice.pth", data))
    same_verdict(remote, scan(full_size_rvc_model))
    assert len(remote.renames) == 208
    sent = server.requests("/voice.pth")
    assert len(sent) <= 3 and all(entry.status == 206 for entry in sent)
    assert sum(entry.sent for entry in sent) <= 256 << 10
    assert remote.transfer == {"requests": len(sent), "bytes": sum(e.sent for e in sent), "streamed": False}


def test_a_server_that_ignores_range_still_gives_the_verdict(server, tmp_path, capsys):
    url = serve(server, "model.pth", PARAMETRIZED.read_bytes(), ranges=False)
    remote = scan(url)
    same_verdict(remote, scan(PARAMETRIZED))
    assert remote.transfer == {"requests": 1, "bytes": PARAMETRIZED.stat().st_size, "streamed": True}
    code, out = run(capsys, "check", "-v", url)
    assert code == 1 and "read remotely: 1 request, " in out and "the whole file was streamed" in out


def test_the_command_line_reads_urls_and_says_what_it_cost(server, capsys):
    url = serve(server, "model.pth", PARAMETRIZED.read_bytes())
    query = url + "?download=true&x=*"  # a Hub URL's query: no glob, one file
    code, out = run(capsys, "check", "-v", query)
    assert code == 1 and out.startswith(f"{query}: 4 parametrized weight-norm keys")
    assert f"    read remotely: 1 request, {PARAMETRIZED.stat().st_size:,} bytes" in out
    code, out = run(capsys, "check", "--output", "json", url)
    remote = json.loads(out)["files"][0]["remote"]
    assert remote == {"requests": 1, "bytes": PARAMETRIZED.stat().st_size, "streamed": False}
    code, out = run(capsys, "inspect", url)
    assert code == 0 and "remote     1 request" in out and "weight-norm" in out
    assert inspect_file(url).transfer["requests"] == 1


def test_fix_of_a_url_is_one_line_and_exit_2(server, capsys):
    url = serve(server, "model.pth", PARAMETRIZED.read_bytes())
    code, out = run(capsys, "fix", url)
    assert code == 2 and out.splitlines()[0] == f"{url}: error: fix cannot write to a URL: download the file, fix it there"
    assert fix(url).status == "error" and server.requests() == []


def test_reads_are_whole_blocks_and_each_block_is_asked_for_once(server):
    data = random.Random(1).randbytes(5 * BLOCK + 123)
    url = serve(server, "blob", data)
    with HttpSource(url) as source:
        assert source.size == len(data)
        for offset, n in [(0, 10), (BLOCK - 5, 10), (3 * BLOCK, 2 * BLOCK + 123), (BLOCK, 4 * BLOCK), (7, 0)]:
            assert source.read(offset, n) == data[offset:offset + n]
        with pytest.raises(Exception, match="truncated"):
            source.read(len(data) - 1, 2)
    ranges = [entry.range for entry in server.requests()]
    assert ranges == [f"bytes=0-{BLOCK - 1}", f"bytes={BLOCK}-{2 * BLOCK - 1}",
                      f"bytes={3 * BLOCK}-{len(data) - 1}", f"bytes={2 * BLOCK}-{3 * BLOCK - 1}"]


def test_bytes_beyond_the_range_asked_are_never_read_as_the_file(server):
    url = serve(server, "model.pth", PARAMETRIZED.read_bytes(), extra=b"PK\x05\x06" + bytes(100))
    same_verdict(scan(url), scan(PARAMETRIZED))


def test_the_url_token_goes_to_its_host_only(server, other_host, monkeypatch):
    monkeypatch.setenv("PTH_LEGACY_KEYS_URL_TOKEN", "s3cret")
    cdn = serve(other_host, "blob", PARAMETRIZED.read_bytes())
    url = serve(server, "resolve/model.pth", b"", redirect=cdn)
    assert scan(url).status == "needs-fix"
    assert [entry.authorization for entry in server.requests()] == ["Bearer s3cret"]
    assert other_host.requests() and all(entry.authorization == "" for entry in other_host.requests())


@pytest.mark.parametrize("status", [401, 403, 404, 410, 500, 502])
def test_an_http_error_is_one_line_naming_the_host(server, capsys, monkeypatch, status):
    monkeypatch.setenv("PTH_LEGACY_KEYS_URL_TOKEN", "s3cret")
    url = serve(server, "model.pth", b"", status=status)
    code, out = run(capsys, "check", url)
    assert code == 2
    line = out.splitlines()[0]
    assert line.startswith(f"{url}: error: 127.0.0.1:{server.port} answered HTTP {status}")
    assert "s3cret" not in out


def test_a_busy_server_is_asked_again_when_it_says_so(server):
    url = serve(server, "model.pth", PARAMETRIZED.read_bytes(), status=429, headers={"Retry-After": "0"},
                fail_times=1)
    assert scan(url).status == "needs-fix"
    assert [entry.status for entry in server.requests()][:2] == [429, 206]


def test_a_server_busy_for_long_fails_now(server):
    url = serve(server, "model.pth", PARAMETRIZED.read_bytes(), status=503, headers={"Retry-After": "3600"})
    report = scan(url)
    assert report.status == "error" and "HTTP 503" in report.reason and "try again later" in report.reason
    assert len(server.requests()) == 1


@pytest.mark.parametrize("target, said", [
    ("ftp://127.0.0.1/model.pth", "redirects to a ftp URL, which is not HTTP"),
    ("file:///etc/passwd", "redirects to a file URL, which is not HTTP"),
    ("/loop", "redirects too many times, or in a loop"),
    ("http://user:hunter2@127.0.0.1/m.pth", "redirects to a URL with a user name or password"),
])
def test_redirects_stay_on_http_and_end(server, target, said):
    server.routes["/loop"] = Route(redirect="/loop")
    url = serve(server, "model.pth", b"", redirect=target)
    report = scan(url)
    assert report.status == "error" and said in report.reason


def test_a_stalled_server_times_out(monkeypatch):
    stalled = Stalling()
    monkeypatch.setattr(http_source, "TIMEOUT", 0.5)
    try:
        report = scan(stalled.url("/model.pth"))
    finally:
        stalled.close()
    assert report.status == "error" and report.reason == f"127.0.0.1:{stalled.port} did not answer within 0.5 s"


def test_a_file_that_changes_between_requests_is_an_error(server):
    data = PARAMETRIZED.read_bytes() + bytes(3 * BLOCK)  # the end records are then in another block
    records = zip_records(PARAMETRIZED)
    padded = build_zip(records[:-1] + [(records[-1][0], records[-1][1] + bytes(3 * BLOCK))])
    del data
    url = serve(server, "model.pth", padded, etags=['"v1"', '"v2"', '"v2"'])
    report = scan(url)
    assert report.status == "error" and "changed while it was being read" in report.reason


def test_a_wrong_content_range_is_an_error(server, monkeypatch):
    url = serve(server, "model.pth", PARAMETRIZED.read_bytes())
    original = Server._send

    def shifted(self, handler, status, headers, body, extra=b""):
        if "Content-Range" in headers:
            headers["Content-Range"] = headers["Content-Range"].replace("bytes 0-", "bytes 1-")
        return original(self, handler, status, headers, body, extra)

    monkeypatch.setattr(Server, "_send", shifted)
    report = scan(url)
    assert report.status == "error" and "where 0-" in report.reason


def test_an_untrusted_certificate_fails_and_ssl_cert_file_trusts_it(tmp_path, monkeypatch):
    certificate = self_signed_certificate(tmp_path)
    secure = Server(certificate=certificate)
    try:
        url = serve(secure, "model.pth", PARAMETRIZED.read_bytes())
        report = scan(url)
        assert report.status == "error" and report.reason.startswith(
            f"TLS: the certificate of 127.0.0.1:{secure.port} is not trusted")
        monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
        assert scan(url).status == "needs-fix"
    finally:
        secure.close()


def test_https_never_redirects_down_to_http(tmp_path, server, monkeypatch):
    certificate = self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
    secure = Server(certificate=certificate)
    try:
        url = serve(secure, "model.pth", b"", redirect=serve(server, "plain.pth", PARAMETRIZED.read_bytes()))
        report = scan(url)
    finally:
        secure.close()
    assert report.status == "error" and "redirects from HTTPS to plain HTTP" in report.reason
    assert server.requests() == []


def test_a_proxy_from_the_environment_is_used(server, other_host, monkeypatch):
    """`http_proxy` sends the request to the proxy, in absolute form: here a server that also
    serves the file, and logs the request it got."""
    other_host.routes["http://127.0.0.1:1/model.pth"] = Route(data=PARAMETRIZED.read_bytes())
    monkeypatch.setenv("http_proxy", f"http://127.0.0.2:{other_host.port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert scan("http://127.0.0.1:1/model.pth").status == "needs-fix"
    assert [entry.path for entry in other_host.requests()] == ["http://127.0.0.1:1/model.pth"]


def test_only_http_and_https_are_urls():
    assert is_url("https://huggingface.co/x/resolve/main/m.pth?download=true")
    assert is_url("HTTP://host/m.pth")
    for path in ("file:///m.pth", "ftp://host/m.pth", "http:/m.pth", "models/http://x.pth", "https:", b"http://x"):
        assert not is_url(path)


def test_the_size_a_pointer_promises_must_be_served(server):
    url = serve(server, "model.pth", PARAMETRIZED.read_bytes())
    with pytest.raises(RemoteError, match="serves 3,537 bytes where 3,538 were expected"):
        HttpSource(url, size=PARAMETRIZED.stat().st_size + 1)


def test_an_endless_body_is_cut_where_the_file_must_end(server, monkeypatch):
    """A server that ignores Range and never stops: read no further than what may be kept."""
    monkeypatch.setattr(http_source, "MAX_STREAMED", 4 << 20)
    url = serve(server, "endless.pth", b"", endless=True)
    report = scan(url)
    assert report.status == "error" and report.reason == f"127.0.0.1:{server.port} sent more than the 4,194,304 bytes the file may have"


def test_a_server_that_trickles_is_cut_off(server, monkeypatch):
    """One byte at a time, each in time for the socket's timeout: the answer's deadline stops it."""
    monkeypatch.setattr(http_source, "TIMEOUT", 0.5)
    monkeypatch.setattr(http_source, "MIN_RATE", 1 << 40)
    url = serve(server, "slow.pth", b"", trickle=0.05)
    report = scan(url)
    assert report.status == "error" and report.reason == f"127.0.0.1:{server.port} sends too slowly (less than 1073741824 KiB/s)"


def test_a_url_with_a_password_is_refused_and_never_shown(server, capsys):
    url = serve(server, "model.pth", PARAMETRIZED.read_bytes())
    secret_url = url.replace("http://", "http://ci:S3CRET@")
    code, out = run(capsys, "check", secret_url, PARAMETRIZED)
    assert code == 2 and "S3CRET" not in out
    assert out.splitlines()[0] == (f"{url.replace('http://', 'http://***@')}: error: a URL with a user name or "
                                   "password in it: put a token in PTH_LEGACY_KEYS_URL_TOKEN instead")
    assert f"{PARAMETRIZED}: 4 parametrized" in out and server.requests() == []


@pytest.mark.parametrize("bad", ["http://[::1/m.pth", "http://127.0.0.1:99999/m.pth", "https://a:b@[x/m.pth"])
def test_a_malformed_url_is_its_own_line_and_the_others_are_examined(capsys, bad):
    code, out = run(capsys, "check", bad, PARAMETRIZED)
    assert code == 2, out
    first = out.splitlines()[0]
    assert ": error: " in first and "a:b" not in out
    assert f"{PARAMETRIZED}: 4 parametrized" in out


def test_headers_that_never_end_are_cut_off(monkeypatch):
    """A header byte in time for every socket timeout: the answer's headers have one deadline."""
    monkeypatch.setattr(http_source, "TIMEOUT", 0.5)
    trickle = HeaderTrickle()
    try:
        report = scan(trickle.url("/model.pth"))
    finally:
        trickle.close()
    assert report.status == "error"
    assert report.reason == f"127.0.0.1:{trickle.port} did not send its answer within 1 s"


def test_a_url_that_http_cannot_send_never_shows_its_query(server):
    url = serve(server, "model.pth", b"", redirect="/m.pth?X-Amz-Signature=PRESIGNED x")
    report = scan(url)
    assert report.status == "error" and "PRESIGNED" not in report.reason
